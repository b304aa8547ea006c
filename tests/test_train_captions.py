"""Contrastive-training captions: the world's grammar, the matching rule, per-step determinism."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from zsrobust_bench.data import synthetic
from zsrobust_bench.train.captions import CaptionSampler, _caption, matches, vocabulary_token_ids
from zsrobust_bench.train.data import TASK_ORDER, render_synthetic


def test_caption_grammar_is_the_worlds() -> None:
    # synthetic.caption draws its own mask; replaying the same generator gives the mask we pass.
    for i in range(200):
        _, scene = synthetic.generate("train", i)
        r1, r2 = np.random.default_rng(i), np.random.default_rng(i)
        expected = synthetic.caption(scene, r1)
        keep = r2.random(5) < 0.5
        if not keep.any():
            keep[int(r2.integers(5))] = True
        attrs = np.array([scene.attr(t) for t in TASK_ORDER])
        assert _caption(attrs, keep) == expected


def test_matching_rule() -> None:
    attrs = torch.tensor([[0, 1, 2, 3, 0], [1, 1, 0, 0, 2]])
    keep = torch.tensor([[True, False, False, False, False], [False, True, False, False, False]])
    # caption 0 names colour 0 (only image 0 has it); caption 1 names shape 1 (both images have it)
    assert matches(attrs, keep).tolist() == [[True, True], [False, True]]


def test_sampler_is_a_function_of_step_and_respects_probabilities() -> None:
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=24)
    _, attrs = render_synthetic("val", 400, workers=1)
    a = CaptionSampler(tok, 0, {"color": 0.05, "shape": 0.9, "count": 0.5, "position": 0.5, "pattern": 0.05})
    b = CaptionSampler(tok, 0, {"color": 0.05, "shape": 0.9, "count": 0.5, "position": 0.5, "pattern": 0.05})
    t1, k1, s1 = a.sample(attrs, 7)
    t2, k2, s2 = b.sample(attrs, 7)
    assert s1 == s2 and torch.equal(t1, t2) and torch.equal(k1, k2)
    assert a.sample(attrs, 8)[2] != s1
    rate = k1.float().mean(dim=0)
    assert rate[1] > 0.8 and rate[0] < 0.15 and rate[4] < 0.15
    assert matches(attrs, k1).diagonal().all()  # every caption describes its own image
    assert set(t1.flatten().tolist()) <= set(vocabulary_token_ids(tok))
    with pytest.raises(ValueError, match="exactly the attributes"):
        CaptionSampler(tok, 0, {"color": 0.5})

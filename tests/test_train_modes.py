"""What each TeCoA variant trains: full, partial (last N blocks), linear probe (image projection),
one-hot head; pseudo labels come from the frozen model's zero-shot predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zsrobust_bench.train import train
from zsrobust_bench.train.modules import load_base, openai_parameter_order

TINY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _run(tmp: Path, **over) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Path]:
    cfg = {
        "name": "tiny-mode",
        "method": "tecoa",
        "seed": 2,
        "model": {"arch": "zsbench-test-tiny2", "arch_config": TINY_ARCH},
        "data": {"kind": "synthetic", "task": "pattern", "size": 64, "workers": 1},
        "attack": {"eps": "4/255", "steps": 1, "step_size": "4/255"},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0},
        "batch_size": 16,
        "steps": 2,
        "log_every": 1,
        "progress": False,
        **over,
    }
    out = tmp / "run"
    train(cfg, out)
    init = load_base(
        {"arch": "zsbench-test-tiny2", "arch_config": TINY_ARCH, "pretrained": None}, seed=2
    ).model.state_dict()
    state = torch.load(out / "train-state.pt", weights_only=True)["model"]
    return init, state, out


def _moved(init: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> set[str]:
    """Keys of the trained tower (`tower.` prefix stripped to open_clip `visual.` keys) that changed."""
    out = set()
    for k, v in state.items():
        if k.startswith("tower."):
            key = "visual." + k[len("tower.") :]
            if not torch.equal(init[key], v):
                out.add(key)
        elif k.startswith("linear."):
            out.add(k)
    return out


def test_partial_trains_only_last_blocks(tmp_path: Path) -> None:
    init, state, _ = _run(tmp_path, trainable="partial", partial_blocks=1)
    moved = _moved(init, state)
    assert any(k.startswith("visual.transformer.resblocks.1.") for k in moved)
    assert "visual.proj" in moved
    assert not any(
        k.startswith("visual.transformer.resblocks.0.") or k.startswith("visual.conv1") for k in moved
    )


def test_linear_probe_trains_only_projection(tmp_path: Path) -> None:
    init, state, _ = _run(tmp_path, trainable="linear-probe")
    assert _moved(init, state) == {"visual.proj"}


def test_full_and_onehot_head(tmp_path: Path) -> None:
    init, state, _ = _run(tmp_path, trainable="full", head="onehot")
    moved = _moved(init, state)
    assert {"visual.conv1.weight", "visual.proj", "linear.weight", "linear.bias"} <= moved
    assert state["linear.weight"].shape == (4, 32)  # four background patterns


def test_pseudo_labels_are_the_frozen_models_predictions(tmp_path: Path) -> None:
    # At step 1 the model is still the original, so its clean predictions match the pseudo labels exactly.
    _, _, out = _run(tmp_path, labels="pseudo", steps=1)
    rec = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert rec["step"] == 1 and rec["clean_acc"] == pytest.approx(100.0)
    # With the true labels the same random model is near chance (4 classes).
    _, _, out2 = _run(tmp_path / "true", steps=1)
    rec2 = json.loads((out2 / "log.jsonl").read_text().splitlines()[0])
    assert rec2["clean_acc"] < 60.0


def test_last_params_trains_the_last_parameter_tensors_in_openai_order(tmp_path: Path) -> None:
    # TeCoA's --last_num_ft N: the last N tensors of OpenAI CLIP's list(model.visual.parameters()),
    # whose blocks register attn, ln_1, mlp, ln_2 (open_clip: ln_1, attn, ln_2, mlp), and whose
    # own tensors (class_embedding, positional_embedding, proj) come first.
    init, state, _ = _run(tmp_path, trainable="last-params", partial_params=3)
    assert _moved(init, state) == {
        "visual.transformer.resblocks.1.ln_2.bias",
        "visual.ln_post.weight",
        "visual.ln_post.bias",
    }
    visual = load_base(
        {"arch": "zsbench-test-tiny2", "arch_config": TINY_ARCH, "pretrained": None}, seed=2
    ).model.visual
    order = openai_parameter_order(visual)
    assert order[:4] == ["class_embedding", "positional_embedding", "proj", "conv1.weight"]
    assert order[-8:-4] == [
        f"transformer.resblocks.1.mlp.c_{m}" for m in ("fc.weight", "fc.bias", "proj.weight", "proj.bias")
    ]
    assert sorted(order) == sorted(n for n, _ in visual.named_parameters())

"""Captions for contrastive training on the synthetic world, drawn per (seed, step) over the global
batch with the world's caption grammar, tokenised through a cache, plus which captions match which
images (a caption matches every image that has all the attributes it names)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .data import TASK_ORDER

# Caption word order of synthetic.caption: count, colour, shape, position, pattern.


def _caption(attrs: np.ndarray, keep: np.ndarray) -> str:
    from ..data import synthetic as s

    color, shape, count, position, pattern = (int(v) for v in attrs)
    words = ["a photo of"]
    if keep[2]:
        words.append(s.COUNTS[count])
    if keep[0]:
        words.append(list(s.COLORS)[color])
    words.append(s.SHAPES[shape] if keep[1] else "shape")
    if keep[3]:
        words.append(f"on the {s.POSITIONS[position]}")
    if keep[4]:
        words.append(f"on a {s.PATTERNS[pattern]} background")
    return " ".join(words) + "."


class CaptionSampler:
    """Per-step captions of a global batch: each attribute named with probability `keep` (one number, or
    one per attribute; at least one attribute is named; the world's own grammar uses 1/2 for all)."""

    def __init__(self, tokenizer: Any, seed: int, keep: float | dict[str, float] = 0.5) -> None:
        if TASK_ORDER != ("color", "shape", "count", "position", "pattern"):
            raise AssertionError("caption grammar assumes TASK_ORDER")
        if isinstance(keep, dict):
            unknown = set(keep) - set(TASK_ORDER)
            if unknown or set(keep) != set(TASK_ORDER):
                raise ValueError(
                    f"caption keep probabilities need exactly the attributes {TASK_ORDER}, got {sorted(keep)}"
                )
            probs = [float(keep[t]) for t in TASK_ORDER]
        else:
            probs = [float(keep)] * len(TASK_ORDER)
        if not all(0 < p <= 1 for p in probs):
            raise ValueError(f"caption keep probabilities must be in (0, 1], got {probs}")
        self.tokenizer, self.seed = tokenizer, seed
        self.keep = np.array(probs)
        self._cache: dict[str, torch.Tensor] = {}

    def sample(self, attrs: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(tokens (B,L), named-attribute mask (B,5) bool, caption strings) for a global batch."""
        rng = np.random.default_rng([self.seed, step, 0x5EED])
        keep = rng.random((attrs.shape[0], 5)) < self.keep[None, :]
        none = ~keep.any(axis=1)
        keep[none, rng.integers(5, size=int(none.sum()))] = True
        a = attrs.numpy()
        texts = [_caption(a[i], keep[i]) for i in range(a.shape[0])]
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            for t, tok in zip(missing, self.tokenizer(missing), strict=True):
                self._cache[t] = tok
        return torch.stack([self._cache[t] for t in texts]), torch.from_numpy(keep), texts


def matches(attrs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B_img, B_cap) bool: caption j names only attributes image i has."""
    same = attrs[:, None, :] == attrs[None, :, :]
    return (same | ~keep[None, :, :]).all(dim=-1)


def vocabulary_token_ids(tokenizer: Any) -> list[int]:
    """Token ids any synthetic caption or zero-shot prompt can use (plus padding, start and end)."""
    from ..data import synthetic as s

    texts = list(s.vocabulary())
    for names, templates in s.TASKS.values():
        texts += [t.format(n) for t in templates for n in names]
    ids = set(tokenizer(texts).flatten().tolist())
    return sorted(ids | {0})

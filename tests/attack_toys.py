"""Small, seeded models and batches for the attack and sanity tests (not collected by pytest).

`ToyZeroShot` follows the classifier contract (pixels in [0,1] -> normalise -> features ->
100 * cos to fixed class embeddings) with a 3x3 conv feature net: fast enough for the full
AutoAttack schedule on CPU. The wrappers break the contract on purpose (no gradient path,
piecewise-constant forward, NaN gradients, a constant straight-through Jacobian, fp16 compute).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(autouse=False)
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread (and the 2-core box is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ToyZeroShot(nn.Module):
    """pixels -> normalise -> conv features -> 100 * cos(features, class embeddings)."""

    def __init__(self, num_classes: int, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(128, dim),
        )
        for p in self.features.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * (1 / max(1, p.shape[-1]) ** 0.5))
        self.register_buffer("class_emb", F.normalize(torch.randn(num_classes, dim, generator=g), dim=-1))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
        return 100 * F.normalize(f, dim=-1) @ self.class_emb.to(f.dtype).t()


def batch(
    model: nn.Module, n: int, num_classes: int, size: int = 8, seed: int = 1, n_wrong: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images labelled with the model's prediction, the first `n_wrong` relabelled wrong."""
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    y[:n_wrong] = (y[:n_wrong] + 1) % num_classes
    return x, y


def margins(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        top = model(x).float().topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


class Half(nn.Module):
    """The same network computed in fp16 (what autocast does to matmuls and convolutions)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(model).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.half())


class NoGradPath(nn.Module):
    """Forward under torch.no_grad(): logits carry no gradient at all."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.inner(x)


class Quantized(nn.Module):
    """Input rounded to 8 levels: piecewise constant, so every input gradient is exactly zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 7) / 7)


class NaNGradient(nn.Module):
    """Finite logits, but 0 * d sqrt(x)/dx at x = 0 makes the input gradient NaN."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 0 * torch.sqrt(x).flatten(1).sum(dim=1, keepdim=True)


class StraightThrough(nn.Module):
    """Value of the model, gradient of a fixed random linear map: a constant, uninformative Jacobian."""

    def __init__(self, model: nn.Module, in_shape: tuple[int, ...], num_classes: int, seed: int = 3) -> None:
        super().__init__()
        self.inner = model
        g = torch.Generator().manual_seed(seed)
        numel = 1
        for s in in_shape:
            numel *= s
        self.register_buffer("jac", torch.randn(numel, num_classes, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.inner(x.detach())
        return value + ((x - x.detach()).flatten(1) @ self.jac)


class ChannelMeans(nn.Module):
    """Class = which colour channel is brightest: 100 * cos(centred channel means, e_k); 3 classes.

    Huge-eps PGD flips it easily (shift the channel means); random sign noise barely moves the means.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("class_emb", torch.eye(3))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(2, 3))
        f = m - m.mean(dim=1, keepdim=True)
        return 100 * F.normalize(f, dim=-1) @ self.class_emb.t()


def channel_batch(n: int, size: int = 8, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label channel is 0.2 brighter than the others, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.4 + 0.1 * torch.rand(n, 3, size, size, generator=g)
    x[torch.arange(n), y] += 0.2
    return x.clamp(0, 1), y

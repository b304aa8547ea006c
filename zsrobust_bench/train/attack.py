"""The inner attack of adversarial training: Linf PGD in [0,1] pixel space, CE summed in fp32.

The caller puts the model in eval mode first (TeCoA's recipe); random starts come from a
generator keyed by (seed, step) over the whole global batch, so a 2-process run draws the same
noise for each sample as a 1-process run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def global_uniform(
    seed: int,
    step: int,
    global_shape: tuple[int, ...],
    rows: slice,
    device: torch.device | str = "cpu",
    salt: int = 0,
) -> torch.Tensor:
    """Uniform[-1,1] noise for the rows `rows` of a global batch, from a (seed, step, salt) generator
    on `device` (drawn for the whole global batch, so every process count sees the same noise)."""
    g = torch.Generator(device=device).manual_seed((seed * 1_000_003 + step * 7919 + salt) & ((1 << 63) - 1))
    return (torch.rand(global_shape, generator=g, device=device) * 2 - 1)[rows]


def pgd_linf(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
    start: torch.Tensor | None = None,
    autocast: Callable[[], object] | None = None,
) -> torch.Tensor:
    """x + delta with ||delta||_inf <= eps, x + delta in [0,1], after `steps` signed-gradient ascent steps on CE.

    `start` is the random start in [-1,1] units of eps (None: start at x).
    """
    if eps <= 0 or steps <= 0:
        return x.detach()
    delta = torch.zeros_like(x) if start is None else (start.to(x) * eps)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            if autocast is not None:
                with autocast():
                    logits = logits_fn(x + delta)
            else:
                logits = logits_fn(x + delta)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    return (x + delta).detach()

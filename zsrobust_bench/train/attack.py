"""The inner attack of adversarial training: Linf PGD in [0,1] pixel space, a loss summed in fp32
(CE for TeCoA, squared L2 to the frozen embedding for FARE), optionally with FARE's momentum.

The caller chooses the model's mode (the trainer uses eval mode, see docs/fidelity_recipes.md);
random starts come from a generator keyed by (seed, step) over the whole global batch, so a
2-process run draws the same noise for each sample as a 1-process run.
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


def ce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TeCoA's inner loss: cross-entropy of fp32 logits, summed over the batch."""
    return F.cross_entropy(logits.float(), y, reduction="sum")


def sq_l2_sum(emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FARE's loss summed over the batch: squared L2 distance of each embedding to its target
    (R-FARE train/adversarial_training_clip.py:509-521 `l2`: sum over the embedding dimension)."""
    return (emb.float() - target.float()).pow(2).sum()


def pgd_linf(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
    start: torch.Tensor | None = None,
    autocast: Callable[[], object] | None = None,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = ce_sum,
    momentum: float = 0.0,
    clamp_start: bool = True,
) -> torch.Tensor:
    """x + delta with ||delta||_inf <= eps, x + delta in [0,1], after `steps` signed-gradient ascent
    steps on `loss_fn(logits_fn(x + delta), y)`.

    `start` is the random start in [-1,1] units of eps (None: start at x); `clamp_start=False` keeps
    x + start outside [0,1] for the first gradient, as FARE does (R-FARE adversarial_training_clip.py:318).
    `momentum` > 0 is FARE's step (R-FARE train/pgd_train.py:44-52): v = sign(momentum * v + sign(g)),
    delta += step_size * v, with v stored already sign-normalised.
    """
    if eps <= 0 or steps <= 0:
        return x.detach()
    delta = torch.zeros_like(x) if start is None else (start.to(x) * eps)
    if clamp_start:
        delta = (x + delta).clamp(0, 1) - x
    delta = delta.detach()
    velocity = torch.zeros_like(x) if momentum else None
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            if autocast is not None:
                with autocast():
                    logits = logits_fn(x + delta)
            else:
                logits = logits_fn(x + delta)
            loss = loss_fn(logits, y)
            (grad,) = torch.autograd.grad(loss, delta)
        direction = grad.sign()
        if velocity is not None:
            velocity = (momentum * velocity + direction).sign()
            direction = velocity
        delta = (delta.detach() + step_size * direction).clamp(-eps, eps)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    return (x + delta).detach()

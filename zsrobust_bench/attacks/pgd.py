"""Projected gradient descent in pixel space (Linf sign steps or L2 normalised steps).

Worst case over iterates: a sample counts as broken if any evaluated iterate (the random start
included) is misclassified, so stopping a broken sample early never changes its outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..protocols.enums import ATTACK_NORMS
from .base import PoolState, StepwiseAttack, sample_generator
from .losses import LOSS_REDUCTION, LOSS_TARGET, get_loss


def _per_sample_uniform(
    ids: torch.Tensor, shape: tuple[int, ...], seed: int, name: str, restart: int
) -> torch.Tensor:
    """Uniform[-1,1] noise for each sample from its own generator (independent of batch packing)."""
    rows = [
        torch.rand(shape, generator=sample_generator(seed, name, int(i), restart)) * 2 - 1
        for i in ids.tolist()
    ]
    return torch.stack(rows) if rows else torch.zeros((0, *shape))


def _per_sample_l2_ball(
    ids: torch.Tensor, shape: tuple[int, ...], seed: int, name: str, restart: int
) -> torch.Tensor:
    """Uniform samples from the unit L2 ball, one generator per sample."""
    rows = []
    numel = 1
    for s in shape:
        numel *= s
    for i in ids.tolist():
        g = sample_generator(seed, name, int(i), restart)
        v = torch.randn(shape, generator=g)
        r = torch.rand((), generator=g) ** (1.0 / numel)
        rows.append(v / v.norm().clamp_min(1e-12) * r)
    return torch.stack(rows) if rows else torch.zeros((0, *shape))


class PGD(StepwiseAttack):
    """PGD with random start, optional restarts, CE or CW-margin loss, Linf or L2.

    `momentum` > 0 is FARE's Linf step (R-FARE train/pgd_train.py:44-52): v = sign(momentum * v +
    sign(g)), delta += step_size * v. `final_iterate` runs the same steps from a caller-given start
    without the per-iterate check: the inner maximisation of adversarial training.
    """

    def __init__(
        self,
        eps: float,
        steps: int = 100,
        step_size: float | None = None,
        norm: str = "Linf",
        loss: str = "ce",
        random_start: bool = True,
        restarts: int = 1,
        name: str | None = None,
        step_fraction: float | None = None,
        momentum: float = 0.0,
    ) -> None:
        super().__init__(eps)
        if norm not in ATTACK_NORMS:
            raise ValueError(f"PGD norm must be Linf or L2, got {norm!r}")
        if steps < 0 or restarts < 1:
            raise ValueError("PGD needs steps >= 0 and restarts >= 1")
        self.total_steps = int(steps)
        if step_size is not None and step_fraction is not None:
            raise ValueError("PGD takes step_size or step_fraction (of eps), not both")
        if step_fraction is not None and not 0 < step_fraction <= 1:
            raise ValueError(f"PGD step_fraction must be in (0, 1], got {step_fraction}")
        default_fraction = 1 / 4 if norm == "Linf" else 1 / 5
        self.step_fraction = None if step_size is not None else float(step_fraction or default_fraction)
        self.step_size = float(step_size) if step_size is not None else self.step_fraction * eps
        self.norm = norm
        self.loss_name = loss
        self.loss = get_loss(loss)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.name = name or ("pgd" if loss == "ce" else f"pgd-{loss}")
        if not 0 <= momentum < 1:
            raise ValueError(f"PGD momentum must be in [0, 1), got {momentum}")
        if momentum and norm != "Linf":
            raise ValueError("PGD momentum is FARE's sign step: Linf only")
        self.momentum = float(momentum)

    def params(self) -> dict[str, Any]:
        return {
            "attack": self.name,
            "norm": self.norm,
            "eps": self.eps,
            "steps": self.total_steps,
            "step_size": self.step_size,
            **({"step_fraction": self.step_fraction} if self.step_fraction is not None else {}),
            "loss": self.loss_name,
            "loss_reduction": LOSS_REDUCTION[self.loss_name],
            "loss_dtype": "fp32",
            "random_start": self.random_start,
            "restarts": self.restarts,
            **({"momentum": self.momentum} if self.momentum else {}),
            "iterate": "worst-case over iterates",
        }

    def _start(self, x: torch.Tensor, ids: torch.Tensor, seed: int, restart: int) -> torch.Tensor:
        if not self.random_start or self.eps == 0:
            return torch.zeros_like(x)
        shape = tuple(x.shape[1:])
        if self.norm == "Linf":
            noise = _per_sample_uniform(ids, shape, seed, self.name, restart) * self.eps
        else:
            noise = _per_sample_l2_ball(ids, shape, seed, self.name, restart) * self.eps
        noise = noise.to(device=x.device, dtype=x.dtype)
        return (x + noise).clamp(0, 1) - x

    def init(
        self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, seed: int, restart: int = 0
    ) -> PoolState:
        if LOSS_TARGET[self.loss_name] != "label":
            raise ValueError(
                f"{self.name}: loss {self.loss_name!r} ascends an embedding distance; the stepwise "
                "evaluation needs class labels (final_iterate runs it)"
            )
        n = x.shape[0]
        ids = ids.to("cpu", torch.int64)
        return PoolState(
            x=x,
            y=y,
            ids=ids,
            delta=self._start(x, ids, seed, restart),
            step=torch.zeros(n, dtype=torch.int64, device=x.device),
            restart=torch.full((n,), restart, dtype=torch.int64, device=x.device),
            extra={
                "seed": torch.full((n,), seed, dtype=torch.int64, device=x.device),
                "nonfinite": torch.zeros(n, dtype=torch.bool, device=x.device),
                **({"velocity": torch.zeros_like(x)} if self.momentum else {}),
            },
        )

    def _project(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "Linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (self.eps / norms).clamp(max=1.0).view(-1, *([1] * (delta.dim() - 1)))
        return (x + delta).clamp(0, 1) - x

    def _gradient(
        self, model: Callable[[torch.Tensor], torch.Tensor], x_adv: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient of the loss at `x_adv`, the model's output there); fails if the output has no
        gradient path to the input."""
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            out = model(x_adv)
            loss = self.loss(out, target)
            grad = torch.autograd.grad(loss, x_adv, allow_unused=True)[0] if loss.requires_grad else None
        if grad is None:
            raise RuntimeError(
                f"{self.name}: the logits have no gradient path to the input (forward detached or under "
                "no_grad); gradient attacks cannot evaluate this model"
            )
        return grad, out

    def _direction(self, grad: torch.Tensor, memory: dict[str, torch.Tensor]) -> torch.Tensor:
        """The Linf step direction: sign(g), or FARE's momentum sign with its velocity kept in `memory`."""
        direction = grad.sign()
        if self.momentum:
            direction = (self.momentum * memory["velocity"] + direction).sign()
            memory["velocity"] = direction
        return direction

    @staticmethod
    def _verdict(state: PoolState, logits: torch.Tensor) -> torch.Tensor:
        """Rows this iterate misclassifies (finite logits only); records the non-finite rows in the state."""
        logits = logits.detach()
        finite = torch.isfinite(logits).all(dim=1)
        state.extra["nonfinite"] = ~finite
        return (logits.argmax(dim=1) != state.y) & finite

    def step(self, model: nn.Module, state: PoolState) -> tuple[PoolState, torch.Tensor]:
        grad, logits = self._gradient(model, state.x + state.delta, state.y)
        # A non-finite gradient entry gives no direction; zero it so delta stays finite.
        grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
        broken = self._verdict(state, logits)
        can_step = (state.step < self.total_steps).view(-1, *([1] * (grad.dim() - 1)))
        if self.norm == "Linf":
            update = self.step_size * self._direction(grad, state.extra)
        else:
            gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
            update = self.step_size * grad / gnorm
        delta = torch.where(can_step, self._project(state.x, state.delta + update), state.delta)
        new = PoolState(
            x=state.x,
            y=state.y,
            ids=state.ids,
            delta=delta.detach(),
            step=state.step + 1,
            restart=state.restart,
            extra=state.extra,
        )
        return new, broken

    def finished(self, state: PoolState) -> torch.Tensor:
        # `step` counts evaluated iterates; iterates 0..total_steps are all checked.
        return state.step > self.total_steps

    def last_iterate_step(self, model: nn.Module, state: PoolState) -> tuple[PoolState, torch.Tensor] | None:
        """`step` at the last iterate: the same forward, no backward (no row takes an update there).

        The forward runs with gradients enabled exactly as in `step` (inference mode would pick other
        attention kernels), so the logits are bitwise those `step` computes. None for a subclass with
        another `step`, which this shortcut would not mirror.
        """
        if type(self).step is not PGD.step:
            return None
        x_adv = (state.x + state.delta).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x_adv)
        return replace(state, step=state.step + 1), self._verdict(state, logits)

    def start_from(self, x: torch.Tensor, noise: torch.Tensor | None, clamp: bool = True) -> torch.Tensor:
        """The start perturbation for caller-drawn `noise` in [-1,1] units of eps (None: x itself);
        `clamp=False` leaves x + delta outside [0,1] for the first gradient, as FARE's training does
        (R-FARE train/adversarial_training_clip.py:318)."""
        delta = torch.zeros_like(x) if noise is None else noise.to(x) * self.eps
        if clamp:
            delta = (x + delta).clamp(0, 1) - x
        return delta.detach()

    def final_iterate(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        target: torch.Tensor,
        delta: torch.Tensor,
    ) -> torch.Tensor:
        """x + delta after `steps` ascent steps on loss(model(x + delta), target) from `delta`.

        The inner attack of adversarial training: no per-iterate check, no restarts, and the raw
        gradient's sign (a non-finite gradient shows in the training loss rather than being zeroed).
        The model's train/eval mode is the caller's.
        """
        memory = {"velocity": torch.zeros_like(x)} if self.momentum else {}
        for _ in range(self.total_steps):
            grad, _ = self._gradient(model, x + delta, target)
            delta = self._project(x, delta.detach() + self.step_size * self._direction(grad, memory)).detach()
        return (x + delta).detach()

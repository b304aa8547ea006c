"""Attack interfaces the engine drives.

Two kinds:
- `StepwiseAttack` (PGD-like): the engine owns the loop, steps a pool of samples, drops a sample
  the moment it is misclassified at any iterate and refills the pool from the queue. Every
  per-sample quantity (random start, step counter) depends only on the sample's id and the run
  seed, so the outcome does not depend on how samples were packed into batches.
- `BatchAttack` (APGD, FAB, Square via pyautoattack): run once on a batch of still-robust samples.

Both return, per sample, whether it was broken and (where meaningful) the step that broke it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def sample_generator(seed: int, attack: str, sample_id: int, restart: int = 0) -> torch.Generator:
    """A CPU generator seeded from (run seed, attack, sample id, restart): never the clock or global RNG."""
    digest = hashlib.sha256(f"zsbench-attack:{seed}:{attack}:{sample_id}:{restart}".encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


@dataclass
class PoolState:
    """State of the samples currently being attacked by a stepwise attack (rows align)."""

    x: torch.Tensor  # clean inputs in [0,1]
    y: torch.Tensor  # labels
    ids: torch.Tensor  # sample ids (dataset indices), int64, on CPU
    delta: torch.Tensor  # current perturbation
    step: torch.Tensor  # iterations done per sample (int64, on x.device)
    restart: torch.Tensor  # restart number per sample (int64, on x.device)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def select(self, keep: torch.Tensor) -> PoolState:
        keep_cpu = keep.cpu()
        return PoolState(
            x=self.x[keep],
            y=self.y[keep],
            ids=self.ids[keep_cpu],
            delta=self.delta[keep],
            step=self.step[keep],
            restart=self.restart[keep],
            extra={k: v[keep] for k, v in self.extra.items()},
        )

    @staticmethod
    def cat(states: list[PoolState]) -> PoolState:
        keys = states[0].extra.keys()
        return PoolState(
            x=torch.cat([s.x for s in states]),
            y=torch.cat([s.y for s in states]),
            ids=torch.cat([s.ids for s in states]),
            delta=torch.cat([s.delta for s in states]),
            step=torch.cat([s.step for s in states]),
            restart=torch.cat([s.restart for s in states]),
            extra={k: torch.cat([s.extra[k] for s in states]) for k in keys},
        )

    def __len__(self) -> int:
        return int(self.y.shape[0])


class Attack(ABC):
    """Common surface: a registry name, its parameters (recorded in results) and the threat model."""

    name: str = "attack"
    norm: str = "Linf"

    def __init__(self, eps: float) -> None:
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = float(eps)

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Every parameter that changes the outcome, for results.json."""


class StepwiseAttack(Attack):
    """An attack the engine advances one iteration at a time over a refillable pool."""

    total_steps: int

    @abstractmethod
    def init(
        self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, seed: int, restart: int = 0
    ) -> PoolState:
        """Start samples (random start drawn per sample id)."""

    @abstractmethod
    def step(self, model: nn.Module, state: PoolState) -> tuple[PoolState, torch.Tensor]:
        """One iteration for every pool row. Returns the new state and a bool mask of rows whose
        perturbed input was misclassified at the point evaluated in this call (before the update)."""

    def finished(self, state: PoolState) -> torch.Tensor:
        """Rows that have used all their iterations."""
        return state.step >= self.total_steps

    def last_iterate_step(self, model: nn.Module, state: PoolState) -> tuple[PoolState, torch.Tensor] | None:
        """`step` for a pool whose every row is at its last iterate, where the attack has a cheaper one with
        the same outcome (PGD: the forward alone); None: it has none and the pool calls `step`."""
        return None

    restarts: int = 1


class BatchAttack(Attack):
    """An attack run on a whole batch at once (e.g. through pyautoattack)."""

    @abstractmethod
    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (broken mask, adversarial inputs). The engine re-checks x_adv itself."""

"""The parameters of each AutoAttack component, declared once.

One frozen dataclass per attack: its fields are the parameters a protocol may set, with the
defaults `AutoAttack(version='standard')` gives the reference attack, in the order results.json
records them. The registry's accepted names, the results `params` and the keywords of the
pyautoattack call are all derived from these fields (a field whose pyautoattack keyword differs
names it in its metadata under `reference`). A target count is recorded as used,
min(requested, C - 1), and as requested.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from .base import Attack

TARGETS = "n_target_classes"


def n_targets(requested: int, num_classes: int) -> int:
    """Number of target classes actually used: min(requested, C - 1)."""
    if requested < 1:
        raise ValueError(f"{TARGETS} must be >= 1, got {requested}")
    return min(int(requested), int(num_classes) - 1)


def recorded_header(attack: Attack, num_classes: int, implementation: str) -> dict[str, Any]:
    """The first entries of every APGD/FAB/Square `params()`: which attack, whose code, threat model, classes."""
    return {
        "attack": attack.name,
        "implementation": implementation,
        "norm": attack.norm,
        "eps": attack.eps,
        "num_classes": num_classes,
    }


@dataclass(frozen=True)
class AttackSettings:
    """Base: coerces every field to its declared type (protocol overrides may arrive as text) and
    refuses a target count below one."""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):
            object.__setattr__(self, f.name, hints[f.name](getattr(self, f.name)))
        if TARGETS in self.names():
            n_targets(getattr(self, TARGETS), 2)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settable parameter names, in recording order."""
        return tuple(f.name for f in fields(cls))

    def recorded(self, num_classes: int) -> dict[str, Any]:
        """The settings as results.json records them (a target count as used, then as requested)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == TARGETS:
                out[TARGETS] = n_targets(value, num_classes)
                out[f"{TARGETS}_requested"] = value
            else:
                out[f.name] = value
        return out

    def reference_kwargs(self, num_classes: int) -> dict[str, Any]:
        """The settings as keywords of the pyautoattack constructor (a target count as used)."""
        return {
            f.metadata.get("reference", f.name): (
                n_targets(getattr(self, f.name), num_classes) if f.name == TARGETS else getattr(self, f.name)
            )
            for f in fields(self)
        }


@dataclass(frozen=True)
class APGDSettings(AttackSettings):
    """APGD on an untargeted loss (pyautoattack `APGDAttack`; also the engine's APGD)."""

    n_iter: int = 100  # iterations per run (the step-size checkpoints derive from it)
    n_restarts: int = 1  # random restarts
    rho: float = 0.75  # step halved when the loss rose in at most rho of the last moves
    eot_iter: int = 1  # gradients averaged per iterate (expectation over transformation)


@dataclass(frozen=True)
class APGDTargetedSettings(AttackSettings):
    """APGD on the targeted DLR loss (pyautoattack `APGDAttack_targeted`)."""

    n_iter: int = 100  # iterations per run
    n_restarts: int = 1  # random restarts per target
    n_target_classes: int = 9  # targets: the highest non-true logits, min(requested, C - 1)
    rho: float = 0.75  # step-size rule threshold, as APGD
    eot_iter: int = 1  # gradients averaged per iterate


@dataclass(frozen=True)
class FABTargetedSettings(AttackSettings):
    """Targeted FAB (pyautoattack `FABAttack_PT`)."""

    n_iter: int = 100  # iterations per run
    n_restarts: int = 1  # restarts per target
    n_target_classes: int = 9  # targets: the highest non-true logits, min(requested, C - 1)
    alpha_max: float = 0.1  # largest step bias towards the original point
    eta: float = 1.05  # overshoot of the projection step
    beta: float = 0.9  # backward step factor


@dataclass(frozen=True)
class SquareSettings(AttackSettings):
    """Square Attack on the margin loss (pyautoattack `SquareAttack`)."""

    n_queries: int = 5000  # model queries per sample
    p_init: float = 0.8  # initial fraction of pixels a square covers
    n_restarts: int = 1  # restarts
    # rescale the p schedule to n_queries (False: the schedule of 10,000 queries, as AutoAttack runs it)
    rescale_schedule: bool = field(default=False, metadata={"reference": "resc_schedule"})

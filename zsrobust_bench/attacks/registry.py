"""Attack registry: a name maps to a builder taking (eps, num_classes, **params), plus what it accepts.

`build_attack` returns None when an attack does not apply to a dataset (too few classes);
`skip_reason` says why, and `build_attacks` turns a protocol's attack list into the attacks that
run plus one record per requested attack (what ran, with every parameter, or why it was skipped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocols import ATTACK_BACKENDS
from .apgd import EngineAPGD
from .autoattack import APGD, APGDTargeted, FABTargeted, PyAutoAttackAdapter, Square
from .base import Attack
from .pgd import PGD
from .settings import APGDSettings, APGDTargetedSettings, n_targets

Builder = Callable[..., Attack | None]


@dataclass(frozen=True)
class AttackInfo:
    """A registered attack: its builder, the parameters it accepts and the fewest classes it needs."""

    name: str
    builder: Builder
    params: tuple[str, ...] | None  # None: not declared (not validated)
    min_classes: int
    description: str
    engine: Builder | None = None  # builder of the engine (slot-pool) implementation, where one exists


_ATTACKS: dict[str, AttackInfo] = {}


def register_attack(
    name: str, *, params: Sequence[str] | None = None, min_classes: int = 2, description: str = ""
) -> Callable[[Builder], Builder]:
    """Decorator registering `builder(eps, num_classes, **params)` under `name`."""

    def deco(fn: Builder) -> Builder:
        if name in _ATTACKS:
            raise ValueError(f"attack {name!r} registered twice")
        declared = tuple(params) if params is not None else None
        _ATTACKS[name] = AttackInfo(
            name, fn, declared, int(min_classes), description or (fn.__doc__ or "").strip()
        )
        return fn

    return deco


def attack_names() -> list[str]:
    """Every registered attack name, sorted."""
    return sorted(_ATTACKS)


def attack_info(name: str) -> AttackInfo:
    """The registry entry for `name`; unknown names fail with the known ones."""
    if name.startswith("torchattacks:"):  # any torchattacks attack, resolved by name (custom runs only)
        from .torchattacks_adapter import torchattacks_info

        return torchattacks_info(name)
    if name not in _ATTACKS:
        raise KeyError(f"unknown attack {name!r}; known: {attack_names()}")
    return _ATTACKS[name]


def skip_reason(name: str, num_classes: int) -> str | None:
    """Why attack `name` does not apply to a dataset with `num_classes` classes (None if it does)."""
    info = attack_info(name)
    if num_classes < info.min_classes:
        return f"{name} needs at least {info.min_classes} classes; the dataset has {num_classes}"
    return None


def register_engine(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering the engine implementation of an already registered attack."""

    def deco(fn: Builder) -> Builder:
        info = attack_info(name)
        if info.engine is not None:
            raise ValueError(f"engine implementation of {name!r} registered twice")
        _ATTACKS[name] = dataclasses.replace(info, engine=fn)
        return fn

    return deco


def build_attack(
    name: str, eps: float, num_classes: int, backend: str = "reference", **params: Any
) -> Attack | None:
    """Build attack `name` at `eps`; returns None when it does not apply (e.g. targeted with C <= 2).

    `backend="engine"` picks the engine implementation where one is registered (APGD-CE, APGD-T);
    other attacks have only their reference implementation.
    """
    if backend not in ATTACK_BACKENDS:
        raise ValueError(f"unknown attack backend {backend!r}; known: {list(ATTACK_BACKENDS)}")
    info = attack_info(name)
    if num_classes < 2:
        raise ValueError(f"a classification dataset needs at least 2 classes, got {num_classes}")
    if info.params is not None:
        unknown = sorted(set(params) - set(info.params))
        if unknown:
            raise ValueError(f"attack {name!r} has no parameter(s) {unknown}; it accepts {list(info.params)}")
    if skip_reason(name, num_classes) is not None:
        return None
    builder = info.engine if backend == "engine" and info.engine is not None else info.builder
    return builder(eps=eps, num_classes=num_classes, **params)


def build_attacks(
    steps: Sequence[tuple[str, Mapping[str, Any]]],
    eps: float,
    num_classes: int,
    norm: str = "Linf",
    backend: str = "reference",
) -> tuple[list[Attack], list[dict[str, Any]]]:
    """Build a protocol's attack sequence for one dataset and eps.

    Returns the attacks to run, in order, and one record per requested attack:
    {"requested", "ran" (name or None), "params" (of what ran) or "skipped" (reason)}.
    """
    attacks: list[Attack] = []
    records: list[dict[str, Any]] = []
    for name, params in steps:
        attack = build_attack(name, eps, num_classes, backend=backend, norm=norm, **dict(params))
        if attack is None:
            reason = skip_reason(name, num_classes) or f"{name} does not apply"
            records.append({"requested": name, "ran": None, "skipped": reason})
            continue
        attacks.append(attack)
        records.append({"requested": name, "ran": attack.name, "params": attack.params()})
    return attacks, records


_PGD_PARAMS = ("steps", "step_size", "step_fraction", "norm", "random_start", "restarts")
_APGD_PARAMS = (*APGDSettings.names(), "norm")


@register_attack(
    "pgd", params=_PGD_PARAMS, description="PGD on cross-entropy summed in fp32, worst case over iterates"
)
def _pgd(eps: float, num_classes: int, **p: Any) -> Attack:
    return PGD(eps, loss="ce", name="pgd", **p)


@register_attack(
    "pgd-cw", params=_PGD_PARAMS, description="TeCoA's CW: PGD on the margin loss -relu(z_y - max_j z_j + 50)"
)
def _pgd_cw(eps: float, num_classes: int, **p: Any) -> Attack:
    return PGD(eps, loss="cw", name="pgd-cw", **p)


@register_attack("apgd-ce", params=_APGD_PARAMS, description="APGD on cross-entropy (pyautoattack)")
def _apgd_ce(eps: float, num_classes: int, **p: Any) -> Attack:
    return APGD(eps, num_classes, loss="ce", **p)


@register_attack(
    "apgd-dlr", params=_APGD_PARAMS, min_classes=3, description="APGD on the DLR loss (pyautoattack)"
)
def _apgd_dlr(eps: float, num_classes: int, **p: Any) -> Attack:
    return APGD(eps, num_classes, loss="dlr", **p)


@register_attack(
    "apgd-t",
    params=(*APGDTargetedSettings.names(), "norm"),
    min_classes=3,
    description="APGD on targeted DLR, min(9, C-1) targets (pyautoattack); untargeted APGD-DLR when C == 3",
)
def _apgd_t(eps: float, num_classes: int, **p: Any) -> Attack:
    if num_classes == 3:
        # The reference targeted DLR loss reads the 4th-largest logit (IndexError with 3 classes).
        p.pop("n_target_classes", None)
        return APGD(
            eps,
            num_classes,
            loss="dlr",
            note="substitutes apgd-t: targeted DLR needs >= 4 classes, the dataset has 3",
            **p,
        )
    return APGDTargeted(eps, num_classes, **p)


# FAB-T and Square take exactly their settings (and the norm): the adapter class is the builder
_ADAPTERS: tuple[tuple[str, type[PyAutoAttackAdapter], str], ...] = (
    ("fab-t", FABTargeted, "targeted FAB, min(9, C-1) targets (pyautoattack)"),
    (
        "square",
        Square,
        "Square Attack, margin loss (pyautoattack); not run on 2-class datasets (APGD-CE alone)",
    ),
)
for _name, _adapter, _description in _ADAPTERS:
    register_attack(
        _name, params=(*_adapter.settings_type.names(), "norm"), min_classes=3, description=_description
    )(_adapter)


def _engine_apgd_ce(eps: float, num_classes: int, **p: Any) -> Attack:
    """Engine APGD-CE (same parameters and outcome rule as the reference)."""
    return EngineAPGD(eps, num_classes, loss="ce", **p)


def _engine_apgd_t(eps: float, num_classes: int, **p: Any) -> Attack:
    """Engine APGD-T over min(n_target_classes, C-1) targets; untargeted APGD-DLR with 3 classes, as the reference."""
    if num_classes == 3:
        p.pop("n_target_classes", None)
        return EngineAPGD(eps, num_classes, loss="dlr", **p)
    requested = int(p.pop("n_target_classes", APGDTargetedSettings.n_target_classes))
    return EngineAPGD(
        eps, num_classes, loss="dlr-targeted", n_target_classes=n_targets(requested, num_classes), **p
    )


def _engine_apgd_dlr(eps: float, num_classes: int, **p: Any) -> Attack:
    """Engine APGD on the untargeted DLR loss."""
    return EngineAPGD(eps, num_classes, loss="dlr", **p)


register_engine("apgd-ce")(_engine_apgd_ce)
register_engine("apgd-dlr")(_engine_apgd_dlr)
register_engine("apgd-t")(_engine_apgd_t)

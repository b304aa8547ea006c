"""Named, frozen evaluation protocols. A change to any parameter makes a new version.

A run may override parameters; it is then marked `custom` in results.json and the leaderboard
never ranks it with the protocol.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .errors import ZSBenchError


@dataclass(frozen=True)
class AttackStep:
    """One attack in a protocol's sequence, with its parameters (eps comes from the protocol)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    description: str
    suite: str | None
    norm: str  # "Linf", "L2" or "none"
    eps: tuple[float, ...]  # ascending
    attacks: tuple[AttackStep, ...]
    samples: int | None  # None = full split
    samples_by_dataset: dict[str, int] = field(default_factory=dict)
    prompt_set: str = "tecoa"
    precision: str = "fp32"
    seed: int = 0

    def samples_for(self, dataset: str) -> int | None:
        return self.samples_by_dataset.get(dataset, self.samples)

    def params(self) -> dict[str, Any]:
        """Every parameter, JSON-ready, as recorded in results.json."""
        return {
            "suite": self.suite,
            "norm": self.norm,
            "eps": list(self.eps),
            "eps_labels": [eps_label(e) for e in self.eps],
            "attacks": [a.as_dict() for a in self.attacks],
            "samples": self.samples,
            "samples_by_dataset": dict(self.samples_by_dataset),
            "prompt_set": self.prompt_set,
            "precision": self.precision,
            "seed": self.seed,
        }


def eps_label(eps: float) -> str:
    """Human label for an epsilon: '1/255' when it is a multiple of 1/255, else the number."""
    frac = Fraction(eps * 255).limit_denominator(1000)
    if abs(float(frac) - eps * 255) < 1e-9 and frac.denominator == 1:
        return f"{frac.numerator}/255"
    return f"{eps:g}"


def parse_eps(text: str) -> float:
    """Parse '1/255', '4/255' or a float."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except ValueError as exc:
        raise ZSBenchError(f"cannot parse epsilon {text!r}", "use a number or a fraction like 4/255") from exc


_PGD100 = {"steps": 100, "step_size": 1 / 255, "random_start": True, "restarts": 1}

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        Protocol(
            name="tecoa-pgd",
            version=1,
            description="TeCoA lineage: Linf 1/255, PGD-100 (step 1/255, random start, CE summed), full test splits",
            suite="tecoa16",
            norm="Linf",
            eps=(1 / 255,),
            attacks=(AttackStep("pgd", dict(_PGD100)),),
            samples=None,
        ),
        Protocol(
            name="tecoa-cw",
            version=1,
            description="TeCoA's CW: PGD-100 on the CW margin loss, Linf 1/255, full test splits",
            suite="tecoa16",
            norm="Linf",
            eps=(1 / 255,),
            attacks=(AttackStep("pgd-cw", dict(_PGD100)),),
            samples=None,
        ),
        Protocol(
            name="fare-aa",
            version=1,
            description="FARE lineage: APGD-CE + APGD-T (100 it, min(9,C-1) targets), Linf 2/255 and 4/255, "
            "1000 seeded samples per dataset (ImageNet 5000), CLIP template ensembles",
            suite="fare14",
            norm="Linf",
            eps=(2 / 255, 4 / 255),
            attacks=(
                AttackStep("apgd-ce", {"n_iter": 100, "n_restarts": 1}),
                AttackStep("apgd-t", {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}),
            ),
            samples=1000,
            samples_by_dataset={"imagenet": 5000},
            prompt_set="clip",
        ),
        Protocol(
            name="aa-standard",
            version=1,
            description="Full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square), Linf 1/255, 1000 seeded samples",
            suite="tecoa16",
            norm="Linf",
            eps=(1 / 255,),
            attacks=(
                AttackStep("apgd-ce", {"n_iter": 100, "n_restarts": 1}),
                AttackStep("apgd-t", {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}),
                AttackStep("fab-t", {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9}),
                AttackStep("square", {"n_queries": 5000, "p_init": 0.8, "n_restarts": 1}),
            ),
            samples=1000,
        ),
        Protocol(
            name="clean",
            version=1,
            description="Clean zero-shot accuracy only, full test splits",
            suite=None,
            norm="none",
            eps=(),
            attacks=(),
            samples=None,
        ),
        Protocol(
            name="synthetic-pgd",
            version=1,
            description="Demo protocol on the synthetic world: Linf 4/255, PGD-20 (step 1/255), 500 seeded samples",
            suite="synthetic",
            norm="Linf",
            eps=(4 / 255,),
            attacks=(AttackStep("pgd", {"steps": 20, "step_size": 1 / 255, "random_start": True, "restarts": 1}),),
            samples=500,
        ),
    ]
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ZSBenchError(f"unknown protocol {name!r}", f"known protocols: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


def list_protocols() -> list[Protocol]:
    return list(PROTOCOLS.values())


def apply_overrides(protocol: Protocol, overrides: dict[str, Any]) -> tuple[Protocol, bool]:
    """Apply user overrides. Returns (protocol, custom) where custom is True iff anything changed.

    Keys: top-level fields (eps, norm, samples, prompt_set, precision, seed) and attack parameters
    as `<attack>.<param>` (e.g. `pgd.steps`) or bare `steps`/`step_size` applied to every attack
    that has them. The seed is not part of the frozen definition only if it equals the default.
    """
    if not overrides:
        return protocol, False
    changed = False
    top: dict[str, Any] = {}
    attacks = [AttackStep(a.name, dict(a.params)) for a in protocol.attacks]
    for key, value in overrides.items():
        if value is None:
            continue
        if key in {"eps", "norm", "samples", "prompt_set", "precision", "seed"}:
            if key == "eps":
                value = tuple(sorted(float(v) for v in value))
            if getattr(protocol, key) != value:
                top[key] = value
                changed = True
            continue
        attack_name, _, param = key.rpartition(".")
        targets = [a for a in attacks if (not attack_name or a.name == attack_name)]
        hit = False
        for a in targets:
            if param in a.params or attack_name:
                if a.params.get(param) != value:
                    a.params[param] = value
                    changed = True
                hit = True
        if not hit:
            raise ZSBenchError(
                f"protocol {protocol.name} has no parameter {key!r}",
                "see `zsbench protocols list` for every parameter",
            )
    new = dataclasses.replace(protocol, attacks=tuple(attacks), **top)
    return new, changed

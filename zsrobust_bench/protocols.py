"""Named, frozen evaluation protocols. A change to any parameter makes a new version.

A run may override parameters; it is then marked `custom` in results.json and the leaderboard
never ranks it with the protocol. `Protocol.fingerprint()` hashes every parameter, so a test can
pin each frozen version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .errors import ZSBenchError


@dataclass(frozen=True)
class AttackStep:
    """One attack in a protocol's sequence, with its parameters (eps and norm come from the protocol)."""

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

    def attack_steps(self) -> list[tuple[str, dict[str, Any]]]:
        """(attack name, params) pairs, the input of `attacks.registry.build_attacks`."""
        return [(a.name, dict(a.params)) for a in self.attacks]

    def fingerprint(self) -> str:
        """sha256 of name, version and every parameter (canonical JSON)."""
        blob = json.dumps({"name": self.name, "version": self.version, **self.params()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


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


# Reference settings, spelled out so every one of them is recorded (AutoAttack version='standard').
_PGD100 = {"steps": 100, "step_size": 1 / 255, "random_start": True, "restarts": 1}
_APGD_CE = {"n_iter": 100, "n_restarts": 1, "rho": 0.75, "eot_iter": 1}
_APGD_T = {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "rho": 0.75, "eot_iter": 1}
_FAB_T = {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}
_SQUARE = {"n_queries": 5000, "p_init": 0.8, "n_restarts": 1, "rescale_schedule": False}

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
            description="FARE lineage: APGD-CE + APGD-T (100 it, min(9,C-1) targets; APGD-CE alone when C <= 2), "
            "Linf 2/255 and 4/255, 1000 seeded samples per dataset (ImageNet 5000), CLIP template ensembles",
            suite="fare14",
            norm="Linf",
            eps=(2 / 255, 4 / 255),
            attacks=(AttackStep("apgd-ce", dict(_APGD_CE)), AttackStep("apgd-t", dict(_APGD_T))),
            samples=1000,
            samples_by_dataset={"imagenet": 5000},
            prompt_set="clip",
        ),
        Protocol(
            name="aa-standard",
            version=1,
            description="Full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; APGD-CE alone when C <= 2), "
            "Linf 1/255, 1000 seeded samples",
            suite="tecoa16",
            norm="Linf",
            eps=(1 / 255,),
            attacks=(
                AttackStep("apgd-ce", dict(_APGD_CE)),
                AttackStep("apgd-t", dict(_APGD_T)),
                AttackStep("fab-t", dict(_FAB_T)),
                AttackStep("square", dict(_SQUARE)),
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
            attacks=(
                AttackStep("pgd", {"steps": 20, "step_size": 1 / 255, "random_start": True, "restarts": 1}),
            ),
            samples=500,
        ),
    ]
}

TOP_LEVEL = ("eps", "norm", "samples", "prompt_set", "precision", "seed")
NORMS = ("Linf", "L2")
PRECISIONS = ("fp32", "bf16", "fp16")
# Bare names that mean the same thing for PGD and for the pyautoattack attacks.
ALIASES: dict[str, tuple[str, ...]] = {"steps": ("steps", "n_iter"), "restarts": ("restarts", "n_restarts")}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ZSBenchError(f"unknown protocol {name!r}", f"known protocols: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


def list_protocols() -> list[Protocol]:
    return list(PROTOCOLS.values())


def _bad(protocol: Protocol, key: str, why: str) -> ZSBenchError:
    return ZSBenchError(
        f"protocol {protocol.name}: cannot set {key!r}: {why}", "see `zsbench protocols list`"
    )


def _coerce(protocol: Protocol, key: str, value: Any, like: Any) -> Any:
    """Convert a value given as text (CLI, config) to the type of the frozen value it replaces."""
    if not isinstance(value, str) or isinstance(like, str) or like is None:
        return value
    text = value.strip()
    if isinstance(like, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise _bad(protocol, key, f"expected true or false, got {value!r}")
    try:
        return int(text) if isinstance(like, int) else parse_eps(text)
    except (ValueError, ZSBenchError) as exc:
        raise _bad(protocol, key, f"expected a {type(like).__name__}, got {value!r}") from exc


def _top_level(protocol: Protocol, key: str, value: Any) -> Any:
    if key == "eps":
        if not protocol.attacks:
            raise _bad(protocol, key, "this protocol runs no attack")
        values = [value] if isinstance(value, (str, int, float)) else list(value)
        eps = tuple(sorted(parse_eps(v) if isinstance(v, str) else float(v) for v in values))
        if not eps or any(e < 0 for e in eps):
            raise _bad(protocol, key, "eps must be one or more non-negative numbers")
        return eps
    if key == "norm":
        if not protocol.attacks or value not in NORMS:
            raise _bad(protocol, key, f"norm must be one of {NORMS} on a protocol with attacks")
        return value
    if key == "precision" and value not in PRECISIONS:
        raise _bad(protocol, key, f"precision must be one of {PRECISIONS}")
    if key == "samples":
        value = None if value in (None, "full", "all") else _coerce(protocol, key, value, 0)
        if value is not None and value <= 0:
            raise _bad(protocol, key, "samples must be positive (or 'full')")
        return value
    if key == "seed":
        return _coerce(protocol, key, value, 0)
    return value


def apply_overrides(protocol: Protocol, overrides: dict[str, Any]) -> tuple[Protocol, bool]:
    """Apply user overrides. Returns (protocol, custom) where custom is True iff anything changed.

    Keys: top-level fields (eps, norm, samples, prompt_set, precision, seed) and attack parameters
    as `<attack>.<param>` (e.g. `pgd.steps`, `square.n_queries`) or a bare name applied to every
    attack that has it; `steps` and `restarts` also set `n_iter` and `n_restarts`. A value equal to
    the frozen one changes nothing. Overriding `samples` applies to every dataset (it replaces the
    per-dataset counts). Unknown parameters and invalid values fail with a clear message.
    """
    from .attacks.registry import attack_info, build_attack

    if not overrides:
        return protocol, False
    top: dict[str, Any] = {}
    attacks = [AttackStep(a.name, dict(a.params)) for a in protocol.attacks]
    frozen = {a.name: dict(a.params) for a in protocol.attacks}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "attacks":  # replace the attack list, e.g. [("torchattacks:PGD", {"steps": 50})]
            attacks = [AttackStep(str(n), dict(p)) for n, p in value]
            frozen = {}
            continue
        if key in TOP_LEVEL:
            new = _top_level(protocol, key, value)
            if getattr(protocol, key) != new:
                top[key] = new
            continue
        attack_name, _, param = key.rpartition(".")
        targets = [a for a in attacks if not attack_name or a.name == attack_name]
        if attack_name and not targets:
            raise _bad(
                protocol, key, f"it runs no attack {attack_name!r} (it runs {[a.name for a in attacks]})"
            )
        hit = False
        for a in targets:
            accepted = attack_info(a.name).params or tuple(a.params)
            names = ALIASES.get(param, (param,)) if not attack_name else (param,)
            for p in names:
                if p in accepted:
                    a.params[p] = _coerce(protocol, key, value, frozen.get(a.name, {}).get(p))
                    hit = True
        if not hit:
            raise _bad(protocol, key, "no attack of this protocol has that parameter")
    if "samples" in top:
        top["samples_by_dataset"] = {}
    new_attacks = tuple(attacks)
    changed = bool(top) or any(a.name not in frozen or a.params != frozen[a.name] for a in new_attacks)
    new = dataclasses.replace(protocol, attacks=new_attacks, **top)
    for eps in new.eps:
        for a in new.attacks:
            try:
                build_attack(a.name, eps, 10, norm=new.norm, **a.params)
            except (TypeError, ValueError) as exc:
                raise _bad(protocol, a.name, str(exc)) from exc
    return new, changed

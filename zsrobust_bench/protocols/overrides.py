"""User overrides of a frozen protocol (a run that uses any is marked `custom`) and the attack backend
choice, which changes how APGD runs but not what is run."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ZSBenchError
from .enums import ATTACK_NORMS, Norm, Precision
from .eps import parse_eps
from .model import AttackStep, Protocol

# "engine": attacks with a slot-pool implementation (PGD, APGD) run in the engine; "reference":
# APGD through pyautoattack (FAB-T and Square always run through pyautoattack).
ATTACK_BACKENDS = ("engine", "reference")
TOP_LEVEL = ("eps", "norm", "samples", "prompt_set", "precision", "seed")
# Bare names that mean the same thing for PGD and for the pyautoattack attacks.
ALIASES: dict[str, tuple[str, ...]] = {"steps": ("steps", "n_iter"), "restarts": ("restarts", "n_restarts")}


def with_backend(protocol: Protocol, backend: str | None) -> Protocol:
    """The protocol with APGD run by `backend` ("engine" or "reference"); None keeps the protocol's."""
    if backend is None or backend == protocol.attack_backend:
        return protocol
    if backend not in ATTACK_BACKENDS:
        raise ZSBenchError(
            f"unknown attack backend {backend!r}", f"choose one of {', '.join(ATTACK_BACKENDS)}"
        )
    return dataclasses.replace(protocol, attack_backend=backend)


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
        norms = tuple(str(n) for n in ATTACK_NORMS)
        if not protocol.attacks or value not in norms:
            raise _bad(protocol, key, f"norm must be one of {norms} on a protocol with attacks")
        return Norm(value)
    if key == "precision":
        return Precision.parse(value, f"protocol {protocol.name}: cannot set 'precision'")
    if key == "samples":
        value = None if value in (None, "full", "all") else _coerce(protocol, key, value, 0)
        if value is not None and value <= 0:
            raise _bad(protocol, key, "samples must be positive (or 'full')")
        return value
    if key == "seed":
        return _coerce(protocol, key, value, 0)
    return value


STEP_KEYS = ("step_size", "step_fraction")
MAX_FOLLOWING_FRACTION = 1 / 4  # standard PGD step (also the masking check's): eps/4
MIN_TRAVEL = 2.0  # steps * step >= 2 * eps: room to cross the whole ball from the random start


def following_step_fraction(ratio: float, steps: int) -> float:
    """Step size as a fraction of eps for a PGD run whose eps or step count was overridden.

    Keeps the protocol's step/eps `ratio` but at most 1/4 (a ratio of 1, TeCoA's 1/255 at 1/255,
    makes every sign step jump between corners of the ball, which at larger eps is a weak attack),
    and at least 2/steps (so that steps * step >= 2 * eps and few steps can still reach, and cross,
    the boundary); never more than 1. docs/fidelity.md explains the choice.
    """
    if steps < 1:
        return min(ratio, MAX_FOLLOWING_FRACTION)
    return min(1.0, max(min(ratio, MAX_FOLLOWING_FRACTION), MIN_TRAVEL / steps))


def _step_follows(attack: AttackStep, frozen: dict[str, Any], eps_changed: bool) -> bool:
    """A stepwise attack with an absolute step whose eps or step count the user changed."""
    if frozen.get("step_size") is None or "steps" not in attack.params:
        return False
    return eps_changed or attack.params["steps"] != frozen.get("steps")


def apply_overrides(protocol: Protocol, overrides: dict[str, Any]) -> tuple[Protocol, bool]:
    """Apply user overrides. Returns (protocol, custom) where custom is True iff anything changed.

    Keys: top-level fields (eps, norm, samples, prompt_set, precision, seed) and attack parameters
    as `<attack>.<param>` (e.g. `pgd.steps`, `square.n_queries`) or a bare name applied to every
    attack that has it; `steps` and `restarts` also set `n_iter` and `n_restarts`. A value equal to
    the frozen one changes nothing. When eps or the step count of a stepwise attack changes and its
    step size is not given, the step size follows eps (`following_step_fraction`). Overriding `samples` applies to every dataset (it replaces the
    per-dataset counts). Unknown parameters and invalid values fail with a clear message.
    """
    from ..attacks.registry import attack_info, build_attack

    if not overrides:
        return protocol, False
    top: dict[str, Any] = {}
    given_step: set[str] = set()  # attacks whose step size the user set
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
                    like = frozen.get(a.name, {}).get(p, 0.0 if p == "step_fraction" else None)
                    a.params[p] = _coerce(protocol, key, value, like)
                    if p in STEP_KEYS:
                        given_step.add(a.name)
                    hit = True
        if not hit:
            raise _bad(protocol, key, "no attack of this protocol has that parameter")
    if "samples" in top:
        top["samples_by_dataset"] = {}
    for a in attacks:
        if a.name in frozen and a.name not in given_step and _step_follows(a, frozen[a.name], "eps" in top):
            ratio = frozen[a.name]["step_size"] / min(protocol.eps)
            a.params["step_size"] = None
            a.params["step_fraction"] = following_step_fraction(ratio, int(a.params["steps"]))
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

"""Named, frozen evaluation protocols. A change to any parameter makes a new version.

A run may override parameters; it is then marked `custom` in results.json and the leaderboard
never ranks it with the protocol. `Protocol.fingerprint()` hashes every parameter, so a test can
pin each frozen version. Superseded versions stay defined (`SUPERSEDED`), so results recorded
under them remain readable and checkable; `get_protocol(name, version)` returns either.

Every value taken from a paper's code cites its source next to it; docs/fidelity.md has the full
parameter-by-parameter comparison. Sources (commits in shared/reference/harness_anchors.md):
TeCoA = cvlab-columbia/ZSRobust4FoundationModel@1243db6, RVLM = chs20/RobustVLM@7de10ee (FARE, its
CLIP_benchmark fork under CLIP_benchmark/ and its vendored autoattack/), pyAA = pyautoattack 0.2.0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .data.preprocess import DEFAULT_PREPROCESS, OPEN_CLIP_PREPROCESS, TECOA_PREPROCESS, Preprocess
from .errors import ZSBenchError


@dataclass(frozen=True)
class AttackStep:
    """One attack in a protocol's sequence, with its parameters (eps and norm come from the protocol)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


SELECTIONS = ("seeded", "fare")
CLEAN_ON = ("evaluated", "split")


@dataclass(frozen=True)
class Protocol:
    """A named evaluation protocol at one version.

    Fields added after version 1 of the first protocols (`preprocess`, `selection`, `clean_on`,
    `datasets`) are None/empty on those old versions and then left out of `params()`, so the
    parameters and fingerprint of every old version stay exactly what their results recorded.
    """

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
    preprocess: Preprocess | None = None  # None: DEFAULT_PREPROCESS, not recorded (version-1 protocols)
    selection: str | None = None  # None: "seeded" (not recorded); "fare": see data/subsets.py
    clean_on: str | None = None  # None: "evaluated"; "split": clean accuracy on the whole split
    clean_on_by_dataset: dict[str, str] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()  # the suite's members when this version was frozen (recorded)
    # Which implementation runs APGD-CE/APGD-T: "engine" (slot pool) or "reference" (pyautoattack).
    # Recorded in params(); not part of the fingerprint (it changes how, not what, is run).
    attack_backend: str = "engine"

    def __post_init__(self) -> None:
        if self.selection is not None and self.selection not in SELECTIONS:
            raise ValueError(f"protocol {self.name}: selection must be one of {SELECTIONS}")
        for value in (self.clean_on, *self.clean_on_by_dataset.values()):
            if value is not None and value not in CLEAN_ON:
                raise ValueError(f"protocol {self.name}: clean_on must be one of {CLEAN_ON}")

    def samples_for(self, dataset: str) -> int | None:
        return self.samples_by_dataset.get(dataset, self.samples)

    def clean_on_for(self, dataset: str) -> str:
        """Where clean accuracy is measured for `dataset`: "evaluated" (the attacked samples) or "split"."""
        return self.clean_on_by_dataset.get(dataset, self.clean_on or "evaluated")

    def effective_preprocess(self) -> Preprocess:
        return self.preprocess or DEFAULT_PREPROCESS

    def effective_selection(self) -> str:
        return self.selection or "seeded"

    def params(self) -> dict[str, Any]:
        """Every parameter, JSON-ready, as recorded in results.json."""
        out: dict[str, Any] = {
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
            "attack_backend": self.attack_backend,
        }
        if self.preprocess is not None:
            out["preprocess"] = self.preprocess.as_dict()
        if self.selection is not None:
            out["selection"] = self.selection
        if self.clean_on is not None:
            out["clean_on"] = self.clean_on
            out["clean_on_by_dataset"] = dict(self.clean_on_by_dataset)
        if self.datasets:
            out["datasets"] = list(self.datasets)
        return out

    def attack_steps(self) -> list[tuple[str, dict[str, Any]]]:
        """(attack name, params) pairs, the input of `attacks.registry.build_attacks`."""
        return [(a.name, dict(a.params)) for a in self.attacks]

    def fingerprint(self) -> str:
        """sha256 of name, version and every parameter (canonical JSON)."""
        params = {k: v for k, v in self.params().items() if k != "attack_backend"}
        blob = json.dumps({"name": self.name, "version": self.version, **params}, sort_keys=True)
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


# Reference settings, spelled out so every one of them is recorded.
# TeCoA's PGD: uniform random start in [-eps, eps], sign steps, no restarts (TeCoA attacks.py#L11-53);
# 100 steps of 1/255 at eps 1/255 is the paper setting (shared/reference/anchors.md, TeCoA table).
_PGD100 = {"steps": 100, "step_size": 1 / 255, "random_start": True, "restarts": 1}
# AutoAttack(version='standard'): APGD-CE 1 restart (pyAA autoattack.py#L304), APGD-T 9 targets
# (#L305) and 1 restart (#L312), 100 iterations and rho 0.75, eot_iter 1 (constructor, #L46-58).
_APGD_CE = {"n_iter": 100, "n_restarts": 1, "rho": 0.75, "eot_iter": 1}
_APGD_T = {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "rho": 0.75, "eot_iter": 1}
_FAB_T = {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9}
_SQUARE = {"n_queries": 5000, "p_init": 0.8, "n_restarts": 1, "rescale_schedule": False}
# FARE calls AutoAttack(..., version='custom', attacks_to_run=('apgd-ce','apgd-t')) (RVLM
# CLIP_benchmark/clip_benchmark/metrics/zeroshot_classification.py#L129-136). 'custom' never runs
# set_version (RVLM autoattack/autoattack.py#L70-71), so the constructor values stand: APGD-CE
# n_restarts=5, n_iter=iterations_apgd=100, eot_iter=1, rho=.75 (#L34-36); APGD-T n_restarts=1,
# n_iter=100, eot_iter=1, rho=.75 (#L47-49) and its class default n_target_classes=9
# (autoattack/autopgd_base.py, APGDAttack_targeted.__init__). alpha=None and use_rs=True keep the
# step size 2*eps and the random start of pyAA (diff of autopgd_base.py: only those two options).
_FARE_APGD_CE = {"n_iter": 100, "n_restarts": 5, "rho": 0.75, "eot_iter": 1}
_FARE_APGD_T = {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "rho": 0.75, "eot_iter": 1}


def _suite(name: str) -> tuple[str, ...]:
    """The suite's members now: frozen into the protocol version that records them."""
    from .data.registry import suite

    return tuple(suite(name))


_TECOA_PGD_V2 = Protocol(
    name="tecoa-pgd",
    version=2,
    description="TeCoA lineage: Linf 1/255, PGD-100 (step 1/255, random start, CE summed), full test splits, "
    "TeCoA's Resize(256)+CenterCrop(224)",
    suite="tecoa16",
    norm="Linf",
    eps=(1 / 255,),
    attacks=(AttackStep("pgd", dict(_PGD100)),),
    samples=None,
    preprocess=TECOA_PREPROCESS,
    datasets=_suite("tecoa16"),
)
_TECOA_CW_V2 = Protocol(
    name="tecoa-cw",
    version=2,
    description="TeCoA's CW: PGD-100 on the CW margin loss, Linf 1/255, full test splits, "
    "TeCoA's Resize(256)+CenterCrop(224)",
    suite="tecoa16",
    norm="Linf",
    eps=(1 / 255,),
    # TeCoA attacks.py#L56-107: same loop as attack_pgd, loss -sum(relu(z_y - max_{j!=y} z_j + 50))
    attacks=(AttackStep("pgd-cw", dict(_PGD100)),),
    samples=None,
    preprocess=TECOA_PREPROCESS,
    datasets=_suite("tecoa16"),
)
_FARE_AA_V2 = Protocol(
    name="fare-aa",
    version=2,
    description="FARE lineage: AutoAttack 'custom' as FARE calls it: APGD-CE (5 restarts) + APGD-T (1 restart, "
    "min(9,C-1) targets; APGD-CE alone when C <= 2), 100 it, Linf 2/255 and 4/255; robust on FARE's 1000 "
    "samples per dataset (webdataset stream order; ImageNet: RobustBench's 5000), clean on the whole split; "
    "CLIP_benchmark templates, FARE's VTAB Caltech-101 and EuroSAT",
    suite="fare14",
    norm="Linf",
    # RVLM CLIP_benchmark/bash/run_benchmark_adv.sh#L6 (EPS=2; the paper also reports 4) + README
    eps=(2 / 255, 4 / 255),
    attacks=(AttackStep("apgd-ce", dict(_FARE_APGD_CE)), AttackStep("apgd-t", dict(_FARE_APGD_T))),
    # run_benchmark_adv.sh#L8 SAMPLES=1000; ImageNet: CLIP_eval/clip_robustbench.py#L34 (5000)
    samples=1000,
    samples_by_dataset={"imagenet": 5000},
    prompt_set="clip",
    preprocess=OPEN_CLIP_PREPROCESS,
    selection="fare",
    # clean: run_benchmark_clean.sh#L7 SAMPLES=-1 (whole split); ImageNet's clean accuracy is on the same
    # 5000 images (clip_robustbench.py#L294-298)
    clean_on="split",
    clean_on_by_dataset={"imagenet": "evaluated"},
    datasets=_suite("fare14"),
)
_AA_STANDARD_V2 = Protocol(
    name="aa-standard",
    version=2,
    description="Full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; APGD-CE alone when C <= 2), "
    "Linf 1/255, 1000 seeded samples, TeCoA's Resize(256)+CenterCrop(224)",
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
    preprocess=TECOA_PREPROCESS,
    datasets=_suite("tecoa16"),
)
_CLEAN_V1 = Protocol(
    name="clean",
    version=1,
    description="Clean zero-shot accuracy only, full test splits",
    suite=None,
    norm="none",
    eps=(),
    attacks=(),
    samples=None,
)
_SYNTHETIC_PGD_V1 = Protocol(
    name="synthetic-pgd",
    version=1,
    description="Demo protocol on the synthetic world: Linf 4/255, PGD-20 (step 1/255), 500 seeded samples",
    suite="synthetic",
    norm="Linf",
    eps=(4 / 255,),
    attacks=(AttackStep("pgd", {"steps": 20, "step_size": 1 / 255, "random_start": True, "restarts": 1}),),
    samples=500,
)
_SYNTHETIC_AA_V1 = Protocol(
    name="synthetic-aa",
    version=1,
    description="The miniature world's AutoAttack, called as FARE calls it: APGD-CE (5 restarts) + APGD-T "
    "(1 restart, min(9,C-1) targets), 100 it, Linf 4/255, 50 seeded samples per task",
    suite="synthetic",
    norm="Linf",
    eps=(4 / 255,),
    attacks=(AttackStep("apgd-ce", dict(_FARE_APGD_CE)), AttackStep("apgd-t", dict(_FARE_APGD_T))),
    # 50 per task: the shipped demo CLIP's five tasks (250 samples) took 368 s of CPU on one thread
    # (5 APGD-CE restarts on the survivors, then APGD-T), so six tiny models stay well under an hour of
    # CPU; 200 per task would be four times that. Measured numbers: docs/fidelity.md.
    samples=50,
    preprocess=OPEN_CLIP_PREPROCESS,
    selection="seeded",
    datasets=_suite("synthetic"),
)

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in [
        _TECOA_PGD_V2,
        _TECOA_CW_V2,
        _FARE_AA_V2,
        _AA_STANDARD_V2,
        _CLEAN_V1,
        _SYNTHETIC_PGD_V1,
        _SYNTHETIC_AA_V1,
    ]
}


def _v1(current: Protocol, description: str, **changes: Any) -> Protocol:
    """Version 1 of a protocol: no declared preprocessing, selection, clean split or member list."""
    return dataclasses.replace(
        current,
        version=1,
        description=description,
        preprocess=None,
        selection=None,
        clean_on=None,
        clean_on_by_dataset={},
        datasets=(),
        **changes,
    )


# Superseded versions, exactly as they ran (their fingerprints are pinned in tests/test_protocols.py).
SUPERSEDED: tuple[Protocol, ...] = (
    _v1(
        _TECOA_PGD_V2,
        "TeCoA lineage: Linf 1/255, PGD-100 (step 1/255, random start, CE summed), full test splits",
    ),
    _v1(_TECOA_CW_V2, "TeCoA's CW: PGD-100 on the CW margin loss, Linf 1/255, full test splits"),
    _v1(
        _FARE_AA_V2,
        "FARE lineage: APGD-CE + APGD-T (100 it, min(9,C-1) targets; APGD-CE alone when C <= 2), "
        "Linf 2/255 and 4/255, 1000 seeded samples per dataset (ImageNet 5000), CLIP template ensembles",
        attacks=(AttackStep("apgd-ce", dict(_APGD_CE)), AttackStep("apgd-t", dict(_APGD_T))),
    ),
    _v1(
        _AA_STANDARD_V2,
        "Full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; APGD-CE alone when C <= 2), "
        "Linf 1/255, 1000 seeded samples",
    ),
)

# "engine": attacks with a slot-pool implementation (PGD, APGD) run in the engine; "reference":
# APGD through pyautoattack (FAB-T and Square always run through pyautoattack).
ATTACK_BACKENDS = ("engine", "reference")
TOP_LEVEL = ("eps", "norm", "samples", "prompt_set", "precision", "seed")
NORMS = ("Linf", "L2")
PRECISIONS = ("fp32", "bf16", "fp16")
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


def get_protocol(name: str, version: int | None = None) -> Protocol:
    """The current version of protocol `name`, or the given (possibly superseded) version."""
    if name not in PROTOCOLS:
        raise ZSBenchError(f"unknown protocol {name!r}", f"known protocols: {', '.join(sorted(PROTOCOLS))}")
    if version is None or version == PROTOCOLS[name].version:
        return PROTOCOLS[name]
    for p in SUPERSEDED:
        if p.name == name and p.version == version:
            return p
    known = sorted([PROTOCOLS[name].version] + [p.version for p in SUPERSEDED if p.name == name])
    raise ZSBenchError(f"protocol {name!r} has no version {version}", f"known versions: {known}")


def list_protocols() -> list[Protocol]:
    """The current version of every protocol."""
    return list(PROTOCOLS.values())


def all_protocol_versions() -> list[Protocol]:
    """Every version of every protocol, current and superseded."""
    return [*PROTOCOLS.values(), *SUPERSEDED]


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
    from .attacks.registry import attack_info, build_attack

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

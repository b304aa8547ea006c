"""A protocol at one version, as a frozen value: its parameters, what results.json records of them and
the fingerprint that pins them. Read from YAML files by `protocols.registry`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..data.preprocess import DEFAULT_PREPROCESS, Preprocess
from .enums import Norm, Precision
from .eps import eps_label


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
    norm: Norm
    eps: tuple[float, ...]  # ascending
    attacks: tuple[AttackStep, ...]
    samples: int | None  # None = full split
    samples_by_dataset: dict[str, int] = field(default_factory=dict)
    prompt_set: str = "tecoa"
    precision: Precision = Precision.FP32
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
        # the boundary for norm and precision: text from a file or a caller becomes the enum here
        object.__setattr__(self, "norm", Norm.parse(self.norm, f"protocol {self.name}"))
        object.__setattr__(self, "precision", Precision.parse(self.precision, f"protocol {self.name}"))
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

"""What the engine runs and how: its settings, the attacks per epsilon, and their flattening into stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..attacks.base import Attack
from ..protocols import eps_label


@dataclass
class EngineConfig:
    """How to run: batch size (the pool's capacity), loading, device, seed, precision."""

    batch_size: int = 128
    num_workers: int = 0
    device: str = "cpu"
    seed: int = 0
    precision: str = "fp32"
    compile: bool = False  # torch.compile the image tower (useful on CUDA)
    prefetch: int = 2  # loaded batches a background thread keeps ready (0: load in the compute thread)


@dataclass
class EpsAttacks:
    """The attacks to run at one epsilon, in order."""

    eps: float
    attacks: list[Attack]
    skipped: list[str]  # attacks that do not apply (e.g. targeted with 2 classes)


@dataclass
class StageSpec:
    """One attack at one epsilon of the plan, with its position."""

    eps_index: int
    attack: Attack
    code: int  # index into the run's attack-name list


@dataclass(frozen=True)
class Stages:
    """A plan flattened for the pipeline: the stages in order, attack names (by code) and eps labels."""

    stages: list[StageSpec]
    names: list[str]
    eps_labels: list[str]


def flatten(plan: Sequence[EpsAttacks]) -> Stages:
    """Flatten the plan into pipeline stages, attack names (by code) and eps labels."""
    stages: list[StageSpec] = []
    names: list[str] = []
    for j, stage in enumerate(plan):
        for attack in stage.attacks:
            stages.append(StageSpec(eps_index=j, attack=attack, code=len(names)))
            names.append(attack.name)
    return Stages(stages, names, [eps_label(s.eps) for s in plan])

"""Attacks: stepwise (PGD family, driven by the engine) and batch (AutoAttack components)."""

from .base import Attack, BatchAttack, PoolState, StepwiseAttack, sample_generator
from .registry import attack_names, build_attack, register_attack

__all__ = [
    "Attack",
    "BatchAttack",
    "PoolState",
    "StepwiseAttack",
    "attack_names",
    "build_attack",
    "register_attack",
    "sample_generator",
]

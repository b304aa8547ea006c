"""Threat-model norms and numeric precisions as enums, parsed once where a value enters (a protocol
file, a CLI flag, an override) so the rest of the code compares members, not free strings."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from ..errors import ZSBenchError

E = TypeVar("E", bound="TextEnum")


class TextEnum(str, Enum):
    """A str-valued enum that prints, formats and serialises (JSON) as its value."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls: type[E], value: object, where: str) -> E:
        """The member whose value is `value`, or a ZSBenchError naming `where` and the choices."""
        try:
            return cls(value)
        except ValueError as exc:
            raise ZSBenchError(
                f"{where}: {cls.__name__.lower()} must be one of {cls.choices()}, got {value!r}"
            ) from exc

    @classmethod
    def choices(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class Norm(TextEnum):
    """The threat model's norm; NONE for protocols that run no attack."""

    LINF = "Linf"
    L2 = "L2"
    NONE = "none"


# The norms an attack can run under.
ATTACK_NORMS: tuple[Norm, ...] = (Norm.LINF, Norm.L2)


class Precision(TextEnum):
    """Numeric precision of the attacked forward/backward passes (low precision: CUDA autocast only)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"

"""A validation finding that names its file and field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True, order=True)
class Problem:
    """One finding: `file` and dotted `field` say where, `message` says what; warnings and info do not fail."""

    file: str
    field: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{self.severity}: {where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        """JSON-able form for `--json` output."""
        return {"file": self.file, "field": self.field, "message": self.message, "severity": self.severity}


def errors(problems: list[Problem]) -> list[Problem]:
    """Only the problems that fail validation."""
    return [p for p in problems if p.severity == "error"]

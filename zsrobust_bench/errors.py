"""One exception type for every user-facing failure: a precise message plus what to do about it."""

from __future__ import annotations


class ZSBenchError(Exception):
    """A bad input or environment problem; the CLI prints it as one line and exits non-zero."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CheckpointError(ZSBenchError):
    """A checkpoint that cannot be loaded safely or does not fit the architecture."""


class ConfigError(CheckpointError):
    """A model config (from a name, a file, a checkpoint, a submission or the hub) refused by the config gate."""


class DataError(ZSBenchError):
    """Missing, corrupt or inconsistent dataset files."""


class SubmissionError(ZSBenchError):
    """A malformed leaderboard submission."""


class RunLockedError(ZSBenchError):
    """Another process holds the run directory."""

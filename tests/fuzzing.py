"""Shared machinery for the fuzz tests: bounded hypothesis runs that count their cases (test code only)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import UnsatisfiedAssumption

FAST_EXAMPLES = int(os.environ.get("ZSBENCH_FUZZ_FAST_EXAMPLES", "150"))
SLOW_SECONDS = float(os.environ.get("ZSBENCH_FUZZ_SECONDS", "120"))
SLOW_ROUND = 300


@dataclass
class Tally:
    """Cases tried and their outcomes for one fuzz target, and what went wrong, as measured.

    escaped: cases whose exception escaped the property; executed: payload marker files present
    after the run (code from a generated input ran); lost: cases that ended without an outcome.
    """

    name: str
    markers: tuple[Path, ...] = ()
    cases: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    escaped: int = 0
    executed: int = 0
    lost: int = 0

    def add(self, outcome: str) -> None:
        self.cases += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def clean(self) -> bool:
        """Nothing escaped, nothing executed, nothing lost."""
        return not (self.escaped or self.executed or self.lost)

    def line(self, seconds: float) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"[fuzz] {self.name}: {self.cases} cases in {seconds:.1f} s ({parts}); "
            f"{self.escaped} escaped, {self.executed} executed, {self.lost} lost"
        )


def counted(fn: Any, tally: Tally) -> Any:
    """`fn` (a @given test) with each case counted: an exception out of it is escaped, an end without
    a new outcome in `tally` is lost. Hypothesis calls `fn.hypothesis.inner_test` for every case."""
    inner = fn.hypothesis.inner_test

    @functools.wraps(inner)
    def case(*args: Any, **kwargs: Any) -> None:
        before = tally.cases
        try:
            inner(*args, **kwargs)
        except UnsatisfiedAssumption:  # hypothesis' own rejection of a case, not an escape
            raise
        except BaseException:
            tally.escaped += 1
            raise
        if tally.cases == before:
            tally.lost += 1

    fn.hypothesis.inner_test = case
    return fn


def fast_settings(n: int = FAST_EXAMPLES) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def run_bounded(
    make: Callable[[], Callable[[], None]],
    tally: Tally,
    slow: bool,
    report: Callable[[str], None],
    fast_examples: int = FAST_EXAMPLES,
) -> None:
    """Run a fresh @given test from `make` once (fast, derandomized) or in seeded rounds until the budget
    (slow); report the measured summary line, then fail unless nothing escaped, executed or was lost."""
    t0 = time.monotonic()
    try:
        if not slow:
            fast_settings(fast_examples)(counted(make(), tally))()
        else:
            round_no = 0
            while time.monotonic() - t0 < SLOW_SECONDS:
                round_no += 1
                fn = settings(fast_settings(SLOW_ROUND), derandomize=False)(counted(make(), tally))
                hypothesis.seed(round_no)(fn)()
    finally:
        tally.executed = sum(1 for m in tally.markers if m.exists())
        report(tally.line(time.monotonic() - t0))
    assert tally.clean(), tally.line(time.monotonic() - t0)

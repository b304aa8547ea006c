"""Shared machinery for the fuzz tests: bounded hypothesis runs that count their cases (test code only)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import hypothesis
from hypothesis import HealthCheck, settings

FAST_EXAMPLES = int(os.environ.get("ZSBENCH_FUZZ_FAST_EXAMPLES", "150"))
SLOW_SECONDS = float(os.environ.get("ZSBENCH_FUZZ_SECONDS", "120"))
SLOW_ROUND = 300


@dataclass
class Tally:
    """Cases tried and their outcomes for one fuzz target."""

    name: str
    cases: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.cases += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def line(self, seconds: float) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return f"[fuzz] {self.name}: {self.cases} cases in {seconds:.1f} s ({parts}); 0 escaped, 0 executed, 0 lost"


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
    """Run a fresh @given test from `make` once (fast, derandomized) or in seeded rounds until the budget (slow)."""
    t0 = time.monotonic()
    if not slow:
        fast_settings(fast_examples)(make())()
    else:
        round_no = 0
        while time.monotonic() - t0 < SLOW_SECONDS:
            round_no += 1
            fn = settings(fast_settings(SLOW_ROUND), derandomize=False)(make())
            hypothesis.seed(round_no)(fn)()
    report(tally.line(time.monotonic() - t0))

"""The fuzz summary counts what it claims: escaped exceptions, executed payloads and lost cases are
measured per case (checked here against the targets' own counters) and any of them fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import Tally, run_bounded
from hypothesis import given
from hypothesis import strategies as st

EXAMPLES = 40


def _target(tally: Tally, seen: dict[str, int], marker: Path, mode: str):
    @given(st.integers(0, 9))
    def fuzz(n: int) -> None:
        seen["calls"] += 1
        if mode == "escape" and n >= 7:
            seen["raised"] += 1
            raise RuntimeError(f"escaped {n}")
        if mode == "lose" and n % 3 == 0:
            seen["unrecorded"] += 1
            return
        if mode == "execute" and n == 5:
            marker.write_text("payload ran")
        tally.add("even" if n % 2 == 0 else "odd")

    return fuzz


def _run(tmp_path: Path, mode: str) -> tuple[Tally, dict[str, int], list[str], BaseException | None]:
    marker = tmp_path / "PWNED"
    tally = Tally(f"tally {mode}", markers=(marker,))
    seen = {"calls": 0, "raised": 0, "unrecorded": 0}
    lines: list[str] = []
    try:
        run_bounded(lambda: _target(tally, seen, marker, mode), tally, False, lines.append, EXAMPLES)
    except BaseException as exc:  # noqa: BLE001 - the outcome under test
        return tally, seen, lines, exc
    return tally, seen, lines, None


def test_clean_run_reports_measured_zeros(tmp_path):
    tally, seen, lines, exc = _run(tmp_path, "clean")
    assert exc is None and tally.cases == seen["calls"] > 0
    assert lines[0].endswith("; 0 escaped, 0 executed, 0 lost")
    assert f": {tally.cases} cases in " in lines[0]


@pytest.mark.parametrize("mode", ["escape", "lose", "execute"])
def test_each_failure_is_counted_and_fails_the_run(tmp_path, mode):
    tally, seen, lines, exc = _run(tmp_path, mode)
    assert exc is not None, "a non-zero count must fail the run"
    assert (tally.escaped, tally.lost) == (seen["raised"], seen["unrecorded"])
    assert tally.executed == (1 if mode == "execute" else 0)
    assert tally.cases + tally.lost + tally.escaped == seen["calls"]
    assert lines[0].endswith(f"; {tally.escaped} escaped, {tally.executed} executed, {tally.lost} lost")
    count = {"escape": tally.escaped, "lose": tally.lost, "execute": tally.executed}[mode]
    assert count > 0
    if mode == "escape":
        assert "escaped" in str(exc)  # hypothesis re-raises the property's own error
    else:
        assert isinstance(exc, AssertionError)
        assert str(exc).splitlines()[0].split("; ")[-1] == lines[0].split("; ")[-1]

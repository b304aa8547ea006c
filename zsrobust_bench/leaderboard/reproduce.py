"""`zsbench reproduce`: evaluate a leaderboard entry's zoo checkpoint under the protocol its reported
numbers used, and set reported beside measured, per dataset and eps, within the published precision."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import SubmissionError, ZSBenchError
from ..zoo.registry import entry_for_leaderboard
from ..zoo.resolve import resolve_entry
from .entries import REPORTED, ResultsFile, load_entry

MEAN = "mean"


@dataclass(frozen=True)
class Comparison:
    """One reported number beside the measured one."""

    dataset: str  # a dataset name, or MEAN for the published average
    metric: str  # "clean" or "robust@<eps>"
    reported: float
    measured: float | None
    decimals: int

    @property
    def diff(self) -> float | None:
        """measured - reported, in percentage points."""
        return None if self.measured is None else self.measured - self.reported

    @property
    def exact(self) -> bool:
        """Within the published precision: |diff| <= half a unit of the last printed digit."""
        return self.diff is not None and abs(self.diff) <= 0.5 * 10.0**-self.decimals + 1e-9

    def as_dict(self) -> dict[str, Any]:
        """A row for --json."""
        return {
            "dataset": self.dataset,
            "metric": self.metric,
            "reported": self.reported,
            "measured": self.measured,
            "diff": self.diff,
            "exact": self.exact,
        }


@dataclass
class Reproduction:
    """A finished reproduction: which files and protocols, the comparison rows, where the run is."""

    entry_id: str
    zoo_name: str
    reported_protocol: str
    protocol: str
    out: Path
    rows: list[Comparison] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    submitted: Path | None = None


@functools.lru_cache(maxsize=1)
def reproduce_protocols() -> dict[str, dict[str, str]]:
    """reported protocol -> registered protocol that re-evaluates it (package data)."""
    text = resources.files("zsrobust_bench.leaderboard").joinpath("reproduce_protocols.json").read_text()
    return json.loads(text)["protocols"]


def _reported_file(entry_dir: Path, reported: str | None, protocol: str | None) -> ResultsFile:
    entry, problems = load_entry(entry_dir)
    if entry is None:
        raise SubmissionError(f"{entry_dir}: {problems[0].message}" if problems else f"{entry_dir}: unusable")
    files = [rf for rf in entry.results if rf.kind == REPORTED]
    if reported is not None:
        files = [rf for rf in files if rf.protocol == reported]
    elif protocol is None:
        files = [rf for rf in files if rf.protocol in reproduce_protocols()]
    if not files and problems:
        first = problems[0]
        raise SubmissionError(f"{first.file}: {first.field}: {first.message}", "fix the entry's files")
    if not files:
        raise ZSBenchError(
            f"entry {entry.id!r} has no reported results that a registered protocol reproduces"
            + (f" under {reported!r}" if reported else ""),
            f"mapped reported protocols: {', '.join(reproduce_protocols())}; or pass --protocol",
        )
    return files[0]


def _measured(results: dict[str, Any], dataset: str, metric: str) -> float | None:
    d = results["datasets"].get(dataset)
    if d is None:
        return None
    if metric == "clean":
        return d["clean_acc"]
    return (d.get("robust_acc_by_eps") or {}).get(metric.split("@", 1)[1])


def _measured_mean(results: dict[str, Any], over: list[str] | None, metric: str) -> float | None:
    names = over if over else sorted(results["datasets"])
    vals = [_measured(results, n, metric) for n in names]
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


def compare(reported: dict[str, Any], results: dict[str, Any]) -> list[Comparison]:
    """Every reported number (per dataset, then the means) beside its measured counterpart."""
    dec = int(reported["decimals"])
    rows: list[Comparison] = []

    def add(dataset: str, block: dict[str, Any], measure: Any) -> None:
        if "clean_acc" in block:
            rows.append(Comparison(dataset, "clean", block["clean_acc"], measure("clean"), dec))
        for eps, val in sorted((block.get("robust_acc_by_eps") or {}).items()):
            rows.append(Comparison(dataset, f"robust@{eps}", val, measure(f"robust@{eps}"), dec))

    for name, block in sorted((reported.get("datasets") or {}).items()):
        add(name, block, lambda m, n=name: _measured(results, n, m))
    means = reported.get("means")
    if means:
        add(MEAN, means, lambda m: _measured_mean(results, means.get("over"), m))
    return rows


def reproduce(
    entry_id: str,
    *,
    submissions_dir: str | Path = "submissions",
    out: str | Path | None = None,
    reported: str | None = None,
    protocol: str | None = None,
    submit: bool = False,
    **evaluate_kwargs: Any,
) -> Reproduction:
    """Fetch ENTRY_ID's zoo checkpoint, evaluate it under its reported numbers' protocol, compare (and submit)."""
    from ..evaluate import evaluate

    zoo = entry_for_leaderboard(entry_id)
    rf = _reported_file(Path(submissions_dir) / entry_id, reported, protocol)
    proto = protocol or reproduce_protocols()[rf.protocol]["protocol"]
    datasets = sorted(rf.doc.get("datasets") or {}) or None
    run_dir = Path(out) if out else Path("runs") / f"reproduce-{entry_id}-{proto}"
    model = resolve_entry(zoo)
    results = evaluate(
        model.spec,
        datasets,
        protocol=proto,
        out=run_dir,
        arch=model.arch,
        pretrained=model.pretrained,
        **evaluate_kwargs,
    )
    rep = Reproduction(entry_id, zoo.name, rf.protocol, proto, run_dir, compare(rf.doc, results), results)
    if submit:
        from .submit import submit_run

        rep.submitted = submit_run(run_dir, entry_id, submissions_dir)
    return rep

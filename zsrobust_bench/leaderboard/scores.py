"""One normalized view of the numbers in an evaluated or a reported results file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocols import eps_label, parse_eps


@dataclass(frozen=True)
class Scores:
    """Per-dataset and mean accuracies (percent); robust numbers are keyed by eps label such as '2/255'."""

    eps: tuple[str, ...]
    datasets: tuple[str, ...]
    clean: dict[str, float | None]
    robust: dict[str, dict[str, float | None]]
    mean_clean: float | None
    mean_robust: dict[str, float | None]
    over: tuple[str, ...] | None  # datasets the means cover; None when the source does not say


def _robust_map(block: dict[str, Any], first: str | None) -> dict[str, float | None]:
    by_eps = block.get("robust_acc_by_eps")
    if isinstance(by_eps, dict) and by_eps:
        return {str(k): v for k, v in by_eps.items()}
    value = block.get("robust_acc")
    return {first: value} if first is not None and value is not None else {}


def _sorted_labels(labels: set[str]) -> tuple[str, ...]:
    return tuple(sorted(labels, key=lambda s: (parse_eps(s), s)))


def scores_from_evaluated(doc: dict[str, Any]) -> Scores:
    """Scores of a `zsbench.results/1` document (means over every dataset in it).

    Clean accuracy is the protocol's clean figure: `clean_acc_split` (the whole split, as FARE reports
    it) where the protocol measures it, else the evaluated samples' `clean_acc`."""
    params = doc["protocol"]["params"]
    labels = [eps_label(float(e)) for e in params.get("eps") or []]
    first = labels[0] if labels else None
    names = tuple(doc["datasets"])
    clean = {d: doc["datasets"][d].get("clean_acc_split", doc["datasets"][d].get("clean_acc")) for d in names}
    robust = {d: _robust_map(doc["datasets"][d], first) for d in names}
    mean_robust = _robust_map(doc["means"], first)
    found = set(labels) | {k for m in robust.values() for k in m} | set(mean_robust)
    return Scores(
        eps=_sorted_labels(found),
        datasets=names,
        clean=clean,
        robust=robust,
        mean_clean=doc["means"].get("clean_acc_split", doc["means"].get("clean_acc")),
        mean_robust=mean_robust,
        over=names,
    )


def scores_from_reported(doc: dict[str, Any]) -> Scores:
    """Scores of a `zsbench.reported/1` document (means as the source states them)."""
    names = tuple(doc["datasets"])
    clean = {d: doc["datasets"][d].get("clean_acc") for d in names}
    robust = {d: dict(doc["datasets"][d].get("robust_acc_by_eps") or {}) for d in names}
    means = doc["means"]
    mean_robust = dict(means.get("robust_acc_by_eps") or {})
    found = {k for m in robust.values() for k in m} | set(mean_robust)
    over = means.get("over")
    return Scores(
        eps=_sorted_labels(found),
        datasets=names,
        clean=clean,
        robust=robust,
        mean_clean=means.get("clean_acc"),
        mean_robust=mean_robust,
        over=tuple(over) if over is not None else None,
    )


def scores_of(doc: dict[str, Any], kind: str) -> Scores:
    """Scores for a results file of either kind ('evaluated' or 'reported')."""
    return scores_from_evaluated(doc) if kind == "evaluated" else scores_from_reported(doc)

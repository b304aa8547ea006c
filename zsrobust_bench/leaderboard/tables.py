"""The leaderboard's table model: one Table per protocol, rows ranked by mean robust accuracy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocols import Norm, ProtocolInfo, eps_label, lookup_protocol, parse_eps
from .entries import EVALUATED, Entry, ResultsFile
from .paths import CARD_FILE
from .scores import Scores, scores_of

KIND_ORDER = {"registered": 0, "reported": 1}


@dataclass(frozen=True)
class Row:
    """One (entry, protocol) line of a table."""

    entry_id: str
    name: str
    status: str  # "evaluated" or "reported"
    architecture: str
    trained_for: str
    scores: Scores
    paper_url: str | None = None
    source_text: str = ""
    source_url: str | None = None
    card_href: str | None = None
    results_href: str | None = None
    footnote: str | None = None
    decimals: int | None = None  # reported rows: the source's printed precision


@dataclass(frozen=True)
class Table:
    """All rows of one protocol, ranked; `eps` and `datasets` are the columns shown."""

    protocol: ProtocolInfo
    eps: tuple[str, ...]
    primary_eps: str | None
    datasets: tuple[str, ...]
    rows: tuple[Row, ...]
    dataset_clean: bool = True  # False when no row has a per-dataset clean number (column left out)

    @property
    def slug(self) -> str:
        return self.protocol.slug


def fmt(value: float | None, status: str, decimals: int | None = None) -> str:
    """Numbers as shown: reported ones with the source's precision, evaluated ones to two decimals."""
    if value is None:
        return ""
    if status == EVALUATED:
        return f"{float(value):.2f}"
    if decimals is not None:
        return f"{float(value):.{decimals}f}"
    return str(value) if isinstance(value, int) else repr(float(value))


def primary_value(row: Row, primary_eps: str | None) -> float | None:
    """The number a table ranks by: mean robust accuracy at the primary eps (mean clean when none)."""
    if primary_eps is None:
        return row.scores.mean_clean
    return row.scores.mean_robust.get(primary_eps)


def _rank_key(row: Row, primary_eps: str | None) -> tuple[Any, ...]:
    p, c = primary_value(row, primary_eps), row.scores.mean_clean
    return (p is None, -(p or 0.0), c is None, -(c or 0.0), row.entry_id, row.name)


def trained_for(card: dict[str, Any] | None) -> str:
    """'Linf 1/255', 'none' or 'not stated' from a card's threat_model."""
    threat = (card or {}).get("threat_model")
    if not isinstance(threat, dict):
        return "not stated"
    if threat.get("norm") == Norm.NONE:
        return "none"
    return f"{threat.get('norm')} {threat.get('eps', '')}".strip()


def _href(target: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(target.resolve(), out_dir.resolve())).as_posix()


def row_for(entry: Entry, rf: ResultsFile, out_dir: Path) -> Row:
    """The table row of one results file of one entry."""
    card = entry.card or {}
    doc = rf.doc
    if rf.kind == EVALUATED:
        version = doc.get("provenance", {}).get("zsbench_version", "?")
        source_text, source_url = f"zsbench {version} run", None
        arch = card.get("architecture") or doc["model"].get("arch") or ""
    else:
        cite = doc["citation"]
        source_text, source_url = f"{cite['text']}, {cite['where']}", cite["url"]
        arch = card.get("architecture") or ""
    return Row(
        entry_id=entry.id,
        name=str(card.get("name") or entry.id),
        status=rf.kind,
        architecture=str(arch),
        trained_for=trained_for(card),
        scores=scores_of(doc, rf.kind),
        paper_url=(card.get("paper") or {}).get("url"),
        source_text=source_text,
        source_url=source_url,
        card_href=_href(entry.dir / CARD_FILE, out_dir),
        results_href=_href(rf.path, out_dir),
        footnote=" ".join(x for x in (card.get("footnote"), doc.get("note")) if x) or None,
        decimals=doc.get("decimals") if rf.kind != EVALUATED else None,
    )


def make_table(info: ProtocolInfo, rows: list[Row], first_eps: str | None = None) -> Table:
    """Rank rows and pick the columns: eps present in any row, datasets in the protocol's order."""
    eps = tuple(sorted({e for r in rows for e in r.scores.eps}, key=lambda s: (parse_eps(s), s)))
    primary = info.primary_eps if info.primary_eps in eps else (first_eps if first_eps in eps else None)
    if primary is None and eps:
        primary = eps[0]
    present = {d for r in rows for d in r.scores.datasets}
    datasets = tuple(d for d in info.datasets if d in present) + tuple(sorted(present - set(info.datasets)))
    ranked = tuple(sorted(rows, key=lambda r: _rank_key(r, primary)))
    has_clean = any(r.scores.clean.get(d) is not None for r in rows for d in datasets)
    return Table(
        protocol=info, eps=eps, primary_eps=primary, datasets=datasets, rows=ranked, dataset_clean=has_clean
    )


def _first_eps(rfs: list[ResultsFile]) -> str | None:
    for rf in rfs:
        if rf.kind == EVALUATED:
            eps = rf.doc["protocol"]["params"].get("eps") or []
            if eps:
                return eps_label(float(eps[0]))
    return None


def tables_for(entries: list[Entry], out_dir: Path) -> list[Table]:
    """One table per protocol and version (an older version is never ranked with the current one):
    registered real suites first, then reported protocols, synthetic last."""
    groups: dict[tuple[str, int], list[tuple[Entry, ResultsFile]]] = {}
    for entry in entries:
        for rf in entry.results:
            groups.setdefault((rf.protocol, int(rf.doc["protocol"]["version"])), []).append((entry, rf))
    tables = []
    for (name, version), members in groups.items():
        info = lookup_protocol(name, version)
        if info is None:
            raise ValueError(f"unknown protocol {name!r} version {version}: validate the submissions first")
        rows = [row_for(e, rf, out_dir) for e, rf in members]
        tables.append(make_table(info, rows, _first_eps([rf for _, rf in members])))
    return sorted(
        tables,
        key=lambda t: (
            t.protocol.synthetic,
            KIND_ORDER.get(t.protocol.kind, 9),
            t.protocol.name,
            -t.protocol.version,
        ),
    )


@dataclass(frozen=True)
class Cell:
    """One table cell: the text shown, the value sorted and exported, and an optional link."""

    text: str
    value: float | int | str | None
    href: str | None = None
    numeric: bool = False


def headers(table: Table) -> list[str]:
    """Column titles, shared by the Markdown, CSV and HTML tables."""
    cols = ["#", "Entry", "Paper", "Status", "Architecture", "Trained for", "Clean avg"]
    cols += [f"Robust avg {e}" for e in table.eps]
    for d in table.datasets:
        cols += ([f"{d} clean"] if table.dataset_clean else []) + [f"{d} {e}" for e in table.eps]
    return [*cols, "Source"]


def _num(value: float | None, row: Row) -> Cell:
    return Cell(fmt(value, row.status, row.decimals), value, numeric=True)


def cells(table: Table, row: Row, rank: int) -> list[Cell]:
    """The cells of one row, aligned with `headers(table)`."""
    s = row.scores
    out = [
        Cell(str(rank), rank, numeric=True),
        Cell(row.name, row.name, row.card_href),
        Cell("paper" if row.paper_url else "", row.paper_url or "", row.paper_url),
        Cell(row.status, row.status),
        Cell(row.architecture, row.architecture),
        Cell(row.trained_for, row.trained_for),
        _num(s.mean_clean, row),
    ]
    out += [_num(s.mean_robust.get(e), row) for e in table.eps]
    for d in table.datasets:
        if table.dataset_clean:
            out.append(_num(s.clean.get(d), row))
        out += [_num(s.robust.get(d, {}).get(e), row) for e in table.eps]
    out.append(Cell(row.source_text, row.source_text, row.source_url or row.results_href))
    return out


def numeric_columns(table: Table) -> list[bool]:
    """Which columns of `headers(table)` hold numbers (rank and accuracies)."""
    n = len(headers(table))
    return [i == 0 or 6 <= i < n - 1 for i in range(n)]

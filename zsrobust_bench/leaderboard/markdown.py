"""Markdown tables (escaped: user text can neither inject HTML nor break the table)."""

from __future__ import annotations

import html
import re
from typing import Any

from ..protocols import ProtocolInfo, eps_label, lookup_protocol
from .entries import EVALUATED, REPORTED
from .schema import REPORTED_SCHEMA
from .scores import scores_of
from .tables import Cell, Row, Table, cells, headers, make_table, numeric_columns

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: str) -> str:
    """Text safe inside a Markdown table cell: no HTML, no links or emphasis, no cell breaks."""
    text = re.sub(r"\s+", " ", text).strip()
    return html.escape(_MD_SPECIAL.sub(r"\\\1", text), quote=False)


def md_url(url: str) -> str:
    """A URL safe inside Markdown link parentheses."""
    return url.replace("(", "%28").replace(")", "%29").replace("|", "%7C").replace(" ", "%20")


def md_cell(cell: Cell) -> str:
    """One cell as Markdown (links only to http(s) URLs or relative paths the builder made)."""
    text = md_escape(cell.text)
    return f"[{text}]({md_url(cell.href)})" if cell.href and text else text


def markdown_table(table: Table) -> str:
    """The GitHub-flavoured Markdown table of one protocol."""
    lines = ["| " + " | ".join(md_escape(h) for h in headers(table)) + " |"]
    lines.append("|" + "|".join("---:" if num else "---" for num in numeric_columns(table)) + "|")
    for rank, row in enumerate(table.rows, 1):
        lines.append("| " + " | ".join(md_cell(c) for c in cells(table, row, rank)) + " |")
    return "\n".join(lines) + "\n"


def protocol_heading(info: ProtocolInfo) -> str:
    """One line naming the protocol, its version and kind."""
    kind = (
        "miniature world: synthetic suite and shipped tiny models, not comparable with real datasets"
        if info.synthetic
        else info.kind
    )
    if info.superseded_by is not None:
        kind += f"; superseded by version {info.superseded_by}, ranked separately"
    return f"{info.name} (version {info.version}, {kind})"


def ranking_note(table: Table) -> str:
    """How the table is ranked and what its averages cover."""
    ranked = f"mean robust accuracy at {table.primary_eps}" if table.primary_eps else "mean clean accuracy"
    return f"Accuracy in percent. Ranked by {ranked}. Averages: {table.protocol.average}."


STATUS_NOTE = (
    "Reported rows copy a publication's numbers and were not re-run here; evaluated rows come from "
    "zsbench evaluate runs checked by zsbench leaderboard validate."
)


def markdown_page(table: Table) -> str:
    """A whole `<protocol>.md` file: heading, description, table, footnotes."""
    info = table.protocol
    parts = [f"# {md_escape(protocol_heading(info))}\n"]
    if info.description:
        parts.append(md_escape(info.description) + "\n")
    parts.append(md_escape(f"{ranking_note(table)} {STATUS_NOTE}") + "\n")
    parts.append(markdown_table(table))
    notes = [f"- **{md_escape(r.name)}**: {md_escape(r.footnote)}" for r in table.rows if r.footnote]
    if notes:
        parts.append("Notes:\n\n" + "\n".join(notes) + "\n")
    return "\n".join(parts)


def _row_from_results(doc: dict[str, Any], name: str) -> Row:
    kind = REPORTED if doc.get("schema") == REPORTED_SCHEMA else EVALUATED
    arch = doc.get("model", {}).get("arch") or ""
    return Row(
        entry_id=name,
        name=name,
        status=kind,
        architecture=str(arch),
        trained_for="",
        scores=scores_of(doc, kind),
    )


def display_protocol(name: str, version: int) -> ProtocolInfo:
    """Protocol facts for display; a bare description when no registry knows the name."""
    info = lookup_protocol(name, version)
    return info or ProtocolInfo(name=name, version=version, kind="registered", title=name, description="")


def render_markdown_table(results: list[dict[str, Any]], names: list[str] | None = None) -> str:
    """Markdown tables, one per protocol, for results dicts as `zsbench evaluate` returns them."""
    if names is not None and len(names) != len(results):
        raise ValueError("names must have one entry per results dict")
    groups: dict[tuple[str, int], list[Row]] = {}
    firsts: dict[tuple[str, int], str | None] = {}
    for i, doc in enumerate(results):
        name = names[i] if names else str(doc.get("model", {}).get("spec") or f"run {i + 1}")
        key = (str(doc["protocol"]["name"]), int(doc["protocol"]["version"]))
        groups.setdefault(key, []).append(_row_from_results(doc, name))
        eps = (doc["protocol"].get("params") or {}).get("eps") or []
        firsts.setdefault(key, eps_label(float(eps[0])) if eps else None)
    parts = []
    for (proto, version), rows in sorted(groups.items()):
        table = make_table(display_protocol(proto, version), rows, firsts[(proto, version)])
        parts.append(f"Protocol {md_escape(proto)} (version {version})\n\n" + markdown_table(table))
    return "\n".join(parts)

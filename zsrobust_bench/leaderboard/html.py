"""The static, self-contained index.html: escaped text, inline CSS/JS pinned by a CSP hash, SVG charts."""

from __future__ import annotations

import base64
import hashlib
from html import escape
from importlib import resources

from .chart import chart_svg
from .markdown import STATUS_NOTE, protocol_heading, ranking_note
from .tables import Table, cells, headers, numeric_columns


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _table_html(table: Table) -> str:
    nums = numeric_columns(table)
    num_attr = ' class="num" data-num="1"'
    head = "".join(
        f'<th scope="col" aria-sort="none"{num_attr if num else ""}><button type="button">{escape(h)}</button></th>'
        for h, num in zip(headers(table), nums, strict=True)
    )
    body = []
    for rank, row in enumerate(table.rows, 1):
        tds = []
        for cell, num in zip(cells(table, row, rank), nums, strict=True):
            value = "" if cell.value is None else cell.value
            content = escape(cell.text)
            if cell.href and cell.text:
                content = f'<a href="{_attr(cell.href)}">{content}</a>'
            if cell.text in ("reported", "evaluated") and cell.value == row.status:
                content = f'<span class="badge {_attr(row.status)}">{content}</span>'
            tds.append(f'<td{num_attr if num else ""} data-v="{_attr(value)}">{content}</td>')
        body.append(
            f'<tr data-entry="{_attr(row.entry_id)}" data-threat="{_attr(row.trained_for)}" '
            f'data-status="{_attr(row.status)}">{"".join(tds)}</tr>'
        )
    return f'<div class="scroll"><table class="lb"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _section(table: Table) -> str:
    info = table.protocol
    svg, missing = chart_svg(table)
    parts = [
        f'<section class="protocol" id="p-{_attr(table.slug)}" data-protocol="{_attr(info.name)}">',
        f"<h2>{escape(protocol_heading(info))}</h2>",
    ]
    if info.description:
        parts.append(f'<p class="desc">{escape(info.description)}</p>')
    parts.append(f'<p class="note">{escape(ranking_note(table))}</p>')
    parts.append(svg)
    if missing:
        parts.append(f'<p class="note">{missing} row(s) not plotted: no mean clean or robust number.</p>')
    parts.append(f'<p class="count">{len(table.rows)} of {len(table.rows)} rows shown</p>')
    parts.append(_table_html(table))
    notes = [
        f"<li><strong>{escape(r.name)}</strong>: {escape(r.footnote)}</li>" for r in table.rows if r.footnote
    ]
    if notes:
        parts.append(f'<ul class="notes">{"".join(notes)}</ul>')
    parts.append("</section>")
    return "\n".join(parts)


def _options(element_id: str, label: str, values: list[str]) -> str:
    opts = '<option value="">all</option>' + "".join(
        f'<option value="{_attr(v)}">{escape(v)}</option>' for v in values
    )
    return f'<label for="{element_id}">{escape(label)}</label><select id="{element_id}">{opts}</select>'


def render_index(tables: list[Table]) -> str:
    """The whole page; the same tables always give the same bytes."""
    css, js = _asset("leaderboard.css"), _asset("leaderboard.js")
    csp = (
        f"default-src 'none'; script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    threats = sorted({r.trained_for for t in tables for r in t.rows})
    controls = (
        '<div class="controls">'
        f"<span>{_options('f-protocol', 'Protocol', [t.protocol.name for t in tables])}</span>"
        f"<span>{_options('f-threat', 'Trained for', threats)}</span>"
        f"<span>{_options('f-status', 'Status', ['evaluated', 'reported'])}</span>"
        "</div>"
    )
    toc = "".join(
        f'<li><a href="#p-{_attr(t.slug)}">{escape(protocol_heading(t.protocol))}</a></li>' for t in tables
    )
    sections = "\n".join(_section(t) for t in tables) or "<p>No entries yet.</p>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_attr(csp)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        "<title>zsrobust-bench leaderboard</title>\n"
        f"<style>{css}</style>\n</head>\n<body>\n"
        "<header><h1>zsrobust-bench leaderboard</h1>\n"
        "<p>Zero-shot adversarial robustness of CLIP-style models. One table per protocol: numbers from "
        "different protocols are not comparable. Click a column title to sort.</p>\n"
        f'<p class="note">{escape(STATUS_NOTE)}</p>\n'
        f"{controls}\n<nav><ul>{toc}</ul></nav></header>\n<main>\n{sections}\n</main>\n"
        "<footer><p>Generated by <code>zsbench leaderboard build</code> from <code>submissions/</code>.</p></footer>\n"
        f"<script>{js}</script>\n</body>\n</html>\n"
    )

"""CSV tables: raw numbers for scripts, text cells guarded against spreadsheet formula injection."""

from __future__ import annotations

import csv
import io

from .tables import Table, cells, headers


def csv_text(value: object) -> str:
    """A CSV field; text that a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    text = " ".join(str(value).split())
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def csv_table(table: Table) -> str:
    """One protocol's table as CSV (unix newlines, deterministic)."""
    head = [
        "protocol",
        "protocol_version",
        "entry_id",
        *headers(table),
        "source_url",
        "paper_url",
        "card",
        "results",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_text(h) for h in head])  # headers carry dataset names: neutralised like cells
    for rank, row in enumerate(table.rows, 1):
        values = [c.value for c in cells(table, row, rank)]
        extra = [row.source_url, row.paper_url, row.card_href, row.results_href]
        writer.writerow(
            [
                csv_text(v)
                for v in (table.protocol.name, table.protocol.version, row.entry_id, *values, *extra)
            ]
        )
    return buf.getvalue()

"""Inline SVG scatter of mean robust vs mean clean accuracy, one point per row (escaped text only)."""

from __future__ import annotations

from html import escape

from .tables import Table, fmt, primary_value

W, H = 560, 380
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 48


def _x(v: float) -> str:
    return f"{LEFT + (W - LEFT - RIGHT) * v / 100:.1f}"


def _y(v: float) -> str:
    return f"{H - BOTTOM - (H - TOP - BOTTOM) * v / 100:.1f}"


def chart_svg(table: Table) -> tuple[str, int]:
    """(SVG markup, number of rows left out for lack of a clean or robust mean)."""
    if table.primary_eps is None:
        return "", 0
    eps = table.primary_eps
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(f"Mean robust accuracy at {eps} against mean clean accuracy, one point per row")}">'
    ]
    for t in range(0, 101, 20):
        parts.append(f'<line class="grid" x1="{_x(0)}" y1="{_y(t)}" x2="{_x(100)}" y2="{_y(t)}"/>')
        parts.append(f'<line class="grid" x1="{_x(t)}" y1="{_y(0)}" x2="{_x(t)}" y2="{_y(100)}"/>')
        parts.append(f'<text x="{_x(t)}" y="{H - BOTTOM + 16}" text-anchor="middle">{t}</text>')
        parts.append(f'<text x="{LEFT - 8}" y="{float(_y(t)) + 4:.1f}" text-anchor="end">{t}</text>')
    parts.append(f'<line class="axis" x1="{_x(0)}" y1="{_y(0)}" x2="{_x(100)}" y2="{_y(0)}"/>')
    parts.append(f'<line class="axis" x1="{_x(0)}" y1="{_y(0)}" x2="{_x(0)}" y2="{_y(100)}"/>')
    parts.append(f'<text x="{_x(50)}" y="{H - 10}" text-anchor="middle">mean clean accuracy (%)</text>')
    parts.append(
        f'<text x="14" y="{_y(50)}" text-anchor="middle" transform="rotate(-90 14 {_y(50)})">'
        f"mean robust accuracy at {escape(eps)} (%)</text>"
    )
    missing = 0
    for rank, row in enumerate(table.rows, 1):
        clean, robust = row.scores.mean_clean, primary_value(row, eps)
        if clean is None or robust is None:
            missing += 1
            continue
        tip = f"#{rank} {row.name} ({row.status}): clean {fmt(clean, row.status, row.decimals)}, robust {fmt(robust, row.status, row.decimals)}"
        parts.append(
            f'<g class="pt" data-threat="{escape(row.trained_for)}" data-status="{escape(row.status)}" '
            f'data-entry="{escape(row.entry_id)}"><title>{escape(tip)}</title>'
            f'<circle class="{escape(row.status)}" cx="{_x(clean)}" cy="{_y(robust)}" r="5"/>'
            f'<text x="{float(_x(clean)) + 7:.1f}" y="{float(_y(robust)) - 5:.1f}">{rank}</text></g>'
        )
    parts.append("</svg>")
    if missing == len(table.rows):
        return "", missing  # nothing to plot
    return "".join(parts), missing

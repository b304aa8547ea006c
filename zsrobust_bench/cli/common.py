"""What every command shares: argument types, the default device and the one plain-text table renderer."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ZSBenchError
from ..protocols import parse_eps


def positive_int(text: str) -> int:
    """Argument type: an integer > 0."""
    v = _int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonneg_int(text: str) -> int:
    """Argument type: an integer >= 0."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc


def eps(text: str) -> float:
    """Argument type: a radius >= 0 in pixel units, e.g. 4/255 or 0.0157."""
    try:
        v = parse_eps(text)
    except ZSBenchError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    if v < 0:
        raise argparse.ArgumentTypeError("epsilon must be >= 0")
    return v


def default_device() -> str:
    """cuda when a GPU is visible, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def render_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    titles: Sequence[str] | None = None,
    align: str = "<",
    gap: str = "  ",
    rule: bool = True,
    footer: Sequence[Mapping[str, Any]] = (),
) -> str:
    """A plain-text table: one line per row (a list cell takes one line per item), headed by `titles`
    (default: the column names in capitals). `align` is '<' or '>' for every column, or one per column;
    `rule` draws dashes under the head and above the `footer` rows."""
    titles = [c.upper() for c in columns] if titles is None else list(titles)
    aligns = align * len(columns) if len(align) == 1 else align
    cells = [
        [[str(x) for x in r[c]] if isinstance(r[c], list) else [str(r[c])] for c in columns]
        for r in [*rows, *footer]
    ]
    widths = [max([len(t)] + [len(line) for row in cells for line in row[i]]) for i, t in enumerate(titles)]

    def line(parts: Sequence[str]) -> str:
        return gap.join(
            p.ljust(w) if a == "<" else p.rjust(w) for p, w, a in zip(parts, widths, aligns, strict=True)
        ).rstrip()

    sep = gap.join("-" * w for w in widths)
    out = [line(titles)] + ([sep] if rule else [])
    for n, row in enumerate(cells):
        if rule and footer and n == len(rows):
            out.append(sep)
        for k in range(max(len(cell) for cell in row)):
            out.append(line([cell[k] if k < len(cell) else "" for cell in row]))
    return "\n".join(out)


def format_results_table(results: dict[str, Any]) -> str:
    """Per-dataset clean/robust accuracy table with means, warnings and sanity problems."""
    proto = results["protocol"]
    labels = proto["params"].get("eps_labels", [])
    head = ["dataset", "n", "clean %"] + [f"robust % @{lab}" for lab in labels]
    rows = []
    for name, d in results["datasets"].items():
        by = d.get("robust_acc_by_eps") or {}
        rows.append([name, str(d["n"]), f"{d['clean_acc']:.2f}"] + [f"{by[lab]:.2f}" for lab in labels])
    m = results["means"]
    mby = m.get("robust_acc_by_eps") or {}
    mean = ["mean", "", f"{m['clean_acc']:.2f}" if m["clean_acc"] is not None else "-"]
    mean += [f"{mby[lab]:.2f}" for lab in labels]
    table = render_table(
        [dict(zip(head, r, strict=True)) for r in rows],
        head,
        titles=head,
        align="<" + ">" * (len(head) - 1),
        footer=[dict(zip(head, mean, strict=True))],
    )
    custom = " (CUSTOM: overridden parameters, not comparable with the protocol)" if proto["custom"] else ""
    model = results["model"]
    out = [
        f"model {model['spec']} [{model['format']}, {model['kind']}]  protocol {proto['name']} v{proto['version']}{custom}",
        table,
    ]
    if model.get("random_init"):
        out.append("WARNING: built WITHOUT pretrained weights for part of the model (random init)")
    for warning in results.get("sanity", {}).get("warnings", []):
        out.append(f"SANITY WARNING: {warning}")
    return "\n".join(out)

"""Human-readable tables of results."""

from __future__ import annotations

from typing import Any


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
    rows.append(
        ["mean", "", f"{m['clean_acc']:.2f}" if m["clean_acc"] is not None else "-"]
        + [f"{mby[lab]:.2f}" for lab in labels]
    )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    sep = "  ".join("-" * w for w in widths)
    custom = " (CUSTOM: overridden parameters, not comparable with the protocol)" if proto["custom"] else ""
    model = results["model"]
    out = [
        f"model {model['spec']} [{model['format']}, {model['kind']}]  protocol {proto['name']} v{proto['version']}{custom}",
        line(head),
        sep,
        *[line(r) for r in rows[:-1]],
        sep,
        line(rows[-1]),
    ]
    if model.get("random_init"):
        out.append("WARNING: built WITHOUT pretrained weights for part of the model (random init)")
    for warning in results.get("sanity", {}).get("warnings", []):
        out.append(f"SANITY WARNING: {warning}")
    return "\n".join(out)

"""Checks the evaluator runs on every result (the attack-level checks live in sanity.py)."""

from __future__ import annotations

from typing import Any


def run_consistency(per_dataset: dict[str, Any], eps_labels: list[str]) -> dict[str, Any]:
    """robust <= clean per dataset; robust accuracy non-increasing in eps."""
    problems = []
    for name, d in per_dataset.items():
        r = d.get("robust_acc")
        if r is not None and r > d["clean_acc"] + 1e-9:
            problems.append({"dataset": name, "check": "robust<=clean", "clean": d["clean_acc"], "robust": r})
        by = d.get("robust_acc_by_eps") or {}
        vals = [by[lab] for lab in eps_labels if lab in by]
        for a, b, la, lb in zip(vals, vals[1:], eps_labels, eps_labels[1:], strict=False):
            if b > a + 1e-9:
                problems.append({"dataset": name, "check": "monotone-in-eps", la: a, lb: b})
    return {"consistency": {"passed": not problems, "problems": problems}}

"""The training log (JSONL, one record per logged step or validation) and its end-of-run plot."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_bytes, atomic_write_text


class TrainLog:
    """Append-only JSONL log; on resume, records after the resumed step are dropped first."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None:
            atomic_write_text(path, "")
        elif path.is_file():
            keep = [r for r in self.records() if int(r.get("step", 0)) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text().splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # torn by a kill mid-append: that step is redone after the resume
        return [json.loads(line) for line in lines if line.strip()]

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()


def plot_log(log_path: Path, out: Path) -> Path:
    """Loss and clean/adversarial training accuracy per step, with validation robust accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(x) for x in log_path.read_text().splitlines() if x.strip()]
    train = [r for r in recs if r.get("kind") == "train"]
    val = [r for r in recs if r.get("kind") == "val"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [r["step"] for r in train]
    ax1.plot(steps, [r["loss"] for r in train], label="loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.legend()
    ax2.plot(steps, [r["clean_acc"] for r in train], label="train clean acc")
    ax2.plot(steps, [r["adv_acc"] for r in train], label="train adversarial acc")
    if val:
        ax2.plot(
            [r["step"] for r in val], [r["mean_robust_acc"] for r in val], "o-", label="val mean robust acc"
        )
        ax2.plot(
            [r["step"] for r in val], [r["mean_clean_acc"] for r in val], "s--", label="val mean clean acc"
        )
    ax2.set_xlabel("step")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix.lstrip(".") or "png", dpi=100)
    atomic_write_bytes(out, buf.getvalue())
    plt.close(fig)
    return out

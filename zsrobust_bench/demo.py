"""The offline end-to-end run on the shipped tiny CLIP and the synthetic world.

Evaluates the shipped model clean and under PGD on every synthetic task, files the run as a
leaderboard entry in a scratch submissions tree and builds the leaderboard (`zsbench demo` prints it).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

DEMO_ENTRY = "demo-tiny-clip"
DEMO_NAME = "demo tiny CLIP (shipped; synthetic suite)"


def demo_model_path() -> Path:
    """The tiny CLIP shipped in the package (regenerate: `zsbench train demo-contrastive`)."""
    return Path(str(resources.files("zsrobust_bench").joinpath("assets/demo-clip.safetensors")))


def run_demo(out: Path, device: str = "cpu", batch_size: int = 256, progress: bool = True) -> dict[str, Any]:
    """Evaluate, submit and build; returns {"results", "leaderboard_files", "table"}."""
    from .evaluate import evaluate
    from .leaderboard import build_leaderboard, render_markdown_table, submit_run

    run_dir = out / "run"
    results = evaluate(
        str(demo_model_path()),
        None,
        protocol="synthetic-pgd",
        out=run_dir,
        device=device,
        batch_size=batch_size,
        progress=progress,
    )
    submissions = out / "submissions"
    submit_run(run_dir, DEMO_ENTRY, submissions)
    files = build_leaderboard(submissions, out / "leaderboard")
    return {
        "results": results,
        "leaderboard_files": files,
        "table": render_markdown_table([results], names=[DEMO_NAME]),
    }

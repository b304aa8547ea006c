"""`zsbench demo`: the offline end-to-end run on the shipped tiny CLIP and the synthetic world.

Evaluates the shipped model clean and under PGD on every synthetic task, files the run as a
leaderboard entry in a scratch submissions tree, builds the leaderboard and prints its table.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Any

from .report import format_results_table

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


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline end-to-end demo: shipped tiny CLIP on the synthetic suite",
        description="Evaluate the shipped tiny CLIP clean and under PGD on the synthetic zero-shot tasks, "
        "then build a leaderboard from the run. Needs no network and no downloads.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("zsbench-demo"), help="output directory (default ./zsbench-demo)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=256, help="samples attacked at once (default 256)")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    res = run_demo(args.out, device=args.device, batch_size=args.batch_size)
    print(format_results_table(res["results"]))
    print("\nLeaderboard (synthetic suite):\n")
    print(res["table"])
    print(f"\nrun: {args.out / 'run' / 'results.json'}")
    print(f"leaderboard: {args.out / 'leaderboard' / 'index.html'}")
    return 0

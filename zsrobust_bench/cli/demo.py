"""`zsbench demo`: flags -> `zsrobust_bench.demo.run_demo`, then its tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import format_results_table


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
    from ..demo import run_demo

    res = run_demo(args.out, device=args.device, batch_size=args.batch_size)
    print(format_results_table(res["results"]))
    print("\nLeaderboard (synthetic suite):\n")
    print(res["table"])
    print(f"\nrun: {args.out / 'run' / 'results.json'}")
    print(f"leaderboard: {args.out / 'leaderboard' / 'index.html'}")
    return 0

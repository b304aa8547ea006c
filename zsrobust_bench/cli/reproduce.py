"""`zsbench reproduce ENTRY`: flags -> `zsrobust_bench.leaderboard.reproduce.reproduce`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .common import default_device, render_table

if TYPE_CHECKING:
    from ..leaderboard.reproduce import Reproduction


def _cmd(args: argparse.Namespace) -> int:
    from ..leaderboard.reproduce import reproduce

    rep = reproduce(
        args.entry,
        submissions_dir=args.submissions,
        out=args.out,
        reported=args.reported,
        protocol=args.protocol,
        submit=args.submit,
        data_root=args.data_root,
        device=args.device or default_device(),
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    if args.json:
        print(json.dumps([c.as_dict() for c in rep.rows], indent=2))
    else:
        print(format_reproduction(rep))
    return 0


def format_reproduction(rep: Reproduction) -> str:
    """Reported vs measured per dataset and metric, with the difference and the precision verdict."""

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = [
        {
            "dataset": c.dataset,
            "metric": c.metric,
            "reported": f"{c.reported:.{c.decimals}f}",
            "measured": num(c.measured),
            "diff": "-" if c.diff is None else f"{c.diff:+.2f}",
            "verdict": "not measured"
            if c.diff is None
            else ("exact" if c.exact else f"off by {c.diff:+.2f}"),
        }
        for c in rep.rows
    ]
    head = (
        f"{rep.entry_id}: zoo:{rep.zoo_name} under {rep.protocol} "
        f"(reported as {rep.reported_protocol}; run in {rep.out})"
    )
    cols = ("dataset", "metric", "reported", "measured", "diff", "verdict")
    exact = sum(c.exact for c in rep.rows)
    tail = f"{exact} of {len(rep.rows)} reported numbers reproduced within the published precision"
    if rep.submitted:
        tail += f"; run added to {rep.submitted}"
    return "\n".join([head, render_table(rows, cols), tail])


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add `reproduce ENTRY`."""
    p = sub.add_parser(
        "reproduce",
        help="re-evaluate a leaderboard entry's published checkpoint and compare with its reported numbers",
        description="Fetch the zoo checkpoint of leaderboard entry ENTRY, evaluate it under the registered "
        "protocol that matches its reported numbers, and print reported vs measured per dataset.",
    )
    p.add_argument("entry", metavar="ENTRY", help="leaderboard entry id (a folder under --submissions)")
    p.add_argument("--submissions", type=Path, default=Path("submissions"), help="submissions folder")
    p.add_argument("--out", type=Path, help="run folder (default runs/reproduce-<entry>-<protocol>)")
    p.add_argument("--reported", help="which reported results file (protocol name) to reproduce")
    p.add_argument("--protocol", help="registered protocol to evaluate with (default: the mapped one)")
    p.add_argument("--data-root", type=Path, help="dataset root (default: $ZSBENCH_DATA)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=128, help="samples attacked at once (default 128)")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes (default 0)")
    p.add_argument("--submit", action="store_true", help="add the run to the entry as evaluated results")
    p.add_argument("--json", action="store_true", help="print the comparison rows as JSON")
    p.set_defaults(func=_cmd)

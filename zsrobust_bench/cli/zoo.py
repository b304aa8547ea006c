"""`zsbench zoo list|show|download`: the released checkpoints, their sources, and fetching them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..zoo.registry import ZooEntry, get_entry, list_entries
from ..zoo.resolve import fetch_entry
from .common import render_table

COLUMNS = ("name", "arch", "format", "base_weights", "where", "leaderboard_entry")


def zoo_row(e: ZooEntry) -> dict[str, Any]:
    """One row: every field plus `where` (the location as one string)."""
    return {**e.as_dict(), "where": e.where()}


def _list(args: argparse.Namespace) -> int:
    rows = [zoo_row(e) for e in list_entries()]
    print(json.dumps(rows, indent=2) if args.json else render_table(rows, COLUMNS))
    return 0


def _show(args: argparse.Namespace) -> int:
    row = zoo_row(get_entry(args.name))
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        width = max(len(k) for k in row)
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in row.items()))
    return 0


def _download(args: argparse.Namespace) -> int:
    entry = get_entry(args.name)
    path = fetch_entry(entry)
    print(
        path
        if path is not None
        else f"{entry.name} is the open_clip tag {entry.where()}: open_clip fetches it"
    )
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add `zoo list [--json]`, `zoo show NAME [--json]` and `zoo download NAME`."""
    p = sub.add_parser("zoo", help="released robust CLIP checkpoints (list, show, download)")
    zs = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    sp = zs.add_parser("list", help="list the zoo")
    sp.add_argument("--json", action="store_true", help="print a JSON array of objects (one per checkpoint)")
    sp.set_defaults(func=_list)
    sp = zs.add_parser("show", help="every field of one checkpoint, with its source")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    sp.set_defaults(func=_show)
    sp = zs.add_parser(
        "download", help="fetch a checkpoint into $ZSBENCH_CACHE/zoo (resumes; verifies sha256)"
    )
    sp.add_argument("name", metavar="NAME")
    sp.set_defaults(func=_download)

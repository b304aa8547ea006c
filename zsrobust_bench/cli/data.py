"""`zsbench datasets list|prepare|verify`: thin argument parsing over data/manage.py."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..data.manage import LIST_COLUMNS, list_datasets, prepare, verify
from ..data.paths import DATA_ROOT_HELP
from ..errors import ZSBenchError
from .common import render_table

VERIFY_COLUMNS = (
    "name",
    "ok",
    "source",
    "split",
    "n",
    "expected",
    "checked",
    "classes_seen",
    "num_classes",
    "unreadable",
)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Right-aligned columns one space apart, '-' for a missing value; a number column's title is indented
    by one space (the layout pandas gave these tables)."""
    if not rows:
        return "(nothing to show)"
    cells = [{c: ("-" if r[c] is None else r[c]) for c in columns} for r in rows]
    titles = [" " + c if _numeric([r[c] for r in cells]) else c for c in columns]
    return render_table(cells, columns, titles=titles, align=">", gap=" ", rule=False)


def _numeric(values: list[Any]) -> bool:
    """All booleans, or all integers."""
    return all(isinstance(v, bool) for v in values) or all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    )


def _cmd_list(args: argparse.Namespace) -> int:
    rows = list_datasets(suite=args.suite, data_root=args.data_root)
    if args.json:
        print(json.dumps([{c: r[c] for c in LIST_COLUMNS} for r in rows], indent=2))
    else:
        print(_table(rows, LIST_COLUMNS))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    if not args.names and not args.suite:
        raise ZSBenchError(
            "name the datasets to prepare", "e.g. `zsbench datasets prepare cifar10` or `--suite tecoa16`"
        )
    rows = prepare(args.names, args.data_root, suite_name=args.suite)
    for row in rows:
        where = f" at {row['location']}" if row["location"] else ""
        print(f"{row['name']}: {row['status']}{where}" + (f" ({row['message']})" if row["message"] else ""))
        for step in row["steps"]:
            print(f"    {step}")
    return 0 if all(r["status"] in ("present", "downloaded") for r in rows) else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    rows = verify(args.names, args.data_root, suite_name=args.suite, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows, VERIFY_COLUMNS))
        for row in rows:
            for err in row["errors"]:
                print(f"{row['name']}: {err}")
    return 0 if rows and all(r["ok"] for r in rows) else 1


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `datasets list [--suite S] [--json]`, `datasets prepare NAME...|--suite S`, `datasets verify`."""
    p = subparsers.add_parser(
        "datasets",
        help="list, fetch and check the evaluation datasets",
        description="The dataset registry: what each dataset is, whether it is under the data root, how to fetch "
        "it, and whether its files are complete.",
    )
    sub = p.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND", required=True)

    lp = sub.add_parser(
        "list",
        help="every registered dataset and whether it is present",
        description="One row per dataset: class count, size of the evaluated split, split, resolution at which it "
        "is attacked, whether a copy is under the data root (and where), and the sources it can be read from.",
    )
    lp.add_argument("--suite", help="only the members of this suite (e.g. tecoa16, pmg16, fare14)")
    lp.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of objects (one per dataset) instead of a table",
    )
    lp.add_argument("--data-root", help=DATA_ROOT_HELP)
    lp.set_defaults(func=_cmd_list)

    pp = sub.add_parser(
        "prepare",
        help="download datasets into the data root",
        description="Download each dataset (HF hub or torchvision) into the data root. Offline (HF_HUB_OFFLINE, "
        "HF_DATASETS_OFFLINE, or no connection) it says so and prints the steps to do by hand. Exits 1 if a dataset "
        "is still missing.",
    )
    pp.add_argument("names", nargs="*", metavar="NAME", help="dataset names or aliases")
    pp.add_argument("--suite", help="prepare every member of this suite")
    pp.add_argument("--data-root", help=DATA_ROOT_HELP)
    pp.set_defaults(func=_cmd_prepare)

    vp = sub.add_parser(
        "verify",
        help="check dataset files: counts, classes, readable images",
        description="Open each dataset as the evaluator does and decode every image: compares the sample count with "
        "the known size, counts the classes seen and reports unreadable files. Without names, checks the datasets "
        "that are present. Exits 1 if any check fails.",
    )
    vp.add_argument("names", nargs="*", metavar="NAME", help="dataset names, aliases or imagefolder:PATH")
    vp.add_argument("--suite", help="verify every member of this suite")
    vp.add_argument("--data-root", help=DATA_ROOT_HELP)
    vp.add_argument(
        "--limit", type=int, help="check only the first N images of each dataset (no count checks)"
    )
    vp.add_argument("--json", action="store_true", help="print a JSON array of objects (one per dataset)")
    vp.set_defaults(func=_cmd_verify)

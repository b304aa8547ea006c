"""`zsbench submit` and `zsbench leaderboard {validate,build}`: argument parsing only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..leaderboard.build import build_leaderboard, differences
from ..leaderboard.problems import Problem, errors
from ..leaderboard.recheck import recheck_submissions
from ..leaderboard.submit import submit
from ..leaderboard.validate import validate_submissions


def _print_problems(problems: list[Problem], as_json: bool) -> None:
    if as_json:
        print(json.dumps([p.to_dict() for p in problems], indent=2))
        return
    for p in problems:
        print(p, file=sys.stderr if p.severity == "error" else sys.stdout)


def _cmd_submit(args: argparse.Namespace) -> int:
    report = submit(args.run_dir, args.id, args.submissions)
    for path in report.written:
        print(f"wrote {path}")
    if report.card_created:
        print(f"created {report.entry_dir / 'card.yaml'}: fill in name, authors, paper, venue, licence")
    for field in report.filled:
        print(f"filled card field {field} from the run")
    _print_problems(report.problems, False)
    bad = errors(report.problems)
    if bad:
        print(
            f"{len(bad)} problem(s) left: edit the card, then run `zsbench leaderboard validate`",
            file=sys.stderr,
        )
    return 1 if bad else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    problems = validate_submissions(args.path)
    if args.recheck:
        problems += recheck_submissions(
            args.path,
            args.recheck,
            seed=args.seed,
            checkpoint=args.checkpoint,
            data_root=args.data_root,
            device=args.device,
        )
    _print_problems(problems, args.json)
    bad = errors(problems)
    if not args.json:
        print(
            f"{args.path}: {'FAILED, ' + str(len(bad)) + ' error(s)' if bad else 'OK'}",
            file=sys.stderr if bad else sys.stdout,
        )
    return 1 if bad else 0


def _cmd_build(args: argparse.Namespace) -> int:
    if args.check:
        stale = differences(args.submissions, args.out)
        for name in stale:
            print(f"out of date: {Path(args.out) / name}", file=sys.stderr)
        if stale:
            print("run `zsbench leaderboard build` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for path in build_leaderboard(args.submissions, args.out):
        print(path)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the `submit` and `leaderboard` commands to the top-level zsbench parser."""
    sub = subparsers.add_parser(
        "submit",
        help="create or update a leaderboard entry from an evaluation run",
        description="Copy RUN_DIR/results.json and a digest of its per-sample records into "
        "SUBMISSIONS/ID/. A missing card.yaml is created; an existing one keeps every field you wrote "
        "(only null placeholders for checkpoint.sha256, architecture and base_weights are filled).",
    )
    sub.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the --out folder of `zsbench evaluate`")
    sub.add_argument(
        "--id", required=True, help="entry id: lowercase letters, digits, '.', '-', '_' (e.g. tecoa-vitb32)"
    )
    sub.add_argument(
        "--submissions",
        type=Path,
        default=Path("submissions"),
        help="submissions folder (default: submissions)",
    )
    sub.set_defaults(func=_cmd_submit)

    lb = subparsers.add_parser("leaderboard", help="validate submissions and build the leaderboard")
    lb_sub = lb.add_subparsers(dest="leaderboard_command", metavar="{validate,build}", required=True)

    val = lb_sub.add_parser(
        "validate",
        help="check every entry (schema, averages, protocol, hashes, ids, digests)",
        description="Check the submissions tree (or one entry folder): card and results schemas, that "
        "averages equal the per-dataset numbers, that protocols and versions are known and unmodified "
        "(custom runs are refused), that card and results checkpoint hashes agree, unique ids, and the "
        "per-sample digests. Every problem names its file and field. Exit status 1 on any error.",
    )
    val.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=Path("submissions"),
        metavar="PATH",
        help="submissions folder or one entry folder (default: submissions)",
    )
    val.add_argument(
        "--recheck",
        type=int,
        default=0,
        metavar="N",
        help="re-evaluate N random recorded samples per entry and compare (needs checkpoint and data)",
    )
    val.add_argument(
        "--seed", type=int, default=0, help="seed that picks the re-checked samples (default: 0)"
    )
    val.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="checkpoint file for --recheck when the card has no local path",
    )
    val.add_argument("--data-root", type=Path, default=None, help="dataset root for --recheck")
    val.add_argument("--device", default="cpu", help="device for --recheck (default: cpu)")
    val.add_argument(
        "--json",
        action="store_true",
        help="print the problems as a JSON array of {file, field, message, severity}",
    )
    val.set_defaults(func=_cmd_validate)

    build = lb_sub.add_parser(
        "build",
        help="write the Markdown/CSV tables and index.html",
        description="Validate SUBMISSIONS, then write one Markdown and one CSV table per protocol, "
        "README.md and a self-contained index.html into OUT. Same inputs give the same bytes.",
    )
    build.add_argument(
        "--submissions",
        type=Path,
        default=Path("submissions"),
        help="submissions folder (default: submissions)",
    )
    build.add_argument(
        "--out", type=Path, default=Path("leaderboard"), help="output folder (default: leaderboard)"
    )
    build.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if OUT differs from a fresh build"
    )
    build.set_defaults(func=_cmd_build)

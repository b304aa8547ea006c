"""`zsbench` command line: parses arguments and calls library functions; no logic of its own."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ZSBenchError

# One module per command group, each with `register_cli(subparsers)`; the order is the order in --help.
COMMANDS = (
    "zsrobust_bench.cli.evaluate",
    "zsrobust_bench.cli.data",
    "zsrobust_bench.cli.protocols",
    "zsrobust_bench.cli.train",
    "zsrobust_bench.cli.leaderboard",
    "zsrobust_bench.cli.demo",
    "zsrobust_bench.cli.zoo",
    "zsrobust_bench.cli.reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsbench",
        description="Zero-shot adversarial robustness benchmark for CLIP-style models.",
    )
    parser.add_argument("--version", action="version", version=f"zsbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in COMMANDS:
        importlib.import_module(mod).register_cli(sub)
    return parser


# Output failures a user fixes outside zsbench: one line and exit 2, not a traceback. Files are written
# atomically (fileio.atomic_write_*), so nothing half-written is left behind; a re-run resumes.
OUTPUT_ERRNOS: dict[int, str] = {
    errno.EACCES: "choose an --out folder you can write to",
    errno.EPERM: "choose an --out folder you can write to",
    errno.EROFS: "the file system is read-only; choose another --out folder",
    errno.ENOSPC: "the disk is full; free space and re-run (finished shards are kept)",
    errno.EDQUOT: "the disk quota is exhausted; free space and re-run (finished shards are kept)",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    debug = args.debug or os.environ.get("ZSBENCH_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except ZSBenchError as exc:
        if debug:
            raise
        print(f"zsbench: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"zsbench: hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS or debug:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"zsbench: error: cannot write{where}: {exc.strerror}", file=sys.stderr)
        print(f"zsbench: hint: {OUTPUT_ERRNOS[exc.errno]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zsbench: interrupted; finished shards are kept and a re-run resumes", file=sys.stderr)
        return 130

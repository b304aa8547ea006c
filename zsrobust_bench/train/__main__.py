"""`python -m zsrobust_bench.train CONFIG [--set k=v] [--out DIR] [--resume]` (also under torchrun)."""

from __future__ import annotations

import argparse
import sys

from ..cli.train import register_cli
from ..errors import ZSBenchError


def main(argv: list[str] | None = None) -> int:
    """Parse the train subcommand's arguments and run it."""
    parser = argparse.ArgumentParser(prog="python -m zsrobust_bench.train")
    sub = parser.add_subparsers(dest="command", required=True)
    register_cli(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except ZSBenchError as exc:
        print(f"zsbench: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())

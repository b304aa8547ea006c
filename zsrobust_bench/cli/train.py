"""`zsbench train CONFIG [--set key=value ...] [--out DIR] [--resume]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `train` subcommand to the zsbench parser."""
    from ..train.config import shipped_configs

    p = subparsers.add_parser(
        "train",
        help="train or finetune a CLIP (TeCoA, visual prompting, baselines, contrastive)",
        description="Run a training recipe. Works under `torchrun --nproc-per-node N -m zsrobust_bench.cli train ...` "
        "(DistributedDataParallel; gloo on CPU, nccl on CUDA).",
    )
    p.add_argument("config", help=f"a shipped recipe ({', '.join(shipped_configs())}) or a YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, dotted keys (attack.eps=2/255); the value is parsed as YAML",
    )
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd)
    return p


def _cmd(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.trainer import train

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / str(cfg.get("name") or "train")
    final = train(cfg, out, resume=args.resume)
    print(f"final checkpoint: {final}")
    return 0

"""`zsbench evaluate`: flags -> an `EvalRequest` -> `zsrobust_bench.evaluate.run`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..protocols import ATTACK_BACKENDS
from .common import default_device, eps, format_results_table, nonneg_int, positive_int


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model's clean and robust zero-shot accuracy",
        description="Evaluate MODEL zero-shot under a named protocol. Writes OUT/results.json and "
        "OUT/samples/<dataset>.jsonl; re-running the same command resumes.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="checkpoint (.pt/.pth/.pth.tar/.bin/.safetensors), open_clip ARCH:PRETRAINED tag, or hf-hub:ORG/NAME, or zoo:NAME (see `zsbench zoo list`)",
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        help="dataset names, aliases, suites (tecoa16, pmg16, fare14, synthetic) or imagefolder:PATH; "
        "default: the protocol's suite",
    )
    p.add_argument(
        "--protocol",
        default="tecoa-pgd",
        help="named protocol (see `zsbench protocols list`); default tecoa-pgd",
    )
    p.add_argument("--arch", help="open_clip model name or path to an open_clip model-config JSON")
    p.add_argument(
        "--pretrained",
        help="base weights for what the checkpoint lacks: open_clip tag or full checkpoint path",
    )
    p.add_argument(
        "--allow-custom-tokenizer",
        action="store_true",
        help="let the architecture config name a local tokenizer folder of your own (loaded without "
        "remote code); never set by the leaderboard",
    )
    p.add_argument("--out", type=Path, help="output directory (default: runs/<model>-<protocol>)")
    p.add_argument(
        "--data-root", type=Path, help="dataset root (default: $ZSBENCH_DATA or ~/.cache/zsbench/data)"
    )
    g = p.add_argument_group("protocol overrides (any of these marks the run `custom`)")
    g.add_argument("--eps", nargs="+", type=eps, help="attack radius/radii, e.g. 1/255 4/255")
    g.add_argument("--steps", type=nonneg_int, help="attack iterations (PGD steps)")
    g.add_argument("--step-size", type=eps, help="PGD step size, e.g. 1/255")
    g.add_argument("--restarts", type=positive_int, help="PGD random restarts")
    g.add_argument(
        "--samples", type=positive_int, help="evaluate a seeded subset of this many samples per dataset"
    )
    g.add_argument("--seed", type=int, help="seed for subsets and random starts (default: the protocol's)")
    g.add_argument(
        "--attack",
        action="append",
        metavar="torchattacks:NAME[(k=v,...)]",
        help="run this torchattacks attack instead of the protocol's attacks (literal arguments only); "
        "repeatable; see docs/torchattacks.md",
    )
    g.add_argument("--attack-kwargs", help="JSON object of keyword arguments for every --attack")
    g.add_argument("--prompt-set", help="prompt set: tecoa (single template) or clip (ensemble)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument(
        "--batch-size", type=positive_int, default=128, help="samples attacked at once (default 128)"
    )
    p.add_argument("--workers", type=nonneg_int, default=0, help="data-loading worker processes (default 0)")
    p.add_argument(
        "--shard-size", type=positive_int, default=512, help="samples per resumable shard (default 512)"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the image tower (worth it on CUDA for long runs; the first batch pays the compile time)",
    )
    p.add_argument(
        "--attack-backend",
        choices=ATTACK_BACKENDS,
        default=None,
        help="APGD-CE/APGD-T implementation: engine (slot pool, per-sample early exit) or reference "
        "(pyautoattack batches); default: the protocol's (engine). FAB-T and Square always run pyautoattack",
    )
    p.add_argument("--json", action="store_true", help="print results.json to stdout instead of a table")
    p.set_defaults(func=_cmd)


# flags that override the protocol parameter of the same name (protocols.apply_overrides), in this order
OVERRIDE_FLAGS = ("eps", "steps", "step_size", "restarts", "samples", "prompt_set")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol overrides the command line asks for; an empty dict leaves the protocol as registered."""
    ov: dict[str, Any] = {}
    if args.attack:
        from ..attacks.torchattacks_adapter import parse_attack_specs

        ov["attacks"] = parse_attack_specs(args.attack, args.attack_kwargs)
    ov.update({k: getattr(args, k) for k in OVERRIDE_FLAGS if getattr(args, k) is not None})
    return ov


def _cmd(args: argparse.Namespace) -> int:
    from ..evaluate import run
    from ..request import EvalRequest
    from ..zoo import resolve_zoo_spec

    zoo = resolve_zoo_spec(args.model)
    out = args.out or Path("runs") / f"{Path(args.model).stem.replace(':', '_')}-{args.protocol}"
    request = EvalRequest(
        model=zoo.spec,
        datasets=args.datasets,
        protocol=args.protocol,
        out=out,
        arch=args.arch or zoo.arch,
        pretrained=args.pretrained or zoo.pretrained,
        data_root=args.data_root,
        seed=args.seed,
        device=args.device or default_device(),
        batch_size=args.batch_size,
        num_workers=args.workers,
        shard_size=args.shard_size,
        compile=args.compile,
        allow_custom_tokenizer=args.allow_custom_tokenizer,
        overrides=overrides_from_args(args),
        attack_backend=args.attack_backend,
    )
    results = run(request)
    if not results:  # non-zero rank under torchrun
        return 0
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print(format_results_table(results))
        print(f"\nresults: {out / 'results.json'}")
    return 0

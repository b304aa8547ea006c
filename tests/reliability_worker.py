"""A standalone evaluation run that the kill tests start as a subprocess and SIGKILL from outside.

Usage: python tests/reliability_worker.py OUT CHECKPOINT ARCH_JSON CACHE N SHARD STEPS
"""

from __future__ import annotations

import sys

DATASETS = ["synth-color", "synth-shape"]


def main(argv: list[str]) -> int:
    """Run the fixed evaluation into OUT (resuming whatever is there)."""
    out, ckpt, arch, cache, n, shard, steps = argv
    import torch

    torch.set_num_threads(1)
    from zsrobust_bench.evaluate import evaluate

    print("ready", flush=True)  # imports done: the killer times its SIGKILL from here
    evaluate(
        ckpt,
        DATASETS,
        protocol="tecoa-pgd",
        out=out,
        arch=arch,
        indices={d: list(range(int(n))) for d in DATASETS},
        shard_size=int(shard),
        batch_size=4,
        overrides={"steps": int(steps)},
        progress=False,
        cache_dir=cache,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

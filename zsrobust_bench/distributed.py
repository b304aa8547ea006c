"""torchrun integration: rank/world from the environment, one CPU process group, barriers, engine stats.

Ranks never exchange tensors: each evaluates the shards k with k % world == rank, writes them
atomically, and waits at a barrier; rank 0 merges. The process group is therefore gloo on every
device (no NCCL communicator, no GPU memory for it), with a long timeout because a barrier waits
for the slowest rank's whole dataset (set ZSBENCH_DIST_TIMEOUT, in seconds; default 24 h).
Works the same single-node (`torchrun --nproc-per-node N`) and multi-node (`--nnodes`, rendezvous).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .fileio import atomic_write_json

DEFAULT_TIMEOUT_S = 24 * 3600


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def timeout() -> dt.timedelta:
    """How long a barrier waits for the other ranks."""
    return dt.timedelta(seconds=float(os.environ.get("ZSBENCH_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))


def init_if_needed(device: str) -> tuple[int, int]:
    """Initialise the default process group under torchrun (gloo; it only carries barriers)."""
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=timeout())
    if size > 1 and device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(_cuda_index(device))
    return rank, size


def _cuda_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else local_rank()


def local_device(device: str) -> str:
    """`cuda` under torchrun means this rank's own GPU (LOCAL_RANK); explicit `cuda:N` is kept."""
    if device == "cuda" and world()[1] > 1:
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def write_engine_stats(shard_dir: Path, rank: int, stats: dict[str, Any]) -> None:
    """Record this rank's engine statistics for a dataset (batch size after OOM back-off, work, time)."""
    atomic_write_json(Path(shard_dir) / f"engine.rank{rank}.json", stats)


def read_engine_stats(shard_dir: Path) -> dict[str, Any]:
    """Combine every rank's engine statistics for a dataset (empty when nothing ran, e.g. a full resume)."""
    parts = [json.loads(p.read_text()) for p in sorted(Path(shard_dir).glob("engine.rank*.json"))]
    if not parts:
        return {}
    return {
        "batch_size": min(p["batch_size"] for p in parts),
        "batch_size_requested": max(p["batch_size_requested"] for p in parts),
        "oom_backoffs": sum(p["oom_backoffs"] for p in parts),
        "precision": parts[0]["precision"],
        "compiled": any(p["compiled"] for p in parts),
    }

"""torchrun integration for evaluation and training: rank/world from the environment, process
groups, barriers, the trainer's reductions and the engine's per-rank statistics.

Evaluation ranks never exchange tensors: each evaluates the shards k with k % world == rank, writes
them atomically, and waits at a barrier; rank 0 merges. Its process group is therefore gloo on every
device (no NCCL communicator, no GPU memory for it), with a long timeout because a barrier waits
for the slowest rank's whole dataset (set ZSBENCH_DIST_TIMEOUT, in seconds; default 24 h).
Training (DistributedDataParallel) reduces gradients and gathers features: nccl on CUDA, gloo on CPU.
Works the same single-node (`torchrun --nproc-per-node N`) and multi-node (`--nnodes`, rendezvous).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
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
    """Wait for every process (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and the device this training process runs on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group for training when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    rank, size = world()
    local = local_rank()
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, size, local, dev)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (returns a new tensor)."""
    t = t.clone()
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over processes in rank order, keeping the autograd graph."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t), dim=0)


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

"""Run the engine over shards: stream them through the pipeline, hand out each finished shard's records.

`evaluate_shards` streams shards through the pipeline of `stream`: loading runs ahead in worker
processes and a background thread (`blocks`), the clean pass runs in inference mode, and stepwise
attacks (PGD) run over a fixed-shape slot pool (`pool`) refilled across shard boundaries: a sample
leaves the moment an iterate is misclassified (worst case over iterates, so stopping it changes
nothing) and a fresh sample takes its slot. Resume: a shard is done when its record file exists
(`shard_files`, `missing_shards`), and only into shards of the same configuration (`check_shard_config`).

An out-of-memory error halves the batch size and restarts the unfinished shards (finished shards
are kept); the final batch size is reported.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..fileio import atomic_write_json
from .blocks import Block, ShardSpec, iter_blocks
from .device import is_cuda, prepare_model, release_memory, strict_precision
from .plan import EngineConfig, EpsAttacks, flatten
from .records import EngineStats, SampleRecord
from .stream import Pipeline, StreamStats

log = logging.getLogger(__name__)


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Fixed shard boundaries over positions 0..n-1 of the evaluated index list."""
    return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def shard_files(shard_dir: Path, bounds: list[tuple[int, int]]) -> list[Path]:
    """Each shard's record file, named by its positions: its presence means the shard is done (resume)."""
    return [shard_dir / f"{s:09d}-{e:09d}.jsonl" for s, e in bounds]


def missing_shards(files: list[Path], rank: int, world: int) -> list[int]:
    """The shards this rank owns (round-robin over ranks) whose record file is not written yet."""
    return [k for k in range(len(files)) if k % world == rank and not files[k].exists()]


def check_shard_config(shard_dir: Path, run_cfg: dict[str, Any], rank: int) -> bool:
    """Record the shards' configuration on first use (rank 0); False when the directory holds shards
    written under another configuration, which must not be resumed into."""
    cfg_path = shard_dir / "config.json"
    if cfg_path.exists():
        return json.loads(cfg_path.read_text()) == json.loads(json.dumps(run_cfg))
    if rank == 0:
        atomic_write_json(cfg_path, run_cfg)
    return True


def evaluate_shards(
    model: nn.Module,
    dataset: Dataset,
    shards: Sequence[ShardSpec],
    plan: Sequence[EpsAttacks],
    cfg: EngineConfig,
    on_shard: Callable[[int, list[SampleRecord]], None],
    *,
    num_classes: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EngineStats:
    """Stream `shards` of `dataset` through the clean pass and `plan`; `on_shard(key, records)` per finished shard."""
    if cfg.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {cfg.batch_size}")
    t0 = time.perf_counter()
    if num_classes is None:
        num_classes = getattr(model, "num_classes", None)
    model = prepare_model(model, cfg.device, cfg.compile)
    stages = flatten(plan)
    remaining = {s.key for s in shards}
    bs, backoffs = cfg.batch_size, 0
    total = StreamStats()
    with strict_precision(cfg.precision, cfg.device):
        while remaining:
            todo = [s for s in shards if s.key in remaining]
            pipe = Pipeline(model, stages, todo, replace(cfg, batch_size=bs), num_classes, on_progress)
            blocks = iter_blocks(dataset, todo, bs, cfg.num_workers, is_cuda(cfg.device), cfg.prefetch)
            results = pipe.run(blocks)
            try:
                for key, records in results:
                    on_shard(key, records)
                    remaining.discard(key)
            except torch.OutOfMemoryError:
                if bs == 1:
                    raise
                backoffs += 1
                bs = max(1, bs // 2)
                log.warning(
                    "out of memory at batch size %d; retrying the %d unfinished shards at %d",
                    bs * 2,
                    len(remaining),
                    bs,
                )
            finally:
                results.close()
                blocks.close()
                total.add(pipe.stats)
            if backoffs:
                release_memory(cfg.device)
    return EngineStats(
        batch_size=bs,
        batch_size_requested=cfg.batch_size,
        oom_backoffs=backoffs,
        shards=len(shards),
        samples=sum(len(s) for s in shards),
        attacked=total.attacked,
        device_steps=total.device_steps,
        row_steps=total.row_steps,
        wall_s=round(time.perf_counter() - t0, 3),
        precision=cfg.precision,
        compiled=cfg.compile,
    )


def evaluate_shard(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    plan: list[EpsAttacks],
    cfg: EngineConfig,
    on_progress: Callable[[int], None] | None = None,
) -> list[SampleRecord]:
    """Clean pass plus the attack plan on one in-memory shard; returns one record per sample (shard order)."""
    if model.training:
        raise RuntimeError("evaluation requires the model in eval mode")
    n = int(x.shape[0])
    if n == 0:
        return []
    ids = ids.to("cpu", torch.int64)
    spec = ShardSpec(0, ids.numpy())
    bs = cfg.batch_size
    blocks = (
        Block(
            x[i : i + bs].float(),
            y[i : i + bs].long(),
            ids[i : i + bs],
            np.zeros(min(bs, n - i), dtype=np.int64),
            np.arange(i, min(n, i + bs), dtype=np.int64),
        )
        for i in range(0, n, bs)
    )
    with strict_precision(cfg.precision, cfg.device):
        pipe = Pipeline(model, flatten(plan), [spec], cfg, getattr(model, "num_classes", None), on_progress)
        out = list(pipe.run(blocks))
    return out[0][1]

"""Shared pieces for the engine tests (not collected by pytest): a tiny zero-shot ViT, data whose
labels are the model's own clean predictions (so every sample is attacked), a runner and a pool driver."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import open_clip
import torch
from torch.utils.data import Dataset

from zsrobust_bench.data.synthetic import SyntheticTask
from zsrobust_bench.engine.blocks import Block, ShardSpec
from zsrobust_bench.engine.plan import EngineConfig, EpsAttacks
from zsrobust_bench.engine.pool import PoolExit, SlotPool
from zsrobust_bench.engine.run import evaluate_shards, shard_bounds
from zsrobust_bench.zeroshot import ZeroShotClassifier


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core box: one intra-op thread avoids OpenMP spin contention (10-40x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


TINY_VISION = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}


def tiny_classifier(num_classes: int = 6, seed: int = 0) -> ZeroShotClassifier:
    """A random tiny ViT image tower with random class embeddings (32 px input), frozen, eval mode."""
    torch.manual_seed(seed)
    tower = open_clip.model._build_vision_tower(64, open_clip.CLIPVisionCfg(**TINY_VISION))
    emb = torch.randn(num_classes, 64, generator=torch.Generator().manual_seed(seed + 1))
    clf = ZeroShotClassifier(tower, emb, 32, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf.eval()


class SelfLabelled(Dataset):
    """Synthetic images labelled with the model's clean prediction, except every `wrong`-th one."""

    def __init__(self, model: torch.nn.Module, n: int, wrong: int = 0, num_classes: int = 6) -> None:
        base = SyntheticTask("color", "test")
        self.x = torch.stack([base[i][0] for i in range(n)])
        with torch.inference_mode():
            pred = model(self.x).argmax(dim=1)
        self.y = pred.clone()
        if wrong:
            self.y[::wrong] = (pred[::wrong] + 1) % num_classes

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def shards_of(n: int, shard_size: int) -> list[ShardSpec]:
    idx = np.arange(n, dtype=np.int64)
    return [ShardSpec(k, idx[a:b]) for k, (a, b) in enumerate(shard_bounds(n, shard_size))]


def run_records(
    model: torch.nn.Module,
    ds: Dataset,
    plan: Sequence[EpsAttacks],
    *,
    batch_size: int,
    shard_size: int,
    shards: Sequence[ShardSpec] | None = None,
    **cfg: Any,
) -> tuple[list[dict[str, Any]], Any]:
    """Records of every shard in shard order, plus the engine's stats."""
    out: dict[int, list[dict[str, Any]]] = {}
    stats = evaluate_shards(
        model,
        ds,
        shards if shards is not None else shards_of(len(ds), shard_size),
        plan,
        EngineConfig(batch_size=batch_size, **cfg),
        lambda k, recs: out.__setitem__(k, recs),
    )
    return [r for k in sorted(out) for r in out[k]], stats


def drain_pool(pool: SlotPool, model: torch.nn.Module, rows: Block) -> Iterator[PoolExit]:
    """Feed `rows` through `pool` in order, filling free slots before every step as the engine's stream
    does, until the pool is empty; yields the rows that leave after each step."""
    queued = 0
    while queued < len(rows) or len(pool):
        k = min(pool.room(), len(rows) - queued)
        if k:
            pool.add(rows.take(slice(queued, queued + k)))
            queued += k
        out = pool.step(model)
        if out is not None:
            yield out


def pool_broken(
    attack: Any,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    capacity: int,
    seed: int,
) -> torch.Tensor:
    """Which samples a slot pool of `capacity` breaks (every run of the attack; samples in input order)."""
    n = int(x.shape[0])
    broken = torch.zeros(n, dtype=torch.bool)
    rows = Block(x, y, ids.to("cpu", torch.int64), np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64))
    for out in drain_pool(SlotPool(attack, capacity, seed, "cpu"), model, rows):
        broken[torch.from_numpy(out.rows.pos)] = torch.from_numpy(out.broken)
    return broken

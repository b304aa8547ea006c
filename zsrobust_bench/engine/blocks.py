"""Engine input: shards of sample indices, row blocks, and a prefetching loader that overlaps compute.

Samples are read in index order by a `DataLoader` (worker processes when asked, pinned memory on
CUDA) whose batches never span two shards; a background thread keeps a bounded number of loaded
batches ready, so the next shard loads while the current one is attacked. Memory is bounded by
the prefetch depth, never by the number of samples.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass(frozen=True)
class ShardSpec:
    """One shard: its number (for ordering and file names) and the dataset indices it holds, in order."""

    key: int
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass
class Block:
    """Rows travelling through the engine: pixels, labels, dataset indices and each row's (shard, position)."""

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor  # int64, CPU
    shard: np.ndarray  # int64 shard key per row
    pos: np.ndarray  # int64 position of the row inside its shard

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def take(self, rows: np.ndarray | slice) -> Block:
        """The rows selected by a slice, a boolean mask or an index array."""
        if isinstance(rows, slice):
            return Block(self.x[rows], self.y[rows], self.ids[rows], self.shard[rows], self.pos[rows])
        rows = np.asarray(rows)
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        t = torch.from_numpy(idx)
        return Block(
            self.x[t.to(self.x.device)],
            self.y[t.to(self.y.device)],
            self.ids[t],
            self.shard[idx],
            self.pos[idx],
        )

    @staticmethod
    def cat(blocks: Sequence[Block]) -> Block:
        """Concatenate blocks (moved to the first block's devices)."""
        if len(blocks) == 1:
            return blocks[0]
        dev, ydev = blocks[0].x.device, blocks[0].y.device
        return Block(
            x=torch.cat([b.x.to(dev) for b in blocks]),
            y=torch.cat([b.y.to(ydev) for b in blocks]),
            ids=torch.cat([b.ids for b in blocks]),
            shard=np.concatenate([b.shard for b in blocks]),
            pos=np.concatenate([b.pos for b in blocks]),
        )


class _ShardBatches(Sampler[list[int]]):
    """Batches of dataset indices in shard order; a batch never spans two shards."""

    def __init__(self, shards: Sequence[ShardSpec], batch_size: int) -> None:
        self.shards = list(shards)
        self.batch_size = int(batch_size)

    def plan(self) -> list[tuple[int, int, int]]:
        """(shard key, first position, last position + 1) of every batch, in order."""
        return [
            (s.key, start, min(len(s), start + self.batch_size))
            for s in self.shards
            for start in range(0, len(s), self.batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        by_key = {s.key: s for s in self.shards}
        for key, a, b in self.plan():
            yield [int(i) for i in by_key[key].indices[a:b]]

    def __len__(self) -> int:
        return len(self.plan())


class _Prefetcher:
    """Iterate `source` in a background thread, keeping at most `depth` items ready."""

    _END = object()

    def __init__(self, source: Iterator, depth: int) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(source,), name="zsbench-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consuming thread
            self._put(("error", exc))

    def __iter__(self) -> Iterator:
        try:
            while True:
                kind, item = self._q.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the thread and drop what it had loaded."""
        self._stop.set()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=30)


def iter_blocks(
    dataset: Dataset,
    shards: Sequence[ShardSpec],
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    prefetch: int = 2,
) -> Iterator[Block]:
    """Load the shards' samples in order as CPU blocks of at most `batch_size` rows (one shard each).

    Loading runs ahead of the consumer by at most `prefetch` batches (plus the DataLoader's own
    per-worker prefetch), in worker processes when `num_workers` > 0.
    """
    sampler = _ShardBatches(shards, batch_size)
    plan = sampler.plan()
    if not plan:
        return
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    by_key = {s.key: s for s in shards}
    fetch = _Prefetcher(iter(loader), prefetch) if prefetch > 0 else iter(loader)
    try:
        for (key, a, b), (x, y) in zip(plan, fetch, strict=True):
            n = b - a
            x = torch.as_tensor(x)
            if x.dtype != torch.float32:
                x = x.float()
            yield Block(
                x=x,
                y=torch.as_tensor(y).long(),
                ids=torch.from_numpy(np.ascontiguousarray(by_key[key].indices[a:b], dtype=np.int64)),
                shard=np.full(n, key, dtype=np.int64),
                pos=np.arange(a, b, dtype=np.int64),
            )
    finally:
        if isinstance(fetch, _Prefetcher):
            fetch.close()

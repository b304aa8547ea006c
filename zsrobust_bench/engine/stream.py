"""The streaming evaluation pipeline: clean pass, then each attack of the plan, shard tables, records.

Rows flow as blocks through a chain of generator stages, pulled from the end:

    loader -> clean (inference mode, fixed batch shape) -> attack 1 -> attack 2 -> ... -> shards done

- A stepwise attack (PGD) keeps a fixed-shape slot pool (`pool.SlotPool`) full from the
  stage before it, across shard boundaries, so the device never idles on a draining pool until
  the very end of the stream. Rows that need no attack (wrong clean, or already broken) pass
  straight through.
- A batch attack (pyautoattack) waits until every row of a shard has reached it and attacks
  that shard's still-robust rows in position order, in batches of the batch size: the same
  batches as a shard-by-shard run, whatever the world size or packing upstream.
- A shard's outcomes live in a `table.ShardTable`; when its last row leaves the last stage its records
  are handed out and the table is dropped. Memory holds only the shards in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..attacks.base import BatchAttack, StepwiseAttack
from ..errors import DataError
from .batch import run_batch_attack
from .blocks import Block, ShardSpec
from .device import autocast, input_format
from .plan import EngineConfig, Stages, StageSpec
from .pool import SlotPool
from .records import SampleRecord
from .table import ShardTable


@dataclass
class StreamStats:
    """Counters of one streaming run (for throughput reports and results.json)."""

    samples: int = 0
    attacked: int = 0
    device_steps: int = 0  # stepwise iterations run on the device (each over a full pool)
    row_steps: int = 0  # iterations of occupied pool slots
    batch_size: int = 0
    per_attack: dict[str, int] = field(default_factory=dict)

    def add(self, part: StreamStats) -> None:
        """Add another run's work (a retry after out-of-memory) to these counters."""
        self.samples += part.samples
        self.attacked += part.attacked
        self.device_steps += part.device_steps
        self.row_steps += part.row_steps


WINDOW_BYTES = 512 * 2**20


def margin_window(batch_size: int, row_bytes: int) -> int:
    """Rows released at a time in margin order: 32 batches' worth, at least 4 batches, at most ~512 MiB of pixels."""
    return min(32 * batch_size, max(4 * batch_size, WINDOW_BYTES // max(1, row_bytes)))


def margin_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Clean margin per row: true-class logit minus the best other logit (negative when misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return true - other


def _by_margin(window: list[tuple[Block, np.ndarray]]) -> Block:
    """The window's rows as one block, largest margin first (ties in arrival order)."""
    blk = Block.cat([b for b, _ in window])
    margins = np.concatenate([m for _, m in window])
    return blk.take(np.argsort(-margins, kind="stable"))


def _groups(shard: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(shard key, row indices) for each shard present in a block, in first-seen order."""
    if shard.size and (shard == shard[0]).all():
        yield int(shard[0]), np.arange(shard.shape[0])
        return
    keys, first = np.unique(shard, return_index=True)
    for k in keys[np.argsort(first)]:
        yield int(k), np.flatnonzero(shard == k)


class Pipeline:
    """One streaming run over a sequence of shards with a fixed batch size."""

    def __init__(
        self,
        model: nn.Module,
        plan: Stages,
        shards: Sequence[ShardSpec],
        cfg: EngineConfig,
        num_classes: int | None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model
        self.stages = list(plan.stages)
        self.eps_labels = list(plan.eps_labels)
        self.names = list(plan.names)
        self.specs = {s.key: s for s in shards}
        self.cfg = cfg
        self.batch_size = int(cfg.batch_size)
        self.device = torch.device(cfg.device)
        self.seed = int(cfg.seed)
        self.precision = cfg.precision
        self.num_classes = num_classes
        self.on_progress = on_progress
        self.tables: dict[int, ShardTable] = {}
        self.stats = StreamStats(batch_size=self.batch_size)
        self.window = 0  # rows reordered by clean margin at a time (set from the first block's row size)

    # ---- driver ---------------------------------------------------------------------------
    def run(self, blocks: Iterable[Block]) -> Iterator[tuple[int, list[SampleRecord]]]:
        """Yield (shard key, records) as each shard completes (roughly in order)."""
        stream: Iterator[Block] = self._clean(iter(blocks))
        for st in self.stages:
            if isinstance(st.attack, StepwiseAttack):
                stream = self._stepwise(stream, st)
            elif isinstance(st.attack, BatchAttack):
                stream = self._batch(stream, st)
            else:
                raise TypeError(f"{type(st.attack).__name__} is neither a StepwiseAttack nor a BatchAttack")
        for blk in stream:
            for key, rows in _groups(blk.shard):
                table = self.tables[key]
                table.done += rows.shape[0]
                if self.on_progress is not None:
                    self.on_progress(int(rows.shape[0]))
                if table.done == table.n:
                    yield key, table.records(self.names, self.eps_labels)
                    del self.tables[key]
        if self.tables:
            raise RuntimeError(f"shards {sorted(self.tables)} did not complete (rows lost in the pipeline)")

    # ---- clean pass -----------------------------------------------------------------------
    def _clean(self, blocks: Iterator[Block]) -> Iterator[Block]:
        """Classify rows in fixed-shape batches, then release them a window at a time, largest clean margin first.

        The order rows enter an attack's pool never changes their records (see pool), only
        how well the pool stays full: likely-robust rows (large margin) start first and quickly
        broken ones come last, so the pool's final draining steps are few.
        """
        buf: list[Block] = []
        held = 0
        window: list[tuple[Block, np.ndarray]] = []
        ready = 0
        for blk in blocks:
            self._open(blk)
            if not self.window:
                self.window = margin_window(self.batch_size, blk.x[0].numel() * blk.x.element_size())
            buf.append(blk)
            held += len(blk)
            while held >= self.batch_size:
                allb = Block.cat(buf)
                head, rest = allb.take(slice(0, self.batch_size)), allb.take(slice(self.batch_size, None))
                buf, held = ([rest] if len(rest) else []), len(rest)
                window.append(self._classify(head))
                ready += self.batch_size
                if ready >= self.window:
                    yield _by_margin(window)
                    window, ready = [], 0
        if held:
            window.append(self._classify(Block.cat(buf)))
        if window:
            yield _by_margin(window)

    def _open(self, blk: Block) -> None:
        y = blk.y
        if (
            self.num_classes is not None
            and len(blk)
            and (bool((y < 0).any()) or bool((y >= self.num_classes).any()))
        ):
            bad = int(blk.ids[int(torch.nonzero((y < 0) | (y >= self.num_classes))[0])])
            raise DataError(f"sample {bad} has a label outside 0..{self.num_classes - 1}")
        for key, _ in _groups(blk.shard):
            if key not in self.tables:
                if key not in self.specs:
                    raise RuntimeError(f"rows of unknown shard {key}")
                self.tables[key] = ShardTable(self.specs[key], len(self.eps_labels))
                self.stats.samples += self.tables[key].n

    def _classify(self, blk: Block) -> tuple[Block, np.ndarray]:
        """Clean pass of a block (inference mode, fixed shape): the rows (now on the device) and their margins."""
        n = len(blk)
        fmt = input_format(self.device)
        x = blk.x.to(self.device, non_blocking=True).contiguous(memory_format=fmt)
        with torch.inference_mode():
            xb = x
            if n < self.batch_size:  # fixed shape: pad with zero images (computed, ignored)
                pad = x.new_zeros((self.batch_size - n, *x.shape[1:]))
                xb = torch.cat([x, pad]).contiguous(memory_format=fmt)
            with autocast(self.precision, self.device):
                logits = self.model(xb)[:n].float()
            finite = torch.isfinite(logits).all(dim=1)
            margin = margin_of(logits, blk.y.to(logits.device))
            packed = (
                torch.stack([logits.argmax(dim=1).double(), finite.double(), margin.double()]).cpu().numpy()
            )
        y = blk.y.cpu().numpy()
        pred, ok = packed[0].astype(np.int64), packed[1].astype(bool)
        for key, rows in _groups(blk.shard):
            self.tables[key].set_clean(blk.pos[rows], y[rows], pred[rows], ok[rows])
        return Block(x, blk.y, blk.ids, blk.shard, blk.pos), np.where(ok, packed[2], -np.inf)

    def _todo(self, eps_index: int, blk: Block) -> np.ndarray:
        """Rows of `blk` still robust at this eps (the ones an attack there must try)."""
        out = np.zeros(len(blk), dtype=bool)
        for key, rows in _groups(blk.shard):
            out[rows] = self.tables[key].robust[eps_index, blk.pos[rows]]
        return out

    def _broken(
        self, st: StageSpec, blk: Block, broken: np.ndarray, step: np.ndarray, bad: np.ndarray
    ) -> None:
        for key, rows in _groups(blk.shard):
            table = self.tables[key]
            table.nonfinite[blk.pos[rows[bad[rows]]]] = True
            table.robust[st.eps_index :, blk.pos[rows[bad[rows]]]] = False  # NaN: never counted robust
            hit = rows[broken[rows]]
            if hit.size:
                table.set_broken(st.eps_index, blk.pos[hit], st.code, step[hit])

    # ---- attacks --------------------------------------------------------------------------
    def _stepwise(self, upstream: Iterator[Block], st: StageSpec) -> Iterator[Block]:
        """Refill-pool stage: keep the pool full from upstream; yield rows as they leave it."""
        assert isinstance(st.attack, StepwiseAttack)
        pool = SlotPool(st.attack, self.batch_size, self.seed, self.device, input_format(self.device))
        pending: Block | None = None
        exhausted = False
        name = self.names[st.code]
        while True:
            while pool.room() > 0 and not (exhausted and pending is None):
                if pending is None:
                    try:
                        blk = next(upstream)
                    except StopIteration:
                        exhausted = True
                        break
                    todo = self._todo(st.eps_index, blk)
                    if not todo.all():
                        yield blk.take(~todo)
                    if todo.any():
                        pending = blk if todo.all() else blk.take(todo)
                        self.stats.attacked += int(todo.sum())
                        self.stats.per_attack[name] = self.stats.per_attack.get(name, 0) + int(todo.sum())
                    continue
                k = min(pool.room(), len(pending))
                pool.add(pending.take(slice(0, k)))
                pending = pending.take(slice(k, None)) if k < len(pending) else None
            if len(pool) == 0:
                return
            self.stats.device_steps += 1
            self.stats.row_steps += len(pool)
            with autocast(self.precision, self.device):
                out = pool.step(self.model)
            if out is not None:
                self._broken(st, out.rows, out.broken, out.step, out.nonfinite)
                yield out.rows

    def _batch(self, upstream: Iterator[Block], st: StageSpec) -> Iterator[Block]:
        """Per-shard stage: once all of a shard's rows are here, attack its robust rows in position order."""
        assert isinstance(st.attack, BatchAttack)
        held: dict[int, list[Block]] = {}
        count: dict[int, int] = {}
        for blk in upstream:
            for key, rows in _groups(blk.shard):
                part = blk if rows.shape[0] == len(blk) else blk.take(rows)
                held.setdefault(key, []).append(part)
                count[key] = count.get(key, 0) + len(part)
                if count[key] < self.tables[key].n:
                    continue
                whole = Block.cat(held.pop(key))
                del count[key]
                whole = whole.take(np.argsort(whole.pos, kind="stable"))
                todo = np.flatnonzero(self._todo(st.eps_index, whole))
                if todo.size:
                    sub = whole.take(todo)
                    broken, bad = run_batch_attack(self.model, st.attack, sub.x, sub.y, sub.ids, self.cfg)
                    self._broken(st, sub, broken.numpy(), np.full(todo.size, -1, dtype=np.int64), bad.numpy())
                    name = self.names[st.code]
                    self.stats.attacked += int(todo.size)
                    self.stats.per_attack[name] = self.stats.per_attack.get(name, 0) + int(todo.size)
                yield whole
        if held:
            raise RuntimeError(f"shards {sorted(held)} never completed before {st.attack.name}")

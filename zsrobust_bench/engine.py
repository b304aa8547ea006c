"""The evaluation engine: clean pass, then every attack of a protocol on the samples still robust.

Work is split into fixed-size shards of the evaluated index list. A shard's records are written
atomically as soon as its last sample is done; a re-run skips finished shards, so a killed run
loses at most the shards in flight. Shards are the unit of distribution too.

`evaluate_shards` streams shards through the pipeline of `engine_stream`: loading runs ahead in
worker processes and a background thread (`engine_data`), the clean pass runs in inference mode,
and stepwise attacks (PGD) run over a fixed-shape slot pool (`engine_pool`) refilled across shard
boundaries: a sample leaves the moment an iterate is misclassified (worst case over iterates, so
stopping it changes nothing) and a fresh sample takes its slot.

Determinism: random starts are seeded per sample id and every device call runs the same batch
shape, so for a given batch size the records do not depend on shard size, packing, worker count
or world size (bitwise: no kernel ever sees a different shape). Across batch sizes the kernels
differ and float results can differ in the last bits; a borderline sample can then flip (see
docs/distributed.md). Batch attacks (pyautoattack) draw their random numbers per batch, so they
depend on batch size and shard size as the reference does.

An out-of-memory error halves the batch size and restarts the unfinished shards (finished shards
are kept); the final batch size is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .attacks.base import Attack, BatchAttack, StepwiseAttack
from .engine_data import Block, ShardSpec, iter_blocks
from .engine_device import autocast, input_format, is_cuda, prepare_model, release_memory, strict_precision
from .engine_pool import SlotPool
from .engine_stream import Pipeline, StageSpec, StreamStats
from .errors import DataError
from .fileio import ordinary_file_mode
from .protocols import eps_label

log = logging.getLogger(__name__)

__all__ = [
    "EngineConfig",
    "EngineStats",
    "EpsAttacks",
    "ShardSpec",
    "as_index_tensor",
    "clean_logits",
    "evaluate_shard",
    "evaluate_shards",
    "load_shard",
    "merge_shards",
    "records_to_jsonl",
    "run_batch_attack",
    "run_stepwise",
    "shard_bounds",
    "summarize",
]


@dataclass
class EngineConfig:
    batch_size: int = 128
    num_workers: int = 0
    device: str = "cpu"
    seed: int = 0
    precision: str = "fp32"
    compile: bool = False  # torch.compile the image tower (useful on CUDA)
    prefetch: int = 2  # loaded batches a background thread keeps ready (0: load in the compute thread)


@dataclass
class EpsAttacks:
    """The attacks to run at one epsilon, in order."""

    eps: float
    attacks: list[Attack]
    skipped: list[str]  # attacks that do not apply (e.g. targeted with 2 classes)


@dataclass
class EngineStats:
    """What one `evaluate_shards` call did: sizes, work and time."""

    batch_size: int
    batch_size_requested: int
    oom_backoffs: int
    shards: int
    samples: int
    attacked: int
    device_steps: int
    row_steps: int
    wall_s: float
    precision: str
    compiled: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stages(plan: Sequence[EpsAttacks]) -> tuple[list[StageSpec], list[str], list[str]]:
    """Flatten the plan into pipeline stages, attack names (by code) and eps labels."""
    stages, names = [], []
    for j, stage in enumerate(plan):
        for attack in stage.attacks:
            stages.append(StageSpec(eps_index=j, attack=attack, code=len(names)))
            names.append(attack.name)
    return stages, names, [eps_label(s.eps) for s in plan]


def _pipeline(
    model: nn.Module,
    plan: Sequence[EpsAttacks],
    cfg: EngineConfig,
    shards: Sequence[ShardSpec],
    num_classes: int | None,
    on_progress: Callable[[int], None] | None,
) -> Pipeline:
    stages, names, labels = _stages(plan)
    return Pipeline(
        model,
        stages,
        labels,
        names,
        shards,
        batch_size=cfg.batch_size,
        device=cfg.device,
        seed=cfg.seed,
        precision=cfg.precision,
        num_classes=num_classes,
        run_batch_attack=lambda m, a, x, y, ids: run_batch_attack(m, a, x, y, ids, cfg),
        on_progress=on_progress,
    )


def evaluate_shards(
    model: nn.Module,
    dataset: Dataset,
    shards: Sequence[ShardSpec],
    plan: Sequence[EpsAttacks],
    cfg: EngineConfig,
    on_shard: Callable[[int, list[dict[str, Any]]], None],
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
    remaining = {s.key for s in shards}
    bs, backoffs = cfg.batch_size, 0
    total = StreamStats()
    with strict_precision(cfg.precision, cfg.device):
        while remaining:
            todo = [s for s in shards if s.key in remaining]
            run_cfg = replace(cfg, batch_size=bs)
            pipe = _pipeline(model, plan, run_cfg, todo, num_classes, on_progress)
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
                _add(total, pipe.stats)
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


def _add(total: StreamStats, part: StreamStats) -> None:
    total.samples += part.samples
    total.attacked += part.attacked
    total.device_steps += part.device_steps
    total.row_steps += part.row_steps


def evaluate_shard(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    plan: list[EpsAttacks],
    cfg: EngineConfig,
    on_progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
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
        out = list(
            _pipeline(model, plan, cfg, [spec], getattr(model, "num_classes", None), on_progress).run(blocks)
        )
    return out[0][1]


def load_shard(
    dataset: Dataset, indices: Sequence[int], cfg: EngineConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a shard's images and labels (order of `indices`) into memory."""
    loader = DataLoader(
        Subset(dataset, [int(i) for i in indices]),
        batch_size=max(1, cfg.batch_size),
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=is_cuda(cfg.device),
    )
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return torch.cat(xs).float(), torch.cat(ys).long()


@torch.inference_mode()
def clean_logits(model: nn.Module, x: torch.Tensor, cfg: EngineConfig) -> torch.Tensor:
    """Logits of clean inputs in fixed-shape batches (the last one padded), on the CPU."""
    out = []
    bs = cfg.batch_size
    for i in range(0, x.shape[0], bs):
        xb = x[i : i + bs].to(cfg.device, non_blocking=True)
        n = xb.shape[0]
        if n < bs:
            xb = torch.cat([xb, xb.new_zeros((bs - n, *xb.shape[1:]))])
        with autocast(cfg.precision, cfg.device):
            out.append(model(xb)[:n].float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def run_stepwise(
    model: nn.Module,
    attack: StepwiseAttack,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    cfg: EngineConfig,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a stepwise attack over in-memory samples with a refilled fixed-shape pool.

    Returns per-sample (broken, broken_step (-1 if not), nonfinite_seen).
    """
    n = int(x.shape[0])
    broken = torch.zeros(n, dtype=torch.bool)
    step_of = torch.full((n,), -1, dtype=torch.int64)
    nonfinite = torch.zeros(n, dtype=torch.bool)
    rows = Block(x, y, ids.to("cpu", torch.int64), np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64))
    pool = SlotPool(attack, cfg.batch_size, cfg.seed, cfg.device, input_format(cfg.device))
    queue = 0
    while queue < n or len(pool):
        k = min(pool.room(), n - queue)
        if k:
            pool.add(rows.take(slice(queue, queue + k)))
            queue += k
        with autocast(cfg.precision, cfg.device):
            out = pool.step(model)
        if out is None:
            continue
        pos = torch.from_numpy(out.rows.pos)
        broken[pos] = torch.from_numpy(out.broken)
        step_of[pos] = torch.from_numpy(out.step)
        nonfinite[pos] = torch.from_numpy(out.nonfinite)
        if on_progress is not None:
            on_progress(len(out.rows))
    return broken, step_of, nonfinite


def run_batch_attack(
    model: nn.Module,
    attack: BatchAttack,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    cfg: EngineConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a batch attack in fixed batches; the engine re-checks every x_adv itself.

    Returns (broken, nonfinite) per sample, on the CPU."""
    broken = torch.zeros(x.shape[0], dtype=torch.bool)
    nonfinite = torch.zeros(x.shape[0], dtype=torch.bool)
    for i in range(0, x.shape[0], cfg.batch_size):
        sl = slice(i, i + cfg.batch_size)
        xb, yb = x[sl].to(cfg.device), y[sl].to(cfg.device)
        _, x_adv = attack.run(model, xb, yb, ids[sl], cfg.seed)
        x_adv = x_adv.detach()
        _check_threat(attack, xb, x_adv)
        with torch.inference_mode(), autocast(cfg.precision, cfg.device):
            logits = model(x_adv).float()
        finite = torch.isfinite(logits).all(dim=1)
        broken[sl] = ((logits.argmax(dim=1) != yb) & finite).cpu()
        nonfinite[sl] = (~finite).cpu()
    return broken, nonfinite


def _check_threat(attack: Attack, x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-5) -> None:
    """An adversarial example outside the threat model or [0,1] is a bug, never a result."""
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(dim=1) if attack.norm == "Linf" else d.norm(dim=1)
    if (size > attack.eps + tol).any() or x_adv.min() < -tol or x_adv.max() > 1 + tol:
        raise RuntimeError(
            f"attack {attack.name} left the {attack.norm} ball of radius {attack.eps} or [0,1]"
        )


def records_to_jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Fixed shard boundaries over positions 0..n-1 of the evaluated index list."""
    return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


class SummaryCounter:
    """Accumulates `summarize`'s numbers one record at a time (constant memory)."""

    def __init__(self, eps_labels: Sequence[str]) -> None:
        self.labels = list(eps_labels)
        self.n = 0
        self.clean = 0
        self.robust = [0] * len(self.labels)
        self.broken_by: dict[str, int] = {}
        self.nonfinite = 0

    def add(self, r: dict[str, Any]) -> None:
        self.n += 1
        self.clean += bool(r["clean_correct"])
        for k, lab in enumerate(self.labels):
            self.robust[k] += bool(r["robust_correct"] if k == 0 else r["by_eps"][lab]["robust_correct"])
        if self.labels and r.get("broken_by"):
            self.broken_by[r["broken_by"]] = self.broken_by.get(r["broken_by"], 0) + 1
        self.nonfinite += bool(r.get("nonfinite_logits"))

    def result(self) -> dict[str, Any]:
        if self.n == 0:
            return {"n": 0, "clean_acc": 0.0, "robust_acc": None}
        out: dict[str, Any] = {"n": self.n, "clean_acc": round(100.0 * self.clean / self.n, 4)}
        if not self.labels:
            out["robust_acc"] = None
        else:
            by = {lab: round(100.0 * self.robust[k] / self.n, 4) for k, lab in enumerate(self.labels)}
            out["robust_acc"] = by[self.labels[0]]
            out["robust_acc_by_eps"] = by
            out["broken_by"] = dict(sorted(self.broken_by.items()))
        out["nonfinite_logits"] = self.nonfinite
        return out


def summarize(records: list[dict[str, Any]], eps_labels: list[str]) -> dict[str, Any]:
    """Per-dataset numbers (percent) from per-sample records."""
    counter = SummaryCounter(eps_labels)
    for r in records:
        counter.add(r)
    return counter.result()


def merge_shards(
    shard_files: Sequence[Path], dest: Path, indices: np.ndarray, eps_labels: Sequence[str]
) -> tuple[dict[str, Any], str]:
    """Concatenate shard files into `dest` atomically, streaming; returns (summary, sha256 of dest's bytes).

    Fails if the records' indices are not exactly `indices` in order (a stale or foreign shard).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    counter = SummaryCounter(eps_labels)
    digest = hashlib.sha256()
    expected = np.asarray(indices, dtype=np.int64)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for path in shard_files:
                with open(path, "rb") as fh:
                    for line in fh:
                        rec = json.loads(line)
                        if counter.n >= expected.shape[0] or rec["index"] != int(expected[counter.n]):
                            raise DataError(
                                f"{path}: shard records do not match the evaluated indices",
                                "delete that shard folder and re-run; finished shards are kept",
                            )
                        counter.add(rec)
                        digest.update(line)
                        out.write(line)
            if counter.n != expected.shape[0]:
                raise DataError(
                    f"the shards of {dest.stem} hold {counter.n} records, expected {expected.shape[0]}",
                    "delete the incomplete shard folder and re-run; finished shards are kept",
                )
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, ordinary_file_mode())  # like every other output, not mkstemp's owner-only 0600
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return counter.result(), digest.hexdigest()


def as_index_tensor(indices: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))

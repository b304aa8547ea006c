"""The evaluation engine: clean pass, then every attack of a protocol on the samples still robust.

Work is split into fixed-size shards of the evaluated index list. A shard is processed
completely (clean, then attacks for each epsilon in ascending order) and written atomically; a
re-run skips finished shards, so a killed run loses at most the shard in flight. Shards are the
unit of distribution too: the result never depends on world size.

Stepwise attacks (PGD) run over a pool that is refilled from the shard's queue: a sample leaves
the pool the moment an iterate is misclassified (worst case over iterates, so stopping it changes
nothing) and a fresh sample takes its place, keeping the device busy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .attacks.base import Attack, BatchAttack, PoolState, StepwiseAttack
from .protocols import eps_label

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    batch_size: int = 128
    num_workers: int = 0
    device: str = "cpu"
    seed: int = 0
    precision: str = "fp32"


@dataclass
class EpsAttacks:
    """The attacks to run at one epsilon, in order."""

    eps: float
    attacks: list[Attack]
    skipped: list[str]  # attacks that do not apply (e.g. targeted with 2 classes)


def load_shard(dataset: Dataset, indices: Sequence[int], cfg: EngineConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a shard's images and labels (order of `indices`)."""
    loader = DataLoader(
        Subset(dataset, list(int(i) for i in indices)),
        batch_size=max(1, cfg.batch_size),
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=cfg.device.startswith("cuda"),
    )
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return torch.cat(xs).float(), torch.cat(ys).long()


def _autocast(cfg: EngineConfig):
    if cfg.precision == "fp32":
        return torch.autocast(device_type="cpu", enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
    return torch.autocast(device_type=cfg.device.split(":")[0], dtype=dtype)


@torch.inference_mode()
def clean_logits(model: nn.Module, x: torch.Tensor, cfg: EngineConfig) -> torch.Tensor:
    out = []
    for i in range(0, x.shape[0], cfg.batch_size):
        xb = x[i : i + cfg.batch_size].to(cfg.device, non_blocking=True)
        with _autocast(cfg):
            out.append(model(xb).float().cpu())
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
    """Run a stepwise attack over the given samples with a refilled pool.

    Returns per-sample (broken, broken_step (-1 if not), nonfinite_seen).
    """
    n = x.shape[0]
    broken = torch.zeros(n, dtype=torch.bool)
    step_of = torch.full((n,), -1, dtype=torch.int64)
    nonfinite = torch.zeros(n, dtype=torch.bool)
    pos_of_id = {int(i): p for p, i in enumerate(ids.tolist())}
    queue = 0
    pool: PoolState | None = None
    while queue < n or pool is not None:
        room = cfg.batch_size - (len(pool) if pool is not None else 0)
        if room > 0 and queue < n:
            take = slice(queue, min(n, queue + room))
            fresh = attack.init(
                x[take].to(cfg.device, non_blocking=True), y[take].to(cfg.device), ids[take], cfg.seed, restart=0
            )
            pool = fresh if pool is None or len(pool) == 0 else PoolState.cat([pool, fresh])
            queue = take.stop
        assert pool is not None
        with _autocast(cfg):
            pool, hit = attack.step(model, pool)
        hit_cpu = hit.cpu()
        bad = pool.extra.pop("nonfinite", None)
        if bad is not None:
            for sid in pool.ids[bad.cpu()].tolist():
                nonfinite[pos_of_id[int(sid)]] = True
        evaluated_step = (pool.step - 1).cpu()
        for r in torch.nonzero(hit_cpu).flatten().tolist():
            p = pos_of_id[int(pool.ids[r])]
            broken[p] = True
            step_of[p] = int(evaluated_step[r])
        done = attack.finished(pool)
        # restarts: finished, unbroken rows with restarts left start again from a new random point
        again = done & ~hit & (pool.restart + 1 < attack.restarts)
        keep = ~hit & ~done
        if on_progress is not None:
            on_progress(int((hit | (done & ~again)).sum()))
        parts = [pool.select(keep)]
        if again.any():
            rows = pool.select(again)
            for r in sorted(set(rows.restart.tolist())):
                sub = rows.select(rows.restart == r)
                parts.append(attack.init(sub.x, sub.y, sub.ids, cfg.seed, restart=int(r) + 1))
        parts = [p for p in parts if len(p) > 0]
        pool = PoolState.cat(parts) if len(parts) > 1 else (parts[0] if parts else None)
    return broken, step_of, nonfinite


def run_batch_attack(
    model: nn.Module, attack: BatchAttack, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, cfg: EngineConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a batch attack in fixed batches; the engine re-checks every x_adv itself.

    Returns (broken, nonfinite) per sample."""
    broken = torch.zeros(x.shape[0], dtype=torch.bool)
    nonfinite = torch.zeros(x.shape[0], dtype=torch.bool)
    for i in range(0, x.shape[0], cfg.batch_size):
        sl = slice(i, i + cfg.batch_size)
        xb, yb = x[sl].to(cfg.device), y[sl].to(cfg.device)
        _, x_adv = attack.run(model, xb, yb, ids[sl], cfg.seed)
        x_adv = x_adv.detach()
        _check_threat(attack, xb, x_adv)
        with torch.inference_mode(), _autocast(cfg):
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
        raise RuntimeError(f"attack {attack.name} left the {attack.norm} ball of radius {attack.eps} or [0,1]")


def evaluate_shard(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    plan: list[EpsAttacks],
    cfg: EngineConfig,
    on_progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Clean pass plus the attack plan on one shard; returns one record per sample (shard order)."""
    if model.training:
        raise RuntimeError("evaluation requires the model in eval mode")
    n = x.shape[0]
    logits = clean_logits(model, x, cfg)
    finite = torch.isfinite(logits).all(dim=1) if n else torch.zeros(0, dtype=torch.bool)
    pred = logits.argmax(dim=1) if n else torch.zeros(0, dtype=torch.int64)
    clean_ok = (pred == y) & finite
    nonfinite = ~finite
    robust = clean_ok.clone()
    by_eps: list[dict[str, Any]] = []
    for stage in plan:
        broken_by: list[str | None] = [None] * n
        broken_step: list[int | None] = [None] * n
        for p in torch.nonzero(~robust).flatten().tolist():
            if clean_ok[p]:
                broken_by[p] = "smaller-eps"
        for attack in stage.attacks:
            todo = torch.nonzero(robust).flatten()
            if todo.numel() == 0:
                break
            xs, ys, sids = x[todo], y[todo], ids[todo]
            if isinstance(attack, StepwiseAttack):
                hit, steps, bad = run_stepwise(model, attack, xs, ys, sids, cfg, on_progress)
            else:
                hit, bad = run_batch_attack(model, attack, xs, ys, sids, cfg)
                steps = torch.full_like(hit, -1, dtype=torch.int64)
                if on_progress is not None:
                    on_progress(int(todo.numel()))
            for j, p in enumerate(todo.tolist()):
                if bad[j]:
                    nonfinite[p] = True
                if hit[j]:
                    robust[p] = False
                    broken_by[p] = attack.name
                    broken_step[p] = int(steps[j]) if steps[j] >= 0 else None
        by_eps.append(
            {"label": eps_label(stage.eps), "robust": robust.clone(), "by": broken_by, "step": broken_step}
        )
    records = []
    for p in range(n):
        rec: dict[str, Any] = {
            "index": int(ids[p]),
            "label": int(y[p]),
            "clean_pred": int(pred[p]),
            "clean_correct": bool(clean_ok[p]),
        }
        if by_eps:
            first = by_eps[0]
            rec["robust_correct"] = bool(first["robust"][p])
            rec["broken_by"] = first["by"][p]
            rec["broken_step"] = first["step"][p]
            if len(by_eps) > 1:
                rec["by_eps"] = {
                    e["label"]: {"robust_correct": bool(e["robust"][p]), "broken_by": e["by"][p], "broken_step": e["step"][p]}
                    for e in by_eps
                }
        else:
            rec["robust_correct"] = None
            rec["broken_by"] = None
            rec["broken_step"] = None
        if nonfinite[p]:
            rec["nonfinite_logits"] = True
        records.append(rec)
    return records


def records_to_jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """Fixed shard boundaries over positions 0..n-1 of the evaluated index list."""
    return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def summarize(records: list[dict[str, Any]], eps_labels: list[str]) -> dict[str, Any]:
    """Per-dataset numbers (percent) from per-sample records."""
    n = len(records)
    if n == 0:
        return {"n": 0, "clean_acc": 0.0, "robust_acc": None}
    clean = 100.0 * sum(r["clean_correct"] for r in records) / n
    out: dict[str, Any] = {"n": n, "clean_acc": round(clean, 4)}
    if not eps_labels:
        out["robust_acc"] = None
    else:
        by: dict[str, float] = {}
        for k, lab in enumerate(eps_labels):
            if k == 0:
                ok = sum(bool(r["robust_correct"]) for r in records)
            else:
                ok = sum(bool(r["by_eps"][lab]["robust_correct"]) for r in records)
            by[lab] = round(100.0 * ok / n, 4)
        out["robust_acc"] = by[eps_labels[0]]
        out["robust_acc_by_eps"] = by
        counts: dict[str, int] = {}
        for r in records:
            if r.get("broken_by"):
                counts[r["broken_by"]] = counts.get(r["broken_by"], 0) + 1
        out["broken_by"] = dict(sorted(counts.items()))
    out["nonfinite_logits"] = int(sum(bool(r.get("nonfinite_logits")) for r in records))
    return out


def as_index_tensor(indices: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))

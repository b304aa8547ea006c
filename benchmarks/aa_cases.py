"""AutoAttack benchmark cases: the engine's APGD-CE x5 + APGD-T against pyautoattack called as FARE calls it.

FARE (chs20/RobustVLM CLIP_benchmark/clip_benchmark/metrics/zeroshot_classification.py, lines
128-150) loads the samples into memory and runs
FARE's own AutoAttack copy `AutoAttack(model, norm='Linf', eps=eps, attacks_to_run=('apgd-ce', 'apgd-t') if C > 2 else
('apgd-ce',), version='custom').run_standard_evaluation(images, targets, bs)`, then classifies the
returned points. With version='custom', pyautoattack's APGD-CE has n_restarts=5 and APGD-T one
restart over n_target_classes=9 targets (pyautoattack/autoattack.py AutoAttack.__init__); we set
the targets to min(9, C-1) on both sides (the reference indexes past the logits otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from cases import Task, run_engine
from pyautoattack import AutoAttack

from zsrobust_bench.attacks.autoattack import n_targets, preserved_rng
from zsrobust_bench.attacks.loop import eval_mode
from zsrobust_bench.attacks.registry import build_attacks
from zsrobust_bench.engine import EngineConfig, EpsAttacks

# fare-aa-style schedule (FARE = AutoAttack version='custom' defaults, pyautoattack/autoattack.py)
FARE_STEPS = (
    ("apgd-ce", {"n_iter": 100, "n_restarts": 5, "rho": 0.75, "eot_iter": 1}),
    ("apgd-t", {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "rho": 0.75, "eot_iter": 1}),
)


@dataclass
class AARun:
    """Counts of one AutoAttack run on one task."""

    n: int
    clean_correct: int
    robust_correct: int


def task_tensors(task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a task's samples in memory, as FARE's loop collects them."""
    rows = [task.dataset[int(i)] for i in task.indices]
    x = torch.stack([torch.as_tensor(r[0]) for r in rows]).float()
    y = torch.as_tensor([int(r[1]) for r in rows])
    return x, y


def reference_fare_aa(
    task: Task, num_classes: int, eps: float, batch_size: int, seed: int, steps=FARE_STEPS
) -> AARun:
    """pyautoattack as FARE calls it, whole process: load, clean pass, run_standard_evaluation, classify."""
    x, y = task_tensors(task)
    model = task.model
    names = [name for name, _ in steps] if num_classes > 2 else ["apgd-ce"]
    with eval_mode(model), preserved_rng():
        aa = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=names, seed=seed)
        params = dict(steps)
        aa.apgd.n_restarts = int(params["apgd-ce"]["n_restarts"])
        aa.apgd_targeted.n_restarts = int(params["apgd-t"]["n_restarts"])
        aa.apgd_targeted.n_target_classes = n_targets(int(params["apgd-t"]["n_target_classes"]), num_classes)
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
        with torch.no_grad():
            clean = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
            adv = torch.cat(
                [model(x_adv[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
            )
    return AARun(len(y), int((clean == y).sum()), int(((adv == y) & (clean == y)).sum()))


def engine_fare_aa(
    task: Task, num_classes: int, eps: float, cfg: EngineConfig, shard_size: int, steps=FARE_STEPS
) -> AARun:
    """The same schedule through the engine (engine backend: slot pool, per-sample early exit)."""
    attacks, records = build_attacks(list(steps), eps, num_classes, backend="engine")
    skipped = [r["requested"] for r in records if r.get("ran") is None]
    e = run_engine(task, [EpsAttacks(eps, attacks, skipped)], cfg, shard_size)
    return AARun(e.n, e.clean_correct, e.robust_correct)

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
from torch import nn

from zsrobust_bench.attacks.autoattack import preserved_rng
from zsrobust_bench.attacks.loop import eval_mode
from zsrobust_bench.attacks.registry import build_attacks
from zsrobust_bench.attacks.settings import n_targets
from zsrobust_bench.engine.plan import EngineConfig, EpsAttacks

# fare-aa-style schedule (FARE = AutoAttack version='custom' defaults, pyautoattack/autoattack.py)
FARE_STEPS = (
    ("apgd-ce", {"n_iter": 100, "n_restarts": 5, "rho": 0.75, "eot_iter": 1}),
    ("apgd-t", {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9, "rho": 0.75, "eot_iter": 1}),
)


@dataclass
class AARun:
    """Counts of one AutoAttack run on one task, and the model work it took (measured by `CountingModel`)."""

    n: int
    clean_correct: int
    robust_correct: int
    rows: int = 0  # images through the model (forward passes, clean and attack)
    grad_rows: int = 0  # of which with a backward (gradient steps)
    calls: int = 0  # model calls (device launches of a batch)


class CountingModel(nn.Module):
    """Counts the images and calls through a model: the work both sides do, independent of machine load."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = self.grad_rows = self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        self.calls += 1
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_rows += int(x.shape[0])
        return self.model(x)


def counted(task: Task) -> tuple[Task, CountingModel]:
    """The task with its model wrapped in a fresh counter (in eval mode, as both sides require)."""
    model = CountingModel(task.model).eval()
    return Task(task.name, model, task.dataset, task.indices, task.research), model


def with_counts(run: AARun, model: CountingModel) -> AARun:
    return AARun(run.n, run.clean_correct, run.robust_correct, model.rows, model.grad_rows, model.calls)


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


def compare_aa(
    case: str,
    tasks: list[Task],
    eps: float,
    batch_size: int,
    seed: int,
    shard_size: int,
    repeats: int,
    label: str,
) -> dict:
    """Reference and engine on the same tasks, interleaved (order alternating per repeat), medians of wall time."""
    import statistics
    import time

    from zsrobust_bench.data.registry import get_dataset

    cfg = EngineConfig(batch_size=batch_size, seed=seed)
    times: dict[str, list[float]] = {"reference": [], "engine": []}
    cpu: dict[str, list[float]] = {"reference": [], "engine": []}
    runs: dict[str, list[AARun]] = {"reference": [], "engine": []}
    for rep in range(repeats):
        tot = {"reference": 0.0, "engine": 0.0}
        tot_cpu = {"reference": 0.0, "engine": 0.0}
        got: dict[str, list[AARun]] = {"reference": [], "engine": []}
        for t in tasks:
            c = get_dataset(t.name).num_classes
            order = ["reference", "engine"] if rep % 2 == 0 else ["engine", "reference"]
            for which in order:
                tc, counter = counted(t)
                t0, c0 = time.perf_counter(), time.process_time()
                r = (
                    reference_fare_aa(tc, c, eps, batch_size, seed)
                    if which == "reference"
                    else engine_fare_aa(tc, c, eps, cfg, shard_size)
                )
                sec = time.perf_counter() - t0
                tot_cpu[which] += time.process_time() - c0
                r = with_counts(r, counter)
                tot[which] += sec
                got[which].append(r)
                print(f"  [{t.name} repeat {rep + 1}] {which}: {sec:.1f} s {r}", flush=True)
        for w in tot:
            times[w].append(tot[w])
            cpu[w].append(tot_cpu[w])
            runs[w] = got[w]
    n = sum(r.n for r in runs["reference"])

    def pct(w: str) -> float:
        return round(100.0 * sum(r.robust_correct for r in runs[w]) / max(1, n), 2)

    ref_s, eng_s = statistics.median(times["reference"]), statistics.median(times["engine"])

    def total(w: str, field: str) -> int:
        return sum(getattr(r, field) for r in runs[w])

    return {
        "case": case,
        "model": label,
        "samples": n,
        "eps": eps,
        "batch_size": batch_size,
        "repeats": repeats,
        "attacks": "apgd-ce x5 restarts + apgd-t (min(9, C-1) targets), 100 iterations",
        "reference": "pyautoattack AutoAttack(version='custom', attacks=['apgd-ce','apgd-t'])",
        "reference_s": round(ref_s, 3),
        "engine_s": round(eng_s, 3),
        "reference_s_all": [round(s, 3) for s in times["reference"]],
        "engine_s_all": [round(s, 3) for s in times["engine"]],
        "speedup": round(ref_s / eng_s, 3),
        # process CPU time (all threads): steadier than wall time when other jobs share the machine
        "reference_cpu_s": round(statistics.median(cpu["reference"]), 3),
        "engine_cpu_s": round(statistics.median(cpu["engine"]), 3),
        "cpu_speedup": round(statistics.median(cpu["reference"]) / statistics.median(cpu["engine"]), 3),
        "reference_rows": total("reference", "rows"),
        "engine_rows": total("engine", "rows"),
        "reference_grad_rows": total("reference", "grad_rows"),
        "engine_grad_rows": total("engine", "grad_rows"),
        "reference_calls": total("reference", "calls"),
        "engine_calls": total("engine", "calls"),
        # images through the model, reference over engine: the speedup a per-image-cost machine allows
        "work_ratio": round(total("reference", "rows") / max(1, total("engine", "rows")), 3),
        "reference_robust_acc": pct("reference"),
        "engine_robust_acc": pct("engine"),
        "reference_clean_acc": round(100.0 * sum(r.clean_correct for r in runs["reference"]) / max(1, n), 2),
        "engine_clean_acc": round(100.0 * sum(r.clean_correct for r in runs["engine"]) / max(1, n), 2),
    }

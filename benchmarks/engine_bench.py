"""Engine benchmark: the research-style reference loop against the engine, in one process.

Modes (each case ends with one JSON line):
  speed    reference loop vs engine on the same model, data and seed: images/s, wall time, ratio,
           both robust accuracies (the engine's must be equal or lower). Cases: `demo` (the shipped
           demo model on the synthetic suite, PGD-100) and `vit-b32` (ViT-B-32-size random model,
           224 px, raw step throughput).
  floor    per-step time against the hardware floor: FLOPs of one forward+backward (counted from
           the model) over the measured fp32 matmul rate.
  memory   peak RSS of an engine run at two dataset sizes (separate processes): streaming means
           the second is not larger.
  aa       fare-aa-style APGD-CE x5 + APGD-T: pyautoattack called as FARE calls it vs the engine
           backend, whole process per dataset, interleaved, median of repeats (benchmarks/aa_cases.py).
  scaling  how time grows with samples, steps and model size (the numbers of benchmarks/RESULTS.md).

Run from the repository root, e.g. `python benchmarks/engine_bench.py speed --case demo`.
This is a benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import (  # noqa: E402
    Task,
    demo_tasks,
    machine,
    peak_rss_mb,
    pgd_plan,
    run_engine,
    timer,
    vit_b32_task,
)
from reference_loop import reference_pgd  # noqa: E402

from zsrobust_bench.engine.blocks import Block  # noqa: E402
from zsrobust_bench.engine.plan import EngineConfig  # noqa: E402
from zsrobust_bench.engine.pool import SlotPool  # noqa: E402


def emit(obj: dict) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _pct(k: int, n: int) -> float:
    return round(100.0 * k / max(1, n), 2)


# ---- speed ----------------------------------------------------------------------------------
LOOPS = ("research", "frozen", "engine")


def _run_loop(which: str, t: Task, attack, plan, cfg: EngineConfig, args: argparse.Namespace):
    """One timed pass of a loop over one task; returns (wall s, cpu s, (n, clean, robust, useful, computed steps))."""
    with timer() as tt:
        if which == "engine":
            e = run_engine(t, plan, cfg, args.shard_size)
            out = (e.n, e.clean_correct, e.robust_correct, e.row_steps, e.device_steps * cfg.batch_size)
        else:
            model = t.research if which == "research" else t.model
            r = reference_pgd(
                model,
                t.dataset,
                t.indices.tolist(),
                attack,
                batch_size=args.batch_size,
                seed=args.seed,
                num_workers=args.workers,
                param_grads=which == "research",
            )
            out = (r.n, r.clean_correct, r.robust_correct, r.image_steps, r.image_steps)
    return tt[0], tt[1], out


def compare(
    case: str,
    tasks: list[Task],
    eps: float,
    steps: int,
    step_size: float,
    args: argparse.Namespace,
    model_label: str,
) -> dict:
    """Time the reference loops and the engine on the same tasks (best of `repeats`, interleaved)."""
    attack, plan = pgd_plan(eps, steps, step_size)
    cfg = EngineConfig(batch_size=args.batch_size, num_workers=args.workers, seed=args.seed)
    loops = [x for x in LOOPS if x in args.loops]
    _warm_up(tasks[0], eps, cfg, args, loops)
    # Interleaved per dataset, rotating the order, best of `repeats`: on a shared machine every
    # loop then sees the same background load.
    best = {w: [float("inf")] * len(tasks) for w in loops}
    best_cpu = {w: [float("inf")] * len(tasks) for w in loops}
    counts: dict[str, list[tuple]] = {w: [()] * len(tasks) for w in loops}
    for k, t in enumerate(tasks):
        for rep in range(args.repeats):
            order = loops[rep % len(loops) :] + loops[: rep % len(loops)]
            for w in order:
                sec, cpu, out = _run_loop(w, t, attack, plan, cfg, args)
                best[w][k] = min(best[w][k], sec)
                best_cpu[w][k] = min(best_cpu[w][k], cpu)
                counts[w][k] = out
                print(
                    f"  [{t.name} repeat {rep + 1}] {w}: {sec:.2f} s wall, {cpu:.2f} s cpu, robust "
                    f"{_pct(out[2], out[0])}%",
                    flush=True,
                )
    n = sum(c[0] for c in counts[loops[0]])
    tot = {w: sum(best[w]) for w in loops}
    cpu = {w: sum(best_cpu[w]) for w in loops}
    acc = {w: _pct(sum(c[2] for c in counts[w]), n) for w in loops}
    clean = {w: _pct(sum(c[1] for c in counts[w]), n) for w in loops}
    useful = {w: sum(c[3] for c in counts[w]) for w in loops}
    computed = {w: sum(c[4] for c in counts[w]) for w in loops}
    print(
        f"\n== {case}: {model_label}; {len(tasks)} dataset(s), {n} samples, PGD-{steps} eps {eps * 255:g}/255, "
        f"batch {args.batch_size}, best of {args.repeats}; {machine()}"
    )
    print(f"{'dataset':<16}" + "".join(f"{w + ' s / robust %':>28}" for w in loops))
    for k, t in enumerate(tasks):
        print(
            f"{t.name:<16}"
            + "".join(f"{best[w][k]:>18.2f} /{_pct(counts[w][k][2], counts[w][k][0]):>8}" for w in loops)
        )
    for w in loops:
        print(
            f"{w:<9} {tot[w]:9.2f} s {n / tot[w]:9.1f} images/s  {1000 * tot[w] / max(1, computed[w]):8.3f} ms per "
            f"computed image-step ({useful[w]} useful of {computed[w]} computed)  cpu {cpu[w]:.1f} s  clean {clean[w]}%  "
            f"robust {acc[w]}%"
        )
    ref = "research" if "research" in loops else loops[0]
    result = {
        "case": case,
        "model": model_label,
        "samples": n,
        "steps": steps,
        "eps": eps,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "machine": machine(),
    }
    if "engine" in loops and ref != "engine":
        verdict = "equal or lower: OK" if acc["engine"] <= acc[ref] else "HIGHER: the engine attack is weaker"
        print(
            f"speedup vs {ref} reference: {tot[ref] / tot['engine']:.2f}x"
            + (f"; vs frozen reference: {tot['frozen'] / tot['engine']:.2f}x" if "frozen" in loops else "")
            + f"; by CPU time {cpu[ref] / cpu['engine']:.2f}x"
            + f"; engine robust accuracy {acc['engine']}% vs reference {acc[ref]}% ({verdict})"
        )
        result.update(
            {
                "reference": ref,
                "reference_s": round(tot[ref], 3),
                "engine_s": round(tot["engine"], 3),
                "speedup": round(tot[ref] / tot["engine"], 3),
                "reference_cpu_s": round(cpu[ref], 3),
                "engine_cpu_s": round(cpu["engine"], 3),
                "speedup_cpu": round(cpu[ref] / cpu["engine"], 3),
                "reference_robust_acc": acc[ref],
                "engine_robust_acc": acc["engine"],
                "reference_clean_acc": clean[ref],
                "engine_clean_acc": clean["engine"],
                "reference_images_per_s": round(n / tot[ref], 3),
                "engine_images_per_s": round(n / tot["engine"], 3),
                "reference_ms_per_image_step": round(1000 * tot[ref] / max(1, computed[ref]), 4),
                "engine_ms_per_computed_image_step": round(
                    1000 * tot["engine"] / max(1, computed["engine"]), 4
                ),
                "reference_image_steps": computed[ref],
                "engine_image_steps": useful["engine"],
                "engine_computed_image_steps": computed["engine"],
            }
        )
        if "frozen" in loops and ref != "frozen":
            result.update(
                {
                    "frozen_reference_s": round(tot["frozen"], 3),
                    "speedup_vs_frozen": round(tot["frozen"] / tot["engine"], 3),
                    "frozen_reference_cpu_s": round(cpu["frozen"], 3),
                    "speedup_vs_frozen_cpu": round(cpu["frozen"] / cpu["engine"], 3),
                    "frozen_reference_robust_acc": acc["frozen"],
                    "frozen_reference_ms_per_image_step": round(
                        1000 * tot["frozen"] / max(1, computed["frozen"]), 4
                    ),
                }
            )
    result["seconds_by_dataset"] = {
        w: {t.name: round(best[w][k], 3) for k, t in enumerate(tasks)} for w in loops
    }
    emit(result)
    return result


def _warm_up(task: Task, eps: float, cfg: EngineConfig, args: argparse.Namespace, loops: list[str]) -> None:
    """One small untimed pass of each loop (allocator, kernels, lazy imports)."""
    attack, plan = pgd_plan(eps, 2, eps / 4)
    for w in loops:
        _run_loop(w, task.subset(args.batch_size), attack, plan, cfg, args)


def cmd_speed(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    if args.case in ("demo", "all"):
        tasks, label = demo_tasks(args.samples, args.seed)
        compare("demo-pgd100", tasks, 4 / 255, args.steps or 100, 1 / 255, args, label)
    if args.case in ("vit-b32", "all"):
        task = vit_b32_task(args.vit_samples)
        vit_args = argparse.Namespace(**{**vars(args), "batch_size": args.vit_batch})
        compare(
            "vit-b32-224-steps",
            [task],
            1 / 255,
            args.vit_steps,
            0.25 / 255,
            vit_args,
            "ViT-B-32 random init (87.8M visual), 224 px",
        )


# ---- floor ----------------------------------------------------------------------------------
def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one attack step (forward + backward to the input), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    xa = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as fc:
        loss = F.cross_entropy(model(xa).float(), y, reduction="sum")
        loss.backward()  # FlopCounterMode does not support autograd.grad; same FLOPs
    return int(fc.get_total_flops())


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    """Best measured fp32 matmul rate (FLOP/s) on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def engine_step_time(task: Task, batch_size: int, steps: int) -> float:
    """Seconds per pool step of the engine (full pool of rows that do not break: eps 0)."""
    attack, _ = pgd_plan(0.0, steps + 5, 0.0)
    pool = SlotPool(attack, batch_size, 0, "cpu")
    xs = torch.stack([task.dataset[int(i)][0] for i in task.indices[:batch_size]])
    ys = torch.as_tensor([int(task.dataset[int(i)][1]) for i in task.indices[:batch_size]])
    import numpy as np

    pool.add(
        Block(
            xs.float(),
            ys,
            torch.as_tensor(task.indices[:batch_size]),
            np.zeros(len(ys), dtype=np.int64),
            np.arange(len(ys), dtype=np.int64),
        )
    )
    pool.step(task.model)
    t0 = time.perf_counter()
    for _ in range(steps):
        pool.step(task.model)
    return (time.perf_counter() - t0) / steps


def cmd_floor(args: argparse.Namespace) -> None:
    rate = matmul_rate()
    print(f"measured fp32 matmul rate: {rate / 1e9:.1f} GFLOP/s ({machine()})")
    cases = []
    tasks, label = demo_tasks(args.batch_size, args.seed)
    cases.append(("demo", label, tasks[0], args.batch_size))
    cases.append(("vit-b32", "ViT-B-32 random init, 224 px", vit_b32_task(args.vit_batch), args.vit_batch))
    for case, label, task, bs in cases:
        xs = torch.stack([task.dataset[int(i)][0] for i in task.indices[:bs]]).float()
        ys = torch.as_tensor([int(task.dataset[int(i)][1]) for i in task.indices[:bs]])
        flops = step_flops(task.model, xs, ys)
        floor_s = flops / rate
        steps = 3 if case == "vit-b32" else 20
        measured = engine_step_time(task, bs, steps)
        per_img = flops / bs
        print(
            f"{case}: {label}; batch {bs}: {per_img / 1e9:.3f} GFLOP per image-step; floor {1000 * floor_s / bs:.3f} "
            f"ms/image-step; engine {1000 * measured / bs:.3f} ms/image-step = {100 * floor_s / measured:.0f}% of "
            f"the matmul rate"
        )
        emit(
            {
                "case": f"floor-{case}",
                "model": label,
                "batch_size": bs,
                "gflop_per_image_step": round(per_img / 1e9, 4),
                "matmul_gflops": round(rate / 1e9, 2),
                "floor_ms_per_image_step": round(1000 * floor_s / bs, 4),
                "engine_ms_per_image_step": round(1000 * measured / bs, 4),
                "fraction_of_floor": round(floor_s / measured, 3),
                "machine": machine(),
            }
        )


# ---- memory ---------------------------------------------------------------------------------
def cmd_memory_child(args: argparse.Namespace) -> None:
    """One engine run over `samples` synthetic images with shard files and the streaming merge."""
    from cases import Task as T

    from zsrobust_bench.data.synthetic import SyntheticTask
    from zsrobust_bench.engine.records import merge_shards, records_to_jsonl
    from zsrobust_bench.fileio import atomic_write_text

    tasks, label = demo_tasks(8, 0)
    base = tasks[0]
    import numpy as np

    task = T(
        base.name,
        base.model,
        SyntheticTask(base.name.removeprefix("synth-"), "train", size=args.samples),
        np.arange(args.samples),
    )
    if args.attack == "pgd":
        _, plan = pgd_plan(4 / 255, args.steps, 1 / 255)
    else:  # the fare-aa-style engine schedule with `steps` iterations per run
        from aa_cases import FARE_STEPS

        from zsrobust_bench.attacks.registry import build_attacks
        from zsrobust_bench.data.registry import get_dataset
        from zsrobust_bench.engine.plan import EpsAttacks

        steps = [(name, {**p, "n_iter": args.steps}) for name, p in FARE_STEPS]
        attacks, _ = build_attacks(steps, 4 / 255, get_dataset(base.name).num_classes, backend="engine")
        plan = [EpsAttacks(4 / 255, attacks, [])]
    with tempfile.TemporaryDirectory() as d:
        files = {}

        def write(key: int, records: list[dict]) -> None:
            files[key] = Path(d) / f"{key:09d}.jsonl"
            atomic_write_text(files[key], records_to_jsonl(records))

        t0 = time.perf_counter()
        run_engine(
            task,
            plan,
            EngineConfig(batch_size=args.batch_size, num_workers=args.workers),
            args.shard_size,
            on_shard=write,
        )
        summary, _ = merge_shards(
            [files[k] for k in sorted(files)], Path(d) / "samples.jsonl", task.indices, ["4/255"]
        )
        wall = time.perf_counter() - t0
    emit(
        {
            "samples": args.samples,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "wall_s": round(wall, 2),
            "robust_acc": summary["robust_acc"],
            "model": label,
        }
    )


def cmd_memory(args: argparse.Namespace) -> None:
    rows = []
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "memory-child",
            "--samples",
            str(n),
            "--steps",
            str(args.steps),
            "--attack",
            args.attack,
            "--batch-size",
            str(args.batch_size),
            "--shard-size",
            str(args.shard_size),
            "--workers",
            str(args.workers),
            *(["--threads", str(args.threads)] if args.threads else []),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(
            f"{n:>8} samples: peak RSS {rows[-1]['peak_rss_mb']:8.1f} MiB  ({rows[-1]['wall_s']} s)",
            flush=True,
        )
    emit(
        {
            "case": "peak-rss",
            "sizes": [r["samples"] for r in rows],
            "peak_rss_mb": [r["peak_rss_mb"] for r in rows],
            "growth_mb": round(rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"], 1),
            "steps": args.steps,
            "attack": args.attack,
            "batch_size": args.batch_size,
            "shard_size": args.shard_size,
            "model": rows[0]["model"],
            "machine": machine(),
        }
    )


# ---- scaling --------------------------------------------------------------------------------
def cmd_scaling(args: argparse.Namespace) -> None:
    """Engine wall time against samples, steps and model size (one dataset, best of repeats)."""
    tasks, label = demo_tasks(None, args.seed)
    task = next(t for t in tasks if t.name == args.dataset)
    cfg = EngineConfig(batch_size=args.batch_size, seed=args.seed)
    _warm_up(task, 4 / 255, cfg, args, ["engine"])

    def best(t: Task, steps: int) -> tuple[float, object]:
        _, plan = pgd_plan(4 / 255, steps, 1 / 255)
        times, run = [], None
        for _ in range(args.repeats):
            with timer() as tt:
                run = run_engine(t, plan, cfg, args.shard_size)
            times.append(tt[0])
        return min(times), run

    print(f"== scaling on {label}, {task.name}, batch {args.batch_size}; {machine()}")
    for n in args.sizes:
        sub = Task(task.name, task.model, task.dataset, task.indices[:n])
        s, run = best(sub, 100)
        print(
            f"samples {n:>6}, PGD-100: {s:8.2f} s  ({1000 * s / n:7.2f} ms/sample, {run.row_steps} image-steps, "
            f"{1000 * s / max(1, run.row_steps):.3f} ms/image-step, robust {_pct(run.robust_correct, n)}%)"
        )
        emit(
            {
                "case": "scaling-samples",
                "samples": n,
                "steps": 100,
                "engine_s": round(s, 3),
                "image_steps": run.row_steps,
                "robust_acc": _pct(run.robust_correct, n),
            }
        )
    sub = Task(task.name, task.model, task.dataset, task.indices[: args.sizes[0]])
    for steps in args.steps_list:
        s, run = best(sub, steps)
        print(
            f"samples {args.sizes[0]:>6}, PGD-{steps:<4}: {s:8.2f} s  ({run.row_steps} image-steps, "
            f"{1000 * s / max(1, run.row_steps):.3f} ms/image-step, robust {_pct(run.robust_correct, run.n)}%)"
        )
        emit(
            {
                "case": "scaling-steps",
                "samples": args.sizes[0],
                "steps": steps,
                "engine_s": round(s, 3),
                "image_steps": run.row_steps,
                "robust_acc": _pct(run.robust_correct, run.n),
            }
        )


def cmd_aa(args: argparse.Namespace) -> None:
    """fare-aa-style APGD-CE x5 + APGD-T: pyautoattack as FARE calls it vs the engine backend."""
    from aa_cases import compare_aa

    tasks, label = demo_tasks(args.samples, args.seed, args.model)
    if args.datasets:
        tasks = [t for t in tasks if t.name in args.datasets]
    stem = Path(args.model).stem if args.model else "demo"
    for eps_px in args.eps_px:
        res = compare_aa(
            f"{stem}-fare-aa-{eps_px:g}px",
            tasks,
            eps_px / 255,
            args.batch_size,
            args.seed,
            args.shard_size,
            args.repeats,
            label,
        )
        res["machine"] = machine()
        emit(res)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    sp = sub.add_parser("speed", help="reference loop vs engine")
    sp.add_argument("--case", choices=["demo", "vit-b32", "all"], default="all")
    sp.add_argument("--samples", type=int, default=500, help="samples per synthetic dataset (demo case)")
    sp.add_argument("--steps", type=int, default=None, help="PGD steps for the demo case (default 100)")
    sp.add_argument("--vit-samples", type=int, default=32)
    sp.add_argument("--vit-steps", type=int, default=4)
    sp.add_argument("--vit-batch", type=int, default=16)
    sp.add_argument("--repeats", type=int, default=1)
    sp.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS), help="which loops to time")
    fl = sub.add_parser("floor", help="per-step time against the hardware floor")
    fl.add_argument("--vit-batch", type=int, default=16)
    me = sub.add_parser("memory", help="peak RSS at two dataset sizes")
    me.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    me.add_argument("--steps", type=int, default=5)
    mc = sub.add_parser("memory-child")
    mc.add_argument("--samples", type=int, required=True)
    mc.add_argument("--steps", type=int, default=5)
    for q in (me, mc):
        q.add_argument(
            "--attack", choices=["pgd", "fare-aa"], default="pgd", help="pgd or engine APGD-CE x5 + APGD-T"
        )
    sc = sub.add_parser("scaling", help="time against samples, steps and model size")
    sc.add_argument("--dataset", default="synth-color")
    sc.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000])
    sc.add_argument("--steps-list", type=int, nargs="+", default=[10, 30, 100])
    sc.add_argument("--repeats", type=int, default=1)
    aa = sub.add_parser("aa", help="fare-aa-style AutoAttack: pyautoattack vs engine APGD")
    aa.add_argument("--model", default=None, help="checkpoint to attack (default: the shipped demo CLIP)")
    aa.add_argument("--samples", type=int, default=100, help="samples per synthetic dataset")
    aa.add_argument("--datasets", nargs="+", default=None, help="synthetic datasets (default: all)")
    aa.add_argument("--eps-px", type=float, nargs="+", default=[4.0], help="eps in 1/255 units")
    aa.add_argument("--repeats", type=int, default=3)
    for q in (sp, fl, me, mc, sc, aa):
        q.add_argument("--batch-size", type=int, default=64)
        q.add_argument("--shard-size", type=int, default=512)
        q.add_argument("--workers", type=int, default=0)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    {
        "speed": cmd_speed,
        "floor": cmd_floor,
        "memory": cmd_memory,
        "memory-child": cmd_memory_child,
        "scaling": cmd_scaling,
        "aa": cmd_aa,
    }[args.mode](args)


if __name__ == "__main__":
    main()

"""GPU readiness check (issue #17): the CUDA paths and throughput, one JSON line per section.

Sections: `precision` (fp32 vs bf16 attack strength side by side, engine APGD-CE and PGD on the demo
model), `paths` (channels-last inputs and torch.compile give the fp32 records; OOM back-off: a batch
far too large still finishes), `throughput` (ViT-B-32-size model at 224 px: ms per image-step for
PGD and APGD in the slot pool against the FLOP floor from the measured matmul rate). The 2-process
torchrun evaluation is run by gpu_check.sh. `--dry-run` runs every section at toy sizes on CPU and
skips what needs CUDA (bf16, compile), so the script itself is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import demo_tasks, run_engine, vit_b32_task  # noqa: E402
from engine_bench import matmul_rate, step_flops  # noqa: E402

from zsrobust_bench.attacks.registry import build_attacks  # noqa: E402
from zsrobust_bench.engine.plan import EngineConfig, EpsAttacks  # noqa: E402


def emit(obj: dict) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _plan(name: str, eps: float, num_classes: int, n_iter: int) -> list[EpsAttacks]:
    params = {"n_iter": n_iter, "n_restarts": 1} if name.startswith("apgd") else {"steps": n_iter}
    attacks, _ = build_attacks([(name, params)], eps, num_classes, backend="engine")
    return [EpsAttacks(eps, attacks, [])]


def precision(args: argparse.Namespace, device: str) -> None:
    """Robust accuracy of the same attack in fp32 and bf16 (bf16 must not look stronger than it is)."""
    tasks, label = demo_tasks(args.samples, 0)
    task = tasks[0]
    precisions = ["fp32"] + (["bf16"] if device.startswith("cuda") else [])
    out = {"section": "precision", "model": label, "dataset": task.name, "samples": len(task.indices)}
    for name in ("pgd", "apgd-ce"):
        for prec in precisions:
            cfg = EngineConfig(batch_size=args.batch_size, device=device, precision=prec)
            t0 = time.perf_counter()
            r = run_engine(task, _plan(name, 4 / 255, 6, args.iters), cfg)
            out[f"{name}_{prec}_robust_acc"] = round(100.0 * r.robust_correct / r.n, 2)
            out[f"{name}_{prec}_s"] = round(time.perf_counter() - t0, 3)
    emit(out)


def paths(args: argparse.Namespace, device: str) -> None:
    """channels-last (the engine's CUDA input format) and torch.compile: same robust counts as eager;
    a batch larger than memory allows backs off and still finishes."""
    tasks, _ = demo_tasks(args.samples, 0)
    task = tasks[0]
    plan = _plan("apgd-ce", 4 / 255, 6, args.iters)
    base = run_engine(task, plan, EngineConfig(batch_size=args.batch_size, device=device))
    out = {"section": "paths", "eager_robust": base.robust_correct}
    if device.startswith("cuda"):
        comp = run_engine(task, plan, EngineConfig(batch_size=args.batch_size, device=device, compile=True))
        out["compiled_robust"] = comp.robust_correct
        vit = vit_b32_task(args.oom_samples)
        t0 = time.perf_counter()
        big = run_engine(
            vit, _plan("pgd", 1 / 255, 10, 1), EngineConfig(batch_size=args.oom_batch, device=device)
        )
        out.update(
            oom_batch=args.oom_batch,
            oom_run_finished=big.n == args.oom_samples,
            oom_s=time.perf_counter() - t0,
        )
    emit(out)


def throughput(args: argparse.Namespace, device: str) -> None:
    """ms per image-step for PGD and APGD at ViT-B-32 size against the matmul-rate floor."""
    task = vit_b32_task(args.vit_samples)
    task.model.to(device)
    x = torch.rand(args.vit_batch, 3, 224, 224, device=device)
    y = torch.zeros(args.vit_batch, dtype=torch.long, device=device)
    flops = step_flops(task.model, x, y) / args.vit_batch
    rate = matmul_rate() if device == "cpu" else _cuda_matmul_rate()
    out = {
        "section": "throughput",
        "device": device,
        "flops_per_image_step": flops,
        "matmul_flops_per_s": rate,
    }
    for name in ("pgd", "apgd-ce"):
        cfg = EngineConfig(batch_size=args.vit_batch, device=device)
        t0 = time.perf_counter()
        r = run_engine(task, _plan(name, 1 / 255, 10, args.vit_steps), cfg)
        sec = time.perf_counter() - t0
        computed = r.device_steps * args.vit_batch
        out[f"{name}_ms_per_image_step"] = round(1000 * sec / max(1, computed), 4)
        out[f"{name}_fraction_of_floor"] = round(flops / rate / (sec / max(1, computed)), 4)
    emit(out)


def _cuda_matmul_rate(n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dry-run", action="store_true", help="toy sizes on CPU; skip CUDA-only parts")
    args = p.parse_args()
    dry = args.dry_run or not torch.cuda.is_available()
    device = "cpu" if dry else "cuda"
    sizes = (
        dict(
            samples=8,
            batch_size=8,
            iters=3,
            vit_samples=2,
            vit_batch=2,
            vit_steps=1,
            oom_samples=2,
            oom_batch=2,
        )
        if dry
        else dict(
            samples=500,
            batch_size=256,
            iters=100,
            vit_samples=2048,
            vit_batch=256,
            vit_steps=10,
            oom_samples=4096,
            oom_batch=65536,
        )
    )
    args = argparse.Namespace(**vars(args), **sizes)
    emit({"section": "start", "device": device, "dry_run": dry, "torch": torch.__version__})
    for section in (precision, paths, throughput):
        section(args, device)


if __name__ == "__main__":
    main()

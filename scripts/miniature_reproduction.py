"""TeCoA's Figure 1 in miniature on the synthetic world, plus FARE.

The shipped miniature family (zsrobust_bench/assets/miniature/, see zsrobust_bench/train/miniature.py)
finetunes the shipped tiny CLIP on ONE synthetic task (position) with
- TeCoA (text-guided contrastive adversarial training: CE over 100*cos to frozen text embeddings),
- TeCoA visual prompting (frozen CLIP, learned padding + token prompts),
- FARE (unsupervised: squared L2 between the adversarial embedding and the original model's clean one),
- standard adversarial training with a one-hot linear head,
- clean finetuning with the TeCoA head (no attack);
this script evaluates every model zero-shot (clean and PGD-10 robust, Linf 4/255, the training epsilon) on
all five synthetic tasks' test splits and prints a Markdown table (the trained task is marked;
"held-out mean" averages the other four). By default it evaluates the shipped checkpoints; --retrain
trains them again from their recipes into --out (each byte-identical to the shipped file).

    python scripts/miniature_reproduction.py --out runs/miniature --n 500              # evaluate the shipped files
    python scripts/miniature_reproduction.py --out runs/miniature --n 500 --retrain    # train first (~1 h on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from zsrobust_bench.data.registry import get_dataset
from zsrobust_bench.fileio import atomic_write_json, atomic_write_text
from zsrobust_bench.models import load_model
from zsrobust_bench.train import load_config, train
from zsrobust_bench.train.miniature import FAMILY, shipped_path
from zsrobust_bench.train.modules import demo_model_path
from zsrobust_bench.train.validate import load_eval_set, robust_accuracy
from zsrobust_bench.zeroshot import build_classifier

TASKS = ("color", "shape", "count", "position", "pattern")


def evaluate_model(path: Path, n: int, eps: float, steps: int) -> dict[str, dict[str, float]]:
    """Zero-shot clean and PGD robust accuracy (%) of a checkpoint on every synthetic task."""
    loaded = load_model(str(path))
    out = {}
    for task in TASKS:
        spec = get_dataset(f"synth-{task}")
        clf = build_classifier(loaded, spec.prompt_set("tecoa"))
        es = load_eval_set(spec.name, "test", n, loaded.image_size, "tecoa")
        out[task] = robust_accuracy(
            clf,
            es,
            eps=eps,
            steps=steps,
            step_size=eps / 4,
            batch_size=250,
            device=torch.device("cpu"),
            seed=0,
        )
    return out


def table(results: dict[str, dict[str, dict[str, float]]], trained: str, eps_label: str) -> str:
    """Markdown: one row per model, robust (clean) accuracy per task, held-out means."""
    head = "| model | " + " | ".join(f"{t}{' (trained)' if t == trained else ''}" for t in TASKS)
    head += " | held-out mean robust | held-out mean clean |\n"
    head += "|---" * (len(TASKS) + 3) + "|\n"
    rows = []
    for name, res in results.items():
        cells = [f"{res[t]['robust_acc']:.1f} ({res[t]['clean_acc']:.1f})" for t in TASKS]
        held = [t for t in TASKS if t != trained]
        mr = sum(res[t]["robust_acc"] for t in held) / len(held)
        mc = sum(res[t]["clean_acc"] for t in held) / len(held)
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {mr:.1f} | {mc:.1f} |")
    note = f"\nCells: zero-shot robust accuracy (clean accuracy) in %, PGD-10 Linf {eps_label}, synthetic test splits.\n"
    return head + "\n".join(rows) + "\n" + note


def main() -> None:
    """Evaluate the shipped family (or retrain it first) and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/miniature"))
    ap.add_argument("--n", type=int, default=1000, help="test samples per task (max 2000)")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of the evaluation")
    ap.add_argument("--only", nargs="*", default=None, help="family keys to run (default all)")
    ap.add_argument("--retrain", action="store_true", help="train each model from its recipe into --out")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tecoa = load_config("synthetic-tecoa")
    eps = float(tecoa["attack"]["eps"])  # evaluate at the training epsilon
    results: dict[str, dict[str, dict[str, float]]] = {
        "Un-finetuned demo CLIP": evaluate_model(demo_model_path(), args.n, eps, args.steps)
    }
    timings: dict[str, float] = {}
    for m in FAMILY:
        if args.only and m.key not in args.only:
            continue
        path = shipped_path(m.key)
        if args.retrain:
            run_dir = args.out / m.key
            path = args.out / f"{m.key}.safetensors"
            cfg = load_config(m.recipe, m.ship_overrides(copy_to=str(path)))
            t0 = time.time()
            if not path.is_file():
                train(cfg, run_dir, resume=(run_dir / "train-state.pt").is_file())
            timings[m.key] = time.time() - t0
        results[m.label] = evaluate_model(path, args.n, eps, args.steps)
        print(
            m.label,
            json.dumps({t: round(v["robust_acc"], 1) for t, v in results[m.label].items()}),
            flush=True,
        )
    trained = tecoa["data"]["task"]
    md = table(results, trained, f"{eps * 255:g}/255")
    atomic_write_text(args.out / "table.md", md)
    atomic_write_json(
        args.out / "results.json",
        {
            "eps": eps,
            "pgd_steps": args.steps,
            "n": args.n,
            "trained_task": trained,
            "results": results,
            "train_seconds": timings,
        },
    )
    print(md)


if __name__ == "__main__":
    main()

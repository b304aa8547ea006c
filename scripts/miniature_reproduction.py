"""TeCoA's Figure 1 in miniature on the synthetic world.

Starting from the shipped tiny CLIP, finetune on ONE synthetic task (position) with
- TeCoA (text-guided contrastive adversarial training: CE over 100*cos to frozen text embeddings),
- TeCoA visual prompting (frozen CLIP, learned padding + token prompts),
- standard adversarial training with a one-hot linear head,
- clean finetuning with the TeCoA head (no attack),
then evaluate every model zero-shot (clean and PGD-10 robust, Linf 4/255, the training epsilon) on all five synthetic
tasks' test splits and print a Markdown table (the trained task is marked; "held-out mean" averages
the other four).

    python scripts/miniature_reproduction.py --out runs/miniature            # ~20 min on 2 CPU cores
    python scripts/miniature_reproduction.py --out runs/miniature --n 500    # quicker evaluation
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
from zsrobust_bench.train.modules import demo_model_path
from zsrobust_bench.train.validate import load_eval_set, robust_accuracy
from zsrobust_bench.zeroshot import build_classifier

TASKS = ("color", "shape", "count", "position", "pattern")
RECIPES: dict[str, tuple[str, list[str]]] = {
    "TeCoA finetuning": ("synthetic-tecoa", []),
    "TeCoA visual prompting": ("synthetic-vp", []),
    "Adv. training, one-hot head": ("synthetic-advtrain", []),
    "Clean finetuning (TeCoA head)": ("synthetic-tecoa", ["attack.steps=0", "name=synthetic-clean"]),
}


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
    """Train the recipes (skipping finished ones) and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/miniature"))
    ap.add_argument("--n", type=int, default=1000, help="test samples per task (max 2000)")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of the evaluation")
    ap.add_argument("--only", nargs="*", default=None, help="recipe names to run (default all)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tecoa = load_config("synthetic-tecoa")
    eps = float(tecoa["attack"]["eps"])  # evaluate at the training epsilon
    results: dict[str, dict[str, dict[str, float]]] = {
        "Un-finetuned demo CLIP": evaluate_model(demo_model_path(), args.n, eps, args.steps)
    }
    timings: dict[str, float] = {}
    for label, (config, overrides) in RECIPES.items():
        if args.only and label not in args.only:
            continue
        cfg = load_config(config, overrides + ["progress=false", "final_eval.datasets=[]"])
        run_dir = args.out / str(cfg["name"])
        final = run_dir / "final.safetensors"
        t0 = time.time()
        if not final.is_file():
            train(cfg, run_dir, resume=(run_dir / "train-state.pt").is_file())
        timings[label] = time.time() - t0
        results[label] = evaluate_model(final, args.n, eps, args.steps)
        print(
            label, json.dumps({t: round(v["robust_acc"], 1) for t, v in results[label].items()}), flush=True
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

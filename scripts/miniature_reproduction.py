"""TeCoA's Figure 1 in miniature on the synthetic world, plus FARE, published as leaderboard entries.

The shipped miniature family (zsrobust_bench/assets/miniature/, see zsrobust_bench/train/miniature.py)
finetunes the shipped tiny CLIP on ONE synthetic task (position) with
- TeCoA (text-guided contrastive adversarial training: CE over 100*cos to frozen text embeddings),
- TeCoA visual prompting (frozen CLIP, learned padding + token prompts),
- FARE (unsupervised: squared L2 between the adversarial embedding and the original model's clean one),
- standard adversarial training with a one-hot linear head,
- clean finetuning with the TeCoA head (no attack).
This script evaluates the un-finetuned demo CLIP and every finetune with `zsbench evaluate` under the
protocols `synthetic-pgd` and `synthetic-aa`, files each model as the leaderboard entry `mini-<key>`
(card written from its recipe and checkpoint, digests included), rebuilds `leaderboard/` and writes the
README's miniature table from the entries' results (tests/test_miniature_entries.py checks all three agree).

    python scripts/miniature_reproduction.py                # evaluate the shipped files, publish (~1 h, 2 cores)
    python scripts/miniature_reproduction.py --retrain      # train them again first (byte-identical files)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from zsrobust_bench.evaluate import evaluate
from zsrobust_bench.fileio import atomic_write_text
from zsrobust_bench.leaderboard import build_leaderboard
from zsrobust_bench.leaderboard.miniature import PROTOCOLS, entries, miniature_table, publish, with_table
from zsrobust_bench.train import load_config, train
from zsrobust_bench.train.miniature import member

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Evaluate (optionally retrain first), publish the entries, rebuild the leaderboard and the README table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/miniature-lb"), help="evaluation run folders")
    ap.add_argument("--retrain", action="store_true", help="train each finetune from its recipe first")
    ap.add_argument("--train-out", type=Path, default=Path("runs/miniature"))
    args = ap.parse_args()
    runs: dict[tuple[str, str], Path] = {}
    for e in entries():
        if args.retrain and e.key != "demo":
            m = member(e.key)
            t0 = time.time()
            run_dir = args.train_out / m.key
            train(
                load_config(m.recipe, m.ship_overrides()),
                run_dir,
                resume=(run_dir / "train-state.pt").is_file(),
            )
            print(f"trained {e.key} in {time.time() - t0:.0f} s", flush=True)
        for proto in PROTOCOLS:
            out = args.runs / f"{e.key}-{proto}"
            t0 = time.time()
            # resumes a finished or interrupted run; a different checkpoint is refused, not mixed
            evaluate(e.repo_path, protocol=proto, out=out)
            runs[(e.key, proto)] = out
            print(f"{e.entry_id} {proto}: {time.time() - t0:.0f} s", flush=True)
    publish(runs, REPO / "submissions", REPO)
    build_leaderboard(REPO / "submissions", REPO / "leaderboard")
    table = miniature_table(REPO / "submissions")
    readme = REPO / "README.md"
    atomic_write_text(readme, with_table(readme.read_text(), table))
    print(table)


if __name__ == "__main__":
    main()

"""Zero-shot validation during training, scored by the benchmark's own evaluation.

Held-out samples are chosen by `data.subsets.evaluation_subset` (the seeded rule of `zsbench
evaluate`), the training tower is wrapped in the benchmark's `ZeroShotClassifier` with text heads from
`zeroshot.compute_class_embeddings`, and PGD is the registry's `pgd` run by `attacks.loop.run_sequence`
(per-sample random starts, worst case over iterates). A validation number is therefore the number
`zsbench evaluate` reports for the same weights, split, samples, eps, steps and step size (seed 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks.loop import eval_mode, run_sequence
from ..attacks.registry import build_attack
from ..data.subsets import evaluation_subset, indices_sha256
from ..zeroshot import ZeroShotClassifier
from .modules import BaseModel, text_embeddings

SEED = 0  # the protocols' seed: sample subset and per-sample PGD starts, as `zsbench evaluate` draws them


@dataclass
class EvalSet:
    """Images in [0,1], labels and dataset indices (the per-sample attack ids) of one held-out subset,
    plus its prompt set."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor
    classnames: list[str]
    templates: list[str]


def load_eval_set(
    name: str,
    split: str | None,
    n: int | None,
    image_size: int,
    prompt_set: str,
    data_root: str | None = None,
    seed: int = SEED,
) -> EvalSet:
    """The `n` samples (all when None) of a registered dataset's split that `zsbench evaluate` picks with
    `seed`, read through the benchmark's own loader (same pixels)."""
    from ..data.loaders import open_eval_dataset
    from ..data.registry import get_dataset

    spec = get_dataset(name)
    ps = spec.prompt_set(prompt_set)
    split = split or spec.eval_split
    ds = open_eval_dataset(spec, Path(data_root) if data_root else None, image_size, split)
    ids = evaluation_subset(ds, spec.name, n, seed).indices
    xs, ys = zip(*(ds[int(i)] for i in ids), strict=True)
    return EvalSet(
        spec.name,
        torch.stack(list(xs)),
        torch.tensor([int(v) for v in ys]),
        torch.from_numpy(ids),
        list(ps.classnames),
        list(ps.templates),
    )


def robust_accuracy(
    clf: nn.Module,
    es: EvalSet,
    *,
    eps: float,
    steps: int,
    step_size: float,
    batch_size: int,
    device: torch.device,
    seed: int = SEED,
) -> dict[str, Any]:
    """Clean and PGD robust accuracy (%) of a zero-shot classifier on an eval set, as the benchmark
    evaluates them: robust = clean-correct and no PGD iterate (the random start included) misclassified.
    `eps` or `steps` of 0 measures clean accuracy only (robust = clean)."""
    attacks = []
    if eps > 0 and steps > 0:
        pgd = build_attack(
            "pgd", eps, len(es.classnames), steps=steps, step_size=step_size, random_start=True, restarts=1
        )
        attacks.append(pgd)
    clean = robust = 0
    for lo in range(0, len(es.y), batch_size):  # outcomes are per sample: chunking only bounds memory
        rows = slice(lo, lo + batch_size)
        out = run_sequence(
            attacks, clf, es.x[rows].to(device), es.y[rows].to(device), es.ids[rows], seed, batch_size
        )
        clean += int(out.clean_correct.sum())
        robust += int(out.robust.sum())
    n = max(1, len(es.y))
    return {
        "n": len(es.y),
        "clean_acc": 100.0 * clean / n,
        "robust_acc": 100.0 * robust / n,
        "subset_sha256": indices_sha256(es.ids.numpy()),
    }


class Validator:
    """Held-out zero-shot sets plus their text heads (recomputed when the text tower trains)."""

    def __init__(self, sets: list[EvalSet], cfg: dict[str, Any], eps: float) -> None:
        self.sets, self.cfg, self.eps = sets, cfg, eps
        self._heads: dict[str, torch.Tensor] = {}

    def run(
        self, base: BaseModel, tower: nn.Module, device: torch.device, text_trains: bool
    ) -> dict[str, Any]:
        """Evaluate every set with `tower` as the image tower (its train/eval flags are restored);
        returns per-dataset numbers and the mean clean and robust accuracies."""
        steps = int(self.cfg["steps"])
        step_size = float(self.cfg["step_size"]) if self.cfg.get("step_size") is not None else self.eps / 4
        out: dict[str, Any] = {}
        with eval_mode(tower):
            for es in self.sets:
                if text_trains or es.name not in self._heads:
                    self._heads[es.name] = text_embeddings(
                        base.model, base.tokenizer, es.classnames, es.templates, device
                    )
                clf = ZeroShotClassifier(tower, self._heads[es.name], base.image_size, base.mean, base.std)
                out[es.name] = robust_accuracy(
                    clf.to(device),
                    es,
                    eps=self.eps,
                    steps=steps,
                    step_size=step_size,
                    batch_size=int(self.cfg["batch_size"]),
                    device=device,
                )
        mean_rob = sum(v["robust_acc"] for v in out.values()) / max(1, len(out))
        mean_clean = sum(v["clean_acc"] for v in out.values()) / max(1, len(out))
        return {"datasets": out, "mean_robust_acc": mean_rob, "mean_clean_acc": mean_clean}

"""Zero-shot validation during training: clean and PGD robust accuracy on held-out datasets, with the
training tower in eval mode and text heads from the frozen text tower."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attack import pgd_linf
from .modules import ImageClassifier, Preprocess, text_embeddings


@dataclass
class EvalSet:
    """Images in [0,1] and labels of one held-out dataset, plus its prompt set."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    classnames: list[str]
    templates: list[str]


def load_eval_set(
    name: str,
    split: str | None,
    n: int | None,
    image_size: int,
    prompt_set: str,
    data_root: str | None = None,
    seed: int = 0,
) -> EvalSet:
    """A seeded subset of `n` samples (all when None) of a registered dataset's split, read through the
    benchmark's own loader (same pixels as `zsbench evaluate`)."""
    from ..data.loaders import open_eval_dataset
    from ..data.registry import get_dataset

    spec = get_dataset(name)
    ps = spec.prompt_set(prompt_set)
    split = split or spec.eval_split

    ds = open_eval_dataset(spec, Path(data_root) if data_root else None, image_size, split)
    idx = torch.arange(len(ds))
    if n is not None and n < len(ds):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(ds), generator=g)[:n].sort().values
    xs, ys = zip(*(ds[int(i)] for i in idx), strict=True)
    return EvalSet(
        spec.name,
        torch.stack(list(xs)),
        torch.tensor([int(v) for v in ys]),
        list(ps.classnames),
        list(ps.templates),
    )


@torch.no_grad()
def _predict(clf: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return clf(x).argmax(dim=1)


def robust_accuracy(
    clf: nn.Module,
    es: EvalSet,
    *,
    eps: float,
    steps: int,
    step_size: float,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, float]:
    """Clean and robust accuracy (%) of an eval-mode classifier; robust = clean-correct and still correct
    after PGD from a seeded random start."""
    clean = robust = 0
    g = torch.Generator().manual_seed(seed)
    for lo in range(0, len(es.y), batch_size):
        x = es.x[lo : lo + batch_size].to(device)
        y = es.y[lo : lo + batch_size].to(device)
        ok = _predict(clf, x) == y
        clean += int(ok.sum())
        if eps > 0 and steps > 0:
            start = torch.rand(x.shape, generator=g) * 2 - 1
            x_adv = pgd_linf(clf, x, y, eps, steps, step_size, start=start)
            ok &= _predict(clf, x_adv) == y
        robust += int(ok.sum())
    n = max(1, len(es.y))
    return {"n": len(es.y), "clean_acc": 100.0 * clean / n, "robust_acc": 100.0 * robust / n}


class Validator:
    """Held-out zero-shot sets plus their text heads (recomputed when the text tower trains)."""

    def __init__(self, sets: list[EvalSet], cfg: dict[str, Any], eps: float) -> None:
        self.sets, self.cfg, self.eps = sets, cfg, eps
        self._heads: dict[str, torch.Tensor] = {}

    def run(
        self,
        clip: nn.Module,
        tokenizer: Any,
        tower: nn.Module,
        pre: Preprocess,
        device: torch.device,
        text_trains: bool,
    ) -> dict[str, Any]:
        """Evaluate every set; returns per-dataset numbers and the mean robust accuracy."""
        steps = int(self.cfg["steps"])
        step_size = float(self.cfg["step_size"]) if self.cfg.get("step_size") is not None else self.eps / 4
        was_training = tower.training
        out: dict[str, Any] = {}
        for es in self.sets:
            if text_trains or es.name not in self._heads:
                self._heads[es.name] = text_embeddings(clip, tokenizer, es.classnames, es.templates, device)
            clf = ImageClassifier(tower, pre, self._heads[es.name], None).eval()
            out[es.name] = robust_accuracy(
                clf,
                es,
                eps=self.eps,
                steps=steps,
                step_size=step_size,
                batch_size=int(self.cfg["batch_size"]),
                device=device,
            )
        tower.train(was_training)
        mean_rob = sum(v["robust_acc"] for v in out.values()) / max(1, len(out))
        mean_clean = sum(v["clean_acc"] for v in out.values()) / max(1, len(out))
        return {"datasets": out, "mean_robust_acc": mean_rob, "mean_clean_acc": mean_clean}

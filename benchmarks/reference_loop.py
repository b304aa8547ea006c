"""The research-code way to evaluate PGD robustness, kept as the baseline the engine is timed against.

Written like TeCoA's evaluation (`attacks.attack_pgd` driven by `finetuning.validate`): a
DataLoader yields batches, every sample of a batch (also the ones the model already gets wrong) is
attacked for every step, nothing stops early, and robust accuracy is read at the last iterate.

Two styles of model:
- `ResearchCLIP` (style "research"): what TeCoA's loop calls, `model(images, text_tokens)`: the
  text tower encodes the class prompts inside every forward, and the parameters keep
  `requires_grad=True` (TeCoA's evaluation never freezes them), so every `loss.backward()` also
  computes parameter gradients.
- the engine's own frozen `ZeroShotClassifier` (style "frozen"): cached text head, input gradients
  only. This isolates what skipping and early exit alone buy.

Two deliberate departures make the comparison fair to the reference: the loss is the engine's
fp32 cross-entropy summed over the batch (TeCoA uses fp16 autocast and a mean, which weakens the
attack), and the random start is the engine's per-sample seeded start. Both loops then follow the
same trajectories, so any gap in robust accuracy is the engine's worst-case-over-iterates
bookkeeping, never a weaker attack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from zsrobust_bench.attacks.pgd import PGD
from zsrobust_bench.zeroshot import LOGIT_SCALE


class ResearchCLIP(nn.Module):
    """Image and text towers in every forward: logits = 100 * cos(image, mean prompt embedding per class)."""

    def __init__(
        self,
        clip: nn.Module,
        tokens: torch.Tensor,
        templates: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("tokens", tokens)
        self.templates = int(templates)
        self.image_size = int(image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        img = F.normalize(self.clip.encode_image((x - self.mean) / self.std).float(), dim=-1)
        txt = F.normalize(self.clip.encode_text(self.tokens).float(), dim=-1)
        txt = F.normalize(txt.view(-1, self.templates, txt.shape[-1]).mean(dim=1), dim=-1)
        return LOGIT_SCALE * img @ txt.t()


@dataclass
class ReferenceResult:
    """Counts from one reference run."""

    n: int
    clean_correct: int
    robust_correct: int
    image_steps: int  # forward+backward passes times batch rows


def reference_pgd(
    model: nn.Module,
    dataset: Dataset,
    indices: list[int],
    attack: PGD,
    *,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    param_grads: bool = False,
) -> ReferenceResult:
    """Whole batch attacked for all steps, no skipping, no early exit; accuracy at the final iterate.

    `param_grads=True` leaves the model's parameters trainable during the run, as the research
    evaluation does (restored afterwards).
    """
    if attack.norm != "Linf" or attack.restarts != 1:
        raise ValueError("the reference loop implements single-restart Linf PGD only")
    params = list(model.parameters())
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(param_grads)
    model.eval()
    loader = DataLoader(
        Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    eps, alpha = attack.eps, attack.step_size
    n = clean = robust = image_steps = 0
    try:
        for x, y in loader:
            x, y = x.float(), torch.as_tensor(y).long()
            ids = torch.as_tensor(indices[n : n + x.shape[0]], dtype=torch.int64)
            with torch.no_grad():
                clean += int((model(x).argmax(dim=1) == y).sum())
            delta = attack.init(x, y, ids, seed).delta.clone()  # the engine's per-sample random start
            delta.requires_grad_(True)
            for _ in range(attack.total_steps):
                loss = F.cross_entropy(model(x + delta).float(), y, reduction="sum")
                loss.backward()
                grad = delta.grad.detach()
                d = torch.clamp(delta.detach() + alpha * torch.sign(grad), min=-eps, max=eps)
                delta.data = (x + d).clamp(0, 1) - x
                delta.grad.zero_()
                image_steps += x.shape[0]
            with torch.no_grad():
                robust += int((model(x + delta).argmax(dim=1) == y).sum())
            n += x.shape[0]
    finally:
        for p, flag in zip(params, saved, strict=True):
            p.requires_grad_(flag)
            p.grad = None
    return ReferenceResult(n=n, clean_correct=clean, robust_correct=robust, image_steps=image_steps)

"""Attack losses, computed in fp32 and summed over the batch so no per-sample gradient underflows.

A mean over the batch scales every sample's gradient by 1/B; under fp16 autocast the backward pass
then rounds small per-sample gradients to zero and PGD stops moving (why TeCoA's original PGD
evaluation was weak). `ce-mean` exists only to reproduce that legacy behaviour in comparisons.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in fp32, summed over samples."""
    return F.cross_entropy(logits.float(), y, reduction="sum")


def ce_mean_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Legacy mean-reduced cross-entropy (TeCoA's original eval); not used by any frozen protocol."""
    return F.cross_entropy(logits.float(), y, reduction="mean")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample fp32 margin z_y - max_{j != y} z_j (negative means misclassified)."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return true - other


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """TeCoA's CW variant: -sum relu(z_y - max_{j!=y} z_j + kappa); ascending it lowers the true margin."""
    return -torch.relu(margin(logits, y) + kappa).sum()


def sq_l2_loss(emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FARE's embedding loss: squared L2 distance to a target embedding in fp32, summed over the
    embedding dimension and the batch (R-FARE train/adversarial_training_clip.py:509-521 `l2`)."""
    return (emb.float() - target.float()).pow(2).sum()


LOSSES: dict[str, Loss] = {
    "ce": ce_loss,
    "cw": cw_margin_loss,
    "ce-mean": ce_mean_loss,
    "sq-l2": sq_l2_loss,
}

LOSS_REDUCTION: dict[str, str] = {"ce": "sum", "cw": "sum", "ce-mean": "mean", "sq-l2": "sum"}

# What each loss compares the model output with: class labels (logits in, a sample counts as broken
# when misclassified) or a target embedding (the image embedding in; no notion of broken).
LOSS_TARGET: dict[str, str] = {"ce": "label", "cw": "label", "ce-mean": "label", "sq-l2": "embedding"}


def get_loss(name: str) -> Loss:
    """The loss registered under `name`; unknown names fail with the known ones."""
    if name not in LOSSES:
        raise KeyError(f"unknown attack loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name]

"""Batch attacks (pyautoattack, torchattacks) in fixed batches, and the threat-model check of what they return.

The engine never takes a batch attack's word: every adversarial input is checked against the
threat model and re-classified here.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.base import Attack, BatchAttack
from .device import autocast
from .plan import EngineConfig


def run_batch_attack(
    model: nn.Module,
    attack: BatchAttack,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    cfg: EngineConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a batch attack in batches of `cfg.batch_size`; returns (broken, nonfinite) per sample, on the CPU."""
    broken = torch.zeros(x.shape[0], dtype=torch.bool)
    nonfinite = torch.zeros(x.shape[0], dtype=torch.bool)
    for i in range(0, x.shape[0], cfg.batch_size):
        sl = slice(i, i + cfg.batch_size)
        xb, yb = x[sl].to(cfg.device), y[sl].to(cfg.device)
        _, x_adv = attack.run(model, xb, yb, ids[sl], cfg.seed)
        x_adv = x_adv.detach()
        _check_threat(attack, xb, x_adv)
        with torch.inference_mode(), autocast(cfg.precision, cfg.device):
            logits = model(x_adv).float()
        finite = torch.isfinite(logits).all(dim=1)
        broken[sl] = ((logits.argmax(dim=1) != yb) & finite).cpu()
        nonfinite[sl] = (~finite).cpu()
    return broken, nonfinite


def _check_threat(attack: Attack, x: torch.Tensor, x_adv: torch.Tensor, tol: float = 1e-5) -> None:
    """An adversarial example outside the threat model or [0,1] is a bug, never a result."""
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(dim=1) if attack.norm == "Linf" else d.norm(dim=1)
    if (size > attack.eps + tol).any() or x_adv.min() < -tol or x_adv.max() > 1 + tol:
        raise RuntimeError(
            f"attack {attack.name} left the {attack.norm} ball of radius {attack.eps} or [0,1]"
        )

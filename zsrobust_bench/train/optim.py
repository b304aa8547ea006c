"""Optimizers and the learning-rate schedule (linear warm-up then cosine, a pure function of the step)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def lr_at(step: int, base_lr: float, total: int, warmup: int, kind: str = "cosine") -> float:
    """Learning rate for optimizer step `step` (0-based): TeCoA/open_clip warm-up + cosine to zero."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if kind == "constant":
        return base_lr
    if kind != "cosine":
        raise ValueError(f"unknown schedule {kind!r}; known: cosine, constant")
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span)) * base_lr


def param_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float, decay_all: bool = False
) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on gains, biases, embeddings, prompts, logit scale), or on
    every parameter with `decay_all` (what FARE's and TeCoA's optimizers do)."""
    decay, no_decay = [], []
    for name, p in named:
        if not p.requires_grad:
            continue
        skip = not decay_all and (
            p.ndim < 2
            or "embedding" in name
            or "prompt" in name
            or "pad_" in name
            or name.endswith("logit_scale")
        )
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def build_optimizer(
    named: Iterable[tuple[str, torch.nn.Parameter]], cfg: dict[str, Any]
) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over the trainable parameters, as the config says."""
    groups = param_groups(named, float(cfg["weight_decay"]), cfg["decay"] == "all")
    if not groups:
        raise ValueError("no trainable parameters")
    if cfg["name"] == "sgd":
        return torch.optim.SGD(groups, lr=float(cfg["lr"]), momentum=float(cfg["momentum"]))
    if cfg["name"] == "adamw":
        return torch.optim.AdamW(groups, lr=float(cfg["lr"]), betas=tuple(float(b) for b in cfg["betas"]))
    raise ValueError(f"unknown optimizer {cfg['name']!r}")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for g in opt.param_groups:
        g["lr"] = lr

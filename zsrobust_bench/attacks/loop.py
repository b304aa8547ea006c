"""Small in-memory drivers for attacks: eval mode, one stepwise attack, a worst-case sequence.

The engine has its own resumable, sharded loop; these drivers give the same per-sample outcome for
a batch held in memory (used by sanity checks, tests and the reference comparisons). Samples the
model gets wrong clean are never attacked; a sample stays robust only if no attack, restart or
iterate misclassified it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .base import Attack, BatchAttack, PoolState, StepwiseAttack


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the duration, then restore each one's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@dataclass
class StepwiseOutcome:
    """Per-sample result of one stepwise attack over all its restarts."""

    broken: torch.Tensor  # bool (N,)
    step: torch.Tensor  # int64 (N,): iterate that broke the sample (0 = start point), -1 if robust
    restart: torch.Tensor  # int64 (N,): restart that broke it, -1 if robust
    x_adv: torch.Tensor  # misclassified iterate for broken samples, last iterate of last restart otherwise


def run_stepwise(
    attack: StepwiseAttack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, seed: int
) -> StepwiseOutcome:
    """Run a stepwise attack to completion on a batch, dropping each sample once it is broken."""
    n = x.shape[0]
    broken = torch.zeros(n, dtype=torch.bool)
    step = torch.full((n,), -1, dtype=torch.int64)
    restart_of = torch.full((n,), -1, dtype=torch.int64)
    x_adv = x.detach().clone()
    rows_all = torch.arange(n)
    with eval_mode(model):
        for restart in range(attack.restarts):
            todo = rows_all[~broken]
            if todo.numel() == 0:
                break
            state = attack.init(x[todo], y[todo], ids.cpu()[todo], seed, restart)
            rows = todo
            while len(state) > 0:
                before: PoolState = state
                state, hit = attack.step(model, state)
                hit = hit.cpu()
                if hit.any():
                    idx = rows[hit]
                    broken[idx] = True
                    step[idx] = before.step.cpu()[hit]
                    restart_of[idx] = restart
                    x_adv[idx] = (before.x + before.delta).detach()[hit.to(x.device)]
                done = (attack.finished(state).cpu()) | hit
                if done.any():
                    ended = rows[done & ~hit]
                    if ended.numel():
                        x_adv[ended] = (state.x + state.delta).detach()[(done & ~hit).to(x.device)]
                keep = ~done
                state = state.select(keep.to(x.device))
                rows = rows[keep]
    return StepwiseOutcome(broken=broken, step=step, restart=restart_of, x_adv=x_adv)


@dataclass
class SequenceOutcome:
    """Per-sample worst case over a sequence of attacks."""

    clean_correct: torch.Tensor  # bool (N,)
    robust: torch.Tensor  # bool (N,): clean-correct and broken by no attack
    broken_by: list[str | None]  # first attack that broke each sample (None: robust or clean-wrong)
    x_adv: torch.Tensor  # the breaking input for broken samples, the clean input otherwise


def run_sequence(
    attacks: Sequence[Attack],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ids: torch.Tensor,
    seed: int,
    batch_size: int = 250,
) -> SequenceOutcome:
    """Attack the still-robust samples with each attack in turn, in index order and fixed batches.

    This is the bookkeeping of pyautoattack's `run_standard_evaluation`, so a batch attack sees the
    same batches (and therefore draws the same random numbers) as it does there.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n = x.shape[0]
    with eval_mode(model), torch.no_grad():
        pred = torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, n, batch_size)])
    clean_correct = (pred == y).cpu()
    robust = clean_correct.clone()
    broken_by: list[str | None] = [None] * n
    x_adv = x.detach().clone()
    for attack in attacks:
        todo = torch.nonzero(robust).flatten()
        for start in range(0, todo.numel(), batch_size):
            rows = todo[start : start + batch_size]
            dev_rows = rows.to(x.device)
            xb, yb, idb = x[dev_rows], y[dev_rows], ids.cpu()[rows]
            if isinstance(attack, BatchAttack):
                hit, xb_adv = attack.run(model, xb, yb, idb, seed)
            elif isinstance(attack, StepwiseAttack):
                res = run_stepwise(attack, model, xb, yb, idb, seed)
                hit, xb_adv = res.broken, res.x_adv
            else:
                raise TypeError(f"{type(attack).__name__} is neither a BatchAttack nor a StepwiseAttack")
            hit = hit.cpu()
            robust[rows[hit]] = False
            x_adv[rows[hit].to(x.device)] = xb_adv[hit.to(x.device)].to(x_adv.dtype)
            for r in rows[hit].tolist():
                broken_by[r] = attack.name
    return SequenceOutcome(clean_correct=clean_correct, robust=robust, broken_by=broken_by, x_adv=x_adv)

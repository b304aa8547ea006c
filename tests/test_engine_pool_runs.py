"""The slot pool's runs (restarts, targets): started early side by side once the feeder is dry, the
outcome must still be the sequential one (the lowest breaking run and its iterate decide).

A scripted stepwise attack says, per (sample, run), at which iterate the run breaks and where it sees
a non-finite logit, so the expected outcome is known exactly and any packing of runs can be checked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_support import drain_pool
from torch import nn

from zsrobust_bench.attacks.base import PoolState, StepwiseAttack
from zsrobust_bench.engine.blocks import Block
from zsrobust_bench.engine.pool import SlotPool

STEPS = 6  # iterates 0..5 per run


class ScriptedRuns(StepwiseAttack):
    """Run r of sample i breaks at iterate `breaks[i][r]` (None: never); non-finite at `nonfinite[i][r]`."""

    name = "scripted"

    def __init__(self, breaks: dict, nonfinite: dict, restarts: int, tail: bool) -> None:
        super().__init__(eps=0.1)
        self.breaks, self.nonfinite_at, self.restarts, self.compact_tail = breaks, nonfinite, restarts, tail
        self.total_steps = STEPS

    def params(self) -> dict:
        return {"attack": self.name}

    def init(self, x, y, ids, seed, restart=0) -> PoolState:
        n = x.shape[0]
        return PoolState(
            x=x,
            y=y,
            ids=ids,
            delta=torch.zeros_like(x),
            step=torch.zeros(n, dtype=torch.int64),
            restart=torch.full((n,), restart, dtype=torch.int64),
            extra={"nonfinite": torch.zeros(n, dtype=torch.bool)},
        )

    def step(self, model: nn.Module, state: PoolState) -> tuple[PoolState, torch.Tensor]:
        rows = zip(state.ids.tolist(), state.restart.tolist(), state.step.tolist(), strict=True)
        hit, bad = [], []
        for i, r, s in rows:
            hit.append(i >= 0 and self.breaks.get(i, {}).get(r) == s)
            bad.append(i >= 0 and self.nonfinite_at.get(i, {}).get(r) == s)
        extra = dict(state.extra, nonfinite=torch.tensor(bad))
        new = PoolState(state.x, state.y, state.ids, state.delta, state.step + 1, state.restart, extra)
        return new, torch.tensor(hit) & ~torch.tensor(bad)


def sequential(breaks: dict, nonfinite: dict, n: int, restarts: int) -> dict[int, tuple[bool, int, bool]]:
    """The outcome of running sample i's runs one after another: (broken, iterate, non-finite seen)."""
    out = {}
    for i in range(n):
        seen_bad, res = False, (False, -1)
        for r in range(restarts):
            b, nf = breaks.get(i, {}).get(r), nonfinite.get(i, {}).get(r)
            if nf is not None and (b is None or nf <= b):
                seen_bad = True
            if b is not None and b != nf:
                res = (True, b)
                break
        out[i] = (*res, seen_bad)
    return out


def drive(attack: ScriptedRuns, n: int, capacity: int) -> tuple[dict, SlotPool]:
    """Feed n samples through a pool as the engine's stream does (refill while rows wait), until empty."""
    pool = SlotPool(attack, capacity, seed=0, device="cpu")
    rows = Block(
        torch.zeros((n, 1, 2, 2)),
        torch.zeros(n, dtype=torch.int64),
        torch.arange(n),
        np.zeros(n, np.int64),
        np.arange(n),
    )
    got: dict[int, tuple[bool, int, bool]] = {}
    for out in drain_pool(pool, nn.Identity(), rows):
        for pos, b, s, nf in zip(out.rows.pos, out.broken, out.step, out.nonfinite, strict=True):
            assert int(pos) not in got, f"sample {pos} left the pool twice"
            got[int(pos)] = (bool(b), int(s), bool(nf))
    return got, pool


CRAFTED_BREAKS = {
    0: {0: 4, 2: 0},  # run 0 breaks late, run 2 early: run 0 decides (iterate 4)
    1: {1: 3, 3: 0},  # run 1 decides (iterate 3) although run 3 breaks first in time
    2: {},  # robust through every run
    3: {4: 5},  # only the last run breaks, at its last iterate
    4: {0: 0},  # broken at the start point
}
CRAFTED_NONFINITE = {1: {4: 1}, 2: {3: 2}, 3: {0: 1}}  # after the deciding run (ignored), robust, before


@pytest.mark.parametrize("capacity", [1, 2, 5, 16, 64])
def test_crafted_runs_match_the_sequential_outcome(capacity):
    attack = ScriptedRuns(CRAFTED_BREAKS, CRAFTED_NONFINITE, restarts=5, tail=True)
    got, pool = drive(attack, 5, capacity)
    assert got == sequential(CRAFTED_BREAKS, CRAFTED_NONFINITE, 5, 5)
    assert got[0] == (True, 4, False) and got[1] == (True, 3, False) and got[2] == (False, -1, True)
    if capacity >= 16:
        assert pool.speculative_runs > 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("capacity", [3, 8, 40])
def test_random_scripts_match_the_sequential_outcome_and_need_fewer_steps(seed, capacity):
    rng = np.random.default_rng(seed)
    n, restarts = 30, 7
    breaks = {
        i: {r: int(rng.integers(STEPS)) for r in range(restarts) if rng.random() < 0.15} for i in range(n)
    }
    nonfinite = {
        i: {r: int(rng.integers(STEPS)) for r in range(restarts) if rng.random() < 0.05} for i in range(n)
    }
    expect = sequential(breaks, nonfinite, n, restarts)
    early, pool = drive(ScriptedRuns(breaks, nonfinite, restarts, tail=True), n, capacity)
    plain, plain_pool = drive(ScriptedRuns(breaks, nonfinite, restarts, tail=False), n, capacity)
    assert early == expect
    assert plain == expect
    assert sum(b for b, _, _ in expect.values()) not in (0, n)  # a mix of outcomes
    if capacity > 3:
        assert pool.speculative_runs > 0
        assert pool.steps_run < plain_pool.steps_run
    assert plain_pool.speculative_runs == 0

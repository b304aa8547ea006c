"""The engine's records do not depend on batch packing, batch size, shard size or shard order.

For a fixed batch size the guarantee is bitwise: every device call has the same shape, random
starts are seeded per sample id, so a row's arithmetic never depends on its companions or slot
(checked directly on the pool). Across batch sizes the backend may pick other kernels; the
records below still agree (the guarantee there is the records, not the last float bit).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from engine_support import SelfLabelled, drain_pool, run_records, shards_of, single_thread, tiny_classifier

from zsrobust_bench.attacks.loop import run_stepwise as reference_driver
from zsrobust_bench.attacks.pgd import PGD
from zsrobust_bench.engine.blocks import Block
from zsrobust_bench.engine.plan import EpsAttacks
from zsrobust_bench.engine.pool import SlotPool

EPS = 2 / 255


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def setup():
    clf = tiny_classifier()
    ds = SelfLabelled(clf, 40, wrong=5)
    plan = [EpsAttacks(EPS, [PGD(EPS, steps=8, step_size=EPS / 4)], [])]
    return clf, ds, plan


@pytest.fixture(scope="module")
def baseline(setup):
    clf, ds, plan = setup
    recs, _ = run_records(clf, ds, plan, batch_size=64, shard_size=64)
    return recs


def test_baseline_has_a_mix_of_outcomes(baseline):
    steps = {r["broken_step"] for r in baseline if r["broken_by"] == "pgd"}
    assert len(steps) >= 3, "the test data should break samples at several different steps"
    assert any(r["robust_correct"] for r in baseline)
    assert any(not r["clean_correct"] for r in baseline)


@pytest.mark.parametrize(("batch_size", "shard_size"), [(7, 64), (1, 64), (64, 5), (7, 3), (64, 1000)])
def test_records_identical_across_batch_and_shard_sizes(setup, baseline, batch_size, shard_size):
    clf, ds, plan = setup
    recs, _ = run_records(clf, ds, plan, batch_size=batch_size, shard_size=shard_size)
    assert recs == baseline


def test_records_identical_when_shards_arrive_in_another_order(setup, baseline):
    """What a rank of a multi-process run sees: a different subset and order of the same shards."""
    clf, ds, plan = setup
    shards = shards_of(len(ds), 6)
    odd_first = shards[1::2] + shards[0::2]
    recs, _ = run_records(clf, ds, plan, batch_size=7, shard_size=6, shards=odd_first)
    by_index = {r["index"]: r for r in recs}
    recs7, _ = run_records(clf, ds, plan, batch_size=7, shard_size=6)
    assert [by_index[r["index"]] for r in recs7] == recs7


def test_a_rows_trajectory_is_bitwise_independent_of_companions_and_slot(setup):
    clf, ds, _ = setup
    attack = PGD(EPS, steps=6, step_size=EPS / 4)
    x, y = ds.x, ds.y
    ids = torch.arange(len(ds))

    def delta_of(target: int, rows: list[int]) -> torch.Tensor:
        pool = SlotPool(attack, 8, seed=0, device="cpu")
        sel = torch.tensor(rows)
        pool.add(Block(x[sel], y[sel], ids[sel], np.zeros(len(rows), dtype=np.int64), np.array(rows)))
        for _ in range(3):
            pool.step(clf)
        assert pool.state is not None
        slot = int(np.flatnonzero(pool.active & (pool.pos == target))[0])
        return pool.state.delta[slot].clone()

    alone = delta_of(11, [11])
    crowded = delta_of(11, [3, 20, 7, 11, 30, 1, 2])
    other = delta_of(11, [25, 11, 26])
    assert torch.equal(alone, crowded) and torch.equal(alone, other)


def test_engine_agrees_with_the_in_memory_attack_driver(setup, baseline):
    """attacks.loop.run_stepwise shares no pool code with the engine: same samples broken at the same steps."""
    clf, ds, plan = setup
    correct = torch.tensor([r["clean_correct"] for r in baseline])
    rows = torch.nonzero(correct).flatten()
    out = reference_driver(plan[0].attacks[0], clf, ds.x[rows], ds.y[rows], rows, seed=0)
    engine_steps = [
        r["broken_step"] if r["broken_by"] == "pgd" else -1 for r in baseline if r["clean_correct"]
    ]
    assert out.step.tolist() == engine_steps


def test_last_iterate_shortcut_equals_a_full_pgd_step(setup):
    """When every pooled row is at its last iterate the pool skips the backward: same outcome as PGD.step."""
    clf, ds, _ = setup
    attack = PGD(EPS, steps=2, step_size=EPS / 4)
    state = attack.init(ds.x[:8], ds.y[:8], torch.arange(8), seed=0)
    for _ in range(2):
        state, _ = attack.step(clf, state)
    assert (state.step == attack.total_steps).all()
    full, hit_full = attack.step(clf, replace(state, extra=dict(state.extra)))
    short, hit_short = attack.last_iterate_step(clf, replace(state, extra=dict(state.extra)))
    assert torch.equal(hit_full, hit_short) and torch.equal(full.delta, short.delta)
    assert torch.equal(full.step, short.step)
    assert torch.equal(full.extra["nonfinite"], short.extra["nonfinite"])


class _OwnStep(PGD):
    """A PGD whose `step` is its own: the pool must not take PGD's last-iterate shortcut for it."""

    def step(self, model, state):
        return super().step(model, state)


def test_pool_takes_the_last_iterate_shortcut_only_where_the_attack_offers_it(setup):
    """The pool asks the attack (it knows no attack by name): PGD skips the last backward, a PGD with its
    own `step` does not, and both break the same samples at the same iterates."""
    clf, ds, _ = setup
    n = 12
    rows = Block(ds.x[:n], ds.y[:n], torch.arange(n), np.zeros(n, dtype=np.int64), np.arange(n))
    outcomes, shortcuts = [], []
    for attack in (PGD(EPS, steps=3, step_size=EPS / 4), _OwnStep(EPS, steps=3, step_size=EPS / 4)):
        pool = SlotPool(attack, n, seed=0, device="cpu")
        exits = list(drain_pool(pool, clf, rows))
        outcomes.append(
            sorted((int(p), int(s)) for e in exits for p, s in zip(e.rows.pos, e.step, strict=True))
        )
        shortcuts.append(pool.forward_only_steps)
    assert outcomes[0] == outcomes[1]
    assert any(s >= 0 for _, s in outcomes[0]) and any(s < 0 for _, s in outcomes[0])  # a mix
    assert shortcuts == [1, 0]

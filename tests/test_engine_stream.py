"""Engine pipeline behaviour: skipping, early exit, several eps, batch attacks, OOM back-off, loading, merging."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from engine_support import SelfLabelled, run_records, shards_of, single_thread, tiny_classifier
from torch import nn
from torch.utils.data import Dataset

from zsrobust_bench.attacks.base import BatchAttack
from zsrobust_bench.attacks.pgd import PGD
from zsrobust_bench.engine.blocks import ShardSpec, iter_blocks
from zsrobust_bench.engine.plan import EngineConfig, EpsAttacks
from zsrobust_bench.engine.records import merge_shards, records_to_jsonl, summarize
from zsrobust_bench.engine.run import evaluate_shard
from zsrobust_bench.errors import DataError

EPS = 2 / 255
STEPS = 8


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier()


@pytest.fixture(scope="module")
def ds(clf):
    return SelfLabelled(clf, 30, wrong=4)


def _pgd(eps: float = EPS, steps: int = STEPS) -> PGD:
    return PGD(eps, steps=steps, step_size=eps / 4)


def test_only_clean_correct_samples_are_attacked_and_broken_ones_stop(clf, ds):
    recs, stats = run_records(clf, ds, [EpsAttacks(EPS, [_pgd()], [])], batch_size=8, shard_size=8)
    correct = [r for r in recs if r["clean_correct"]]
    assert stats.attacked == len(correct) < len(recs)
    # a broken sample costs (broken_step + 1) iterates, a robust one all STEPS + 1: nothing more
    expected = sum(r["broken_step"] + 1 if r["broken_by"] else STEPS + 1 for r in correct)
    assert stats.row_steps == expected
    for r in recs:
        if not r["clean_correct"]:
            assert r["robust_correct"] is False and r["broken_by"] is None and r["broken_step"] is None
    assert summarize(recs, ["2/255"])["robust_acc"] == pytest.approx(
        100 * sum(r["robust_correct"] for r in recs) / 30
    )


def test_the_pool_stays_full_until_the_queue_runs_dry(clf, ds):
    _, stats = run_records(clf, ds, [EpsAttacks(EPS, [_pgd()], [])], batch_size=4, shard_size=3)
    # with 22 attacked samples and a pool of 4, idle slots only appear in the last STEPS + 1 steps
    assert stats.device_steps * 4 - stats.row_steps <= 4 * (STEPS + 1)


def test_several_eps_record_smaller_eps_and_by_eps(clf, ds):
    small, big = 1 / 255, EPS
    plan = [EpsAttacks(small, [_pgd(small)], []), EpsAttacks(big, [_pgd(big)], [])]
    recs, _ = run_records(clf, ds, plan, batch_size=8, shard_size=10)
    single, _ = run_records(clf, ds, [EpsAttacks(big, [_pgd(big)], [])], batch_size=8, shard_size=10)
    for r, s in zip(recs, single, strict=True):
        lo, hi = r["by_eps"]["1/255"], r["by_eps"]["2/255"]
        assert r["robust_correct"] == lo["robust_correct"] and r["broken_by"] == lo["broken_by"]
        if lo["broken_by"] == "pgd":
            assert hi == {"robust_correct": False, "broken_by": "smaller-eps", "broken_step": None}
        elif r["clean_correct"]:
            assert hi == {k: s[k] for k in ("robust_correct", "broken_by", "broken_step")}
        assert not (hi["robust_correct"] and not lo["robust_correct"])


class _Recorder(BatchAttack):
    """A batch attack that breaks nothing and records the ids of every batch it is given."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__(EPS)
        self.batches: list[list[int]] = []

    def params(self) -> dict[str, Any]:
        return {}

    def run(self, model, x, y, ids, seed):
        self.batches.append([int(i) for i in ids])
        return torch.zeros(x.shape[0], dtype=torch.bool), x.clone()


def test_batch_attacks_see_per_shard_batches_in_position_order(clf, ds):
    rec = _Recorder()
    recs, _ = run_records(clf, ds, [EpsAttacks(EPS, [_pgd(), rec], [])], batch_size=4, shard_size=10)
    robust = [r["index"] for r in recs if r["robust_correct"]]
    expected = []
    for a in range(0, 30, 10):
        rows = [i for i in robust if a <= i < a + 10]
        expected += [rows[k : k + 4] for k in range(0, len(rows), 4)]
    assert sorted(rec.batches) == sorted(expected)
    # a rank that only gets the middle shard sees the same batches for it
    mid = _Recorder()
    run_records(
        clf,
        ds,
        [EpsAttacks(EPS, [_pgd(), mid], [])],
        batch_size=4,
        shard_size=10,
        shards=shards_of(30, 10)[1:2],
    )
    assert mid.batches == [b for b in expected if 10 <= b[0] < 20]


class _OOMAbove(nn.Module):
    """Raises an out-of-memory error for gradient batches larger than `limit` (as CUDA would)."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.num_classes = inner.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_keeps_results(clf, ds):
    plan = [EpsAttacks(EPS, [_pgd()], [])]
    direct, _ = run_records(clf, ds, plan, batch_size=8, shard_size=8)
    written: list[int] = []
    out: dict[int, list] = {}
    from zsrobust_bench.engine.run import evaluate_shards

    stats = evaluate_shards(
        _OOMAbove(clf, 8).eval(),
        ds,
        shards_of(30, 8),
        plan,
        EngineConfig(batch_size=32),
        lambda k, r: (written.append(k), out.__setitem__(k, r)),
    )
    assert (stats.batch_size, stats.batch_size_requested, stats.oom_backoffs) == (8, 32, 2)
    assert sorted(written) == [0, 1, 2, 3] and len(written) == 4
    assert [r for k in sorted(out) for r in out[k]] == direct


def test_in_memory_shard_api_matches_the_streaming_engine(clf, ds):
    plan = [EpsAttacks(EPS, [_pgd()], [])]
    streamed, _ = run_records(clf, ds, plan, batch_size=8, shard_size=100)
    assert evaluate_shard(clf, ds.x, ds.y, torch.arange(30), plan, EngineConfig(batch_size=8)) == streamed


class _Numbers(Dataset):
    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i == self.fail_at:
            raise OSError(f"corrupt sample {i}")
        return torch.full((3, 2, 2), float(i)), i % 3


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_keeps_index_order_and_shard_boundaries(workers):
    idx = np.array([5, 1, 9, 3, 7, 0, 2], dtype=np.int64)
    shards = [ShardSpec(4, idx[:3]), ShardSpec(9, idx[3:])]
    blocks = list(iter_blocks(_Numbers(10), shards, batch_size=2, num_workers=workers, prefetch=2))
    assert [int(b.x[r, 0, 0, 0]) for b in blocks for r in range(len(b))] == idx.tolist()
    assert [b.ids.tolist() for b in blocks] == [[5, 1], [9], [3, 7], [0, 2]]
    assert [b.shard.tolist() for b in blocks] == [[4, 4], [4], [9, 9], [9, 9]]
    assert [b.pos.tolist() for b in blocks] == [[0, 1], [2], [0, 1], [2, 3]]


def test_loader_errors_reach_the_caller_and_bad_labels_are_refused(clf):
    with pytest.raises(OSError, match="corrupt sample 4"):
        list(iter_blocks(_Numbers(8, fail_at=4), [ShardSpec(0, np.arange(8))], batch_size=3))

    class BadLabel(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            return torch.zeros(3, 32, 32), 7 if i == 2 else 0

    with pytest.raises(DataError, match="sample 2 has a label outside 0..5"):
        run_records(clf, BadLabel(), [], batch_size=2, shard_size=4)


def test_merge_streams_shards_and_refuses_foreign_records(tmp_path):
    recs = [
        {
            "index": i,
            "label": 0,
            "clean_pred": 0,
            "clean_correct": True,
            "robust_correct": i % 2 == 0,
            "broken_by": None if i % 2 == 0 else "pgd",
            "broken_step": None if i % 2 == 0 else 1,
        }
        for i in range(5)
    ]
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    files[0].write_text(records_to_jsonl(recs[:3]))
    files[1].write_text(records_to_jsonl(recs[3:]))
    summary, sha = merge_shards(files, tmp_path / "out" / "s.jsonl", np.arange(5), ["1/255"])
    assert summary == summarize(recs, ["1/255"])
    text = (tmp_path / "out" / "s.jsonl").read_text()
    assert [json.loads(line) for line in text.splitlines()] == recs
    import hashlib

    assert sha == hashlib.sha256(text.encode()).hexdigest()
    with pytest.raises(DataError, match="do not match"):
        merge_shards(files, tmp_path / "out" / "t.jsonl", np.array([0, 1, 2, 3, 6]), ["1/255"])
    assert not (tmp_path / "out" / "t.jsonl").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["s.jsonl"]


def test_records_are_the_typed_record_the_digest_reads_back(clf, ds):
    """Every record the engine writes has exactly SampleRecord's fields (by_eps with several eps), and the
    leaderboard digest's columns give each one's verdicts back unchanged."""
    from zsrobust_bench.engine.records import RECORD_FIELDS, SampleRecord, verdicts
    from zsrobust_bench.leaderboard.digest import columns_from_records, digest_row

    plan = [EpsAttacks(1 / 255, [_pgd(1 / 255)], []), EpsAttacks(EPS, [_pgd()], [])]
    recs, _ = run_records(clf, ds, plan, batch_size=8, shard_size=10)
    for r in recs:
        assert set(RECORD_FIELDS) <= set(r) <= set(SampleRecord.__annotations__)
        assert set(r["by_eps"]) == {"1/255", "2/255"}
    cols = columns_from_records(recs, "engine records")
    assert [verdicts(digest_row(cols, p)) for p in range(len(recs))] == [verdicts(r) for r in recs]
    assert {v["robust_correct"] for v in map(verdicts, recs)} == {True, False}

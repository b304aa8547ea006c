"""`validate --recheck N`: re-evaluates recorded samples and compares them with the digest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from leaderboard_support import REPO, make_run, register_test_protocols

from zsrobust_bench.errors import CheckpointError, DataError
from zsrobust_bench.leaderboard import submit_run
from zsrobust_bench.leaderboard.problems import errors
from zsrobust_bench.leaderboard.recheck import recheck_submissions


class FakeEvaluate:
    """Replays the original run's records for the requested indices (optionally flipping one)."""

    def __init__(self, run: Path, flip: bool = False, raises: Exception | None = None) -> None:
        self.run, self.flip, self.raises, self.calls = run, flip, raises, []

    def __call__(
        self, model: str, datasets: list[str], *, out: Path, indices: dict[str, list[int]], **kw: Any
    ) -> dict:
        self.calls.append((model, datasets, indices, kw))
        if self.raises:
            raise self.raises
        (ds,) = datasets
        wanted = set(indices[ds])
        recs = [json.loads(x) for x in (self.run / "samples" / f"{ds}.jsonl").read_text().splitlines()]
        recs = [r for r in recs if r["index"] in wanted]
        if self.flip:
            recs[0]["robust_correct"] = not recs[0]["robust_correct"]
        (out / "samples").mkdir(parents=True)
        (out / "samples" / f"{ds}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return {"datasets": {ds: {"samples_file": f"samples/{ds}.jsonl"}}}


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    register_test_protocols(monkeypatch)
    run = make_run(tmp_path)
    subs = tmp_path / "submissions"
    submit_run(run, "model-a", subs)
    return run, subs


def test_recheck_matches(setup: tuple[Path, Path]) -> None:
    run, subs = setup
    fake = FakeEvaluate(run)
    problems = recheck_submissions(subs, 12, checkpoint=run / "model.safetensors", evaluate=fake)
    assert not errors(problems)
    assert any(p.severity == "info" and "rechecked 12 samples: all match" in p.message for p in problems)
    assert sum(len(c[2][c[1][0]]) for c in fake.calls) == 12
    model, _, _, kw = fake.calls[0]
    assert model == str(run / "model.safetensors") and kw["protocol"] == "stub-pgd" and kw["seed"] == 0
    again = FakeEvaluate(run)
    recheck_submissions(subs, 12, checkpoint=run / "model.safetensors", evaluate=again)
    assert [c[2] for c in again.calls] == [c[2] for c in fake.calls]  # same seed, same samples


def test_recheck_reports_mismatch(setup: tuple[Path, Path]) -> None:
    run, subs = setup
    ckpt = run / "model.safetensors"
    bad = errors(recheck_submissions(subs, 40, checkpoint=ckpt, evaluate=FakeEvaluate(run, flip=True)))
    assert bad and all(p.file.endswith("digest/stub-pgd.json.gz") for p in bad)
    assert "robust_correct: recorded" in bad[0].message and ".index=" in bad[0].field


def test_recheck_skips_without_checkpoint_or_data(setup: tuple[Path, Path], tmp_path: Path) -> None:
    run, subs = setup
    moved = tmp_path / "elsewhere.safetensors"
    shutil.move(run / "model.safetensors", moved)
    problems = recheck_submissions(subs, 5, evaluate=FakeEvaluate(run))
    assert not errors(problems) and any("not present" in p.message for p in problems)
    problems = recheck_submissions(
        subs, 5, checkpoint=moved, evaluate=FakeEvaluate(run, raises=DataError("no data"))
    )
    assert not errors(problems) and any("data not present" in p.message for p in problems)
    problems = recheck_submissions(
        subs, 5, checkpoint=moved, evaluate=FakeEvaluate(run, raises=CheckpointError("bad"))
    )
    assert errors(problems)


def test_recheck_refuses_a_different_checkpoint(setup: tuple[Path, Path], tmp_path: Path) -> None:
    run, subs = setup
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"other weights")
    fake = FakeEvaluate(run)
    bad = errors(recheck_submissions(subs, 5, checkpoint=other, evaluate=fake))
    assert bad and bad[0].field == "model.sha256" and not fake.calls


def test_self_describing_checkpoint_rechecks_in_a_fresh_process(
    tmp_path: Path, demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: the demo checkpoint names its own architecture ('zsbench-tiny'); --recheck rebuilds it from
    the embedded config, as evaluate did, instead of failing with "unknown architecture"."""
    import open_clip

    import zsrobust_bench.models.arch as arch_mod
    from zsrobust_bench.evaluate import evaluate
    from zsrobust_bench.leaderboard.recheck import recheck_submissions

    # the demo protocol on 6 samples, registered from a user's directory
    shipped = (REPO / "zsrobust_bench" / "protocols" / "defs" / "synthetic-pgd-v1.yaml").read_text()
    small = shipped.replace("name: synthetic-pgd\n", "name: synthetic-pgd-6\n").replace(
        "samples: 500\n", "samples: 6\n"
    )
    assert small.count("synthetic-pgd-6") == 1 and "samples: 6\n" in small
    (tmp_path / "protocols").mkdir()
    (tmp_path / "protocols" / "synthetic-pgd-6-v1.yaml").write_text(small)
    register_test_protocols(monkeypatch, tmp_path / "protocols")
    run, subs = tmp_path / "run", tmp_path / "submissions"
    result = evaluate(str(demo_model), ["synth-shape"], protocol="synthetic-pgd-6", out=run, progress=False)
    submit_run(run, "demo", subs)
    name = result["model"]["arch"]
    monkeypatch.setattr(arch_mod, "_REGISTERED", {})  # as in a new process: the embedded name is unknown
    monkeypatch.delitem(open_clip.factory._MODEL_CONFIGS, name)
    # the checkpoint lies outside the entry, so the re-check is handed it explicitly
    problems = recheck_submissions(subs, 3, seed=1, checkpoint=demo_model)
    assert not errors(problems), problems
    assert any("rechecked 3 samples: all match" in p.message for p in problems), problems

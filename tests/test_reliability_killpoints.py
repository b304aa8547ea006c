"""SIGKILL a real evaluation subprocess from outside at random moments (model load, mid-shard,
mid-write, merge, results) and resume it until it finishes; every resumed run directory must be
byte-identical to an uninterrupted run, with no lost or duplicated record and no temp file left.

The fast test kills once at a deterministic point; the slow test (`-m slow`) kills at
ZSBENCH_KILL_POINTS (default 40) random points."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("reliability_worker.py")
KILL_POINTS = int(os.environ.get("ZSBENCH_KILL_POINTS", "40"))


@dataclass
class Workload:
    ckpt: Path
    arch: Path
    cache: Path
    n: int
    shard: int
    steps: int

    def args(self, out: Path) -> list[str]:
        return [
            str(out),
            str(self.ckpt),
            str(self.arch),
            str(self.cache),
            str(self.n),
            str(self.shard),
            str(self.steps),
        ]

    @property
    def shards(self) -> int:
        return 2 * -(-self.n // self.shard)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])})
    return env


def _start(out: Path, w: Workload) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *w.args(out)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(proc: subprocess.Popen) -> float:
    """Block until the worker has imported everything; returns when that happened."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")
    return time.monotonic()


def _finish(out: Path, w: Workload) -> tuple[float, float]:
    """Run to completion; returns (startup seconds, seconds from ready to exit)."""
    t0 = time.monotonic()
    proc = _start(out, w)
    t_ready = _ready(proc)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return t_ready - t0, time.monotonic() - t_ready


def _stable(out: Path) -> dict:
    r = json.loads((out / "results.json").read_text())
    r.pop("provenance", None)
    for d in r["datasets"].values():
        d.pop("engine", None)
    return r


def _files(out: Path) -> dict[str, bytes]:
    paths = sorted(out.glob("shards/*/*.jsonl")) + sorted(out.glob("samples/*.jsonl"))
    paths += sorted(out.glob("shards/*/config.json"))
    return {str(p.relative_to(out)): p.read_bytes() for p in paths}


def _assert_same(out: Path, ref: Path, w: Workload) -> None:
    assert _files(out) == _files(ref), f"{out}: records differ from the uninterrupted run"
    assert _stable(out) == _stable(ref), f"{out}: results.json differs from the uninterrupted run"
    for d in ("synth-color", "synth-shape"):
        idx = [json.loads(x)["index"] for x in (out / "samples" / f"{d}.jsonl").read_text().splitlines()]
        assert idx == list(range(w.n)), "lost or duplicated records"
    assert not list(out.rglob("*.tmp")), "temp files survived the final run"


@pytest.fixture(scope="module")
def workload(tiny_model, tiny_cfg_path, tmp_path_factory) -> Workload:
    d = tmp_path_factory.mktemp("kill-model")
    torch.save(tiny_model.state_dict(), d / "tiny.pt")
    return Workload(d / "tiny.pt", tiny_cfg_path, d / "cache", n=12, shard=4, steps=2)


def test_sigkill_after_first_shard_resumes_byte_identical(workload, tmp_path, capsys):
    from reliability_worker import main

    ref = tmp_path / "ref"
    threads = torch.get_num_threads()
    try:  # the reference in this process (same code, same single thread): one subprocess start fewer
        main(workload.args(ref))
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "killed"
    proc = _start(out, workload)
    deadline = time.monotonic() + 300
    while not list(out.glob("shards/synth-color/0*.jsonl")):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = len(list(out.glob("shards/*/0*.jsonl")))
    assert done_at_kill < workload.shards
    _finish(out, workload)
    _assert_same(out, ref, workload)
    with capsys.disabled():
        print(
            f"\n[kill/resume SIGKILL] 1 kill point after {done_at_kill}/{workload.shards} shards: byte-identical"
        )


def _shards_done(out: Path) -> int:
    return len(list(out.glob("shards/*/0*.jsonl")))


def _wait_for(proc: subprocess.Popen, cond, poll: float = 0.005) -> bool:
    """Poll until `cond()` holds (True) or the process exits (False)."""
    while not cond():
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return True


@dataclass
class Timeline:
    """Phase durations of an uninterrupted run, to aim kills at every phase."""

    imports: float
    startup: float  # ready -> first shard file
    per_shard: float
    finish: float  # last shard file -> exit


def _timeline(out: Path, w: Workload) -> Timeline:
    t0 = time.monotonic()
    proc = _start(out, w)
    t_ready = _ready(proc)
    assert _wait_for(proc, lambda: _shards_done(out) >= 1)
    t_first = time.monotonic()
    assert _wait_for(proc, lambda: _shards_done(out) >= w.shards)
    t_last = time.monotonic()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return Timeline(
        t_ready - t0, t_first - t_ready, (t_last - t_first) / max(1, w.shards - 1), time.monotonic() - t_last
    )


def _aim(proc: subprocess.Popen, out: Path, w: Workload, tl: Timeline, rng: random.Random) -> str | None:
    """Wait for a random moment of this attempt in a random phase; returns the phase, None if it finished first."""
    r = rng.random()
    all_done = _shards_done(out) >= w.shards
    if r < 0.15:
        phase, delay = "imports", rng.uniform(0.0, tl.imports)
    else:
        _ready(proc)
        if r < 0.3:
            phase, delay = "model load / text head", rng.uniform(0.0, tl.startup)
        elif not all_done and r < 0.9:  # after a random number of shards, part-way into the next
            target = rng.randrange(_shards_done(out), w.shards)
            if not _wait_for(proc, lambda: _shards_done(out) >= target):
                return None
            phase, delay = "mid-shard", rng.uniform(0.0, tl.per_shard)
        else:  # merge, results.json, exit
            if not _wait_for(proc, lambda: _shards_done(out) >= w.shards):
                return None
            phase, delay = "merge / results.json / exit", rng.uniform(0.0, tl.finish)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        return phase
    return None


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_byte_identical(workload, tmp_path, capsys):
    w = Workload(workload.ckpt, workload.arch, workload.cache, n=48, shard=4, steps=8)
    ref = tmp_path / "ref"
    tl = _timeline(ref, w)
    rng = random.Random(int(os.environ.get("ZSBENCH_KILL_SEED", "1")))
    phases: dict[str, int] = {}
    shard_counts: set[int] = set()
    kills, dirs = 0, 0
    t0 = time.monotonic()
    while kills < KILL_POINTS:
        dirs += 1
        out = tmp_path / f"run-{dirs}"
        finishing_kills = 0
        while kills < KILL_POINTS and finishing_kills < 1:
            proc = _start(out, w)
            phase = _aim(proc, out, w, tl, rng)
            if phase is None:
                proc.communicate(timeout=600)
                assert proc.returncode == 0, "an attempt failed instead of finishing"
                break  # this directory finished on its own
            done = _shards_done(out)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            phases[phase] = phases.get(phase, 0) + 1
            if phase == "mid-shard":
                shard_counts.add(done)
            kills += 1
            finishing_kills += done >= w.shards  # once the shards are all done, one more kill, then finish
        _finish(out, w)  # resume whatever the last kill left (a plain rerun when already complete)
        _assert_same(out, ref, w)
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(phases.items()))
    summary += f"; mid-shard kills found {len(shard_counts)} different numbers of shards on disk"
    with capsys.disabled():
        print(
            f"\n[kill/resume SIGKILL] {kills} kill points over {dirs} run directories in "
            f"{time.monotonic() - t0:.0f} s ({summary}); every resumed directory byte-identical to the "
            f"uninterrupted run, 0 lost, 0 duplicated, 0 temp files left"
        )

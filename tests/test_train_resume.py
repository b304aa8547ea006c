"""A run killed (SIGKILL) after a checkpoint and resumed with --resume ends with the same weights as an
uninterrupted run; resumable state loads with weights_only=True; mismatched resumes are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from zsrobust_bench.errors import ZSBenchError

TINY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
STEPS = 40


def _config(tmp: Path) -> Path:
    cfg = {
        "name": "tiny-resume",
        "method": "tecoa",
        "seed": 5,
        "model": {"arch": "zsbench-test-tiny", "arch_config": TINY_ARCH},
        "trainable": "full",
        "head": "onehot",
        "data": {"kind": "synthetic", "task": "shape", "size": 96, "workers": 1},
        "attack": {"eps": "4/255", "steps": 2, "step_size": "2/255"},
        "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
        "schedule": {"warmup": 3},
        "batch_size": 16,  # 6 steps per epoch: the kill lands mid-epoch, resume must find the batch
        "steps": STEPS,
        "checkpoint_every": 7,
        "log_every": 1,
        "progress": False,
        "validation": {"datasets": ["synth-color"], "split": "val", "n": 32, "every": 10, "steps": 1},
    }
    path = tmp / "resume.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ZSBENCH_CACHE": str(tmp / "cache")}


def _cmd(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "zsrobust_bench.train", str(cfg), "--out", str(out), *extra]


def test_kill_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    env = _env(tmp_path)
    full = subprocess.run(_cmd(cfg, tmp_path / "full"), env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(cfg, killed), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = killed / "train-state.pt"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "final.safetensors").exists()
    saved = torch.load(state, weights_only=True)
    assert 0 < saved["step"] < STEPS and saved["step"] % 7 == 0
    assert (saved["data_epoch"], saved["data_batch"]) == divmod(saved["step"], 6)

    resumed = subprocess.run(
        _cmd(cfg, killed, "--resume"), env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {saved['step']}" in resumed.stdout

    a = load_file(tmp_path / "full" / "final.safetensors")
    b = load_file(killed / "final.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(tmp_path / "full" / "train-state.pt", weights_only=True)
    sb = torch.load(killed / "train-state.pt", weights_only=True)
    for k in sa["model"]:  # the one-hot head (not in the exported CLIP) too
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["best_robust"] == sb["best_robust"] and sa["best_step"] == sb["best_step"]
    # The log has one record per step, none duplicated by the replayed steps.
    steps = [
        r["step"]
        for r in map(json.loads, (killed / "log.jsonl").read_text().splitlines())
        if r["kind"] == "train"
    ]
    assert steps == list(range(1, STEPS + 1))


def test_existing_run_needs_resume_and_same_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zsrobust_bench.train import load_config, train

    monkeypatch.setenv("ZSBENCH_CACHE", str(tmp_path / "cache"))
    cfg_path = _config(tmp_path)
    cfg = load_config(str(cfg_path), ["steps=2", "validation.datasets=[]"])
    train(cfg, tmp_path / "run")
    with pytest.raises(ZSBenchError, match="already holds"):
        train(cfg, tmp_path / "run")
    with pytest.raises(ZSBenchError, match="different config"):
        train(
            load_config(str(cfg_path), ["steps=2", "validation.datasets=[]", "seed=9"]),
            tmp_path / "run",
            resume=True,
        )


class _Stop(Exception):
    """Raised right after a checkpoint to interrupt a run in-process."""


def test_resumed_log_equals_uninterrupted_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Checkpoints every 4 steps, logs every 3: the step-6 record averages steps 4..6, and the
    # interruption at step 4 falls inside that window; its sums travel in the training state.
    from zsrobust_bench.train import load_config, train, trainer

    over = ["steps=9", "checkpoint_every=4", "log_every=3", "validation.datasets=[]", "attack.steps=1"]
    cfg = load_config(str(_config(tmp_path)), over)
    train(cfg, tmp_path / "full")

    real = trainer._checkpoint

    def stop_after(run, opt, scaler, step, *rest):  # noqa: ANN001, ANN002
        real(run, opt, scaler, step, *rest)
        if step == 4:
            raise _Stop

    monkeypatch.setattr(trainer, "_checkpoint", stop_after)
    with pytest.raises(_Stop):
        train(cfg, tmp_path / "cut")
    monkeypatch.setattr(trainer, "_checkpoint", real)
    train(cfg, tmp_path / "cut", resume=True)

    def records(run: str) -> list[dict]:
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]

    full, cut = records("full"), records("cut")
    assert [r["step"] for r in full] == [3, 6, 9]
    assert cut == full

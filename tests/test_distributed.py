"""`torchrun --nproc-per-node 2 ... zsbench evaluate` (gloo, CPU) gives the records of a 1-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

TIMEOUT_S = 400


def _env() -> dict[str, str]:
    # one intra-op thread per process: 2 ranks on a 2-core box, and no OpenMP spin contention
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=TIMEOUT_S)
    assert res.returncode == 0, (
        f"{' '.join(cmd)}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"
    )


def test_two_process_gloo_evaluation_matches_one_process(
    tmp_path: Path, tiny_cfg_path: Path, tiny_model
) -> None:
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_model.state_dict(), ckpt)
    # shards of 6 over 2 ranks and a pool of 5: each rank packs its pool with different companions
    args = [
        str(ckpt),
        "--arch",
        str(tiny_cfg_path),
        "--datasets",
        "synth-color",
        "synth-count",
        "--protocol",
        "synthetic-pgd",
        "--samples",
        "40",
        "--eps",
        "2/255",
        "--steps",
        "6",
        "--step-size",
        "0.5/255",
        "--shard-size",
        "6",
        "--batch-size",
        "5",
        "--device",
        "cpu",
    ]
    cli = ["-m", "zsrobust_bench.cli", "evaluate"]
    _run([sys.executable, *cli, *args, "--out", str(tmp_path / "one")])
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            *cli,
            *args,
            "--workers",
            "1",
            "--out",
            str(tmp_path / "two"),
        ]
    )

    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert one["provenance"]["world_size"] == 1 and two["provenance"]["world_size"] == 2
    assert two["datasets"] == one["datasets"] and two["means"] == one["means"]
    attacked = 0
    for key in ("synth-color", "synth-count"):
        a = (tmp_path / "one" / "samples" / f"{key}.jsonl").read_text()
        b = (tmp_path / "two" / "samples" / f"{key}.jsonl").read_text()
        assert a == b
        recs = [json.loads(line) for line in a.splitlines()]
        assert len(recs) == 40
        attacked += sum(r["clean_correct"] for r in recs)
        shard_dir = tmp_path / "two" / "shards" / key
        assert (shard_dir / "engine.rank0.json").is_file() and (shard_dir / "engine.rank1.json").is_file()
    assert attacked >= 10, "the comparison should cover attacked samples"

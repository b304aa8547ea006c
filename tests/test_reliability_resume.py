"""Crash safety of an evaluation run: a run interrupted at any shard resumes to byte-identical
records and results, the run directory is locked against a second run, stale temp files from a
killed writer are swept, and a text-head cache entry that fails its hash check is rebuilt."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from reliability_craft import one_torch_thread  # noqa: F401 - autouse fixture

import zsrobust_bench.evaluate as ev
from zsrobust_bench.errors import DataError, RunLockedError
from zsrobust_bench.fileio import run_lock
from zsrobust_bench.models import load_model

DATASETS = ["synth-color", "synth-shape"]
N = 16
SHARD = 4
KILL_POINTS = 3


class SimulatedKill(BaseException):
    """Stands in for SIGKILL inside the process: nothing catches it and no cleanup code runs after it."""


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_model, tiny_cfg_path, tmp_path_factory) -> tuple[Path, Path]:
    path = tmp_path_factory.mktemp("resume-model") / "tiny.pt"
    torch.save(tiny_model.state_dict(), path)
    return path, tiny_cfg_path


def run_eval(out: Path, ckpt: tuple[Path, Path], cache: Path) -> dict:
    """The evaluation every test here repeats: 2 datasets x 16 samples, 4 shards each, PGD-2."""
    lm = load_model(str(ckpt[0]), arch=str(ckpt[1]))
    return ev.evaluate(
        str(ckpt[0]),
        DATASETS,
        protocol="tecoa-pgd",
        out=out,
        loaded=lm,
        indices={d: list(range(N)) for d in DATASETS},
        shard_size=SHARD,
        batch_size=4,
        overrides={"steps": 2},
        progress=False,
        cache_dir=cache,
    )


def stable(results: dict) -> dict:
    """results.json without what legitimately differs between sessions (clock times, engine stats)."""
    r = json.loads(json.dumps(results))
    r.pop("provenance", None)
    for d in r["datasets"].values():
        d.pop("engine", None)
    return r


def snapshot(out: Path) -> dict[str, bytes]:
    """Every record-bearing file of a run directory, by relative path."""
    files = sorted(out.glob("shards/*/*.jsonl")) + sorted(out.glob("samples/*.jsonl"))
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def reference(tiny_ckpt, tmp_path_factory) -> tuple[dict, dict[str, bytes], Path]:
    out = tmp_path_factory.mktemp("reference")
    results = run_eval(out, tiny_ckpt, tmp_path_factory.mktemp("ref-cache"))
    snap = snapshot(out)
    assert len([k for k in snap if k.startswith("shards/")]) == len(DATASETS) * (N // SHARD)
    return stable(results), snap, out


def _kill_at(monkeypatch: pytest.MonkeyPatch, point: int | str, before: bool) -> None:
    """'Kill' the run at an atomic write (the n-th, or the first to a file of that name), before or after it lands."""
    import zsrobust_bench.fileio as fileio

    real = fileio.atomic_write_bytes
    count = {"n": 0}

    def write(path, data):  # noqa: ANN001 - mirrors fileio.atomic_write_bytes
        count["n"] += 1
        hit = count["n"] == point if isinstance(point, int) else Path(path).name == point
        if hit and before:
            raise SimulatedKill(Path(path).name)
        real(path, data)
        if hit:
            raise SimulatedKill(Path(path).name)

    monkeypatch.setattr(fileio, "atomic_write_bytes", write)


def test_interrupted_runs_resume_byte_identical(tiny_ckpt, reference, tmp_path, monkeypatch, capsys):
    ref_results, ref_snap, _ = reference
    rng = random.Random(8)
    # atomic writes of one run: config, shards, engine stats and sanity checks per dataset, results.json
    writes_per_run = len(DATASETS) * (1 + N // SHARD + 2) + 1
    bins = [
        range(1 + k * writes_per_run // KILL_POINTS, 1 + (k + 1) * writes_per_run // KILL_POINTS)
        for k in range(KILL_POINTS)
    ]
    points: list[int | str] = [rng.choice(b) for b in bins]  # one random write in each third of the run
    points.append("sanity.json")  # every shard done, the dataset's checks not yet written
    tried = []
    for i, point in enumerate(points):
        before = rng.random() < 0.5 or point == "sanity.json"
        out = tmp_path / f"run-{i}"
        cache = tmp_path / f"cache-{i}"
        with monkeypatch.context() as m:
            _kill_at(m, point, before)
            try:
                run_eval(out, tiny_ckpt, cache)
                where = "not reached"
            except SimulatedKill as kill:
                where = f"{'before' if before else 'after'} {kill}"
        # a killed writer leaves its temp file behind; the resume must ignore and sweep it
        (out / "shards" / "synth-color").mkdir(parents=True, exist_ok=True)
        (out / "shards" / "synth-color" / ".000000000-000000004.jsonl.x1y2.tmp").write_bytes(
            b'{"index": 0, "lab'
        )
        results = run_eval(out, tiny_ckpt, cache)
        assert stable(results) == ref_results, f"kill {where}"
        assert snapshot(out) == ref_snap, f"kill {where}"
        assert not list(out.rglob("*.tmp")), "stale temp files survived the resume"
        tried.append(where)
    with capsys.disabled():
        print(
            f"\n[kill/resume in-process] {len(tried)} kill points ({'; '.join(tried)}): all byte-identical, "
            "0 lost, 0 duplicated"
        )


def test_second_concurrent_run_is_refused_with_clear_message(tiny_ckpt, tmp_path):
    out = tmp_path / "locked"
    with run_lock(out):
        with pytest.raises(RunLockedError, match="in use by another zsbench process") as err:
            run_eval(out, tiny_ckpt, tmp_path / "cache")
        assert "choose another --out" in str(err.value)
    assert not (out / "results.json").exists() and not (out / "shards").exists()
    with run_lock(out):  # free again once its holder is gone
        pass


def test_lock_held_by_another_process(tiny_ckpt, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "other"
    out.mkdir()
    code = (
        "import sys, time; from zsrobust_bench.fileio import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            run_eval(out, tiny_ckpt, tmp_path / "cache")
    finally:
        holder.kill()
        holder.wait()
    with run_lock(out):  # a killed holder's lock is released by the kernel
        pass


def test_resume_with_a_foreign_shard_is_refused(tiny_ckpt, reference, tmp_path):
    out = tmp_path / "foreign"
    shutil.copytree(reference[2], out)
    shard = sorted((out / "shards" / "synth-color").glob("*.jsonl"))[1]
    first = sorted((out / "shards" / "synth-color").glob("*.jsonl"))[0]
    shutil.copy(first, shard)  # duplicated records where others belong
    with pytest.raises(DataError, match="do not match the evaluated indices"):
        run_eval(out, tiny_ckpt, tmp_path / "cache")


def test_shard_with_a_deleted_record_is_one_line_error(tiny_ckpt, reference, tmp_path):
    """Issue 14: a finished shard missing its last record ends in a DataError (CLI: one line, exit 2)."""
    out = tmp_path / "deleted"
    shutil.copytree(reference[2], out)
    shutil.rmtree(out / "samples", ignore_errors=True)
    (out / "results.json").unlink(missing_ok=True)
    shard = sorted((out / "shards" / "synth-color").glob("*.jsonl"))[-1]
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:-1]))
    with pytest.raises(DataError, match="hold .* records, expected"):
        run_eval(out, tiny_ckpt, tmp_path / "cache")
    assert not (out / "samples" / "synth-color.jsonl").exists()


def test_samples_files_get_ordinary_permissions(reference):
    """Issue 14: samples/*.jsonl are 0666 minus the umask like results.json, not mkstemp's 0600."""
    run = reference[2]
    modes = {
        p.name: p.stat().st_mode & 0o777 for p in [run / "results.json", *(run / "samples").glob("*.jsonl")]
    }
    assert len(set(modes.values())) == 1 and modes["results.json"] & 0o044 == 0o044, modes


# ---------------------------------------------------------------- the text-head cache


def _cache_file(cache: Path) -> Path:
    files = sorted((cache / "text-heads").glob("*.safetensors"))
    assert files, "no text-head cache entry was written"
    return files[0]


@pytest.mark.parametrize(
    "damage", ["flip-embedding-byte", "truncate", "float-digest", "wrong-shape", "garbage"]
)
def test_cache_entry_failing_its_check_is_rebuilt(tiny_ckpt, tmp_path, damage, caplog):
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from zsrobust_bench.data.registry import get_dataset
    from zsrobust_bench.fileio import sha256_bytes
    from zsrobust_bench.zeroshot import class_embeddings_cached

    lm = load_model(str(tiny_ckpt[0]), arch=str(tiny_ckpt[1]))
    ps = get_dataset("synth-color").prompt_set("tecoa")
    cache = tmp_path / "cache"
    good, _ = class_embeddings_cached(lm, ps, "cpu", cache)
    path = _cache_file(cache)
    data = path.read_bytes()
    tensors = st_load(data)
    if damage == "flip-embedding-byte":
        bad = bytearray(data)
        bad[-40] ^= 0x10  # inside class_embeddings (stored last), digest unchanged
        path.write_bytes(bytes(bad))
        assert not torch.equal(st_load(bytes(bad))["class_embeddings"], good)
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "float-digest":
        path.write_bytes(
            st_save({"class_embeddings": tensors["class_embeddings"], "digest": tensors["digest"].float()})
        )
    elif damage == "wrong-shape":
        emb = torch.zeros(2, 3)
        digest = torch.tensor(list(bytes.fromhex(sha256_bytes(emb.numpy().tobytes()))), dtype=torch.uint8)
        path.write_bytes(st_save({"class_embeddings": emb, "digest": digest}))
    else:
        path.write_bytes(b"\x00garbage" * 10)
    with caplog.at_level("WARNING"):
        again, _ = class_embeddings_cached(lm, ps, "cpu", cache)
    assert torch.equal(again, good)
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == data, "the rebuilt entry is the original, byte for byte"


def test_training_log_torn_by_a_kill_resumes(tmp_path):
    from zsrobust_bench.train.trainlog import TrainLog

    path = tmp_path / "log.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "step": 2}\n{"kind": "tra')
    log = TrainLog(path, resume_step=2)
    assert [r["step"] for r in log.records()] == [1, 2]
    log.write({"kind": "train", "step": 3})
    assert path.read_text().count("\n") == 3 and [r["step"] for r in log.records()] == [1, 2, 3]


@pytest.mark.parametrize("change", [("text_cfg", "heads", 4), (None, "quick_gelu", True)])
def test_text_head_cache_key_covers_the_model_config(tiny_ckpt, tmp_path, monkeypatch, change):
    """Issue 14: same weights and arch name (a fresh process) but another text config: no cache reuse."""
    import open_clip

    import zsrobust_bench.models.arch as arch_mod
    from zsrobust_bench.data.registry import get_dataset
    from zsrobust_bench.zeroshot import class_embeddings_cached, compute_class_embeddings

    ps = get_dataset("synth-shape").prompt_set("tecoa")
    cache = tmp_path / "cache"
    first = load_model(str(tiny_ckpt[0]), arch=str(tiny_ckpt[1]))
    _, key_a = class_embeddings_cached(first, ps, "cpu", cache)
    cfg = json.loads(tiny_ckpt[1].read_text())
    section, field, value = change
    (cfg[section] if section else cfg)[field] = value
    other = tmp_path / "other" / tiny_ckpt[1].name  # a second --arch JSON with the same stem
    other.parent.mkdir()
    other.write_text(json.dumps(cfg))
    monkeypatch.setattr(arch_mod, "_REGISTERED", {})  # as in a new process: the stem is free again
    monkeypatch.delitem(open_clip.factory._MODEL_CONFIGS, first.arch)
    second = load_model(str(tiny_ckpt[0]), arch=str(other))
    assert second.arch == first.arch
    warm, key_b = class_embeddings_cached(second, ps, "cpu", cache)
    assert key_b != key_a
    cold = compute_class_embeddings(second.model, second.tokenizer, ps, "cpu")
    assert torch.equal(warm, cold)

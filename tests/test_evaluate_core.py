"""End-to-end evaluation: correct clean accuracy, attack strength, resume, errors and schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from zsrobust_bench.cli import main
from zsrobust_bench.data import synthetic
from zsrobust_bench.errors import ZSBenchError
from zsrobust_bench.evaluate import evaluate
from zsrobust_bench.models import load_model

SCHEMA = json.loads(resources.files("zsrobust_bench").joinpath("schemas/results-1.json").read_text())


def _make_imagefolder(root: Path, per_class: int = 8) -> Path:
    """Synthetic colour images written as PNGs in an ImageFolder tree with a templates.txt."""
    root.mkdir(parents=True)
    names = list(synthetic.COLORS)
    counts = dict.fromkeys(names, 0)
    i = 0
    while min(counts.values()) < per_class:
        img, scene = synthetic.generate("val", i)
        i += 1
        name = names[scene.color]
        if counts[name] >= per_class:
            continue
        (root / name).mkdir(exist_ok=True)
        Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            root / name / f"{i:05d}.png"
        )
        counts[name] += 1
    (root / "templates.txt").write_text("a photo of {} shape.\n")
    return root


def _independent_clean_acc(model_path: Path, root: Path) -> float:
    """Clean accuracy computed straight from open_clip and PIL, sharing no code with the engine."""
    import open_clip
    import torch.nn.functional as F

    from zsrobust_bench.models import load_model

    lm = load_model(str(model_path))
    model, tok = lm.model, lm.tokenizer
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    with torch.no_grad():
        t = F.normalize(model.encode_text(tok([f"a photo of {c} shape." for c in classes])), dim=-1)
        correct = total = 0
        mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
        std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
        for label, c in enumerate(classes):
            for f in sorted((root / c).glob("*.png")):
                x = torch.from_numpy(
                    np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255
                ).permute(2, 0, 1)
                e = F.normalize(model.encode_image(((x - mean) / std)[None]), dim=-1)
                correct += int((e @ t.T).argmax() == label)
                total += 1
    return 100.0 * correct / total


def test_imagefolder_clean_pgd_and_eps_zero(demo_model, tmp_path):
    root = _make_imagefolder(tmp_path / "colours")
    name = f"imagefolder:{root}"
    res0 = evaluate(
        str(demo_model),
        [name],
        protocol="tecoa-pgd",
        out=tmp_path / "e0",
        overrides={"eps": [0.0], "steps": 5},
        batch_size=16,
        progress=False,
    )
    d0 = res0["datasets"][name]
    assert d0["n"] == 48
    assert d0["clean_acc"] == pytest.approx(_independent_clean_acc(demo_model, root), abs=1e-9)
    assert d0["clean_acc"] >= 80.0
    assert d0["robust_acc"] == d0["clean_acc"]
    res = evaluate(
        str(demo_model),
        [name],
        protocol="tecoa-pgd",
        out=tmp_path / "e16",
        overrides={"eps": [16 / 255], "steps": 10, "step_size": 4 / 255},
        batch_size=16,
        progress=False,
    )
    d = res["datasets"][name]
    assert d["clean_acc"] == d0["clean_acc"]
    assert d["robust_acc"] <= d["clean_acc"] - 40.0
    assert res["protocol"]["custom"] is True
    jsonschema.validate(res, SCHEMA)


def _run_args(model: Path, out: Path, dataset: str = "synth-shape", steps: int = 10) -> list[str]:
    return [
        str(model),
        "--datasets",
        dataset,
        "--protocol",
        "synthetic-pgd",
        "--samples",
        "96",
        "--steps",
        str(steps),
        "--shard-size",
        "16",
        "--batch-size",
        "16",
        "--out",
        str(out),
    ]


def test_rerun_resumes_without_recomputing(demo_model, tmp_path):
    args = _run_args(demo_model, tmp_path / "run")
    assert main(["evaluate", *args]) == 0
    shards = sorted((tmp_path / "run" / "shards" / "synth-shape").glob("*.jsonl"))
    assert len(shards) == 6
    stamps = [s.stat().st_mtime_ns for s in shards]
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    assert main(["evaluate", *args]) == 0
    assert [s.stat().st_mtime_ns for s in shards] == stamps
    second = json.loads((tmp_path / "run" / "results.json").read_text())
    assert second["datasets"] == first["datasets"]
    jsonschema.validate(second, SCHEMA)


# synth-color keeps about a third of its samples robust through PGD-100, so each shard takes long enough
# for the kill to land between shard files (synth-shape breaks every sample at once: the run can finish
# between two polls)
SLOW_SHARDS = ("synth-color", 100)


def test_sigkill_then_resume_matches_uninterrupted(demo_model, tmp_path):
    ref = tmp_path / "ref"
    assert main(["evaluate", *_run_args(demo_model, ref, *SLOW_SHARDS)]) == 0
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "zsrobust_bench.cli", "evaluate", *_run_args(demo_model, run, *SLOW_SHARDS)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    shard_dir = run / "shards" / "synth-color"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shard_dir.glob("*.jsonl"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.jsonl")}
    assert 1 <= len(done_before) < 6, "the kill should land mid-run"
    assert not (run / "results.json").exists()
    assert main(["evaluate", *_run_args(demo_model, run, *SLOW_SHARDS)]) == 0
    assert {
        p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.jsonl") if p.name in done_before
    } == done_before
    assert (run / "samples" / "synth-color.jsonl").read_bytes() == (
        ref / "samples" / "synth-color.jsonl"
    ).read_bytes()
    a = json.loads((run / "results.json").read_text())
    b = json.loads((ref / "results.json").read_text())
    assert a["datasets"] == b["datasets"] and a["means"] == b["means"]


def test_changed_configuration_in_same_out_is_refused(demo_model, tmp_path):
    assert main(["evaluate", *_run_args(demo_model, tmp_path / "r")]) == 0
    with pytest.raises(ZSBenchError, match="different configuration"):
        evaluate(
            str(demo_model),
            ["synth-shape"],
            protocol="synthetic-pgd",
            out=tmp_path / "r",
            overrides={"samples": 96, "steps": 11},
            shard_size=16,
            progress=False,
        )


def test_cli_errors_are_one_clear_line(demo_model, tmp_path, capsys):
    assert main(["evaluate", str(demo_model), "--datasets", "cifar11", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'cifar11'" in err and "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "missing.pt"), "--datasets", "synth-color"]) == 2
    assert "not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(demo_model), "--steps", "-3"])
    assert exc.value.code == 2
    assert not (tmp_path / "x" / "results.json").exists()


def test_records_carry_per_sample_outcomes(demo_model, tmp_path):
    res = evaluate(
        str(demo_model),
        ["synth-pattern"],
        protocol="synthetic-pgd",
        out=tmp_path / "p",
        overrides={"samples": 40, "steps": 5},
        progress=False,
    )
    recs = [
        json.loads(line)
        for line in (tmp_path / "p" / "samples" / "synth-pattern.jsonl").read_text().splitlines()
    ]
    assert len(recs) == 40 and [r["index"] for r in recs] == sorted(r["index"] for r in recs)
    for r in recs:
        assert set(r) >= {
            "index",
            "label",
            "clean_pred",
            "clean_correct",
            "robust_correct",
            "broken_by",
            "broken_step",
        }
        assert r["clean_correct"] == (r["clean_pred"] == r["label"])
        if not r["clean_correct"]:
            assert r["robust_correct"] is False and r["broken_by"] is None
        if r["broken_by"] == "pgd":
            assert 0 <= r["broken_step"] <= 5
    d = res["datasets"]["synth-pattern"]
    assert d["robust_acc"] == pytest.approx(100 * sum(r["robust_correct"] for r in recs) / 40)


class _Rounded(torch.nn.Module):
    """An image tower fed its input rounded to 1e-3: the same predictions, every input gradient exactly zero."""

    def __init__(self, visual: torch.nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(torch.round(x * 1000) / 1000)


def test_reference_zero_gradient_warnings_reach_the_sanity_checks(tiny_model, tiny_cfg_path, tmp_path):
    """pyautoattack's zero-gradient warning (one per APGD-T run: one target each, 1 batch, 1 restart)
    lands in the dataset's sanity checks and fails the run's sanity; a resume reads it back from disk."""
    path = tmp_path / "tiny.pt"
    torch.save(tiny_model.state_dict(), path)
    lm = load_model(str(path), arch=str(tiny_cfg_path))
    lm.model.visual = _Rounded(lm.model.visual)
    kw = {
        "protocol": "synthetic-aa",
        "attack_backend": "reference",
        "out": tmp_path / "zero",
        "overrides": {"samples": 16, "n_iter": 3, "n_restarts": 1},
        "progress": False,
    }
    res = evaluate(str(path), ["synth-shape"], loaded=lm, **kw)
    d = res["datasets"]["synth-shape"]
    assert d["robust_acc"] == d["clean_acc"] > 0  # nothing moves
    checks = {c["check"]: c for c in d["sanity"]}
    assert list(checks) == ["gradients", "gradient_masking", "attack_warnings"]
    warned = checks["attack_warnings"]
    targets = d["attacks"]["4/255"][1]["params"]["n_target_classes"]
    assert targets == 3 and warned["status"] == "warning"
    assert warned["warnings"] == targets and warned["by_attack"] == {"apgd-t at 4/255": targets}
    robust = round(d["n"] * d["robust_acc"] / 100)
    assert warned["messages"] == [
        f"there are {robust} points with zero gradient! This might lead to unreliable evaluation with "
        "gradient-based attacks. See flags_doc.md for details."
    ]
    assert not res["sanity"]["passed"]
    assert f"synth-shape: {warned['message']}" in res["sanity"]["warnings"]
    assert json.loads((tmp_path / "zero" / "results.json").read_text()) == res
    jsonschema.validate(res, SCHEMA)
    again = evaluate(str(path), ["synth-shape"], loaded=lm, **kw)
    assert again["datasets"] == res["datasets"]


def test_evaluate_keywords_are_the_request_fields(tmp_path):
    """`evaluate(model, datasets, **fields)` builds an `EvalRequest`: a misspelt field fails before any work, naming it."""
    from zsrobust_bench.evaluate import evaluate

    with pytest.raises(TypeError, match="batchsize"):
        evaluate("missing.safetensors", ["synth-color"], out=tmp_path, batchsize=8)
    assert not any(tmp_path.iterdir())

"""TeCoA on the synthetic world, starting from the shipped demo CLIP: a short run raises zero-shot
robust accuracy on a held-out task; its checkpoints load with no extra flags and `zsbench evaluate`
gives exactly the numbers the trainer measured; the TeCoA-format export loads through the benchmark's
TeCoA loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zsrobust_bench.cli import main
from zsrobust_bench.data.registry import get_dataset
from zsrobust_bench.models import load_model
from zsrobust_bench.train import load_config, train
from zsrobust_bench.train.validate import load_eval_set, robust_accuracy
from zsrobust_bench.zeroshot import build_classifier

EPS = 4 / 255
HELD_OUT = "synth-color"


def _robust(path: Path, dataset: str, n: int = 200) -> dict[str, float]:
    loaded = load_model(str(path))
    clf = build_classifier(loaded, get_dataset(dataset).prompt_set("tecoa"))
    es = load_eval_set(dataset, "test", n, loaded.image_size, "tecoa")
    return robust_accuracy(
        clf, es, eps=EPS, steps=10, step_size=EPS / 4, batch_size=200, device=torch.device("cpu")
    )


@pytest.fixture(scope="module")
def tecoa_run(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> Path:
    out = tmp_path_factory.mktemp("tecoa")
    cfg = load_config(
        "synthetic-tecoa",
        [
            "data.task=position",
            "steps=100",
            "batch_size=64",
            "data.size=2560",
            "schedule.warmup=5",
            "checkpoint_every=50",
            "progress=false",
            "validation.datasets=[synth-color]",
            "validation.n=100",
            "validation.every=50",
            "validation.steps=3",
            "final_eval.datasets=[synth-color]",
            "final_eval.n=200",
            "final_eval.steps=10",
        ],
    )
    train(cfg, out)
    return out


def test_short_tecoa_run_raises_heldout_robust_accuracy(tecoa_run: Path, demo_model: Path) -> None:
    before = _robust(demo_model, HELD_OUT)
    after = _robust(tecoa_run / "final.safetensors", HELD_OUT)
    # Measured: 38.5 -> 57.0 (PGD-10, 200 samples) after 100 TeCoA steps on synth-position.
    assert after["robust_acc"] >= before["robust_acc"] + 12.0, (before, after)
    assert after["clean_acc"] >= 90.0  # still a zero-shot classifier of the held-out task


def test_checkpoint_loads_without_flags_and_matches_trainer_numbers(tecoa_run: Path, tmp_path: Path) -> None:
    loaded = load_model(str(tecoa_run / "final.safetensors"))
    assert loaded.info["kind"] == "full" and not loaded.warnings
    trainer = json.loads((tecoa_run / "final_eval.json").read_text())["datasets"][HELD_OUT]
    mine = _robust(tecoa_run / "final.safetensors", HELD_OUT)
    assert mine == trainer
    # The trainer's evaluation is the benchmark's: same samples, same per-sample PGD, same numbers.
    out = tmp_path / "eval"
    args = ["--datasets", HELD_OUT, "--protocol", "synthetic-pgd", "--samples", "200", "--eps", "4/255"]
    args += ["--steps", "10", "--step-size", "1/255", "--batch-size", "200", "--out", str(out)]
    assert main(["evaluate", str(tecoa_run / "final.safetensors"), *args]) == 0
    bench = json.loads((out / "results.json").read_text())["datasets"][HELD_OUT]
    assert (bench["n"], bench["subset_sha256"]) == (trainer["n"], trainer["subset_sha256"])
    assert (bench["clean_acc"], bench["robust_acc"]) == (trainer["clean_acc"], trainer["robust_acc"])
    assert 0 < trainer["robust_acc"] < trainer["clean_acc"]  # the attack broke some samples, not all
    for f in ("best.safetensors", "checkpoints/step-000050.safetensors"):
        assert load_model(str(tecoa_run / f)).info["kind"] == "full"
    log = [json.loads(x) for x in (tecoa_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "val"] == [50, 100]
    assert (tecoa_run / "training.png").stat().st_size > 5000


def test_tecoa_dict_export(tecoa_run: Path, demo_model: Path, tmp_path: Path) -> None:
    d = torch.load(tecoa_run / "final.pth.tar", weights_only=True)
    assert {
        "epoch",
        "state_dict",
        "add_prompter",
        "vision_encoder_state_dict",
        "best_acc1",
        "optimizer",
    } <= set(d)
    assert d["state_dict"] == {} and d["add_prompter"]["module.prompt"].numel() == 0
    assert "conv1.weight" in d["vision_encoder_state_dict"] and "proj" in d["vision_encoder_state_dict"]
    native = load_model(str(tecoa_run / "final.safetensors"))
    arch = tmp_path / "tiny.json"
    import open_clip

    arch.write_text(json.dumps(open_clip.get_model_config(native.arch)))
    via_tecoa = load_model(str(tecoa_run / "final.pth.tar"), arch=str(arch), pretrained=str(demo_model))
    assert via_tecoa.info["format"] == "tecoa-finetune"
    a, b = native.model.state_dict(), via_tecoa.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), msg=k)

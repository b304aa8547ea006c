"""Real-data recipes read an ImageFolder tree (ImageNet train layout): labelled, or unlabelled with
pseudo labels from the frozen model; class names come from the registry dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsrobust_bench.errors import ZSBenchError
from zsrobust_bench.train import train

TINY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _folder(root: Path, classes: list[str], per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _cfg(root: Path, **over) -> dict:
    return {
        "name": "tiny-folder",
        "method": "tecoa",
        "model": {"arch": "zsbench-test-tiny", "arch_config": TINY_ARCH},
        "data": {
            "kind": "imagefolder",
            "root": str(root),
            "dataset": "cifar10",
            "image_size": 32,
            "workers": 0,
        },
        "attack": {"eps": "1/255", "steps": 1, "step_size": "1/255"},
        "optimizer": {"name": "sgd", "lr": 0.01},
        "batch_size": 8,
        "epochs": 1,
        "log_every": 1,
        "progress": False,
        **over,
    }


def test_labelled_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "train", [f"class{i}" for i in range(10)], 2)
    out = tmp_path / "run"
    train(_cfg(root), out)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # 20 images, global batch 8: two steps per epoch


def test_unlabelled_folder_with_pseudo_labels(tmp_path: Path) -> None:
    root = _folder(tmp_path / "unlabelled", ["all"], 16)
    out = tmp_path / "run"
    train(_cfg(root, labels="pseudo", steps=1, epochs=None), out)
    first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert first["clean_acc"] == pytest.approx(100.0)  # the labels are the frozen model's own predictions


def test_class_count_mismatch_fails(tmp_path: Path) -> None:
    root = _folder(tmp_path / "train", ["a", "b", "c"], 4)
    with pytest.raises(ZSBenchError, match="3 class folders but cifar10 has 10 classes"):
        train(_cfg(root), tmp_path / "run")

"""Real-data recipes read an ImageFolder tree (ImageNet train layout): labelled, or unlabelled with
pseudo labels from the frozen model; class names come from the registry dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zsrobust_bench.data.registry import get_dataset
from zsrobust_bench.errors import ZSBenchError
from zsrobust_bench.train import train, trainer

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


def _shade(k: int) -> int:
    """The grey level that marks the images of class k (far apart, so resizing cannot blur one into another)."""
    return 10 + 20 * k


def test_labelled_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image is trained with the label of its folder's class name in the registry dataset, whatever
    order the folders were created in: class folders named after cifar10's classes are created in a
    permuted order, every image of a class carries that class's grey level, and the (image, label) pairs
    the training step receives must agree."""
    names = list(get_dataset("cifar10").prompt_set("clip").classnames)
    created = [names[i] for i in (7, 2, 9, 0, 5, 3, 8, 1, 6, 4)]  # neither sorted nor label order
    root = tmp_path / "train"
    for c in created:
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 48), (_shade(names.index(c)),) * 3).save(root / c / f"{i}.png")
    seen: list[tuple[int, int]] = []  # (class read from the pixels, label given to the step)
    tecoa_step = trainer.STEPS["tecoa"]

    def spy(
        run: trainer.Run, ddp: torch.nn.Module, step: int, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        for img, label in zip(x, y, strict=True):
            level = float(img.mean()) * 255
            k = round((level - _shade(0)) / (_shade(1) - _shade(0)))
            assert abs(level - _shade(k)) < 3, level
            seen.append((k, int(label)))
        return tecoa_step(run, ddp, step, x, y)

    monkeypatch.setitem(trainer.STEPS, "tecoa", spy)
    out = tmp_path / "run"
    train(_cfg(root), out)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # 20 images, global batch 8: two steps per epoch
    assert len(seen) == 16 and len({k for k, _ in seen}) >= 5
    assert [label for _, label in seen] == [k for k, _ in seen]


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


def test_class_names_from_the_folder_itself(tmp_path: Path) -> None:
    """data.dataset may be imagefolder:PATH, resolved by the same spec helper as `zsbench evaluate`: the
    sorted folder names (or the folder's classnames.txt) label the classes."""

    def cfg(root: Path) -> dict:
        return _cfg(root, data={**_cfg(root)["data"], "dataset": f"imagefolder:{root}"}, steps=1, epochs=None)

    root = _folder(tmp_path / "train", ["b", "c", "a"], 3)
    (root / "classnames.txt").write_text("apple\nbanana\ncherry\n")
    out = tmp_path / "run"
    train(cfg(root), out)
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1]
    two = _folder(tmp_path / "two", ["a", "b"], 4)
    (two / "classnames.txt").write_text("apple\nbanana\ncherry\n")
    with pytest.raises(ZSBenchError, match="3 names for 2 class folders"):
        train(cfg(two), tmp_path / "run2")

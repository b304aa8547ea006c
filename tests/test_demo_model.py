"""The shipped demo CLIP solves every synthetic zero-shot task far above chance (issue #3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zsrobust_bench.data.registry import get_dataset, suite
from zsrobust_bench.models import LoadedModel, load_model
from zsrobust_bench.train.validate import load_eval_set, robust_accuracy
from zsrobust_bench.zeroshot import build_classifier

# Clean zero-shot accuracy (%) each task must reach on 400 test samples: at least 45 points above
# chance; the shipped model measures 84.6 (shape) to 100 on the full test split.
MARGIN_OVER_CHANCE = 45.0


@pytest.fixture(scope="module")
def loaded(demo_model: Path) -> LoadedModel:
    """The shipped checkpoint, loaded once for every task."""
    return load_model(str(demo_model))


@pytest.mark.parametrize("dataset", suite("synthetic"))
def test_demo_model_far_above_chance(dataset: str, loaded: LoadedModel) -> None:
    assert loaded.info["kind"] == "full" and not loaded.warnings
    spec = get_dataset(dataset)
    clf = build_classifier(loaded, spec.prompt_set("tecoa"))
    es = load_eval_set(dataset, "test", 400, loaded.image_size, "tecoa")
    acc = robust_accuracy(
        clf, es, eps=0.0, steps=0, step_size=0.0, batch_size=200, device=torch.device("cpu")
    )
    chance = 100.0 / spec.num_classes
    assert acc["clean_acc"] >= chance + MARGIN_OVER_CHANCE, (dataset, acc)

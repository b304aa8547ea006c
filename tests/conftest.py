"""Shared test fixtures: offline environment, tiny open_clip models, isolated caches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own zsbench cache and data root (nothing leaks between tests)."""
    monkeypatch.setenv("ZSBENCH_CACHE", str(tmp_path_factory.mktemp("zsbench-cache")))
    monkeypatch.setenv("ZSBENCH_DATA", str(tmp_path_factory.mktemp("zsbench-data")))


@pytest.fixture(scope="session")
def tiny_cfg_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An open_clip model-config JSON for a 3.4M-parameter CLIP with 32 px input."""
    path = tmp_path_factory.mktemp("arch") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CFG))
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg_path: Path):
    """A seeded random tiny open_clip CLIP in eval mode."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)
    return model.eval()


def demo_model_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("zsrobust_bench").joinpath("assets/demo-clip.safetensors")))


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The shipped demo CLIP that solves the synthetic tasks."""
    p = demo_model_path()
    if not p.is_file():
        pytest.fail(f"shipped demo model missing at {p}; regenerate with `zsbench train demo-contrastive`")
    return p


@pytest.fixture()
def say(capsys: pytest.CaptureFixture[str]):
    """Print one line past pytest's capture (the fuzz targets' measured `[fuzz]` summaries)."""

    def _say(line: str) -> None:
        with capsys.disabled():
            print(f"\n{line}")

    return _say

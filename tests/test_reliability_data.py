"""Bad data and numerics: corrupt, truncated or oversized images and empty datasets end in a
DataError naming the file (and no results.json); odd image modes become RGB in [0,1]; labels out
of range name the sample; non-finite logits are flagged and counted, never counted as correct and
never as an attack success."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from reliability_craft import one_torch_thread  # noqa: F401 - autouse fixture
from torch import nn

import zsrobust_bench.evaluate as ev
from zsrobust_bench.errors import DataError
from zsrobust_bench.models import load_model

MODES = ("L", "LA", "P", "RGBA", "CMYK", "1", "I;16", "I", "F", "RGB")


@pytest.fixture(scope="module")
def lm_factory(tiny_model, tiny_cfg_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("data-model") / "tiny.pt"
    torch.save(tiny_model.state_dict(), path)
    return lambda: load_model(str(path), arch=str(tiny_cfg_path))


def _image(mode: str, seed: int) -> Image.Image:
    arr = (np.random.RandomState(seed).rand(20, 24, 3) * 255).astype(np.uint8)
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        return Image.fromarray(arr[..., 0].astype(dtype) * 200)
    return Image.fromarray(arr).convert(mode)


def _folder(root: Path, modes: tuple[str, ...] = ("RGB",), per_class: int = 2) -> Path:
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode = modes[i % len(modes)]
            ext = "tif" if mode in ("I;16", "I", "F", "CMYK") else "png"
            _image(mode, i).save(root / c / f"{i}-{mode.replace(';', '')}.{ext}")
    return root


def _evaluate(lm, dataset: str, out: Path, protocol: str = "clean", **kw) -> dict:
    return ev.evaluate(
        "tiny", [dataset], protocol=protocol, out=out, loaded=lm, progress=False, batch_size=8, **kw
    )


def _bomb_png() -> bytes:
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # 10^10 pixels declared
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "random-bytes", "decompression-bomb"])
def test_corrupt_images_end_in_an_error_naming_the_file(lm_factory, tmp_path, damage):
    root = _folder(tmp_path / "imgs")
    bad = root / "dog" / "1-RGB.png"
    data = bad.read_bytes()
    bad.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "zero-byte": b"",
            "random-bytes": b"\x89PNG" + bytes(range(256)) * 4,
            "decompression-bomb": _bomb_png(),
        }[damage]
    )
    out = tmp_path / "out"
    with pytest.raises(DataError, match=str(bad)):
        _evaluate(lm_factory(), f"imagefolder:{root}", out)
    assert not (out / "results.json").exists() and not list(out.glob("samples/*")), (
        "partial run looks complete"
    )


def test_every_image_mode_becomes_rgb_in_unit_range(lm_factory, tmp_path):
    from zsrobust_bench.data.loaders import open_eval_dataset
    from zsrobust_bench.data.registry import dataset_spec

    root = _folder(tmp_path / "modes", MODES, per_class=len(MODES))
    ds = open_eval_dataset(dataset_spec(f"imagefolder:{root}"), None, 32)
    assert len(ds) == 2 * len(MODES)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32, i
        assert torch.isfinite(x).all() and float(x.min()) >= 0 and float(x.max()) <= 1, i
        assert y in (0, 1)
    r = _evaluate(lm_factory(), f"imagefolder:{root}", tmp_path / "out")
    assert next(iter(r["datasets"].values()))["n"] == 2 * len(MODES), "no image was dropped"


def test_empty_datasets_and_class_folders_are_errors(lm_factory, tmp_path):
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "dog").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        _evaluate(lm_factory(), f"imagefolder:{empty}", tmp_path / "o1")
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    with pytest.raises(DataError):
        _evaluate(lm_factory(), f"imagefolder:{nothing}", tmp_path / "o2")


def test_classnames_that_do_not_match_the_folders_are_errors(lm_factory, tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "classnames.txt").write_text("cat\n")
    with pytest.raises(DataError, match="classnames.txt"):
        _evaluate(lm_factory(), f"imagefolder:{root}", tmp_path / "out")


def test_labels_out_of_range_name_the_sample(lm_factory, tmp_path, monkeypatch):
    real_open = ev._open

    class BadLabel(torch.utils.data.Dataset):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, i: int):
            x, y = self.inner[i]
            return x, (99 if i == 5 else y)

    monkeypatch.setattr(ev, "_open", lambda *a, **k: BadLabel(real_open(*a, **k)))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="5") as err:
        _evaluate(lm_factory(), "synth-color", out, indices={"synth-color": list(range(12))})
    assert "label" in str(err.value) and not (out / "results.json").exists()


# ---------------------------------------------------------------- non-finite logits


class NaNTower(nn.Module):
    """An image tower that returns NaN embeddings for chosen inputs (clean rows, or attack iterates)."""

    def __init__(self, inner: nn.Module, clean_rule: bool, on_attack: bool) -> None:
        super().__init__()
        self.inner, self.clean_rule, self.on_attack = inner, clean_rule, on_attack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.on_attack and x.requires_grad:
            return out * float("nan")
        if self.clean_rule:
            bad = poisoned(x)
            out = torch.where(bad[:, None], torch.full_like(out, float("inf")), out)
        return out


def poisoned(x: torch.Tensor) -> torch.Tensor:
    """Which (normalised) inputs the tower poisons on the clean pass: about half of them."""
    return x[:, 0].mean(dim=(1, 2)) > x[:, 0].new_tensor(-0.05)


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "samples" / "synth-color.jsonl").read_text().splitlines()]


def _nan_run(lm_factory, out: Path, clean_rule: bool, on_attack: bool) -> tuple[dict, list[dict]]:
    lm = lm_factory()
    lm.model.visual = NaNTower(lm.model.visual, clean_rule, on_attack)
    r = _evaluate(
        lm,
        "synth-color",
        out,
        protocol="tecoa-pgd",
        indices={"synth-color": list(range(48))},
        overrides={"steps": 2},
        shard_size=16,
    )
    return r["datasets"]["synth-color"], _records(out)


def test_nonfinite_clean_logits_are_flagged_and_never_correct(lm_factory, tmp_path):
    summary, recs = _nan_run(lm_factory, tmp_path / "clean-nan", clean_rule=True, on_attack=False)
    flagged = [r for r in recs if r.get("nonfinite_logits")]
    assert 0 < len(flagged) < len(recs), "the poisoning rule should hit some but not all samples"
    assert summary["nonfinite_logits"] == len(flagged)
    assert all(not r["clean_correct"] and not r["robust_correct"] and r["broken_by"] is None for r in flagged)
    ok = [r for r in recs if not r.get("nonfinite_logits")]
    assert summary["clean_acc"] == pytest.approx(
        100 * sum(r["clean_correct"] for r in ok) / len(recs), abs=1e-3
    )


def test_nonfinite_attack_logits_are_never_an_attack_success(lm_factory, tmp_path):
    summary, recs = _nan_run(lm_factory, tmp_path / "attack-nan", clean_rule=False, on_attack=True)
    attacked = [r for r in recs if r["clean_correct"]]
    assert attacked, "the tiny model should get some samples right"
    assert all(r.get("nonfinite_logits") for r in attacked), "every attack iterate was NaN"
    assert all(r["broken_by"] != "pgd" for r in attacked), "a NaN iterate was counted as an attack success"
    assert summary["nonfinite_logits"] == len(attacked)
    assert summary.get("broken_by", {}).get("pgd", 0) == 0


def test_nonfinite_attack_logits_are_never_counted_robust(lm_factory, tmp_path):
    summary, recs = _nan_run(lm_factory, tmp_path / "attack-nan-robust", clean_rule=False, on_attack=True)
    attacked = [r for r in recs if r["clean_correct"]]
    assert attacked and not any(r["robust_correct"] for r in attacked)
    assert summary["robust_acc"] == 0

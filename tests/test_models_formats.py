"""Every supported checkpoint format loads into the same model and gives identical logits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zsrobust_bench.data.spec import PromptSet
from zsrobust_bench.errors import CheckpointError, ZSBenchError
from zsrobust_bench.models import load_model
from zsrobust_bench.models.native import save_native
from zsrobust_bench.models.prompters import build_prompted_visual
from zsrobust_bench.zeroshot import ZeroShotClassifier, compute_class_embeddings

PROMPTS = PromptSet(classnames=("red", "green", "blue"), templates=("a photo of {} shape.", "a {} thing."))


def _reference_logits(model, x: torch.Tensor, prompts: dict | None = None) -> torch.Tensor:
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-32")
    emb = compute_class_embeddings(model, tok, PROMPTS)
    tower = build_prompted_visual(model.visual, prompts) if prompts else model.visual
    clf = ZeroShotClassifier(tower, emb, 32, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    with torch.no_grad():
        return clf(x)


def _logits(path: Path, **kw) -> torch.Tensor:
    lm = load_model(str(path), **kw)
    emb = compute_class_embeddings(lm.model, lm.tokenizer, PROMPTS)
    clf = ZeroShotClassifier(lm.image_tower(), emb, lm.image_size, lm.mean, lm.std)
    with torch.no_grad():
        return clf(torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    sd = tiny_model.state_dict()
    visual = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    paths = {
        "full": d / "full.pt",
        "nested": d / "nested.pth.tar",
        "model_key": d / "wrapped.bin",
        "safetensors": d / "full.safetensors",
        "fare_visual": d / "fare_visual.pt",
        "tecoa_ft": d / "tecoa.pth.tar",
    }
    torch.save(sd, paths["full"])
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, paths["nested"])
    torch.save({"model": sd, "step": 10}, paths["model_key"])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(paths["safetensors"]))
    torch.save(visual, paths["fare_visual"])
    torch.save(
        {
            "epoch": 10,
            "state_dict": {},
            "add_prompter": {"module.prompt": torch.zeros(1, 0, 64)},
            "vision_encoder_state_dict": visual,
            "best_acc1": 38.2,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "momentum": 0.9, "params": [0]}]},
        },
        paths["tecoa_ft"],
    )
    return paths


@pytest.mark.parametrize("name", ["full", "nested", "model_key", "safetensors"])
def test_full_formats_give_identical_logits(name, saved, tiny_model, tiny_cfg_path, x):
    ref = _reference_logits(tiny_model, x)
    lm = load_model(str(saved[name]), arch=str(tiny_cfg_path))
    assert lm.info["format"] == "open_clip-full" and lm.info["kind"] == "full"
    assert not lm.info["random_init"]
    assert torch.equal(_logits(saved[name], arch=str(tiny_cfg_path)), ref)


@pytest.mark.parametrize("name", ["fare_visual", "tecoa_ft"])
def test_vision_only_formats_take_text_tower_from_pretrained(name, saved, tiny_model, tiny_cfg_path, x):
    ref = _reference_logits(tiny_model, x)
    lm = load_model(str(saved[name]), arch=str(tiny_cfg_path), pretrained=str(saved["full"]))
    assert lm.info["kind"] == "vision-only"
    assert lm.info["format"] == {"fare_visual": "open_clip-visual", "tecoa_ft": "tecoa-finetune"}[name]
    assert torch.equal(_logits(saved[name], arch=str(tiny_cfg_path), pretrained=str(saved["full"])), ref)


def test_vision_only_without_base_is_flagged_random(saved, tiny_cfg_path):
    lm = load_model(str(saved["fare_visual"]), arch=str(tiny_cfg_path))
    assert lm.info["random_init"] is True
    assert any("RANDOMLY INITIALISED" in w for w in lm.warnings)


def test_visual_prompt_dict_applies_prompts(saved, tiny_model, tiny_cfg_path, tmp_path, x):
    g = torch.Generator().manual_seed(5)
    prompts = {
        "pad_up": torch.randn(1, 3, 4, 32, generator=g),
        "pad_down": torch.randn(1, 3, 4, 32, generator=g),
        "pad_left": torch.randn(1, 3, 24, 4, generator=g),
        "pad_right": torch.randn(1, 3, 24, 4, generator=g),
        "prompt": torch.randn(1, 3, 64, generator=g),
    }
    path = tmp_path / "vp.pth.tar"
    torch.save(
        {
            "epoch": 1,
            "state_dict": {f"module.{k}": v for k, v in prompts.items() if k.startswith("pad")},
            "add_prompter": {"module.prompt": prompts["prompt"]},
            "best_acc1": 30.0,
        },
        path,
    )
    lm = load_model(str(path), arch=str(tiny_cfg_path), pretrained=str(saved["full"]))
    assert lm.info["format"] == "tecoa-prompt" and lm.info["kind"] == "visual-prompt"
    got = _logits(path, arch=str(tiny_cfg_path), pretrained=str(saved["full"]))
    assert torch.allclose(got, _reference_logits(tiny_model, x, prompts), atol=1e-5)
    assert not torch.allclose(got, _reference_logits(tiny_model, x), atol=1e-2)


def test_native_format_needs_no_flags(tiny_model, tiny_cfg_path, tmp_path, x):
    import json

    path = save_native(
        tmp_path / "model.safetensors",
        tiny_model.state_dict(),
        arch="tiny-clip",
        arch_config=json.loads(tiny_cfg_path.read_text()),
        kind="full",
    )
    lm = load_model(str(path))
    assert lm.info["format"] == "zsbench" and lm.info["sha256"] and len(lm.info["sha256"]) == 64
    assert torch.equal(_logits(path), _reference_logits(tiny_model, x))


def test_native_compact_token_rows_roundtrip(tiny_model, tiny_cfg_path, tmp_path, x):
    import json

    import open_clip

    ids = sorted(
        set(
            open_clip.get_tokenizer("ViT-B-32")(
                [t.format(c) for c in PROMPTS.classnames for t in PROMPTS.templates]
            )
            .flatten()
            .tolist()
        )
    )
    path = save_native(
        tmp_path / "small.safetensors",
        tiny_model.state_dict(),
        arch="tiny-clip",
        arch_config=json.loads(tiny_cfg_path.read_text()),
        kind="full",
        compact_token_rows=ids,
    )
    assert path.stat().st_size < 0.5 * sum(v.numel() * 4 for v in tiny_model.state_dict().values())
    assert torch.allclose(_logits(path), _reference_logits(tiny_model, x), atol=1e-5)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="needs code to unpickle"):
        load_model(str(path))
    assert not marker.exists()


def test_wrong_arch_names_keys_and_shapes(saved, tmp_path):
    import json

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 24, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    other = tmp_path / "other-tiny.json"
    other.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        load_model(str(saved["full"]), arch=str(other))
    msg = str(err.value)
    assert "shape" in msg and "visual.conv1.weight" in msg or "visual." in msg
    assert "wrong --arch" in msg


def test_missing_arch_suggests_candidates(saved):
    with pytest.raises(CheckpointError, match="does not record its architecture"):
        load_model(str(saved["full"]))


def test_unknown_layout_and_bad_specs(tmp_path):
    p = tmp_path / "weird.pt"
    torch.save({"foo": torch.zeros(3), "bar": torch.ones(2)}, p)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        load_model(str(p))
    with pytest.raises(ZSBenchError, match="not a file"):
        load_model("no/such/file.pt")
    with pytest.raises(ZSBenchError, match="unknown architecture"):
        load_model("ViT-B-33:openai")


def test_nan_weights_refused(tiny_model, tiny_cfg_path, tmp_path):
    sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    sd["visual.proj"][0, 0] = float("nan")
    p = tmp_path / "nan.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_model(str(p), arch=str(tiny_cfg_path))


def test_classifier_refuses_train_mode(tiny_model):
    clf = ZeroShotClassifier(tiny_model.visual, torch.randn(3, 64), 32, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(RuntimeError, match="evaluation-only"):
        clf.train()
    assert not clf.training


def test_registering_arch_configs_leaves_no_temp_files(tmp_path, monkeypatch):
    """Each embedded config is registered from a temporary file; nothing may pile up in the temp dir."""
    import open_clip

    from zsrobust_bench.models.arch import register_config

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    cfg = open_clip.get_model_config("ViT-B-32")
    names = [register_config("zsbench-leak-probe", {**cfg, "embed_dim": 500 + i}, "test") for i in range(3)]
    assert len(set(names)) == 3
    assert [open_clip.get_model_config(n)["embed_dim"] for n in names] == [500, 501, 502]
    assert list(tmp_path.iterdir()) == []

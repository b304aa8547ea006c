"""Visual-prompt training: the exported checkpoint loads with its prompts applied, the attack's
gradient goes through them, and TeCoA's prompt-dict export has TeCoA's keys and shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zsrobust_bench.data.registry import get_dataset
from zsrobust_bench.models import load_model
from zsrobust_bench.models.prompters import PromptedVisual
from zsrobust_bench.zeroshot import build_classifier

TINY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def vp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zsrobust_bench.train import train

    out = tmp_path_factory.mktemp("vp")
    cfg = {
        "name": "tiny-vp",
        "method": "tecoa",
        "seed": 1,
        "model": {"arch": "zsbench-test-tiny", "arch_config": TINY_ARCH},
        "trainable": "prompt",
        "prompt": {"pad": 3, "tokens": 2, "init_std": 0.5},
        "data": {"kind": "synthetic", "task": "color", "size": 64, "workers": 1},
        "attack": {"eps": "4/255", "steps": 2, "step_size": "2/255"},
        "optimizer": {"name": "sgd", "lr": 1.0, "momentum": 0.9},
        "batch_size": 16,
        "steps": 3,
        "progress": False,
    }
    train(cfg, out)
    return out


def test_prompt_checkpoint_applies_prompts(vp_run: Path) -> None:
    loaded = load_model(str(vp_run / "final.safetensors"))
    assert set(loaded.prompts) == {"pad_up", "pad_down", "pad_left", "pad_right", "prompt"}
    assert loaded.prompts["pad_up"].shape == (1, 3, 3, 32) and loaded.prompts["prompt"].shape == (1, 2, 32)
    assert isinstance(loaded.image_tower(), PromptedVisual)
    ps = get_dataset("synth-color").prompt_set("tecoa")
    clf = build_classifier(loaded, ps)
    bare = load_model(str(vp_run / "final.safetensors"))
    bare.prompts = {}
    clf_bare = build_classifier(bare, ps)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (clf(x) - clf_bare(x)).abs().max().item()
    assert diff > 1e-2  # the prompts change the logits: evaluation runs with them


def test_attack_gradient_reaches_prompts(vp_run: Path) -> None:
    loaded = load_model(str(vp_run / "final.safetensors"))
    ps = get_dataset("synth-color").prompt_set("tecoa")
    clf = build_classifier(loaded, ps)
    tower = clf.image_tower
    for p in tower.parameters():
        p.requires_grad_(False)
    for p in list(tower.pad.parameters()) + list(tower.tokens.parameters()):
        p.requires_grad_(True)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    loss = F.cross_entropy(clf(x), torch.arange(8) % 6, reduction="sum")
    loss.backward()
    assert tower.pad.pad_up.grad.abs().sum() > 0
    assert tower.tokens.prompt.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0
    # The input gradient an attack follows differs with and without the prompts.
    bare = load_model(str(vp_run / "final.safetensors"))
    bare.prompts = {}
    clf_bare = build_classifier(bare, ps)
    x2 = x.detach().clone().requires_grad_(True)
    F.cross_entropy(clf_bare(x2), torch.arange(8) % 6, reduction="sum").backward()
    assert (x.grad - x2.grad).norm() / x2.grad.norm() > 0.05


def test_prompts_trained_and_tecoa_export(vp_run: Path) -> None:
    from zsrobust_bench.train.modules import load_base, make_prompted

    base = load_base({"arch": "zsbench-test-tiny", "arch_config": TINY_ARCH, "pretrained": None}, seed=1)
    init = make_prompted(base.model.visual, 32, {"pad": 3, "tokens": 2, "init_std": 0.5}, seed=1)
    loaded = load_model(str(vp_run / "final.safetensors"))
    assert not torch.allclose(loaded.prompts["pad_up"].float(), init.pad.pad_up.detach())
    # The frozen CLIP did not move.
    sd = loaded.model.state_dict()
    for k, v in base.model.state_dict().items():
        assert torch.equal(sd[k], v), k
    tecoa = torch.load(vp_run / "final.pth.tar", weights_only=True)
    assert set(tecoa) == {"epoch", "state_dict", "add_prompter", "best_acc1", "optimizer"}
    assert set(tecoa["state_dict"]) == {
        "module.pad_up",
        "module.pad_down",
        "module.pad_left",
        "module.pad_right",
    }
    assert tecoa["add_prompter"]["module.prompt"].shape == (1, 2, 32)
    torch.testing.assert_close(tecoa["state_dict"]["module.pad_up"], loaded.prompts["pad_up"].float())

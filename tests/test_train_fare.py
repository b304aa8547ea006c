"""FARE in the trainer: the inner PGD with FARE's momentum equals a transcription of FARE's loop
(R-FARE train/pgd_train.py), the loss is the squared L2 distance to the frozen original embedding,
and the optimizer/preprocessing options the FARE and TeCoA recipes need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from zsrobust_bench.attacks.pgd import PGD
from zsrobust_bench.train import load_config, train
from zsrobust_bench.train.modules import load_base
from zsrobust_bench.train.optim import param_groups

TINY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _fare_reference(forward, x, target, eps, steps, step, start, momentum=0.9):
    """FARE's pgd(): normalise the gradient (sign), v = momentum*v + g, v = sign(v), delta += step*v,
    clip to eps, clip x+delta to [0,1]; the start is not clipped. Loss: mean over the batch of the
    squared L2 distance (adversarial_training_clip.py:509-521)."""
    delta = start.clone()
    v = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = (forward(x + delta) - target).pow(2).sum(dim=1).mean()
        (g,) = torch.autograd.grad(loss, delta)
        v = (momentum * v + g.sign()).sign()
        delta = (delta.detach() + step * v).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def _relu_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8)
    )


def test_momentum_pgd_equals_fares_loop() -> None:
    net = _relu_net()
    x = torch.rand(6, 3, 4, 4)
    x[:, :, 0] = 0.0  # on the box boundary: the unclamped start matters for the first gradient
    target = net(x).detach() + 0.1
    eps, step = 8 / 255, 2 / 255
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    pgd = PGD(eps, 7, step_size=step, loss="sq-l2", momentum=0.9)
    ours = pgd.final_iterate(net, x, target, pgd.start_from(x, u, clamp=False))
    ref = _fare_reference(net, x, target, eps, 7, step, u * eps)
    assert torch.equal(ours, ref)
    assert (ours - x).abs().max() <= eps + 1e-7 and ours.min() >= 0 and ours.max() <= 1
    # Clamping the start (our default) changes the iterates of the same attack.
    clamped = pgd.final_iterate(net, x, target, pgd.start_from(x, u))
    assert not torch.equal(clamped, ours)


def test_fare_momentum_is_sign_pgd_where_the_gradient_is_nonzero() -> None:
    # |sign(g)| = 1 > 0.9 |v|: sign(0.9 v + sign(g)) = sign(g) whenever g != 0 (documented in
    # docs/fidelity_recipes.md). A smooth model has no zero gradients, so both attacks coincide.
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(48, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8)
    )
    x = torch.rand(4, 3, 4, 4)
    target = net(x).detach() + 0.5
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with_m, without = (PGD(4 / 255, 6, step_size=1 / 255, loss="sq-l2", momentum=m) for m in (0.9, 0.0))
    start = with_m.start_from(x, u)
    assert torch.equal(
        with_m.final_iterate(net, x, target, start), without.final_iterate(net, x, target, start)
    )


# A 3-step FARE run of a random tiny CLIP on synthetic images (the attack is FARE's: momentum, no start clamp).
FARE_TINY = yaml.safe_load(
    """
name: tiny-fare
method: fare
seed: 3
model: {arch: zsbench-test-fare}
data: {kind: synthetic, task: shape, size: 64, workers: 1}
attack: {eps: 8/255, steps: 2, step_size: 4/255, momentum: 0.9, clamp_start: false}
optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.0}
batch_size: 16
steps: 3
log_every: 1
progress: false
"""
)


def _fare_run(tmp: Path, **over) -> tuple[Path, list[dict]]:
    cfg = {**FARE_TINY, **over}
    cfg["model"] = {**cfg["model"], "arch_config": TINY_ARCH}
    out = tmp / "run"
    train(cfg, out)
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return out, [r for r in recs if r["kind"] == "train"]


def _initial() -> dict[str, torch.Tensor]:
    base = load_base({"arch": "zsbench-test-fare", "arch_config": TINY_ARCH, "pretrained": None}, seed=3)
    return {k: v.detach() for k, v in base.model.state_dict().items()}


def test_fare_without_attack_is_a_fixed_point(tmp_path: Path) -> None:
    # phi = phi_orig on clean images: the loss is 0 up to the rounding between the grad-enabled
    # train-mode forward and the frozen copy's no-grad eval forward (the same holds in FARE), and
    # plain SGD leaves the weights where they were. A target that were not the frozen original
    # embedding would give a loss far above 1e-9 and move them.
    sgd = {"name": "sgd", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0}
    out, recs = _fare_run(tmp_path, attack={"eps": 0.0, "steps": 0, "step_size": 0.0}, optimizer=sgd)
    assert len(recs) == 3 and all(r["loss"] < 1e-9 for r in recs)
    init, final = _initial(), load_file(out / "final.safetensors")
    for k, v in final.items():
        if k in init:
            torch.testing.assert_close(v, init[k], rtol=0, atol=1e-7)


def test_fare_with_attack_trains_the_image_tower_only(tmp_path: Path) -> None:
    out, recs = _fare_run(tmp_path)
    assert all(r["loss"] > 1e-3 for r in recs)
    init, final = _initial(), load_file(out / "final.safetensors")
    moved = {k for k, v in final.items() if k in init and not torch.equal(v, init[k])}
    assert "visual.conv1.weight" in moved and "visual.proj" in moved
    assert not any(not k.startswith("visual.") for k in moved)


def test_decay_all_puts_every_parameter_in_one_decayed_group() -> None:
    lin = torch.nn.Linear(3, 2)
    named = list(lin.named_parameters())
    default = param_groups(named, 0.1)
    assert [len(g["params"]) for g in default] == [1, 1] and default[1]["weight_decay"] == 0.0
    every = param_groups(named, 0.1, decay_all=True)
    assert len(every) == 1 and len(every[0]["params"]) == 2 and every[0]["weight_decay"] == 0.1


@pytest.mark.parametrize("name", ["fare-eps2", "fare-eps4", "tecoa-fare-eps2", "tecoa-fare-eps4"])
def test_fare_code_recipes_carry_the_scripts_settings(name: str) -> None:
    cfg = load_config(name)
    eps = int(name[-1])
    assert cfg["attack"] == {
        "eps": eps / 255,
        "steps": 10,
        "step_size": 1 / 255,
        "random_start": True,
        "momentum": 0.9,
        "clamp_start": False,
    }
    assert cfg["amp"] is False and cfg["optimizer"]["decay"] == "all"
    assert (cfg["data"]["resize"], cfg["data"]["interpolation"], cfg["text"]["prompt_set"]) == (
        224,
        "bicubic",
        "clip",
    )
    assert cfg["method"] == ("tecoa" if name.startswith("tecoa") else "fare")


def test_imagefolder_resize_follows_the_recipe(tmp_path: Path) -> None:
    from PIL import Image
    from torchvision import transforms

    from zsrobust_bench.train.data import ImageFolderTrain

    (tmp_path / "a").mkdir()
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(40, 60, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr).save(tmp_path / "a" / "x.png")
    ours = ImageFolderTrain(tmp_path, 24, resize=28, interpolation="bilinear")[0][0]
    ref = transforms.Compose([transforms.Resize(28), transforms.CenterCrop(24), transforms.ToTensor()])
    assert torch.equal(ours, ref(Image.open(tmp_path / "a" / "x.png").convert("RGB")))
    bicubic = ImageFolderTrain(tmp_path, 24, resize=28, interpolation="bicubic")[0][0]
    assert not torch.equal(bicubic, ours)

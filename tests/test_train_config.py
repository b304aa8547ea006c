"""Training configs: shipped recipes resolve with the documented values, overrides parse as YAML,
mistakes fail loudly, and the CLI registers `train`."""

from __future__ import annotations

import argparse

import pytest

from zsrobust_bench.errors import ZSBenchError
from zsrobust_bench.train.config import load_config, number, parse_overrides, shipped_configs
from zsrobust_bench.train.optim import lr_at


def test_shipped_recipes_present_and_valid() -> None:
    names = shipped_configs()
    for n in (
        "tecoa-paper",
        "tecoa-fare-eps2",
        "tecoa-fare-eps4",
        "tecoa-vp",
        "synthetic-tecoa",
        "synthetic-advtrain",
        "synthetic-vp",
        "demo-contrastive",
    ):
        assert n in names
    for n in names:
        cfg = load_config(n)
        assert cfg["name"] == n


def test_paper_recipe_values() -> None:
    cfg = load_config("tecoa-paper")
    assert (cfg["model"]["arch"], cfg["model"]["pretrained"]) == ("ViT-B-32", "openai")
    assert cfg["attack"]["eps"] == pytest.approx(1 / 255) and cfg["attack"]["steps"] == 2
    assert cfg["attack"]["step_size"] == pytest.approx(1 / 255)
    assert cfg["epochs"] == 10 and cfg["optimizer"]["name"] == "sgd" and cfg["schedule"]["warmup"] == 1000
    assert cfg["text"]["templates"] == ["This is a photo of a {}"]
    fare = load_config("tecoa-fare-eps4")
    assert fare["attack"]["eps"] == pytest.approx(4 / 255) and fare["attack"]["steps"] == 10
    assert (fare["optimizer"]["name"], fare["optimizer"]["lr"], fare["steps"], fare["batch_size"]) == (
        "adamw",
        1e-5,
        20000,
        128,
    )
    assert load_config("tecoa-fare-eps2")["attack"]["eps"] == pytest.approx(2 / 255)
    vp = load_config("tecoa-vp")
    assert (vp["trainable"], vp["prompt"]["pad"], vp["prompt"]["tokens"], vp["optimizer"]["lr"]) == (
        "prompt",
        30,
        100,
        40.0,
    )


def test_overrides() -> None:
    assert parse_overrides(["attack.eps=2/255", "steps=7", "validation.datasets=[a, b]"]) == {
        "attack": {"eps": "2/255"},
        "steps": 7,
        "validation": {"datasets": ["a", "b"]},
    }
    cfg = load_config("synthetic-tecoa", ["attack.eps=2/255", "steps=7", "data.task=color"])
    assert (
        cfg["attack"]["eps"] == pytest.approx(2 / 255)
        and cfg["steps"] == 7
        and cfg["data"]["task"] == "color"
    )
    assert number("0.5/255", "x") == pytest.approx(0.5 / 255)


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["atack.eps=1"], "unknown training config key 'atack'"),
        (["attack.epsilon=1"], "unknown training config key 'attack.epsilon'"),
        (["attack.eps=lots"], "expected a number"),
        (["head=softmax"], "head="),
        (["epochs=3"], "exactly one of steps and epochs"),
        (["trainable=prompt"], "prompt.pad"),
        (["noequals"], "not key=value"),
    ],
)
def test_mistakes_fail_loudly(sets: list[str], match: str) -> None:
    with pytest.raises(ZSBenchError, match=match):
        load_config("synthetic-tecoa", sets)


def test_unknown_config_name_lists_shipped() -> None:
    with pytest.raises(ZSBenchError, match="tecoa-paper"):
        load_config("tecoa-papr")


def test_schedule_warmup_then_cosine() -> None:
    assert lr_at(0, 1.0, 100, 10) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 100, 10) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 100, 10) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 100, 10) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 100, 10) == pytest.approx(0.0)


def test_cli_registers_train() -> None:
    from zsrobust_bench.cli.train import _cmd, register_cli

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["train", "synthetic-tecoa", "--set", "steps=3", "--set", "attack.eps=1/255", "--resume"]
    )
    assert args.func is _cmd and args.overrides == ["steps=3", "attack.eps=1/255"] and args.resume

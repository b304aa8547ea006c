"""torchattacks in custom runs: safe argument parsing, bounded attacks only, recorded in results.json."""

from __future__ import annotations

import json

import pytest

from zsrobust_bench.attacks.torchattacks_adapter import parse_attack_spec, parse_attack_specs
from zsrobust_bench.cli import main
from zsrobust_bench.errors import ZSBenchError


def test_parse_takes_literals_and_fractions_only():
    assert parse_attack_spec("torchattacks:PGD(steps=50, alpha=2/255, random_start=False)") == (
        "torchattacks:PGD",
        {"steps": 50, "alpha": 2 / 255, "random_start": False},
    )
    assert parse_attack_spec("torchattacks:APGD") == ("torchattacks:APGD", {})
    for bad in (
        "torchattacks:PGD(steps=__import__('os'))",
        "torchattacks:PGD(1)",
        "pgd",
        "torchattacks:PGD(steps=5",
    ):
        with pytest.raises(ZSBenchError):
            parse_attack_spec(bad)
    assert parse_attack_specs(["torchattacks:PGD(steps=3)"], '{"steps": 9, "alpha": 0.01}') == [
        ("torchattacks:PGD", {"steps": 3, "alpha": 0.01})
    ]


def test_unbounded_or_unknown_attacks_are_refused():
    with pytest.raises(ZSBenchError, match="takes no eps"):
        parse_attack_specs(["torchattacks:CW"], None)
    with pytest.raises(ZSBenchError, match="no attack 'Nope'"):
        parse_attack_specs(["torchattacks:Nope"], None)


def test_torchattacks_pgd_runs_in_a_custom_evaluation(demo_model, tmp_path, capsys):
    import torchattacks

    argv = ["evaluate", str(demo_model), "--datasets", "synth-shape", "--protocol", "synthetic-pgd"]
    argv += [
        "--samples",
        "24",
        "--attack",
        "torchattacks:PGD(steps=5, alpha=1/255)",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    ds = res["datasets"]["synth-shape"]
    (rec,) = ds["attacks"]["4/255"]
    assert rec["params"]["implementation"] == f"torchattacks {torchattacks.__version__} PGD"
    assert rec["params"]["steps"] == 5 and rec["params"]["eps"] == pytest.approx(4 / 255)
    assert res["protocol"]["custom"] is True
    assert ds["robust_acc"] < ds["clean_acc"]

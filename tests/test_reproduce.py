"""`zsbench reproduce` end to end offline: a zoo entry served on loopback, a synthetic reported entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from zoo_server import Publisher, serve, zoo_file

from zsrobust_bench.cli import main
from zsrobust_bench.cli.reproduce import format_reproduction
from zsrobust_bench.evaluate import evaluate
from zsrobust_bench.leaderboard.entries import EVALUATED, REPORTED, load_entry
from zsrobust_bench.leaderboard.reproduce import reproduce
from zsrobust_bench.zoo import add_zoo_file, registry

QUICK = {"samples": 24, "steps": 1}


@pytest.fixture(autouse=True)
def _fresh_extra_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_EXTRA", {})


def _setup(tmp_path: Path, base: str, reported: dict) -> Path:
    """A zoo file for the demo model and a submissions tree with a reported entry for it."""
    entry_fields = {
        "name": "demo",
        "leaderboard_entry": "demo-entry",
        "location": {"kind": "url", "url": f"{base}/demo.safetensors"},
        "file": "demo-clip.safetensors",
    }
    add_zoo_file(zoo_file(tmp_path, [entry_fields]))
    entry = tmp_path / "subs" / "demo-entry"
    (entry / "results").mkdir(parents=True)
    card = (Path(__file__).parents[1] / "submissions" / "mini-demo" / "card.yaml").read_text()
    (entry / "card.yaml").write_text(card.replace("id: mini-demo", "id: demo-entry"))
    doc = {
        "schema": "zsbench.reported/1",
        "protocol": {"name": "demo-paper", "version": 1},
        "citation": {"text": "test", "url": "https://example.org", "where": "Table 1"},
        "decimals": 1,
        **reported,
    }
    (entry / "results" / "demo-paper.json").write_text(json.dumps(doc))
    return tmp_path / "subs"


def test_reproduce_compares_within_published_precision(tmp_path, demo_model):
    known = evaluate(
        str(demo_model),
        ["synth-shape", "synth-color"],
        protocol="synthetic-pgd",
        out=tmp_path / "k",
        overrides=QUICK,
        progress=False,
    )["datasets"]
    shape, color = known["synth-shape"], known["synth-color"]
    reported = {
        "datasets": {
            "synth-shape": {
                "clean_acc": round(shape["clean_acc"], 1),
                "robust_acc_by_eps": {"4/255": round(shape["robust_acc"], 1)},
            },
            "synth-color": {"clean_acc": round(color["clean_acc"], 1) - 1.0},
        },
        "means": {
            "clean_acc": round((shape["clean_acc"] + color["clean_acc"]) / 2, 1),
            "over": ["synth-shape", "synth-color"],
        },
    }
    with serve(Publisher(files={"/demo.safetensors": demo_model.read_bytes()})) as pub:
        subs = _setup(tmp_path, pub.base, reported)
        rep = reproduce(
            "demo-entry",
            submissions_dir=subs,
            out=tmp_path / "run",
            protocol="synthetic-pgd",
            overrides=QUICK,
            progress=False,
        )
    got = {(c.dataset, c.metric): (c.exact, c.diff) for c in rep.rows}
    assert set(got) == {
        ("synth-shape", "clean"),
        ("synth-shape", "robust@4/255"),
        ("synth-color", "clean"),
        ("mean", "clean"),
    }
    assert (
        got[("synth-shape", "clean")][0]
        and got[("synth-shape", "robust@4/255")][0]
        and got[("mean", "clean")][0]
    )
    assert not got[("synth-color", "clean")][0]
    assert got[("synth-color", "clean")][1] == pytest.approx(
        color["clean_acc"] - round(color["clean_acc"], 1) + 1.0
    )
    text = format_reproduction(rep)
    assert "off by +1.00" in text and "3 of 4 reported numbers" in text


def test_reproduce_without_a_mapped_protocol_is_one_clear_error(tmp_path, demo_model, capsys):
    with serve(Publisher(files={"/demo.safetensors": b""})) as pub:
        subs = _setup(
            tmp_path,
            pub.base,
            {
                "datasets": {"synth-shape": {"clean_acc": 50.0}},
                "means": {"clean_acc": 50.0, "over": ["synth-shape"]},
            },
        )
        assert main(["reproduce", "demo-entry", "--submissions", str(subs)]) == 2
    assert "no reported results that a registered protocol reproduces" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_submit_adds_evaluated_results_next_to_reported(tmp_path, demo_model, capsys):
    with serve(Publisher(files={"/demo.safetensors": demo_model.read_bytes()})) as pub:
        subs = _setup(
            tmp_path,
            pub.base,
            {
                "datasets": {"synth-shape": {"clean_acc": 83.0, "robust_acc_by_eps": {"4/255": 0.0}}},
                "means": {"clean_acc": 83.0, "over": ["synth-shape"]},
            },
        )
        argv = ["reproduce", "demo-entry", "--submissions", str(subs), "--protocol", "synthetic-pgd"]
        assert main([*argv, "--out", str(tmp_path / "run"), "--device", "cpu", "--submit"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 reported numbers reproduced" in out and "run added to" in out
    entry, _ = load_entry(subs / "demo-entry")
    assert {(rf.protocol, rf.kind) for rf in entry.results} == {
        ("demo-paper", REPORTED),
        ("synthetic-pgd", EVALUATED),
    }

"""`zsbench leaderboard build`: tables per protocol, deterministic bytes, committed output up to date."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
from leaderboard_support import REPO, copy_reported, dump_json, load_json, make_run, register_test_protocols

from zsrobust_bench.errors import SubmissionError
from zsrobust_bench.leaderboard import build_leaderboard, differences, render_markdown_table, submit_run
from zsrobust_bench.leaderboard.problems import errors
from zsrobust_bench.leaderboard.validate import validate_submissions


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    register_test_protocols(monkeypatch)
    subs = tmp_path / "submissions"
    submit_run(make_run(tmp_path, "stub-aa"), "model-a", subs)
    submit_run(make_run(tmp_path, "stub-synthetic", name="synth"), "demo-model", subs)
    copy_reported(subs)
    return subs


def test_committed_leaderboard_is_what_build_produces() -> None:
    stale = differences(REPO / "submissions", REPO / "leaderboard")
    assert not stale, f"leaderboard/ is out of date ({stale}): run `zsbench leaderboard build`"


def test_build_is_deterministic(tree: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "out-a", tmp_path / "out-b"
    files_a = build_leaderboard(tree, a)
    shutil.copytree(tree, tmp_path / "copy" / "submissions")
    build_leaderboard(tmp_path / "copy" / "submissions", tmp_path / "copy" / "out-b")
    build_leaderboard(tree, b)
    for f in files_a:
        assert f.read_bytes() == (b / f.name).read_bytes()
        assert f.read_bytes() == (tmp_path / "copy" / "out-b" / f.name).read_bytes()
    assert differences(tree, a) == []


def test_tables_per_protocol_and_synthetic_last(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb"
    names = sorted(p.name for p in build_leaderboard(tree, out))
    assert names == sorted(
        ["MANIFEST", "README.md", "index.html"]
        + [
            f"{p}.{ext}"
            for p in ("stub-aa", "stub-synthetic", "tga-zsr-paper", "tga-zsr-paper-aa")
            for ext in ("md", "csv")
        ]
    )
    readme = (out / "README.md").read_text()
    order = [readme.index(p + ".md") for p in ("stub-aa", "tga-zsr-paper", "stub-synthetic")]
    assert order == sorted(order)  # registered real suites, then reported, then synthetic
    assert "synthetic suite" in (out / "stub-synthetic.md").read_text()
    assert "demo-model" not in (out / "stub-aa.csv").read_text()


def test_csv_holds_raw_numbers_and_status(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb"
    build_leaderboard(tree, out)
    rows = list(csv.DictReader(io.StringIO((out / "stub-aa.csv").read_text())))
    doc = load_json(tree / "model-a" / "results" / "stub-aa.json")
    assert rows[0]["Status"] == "evaluated" and rows[0]["entry_id"] == "model-a"
    assert float(rows[0]["Clean avg"]) == doc["means"]["clean_acc"]
    assert float(rows[0]["Robust avg 4/255"]) == doc["means"]["robust_acc_by_eps"]["4/255"]
    assert float(rows[0]["stl10 2/255"]) == doc["datasets"]["stl10"]["robust_acc_by_eps"]["2/255"]
    tga = list(csv.DictReader(io.StringIO((out / "tga-zsr-paper.csv").read_text())))
    assert tga[0]["Status"] == "reported" and tga[0]["Robust avg 1/255"] == "42.09"


def test_reported_numbers_keep_published_precision(tmp_path: Path) -> None:
    out = tmp_path / "lb"
    build_leaderboard(REPO / "submissions", out)
    md = (out / "tga-zsr-paper.md").read_text()
    assert "| 4.90 |" in md  # CLIP's published PGD-100 average, not 4.9
    assert "reported" in md and "evaluated" not in md.split("|---")[1]


def test_ranking_by_primary_eps(tmp_path: Path) -> None:
    out = tmp_path / "lb"
    build_leaderboard(REPO / "submissions", out)
    rows = list(csv.DictReader(io.StringIO((out / "fare-paper.csv").read_text())))
    ranked = [float(r["Robust avg 2/255"]) for r in rows]
    assert ranked == sorted(ranked, reverse=True)
    assert rows[0]["entry_id"] == "fare-vit-l14-eps4"


def test_build_refuses_invalid_submissions(tree: Path, tmp_path: Path) -> None:
    (tree / "model-a" / "card.yaml").write_text("schema: zsbench.card/1\n")
    with pytest.raises(SubmissionError, match="card.yaml"):
        build_leaderboard(tree, tmp_path / "lb")
    assert not (tmp_path / "lb").exists()


def test_stale_tables_are_removed(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "lb"
    build_leaderboard(tree, out)
    (out / "notes.txt").write_text("not ours")
    shutil.rmtree(tree / "demo-model")
    assert "stub-synthetic.md" in differences(tree, out)
    build_leaderboard(tree, out)
    assert not (out / "stub-synthetic.md").exists() and (out / "notes.txt").exists()


def test_render_markdown_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_test_protocols(monkeypatch)
    a = load_json(make_run(tmp_path, "stub-aa") / "results.json")
    b = load_json(make_run(tmp_path, "stub-aa", n=20, name="b") / "results.json")
    text = render_markdown_table([a, b], names=["first", "second"])
    lines = text.splitlines()
    assert lines[0].startswith("Protocol stub-aa")
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[:7] == ["#", "Entry", "Paper", "Status", "Architecture", "Trained for", "Clean avg"]
    assert "Robust avg 2/255" in header and "cifar10 4/255" in header
    assert len(lines) == 6 and f"{a['means']['clean_acc']:.2f}" in text
    assert sum(line.startswith("|---") for line in render_markdown_table([a]).splitlines()) == 1


def test_an_older_protocol_version_stays_valid_shown_with_its_version_and_ranked_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results of a superseded version validate, and get their own table (never ranked with the
    current version's rows); a version the registry never had is an error."""
    register_test_protocols(monkeypatch)
    subs = tmp_path / "submissions"
    submit_run(make_run(tmp_path, "stub-versioned", name="old", version=1), "model-old", subs)
    submit_run(
        make_run(tmp_path, "stub-versioned", name="new", version=2, checkpoint=b"other"), "model-new", subs
    )
    assert not errors(validate_submissions(subs))
    out = tmp_path / "lb"
    names = {p.name for p in build_leaderboard(subs, out)}
    assert {
        "stub-versioned.md",
        "stub-versioned-v1.md",
        "stub-versioned.csv",
        "stub-versioned-v1.csv",
    } <= names
    old, new = (out / "stub-versioned-v1.csv").read_text(), (out / "stub-versioned.csv").read_text()
    assert "model-old" in old and "model-new" not in old and "model-new" in new and "model-old" not in new
    assert (
        "version 1, registered; superseded by version 2, ranked separately" in (out / "README.md").read_text()
    )
    path = subs / "model-old" / "results" / "stub-versioned.json"
    doc = load_json(path)
    doc["protocol"]["version"] = 7
    dump_json(path, doc)
    found = [p for p in errors(validate_submissions(subs)) if p.field == "protocol.version"]
    assert found and "has no such earlier version" in found[0].message


def test_csv_header_cells_are_neutralised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: a dataset named like a formula reaches the CSV header row only with a leading quote."""
    from types import SimpleNamespace

    from zsrobust_bench.leaderboard import csvout

    formula = '=HYPERLINK("http://x","y")'
    monkeypatch.setattr(csvout, "headers", lambda table: [formula, "-1+2"])
    table = SimpleNamespace(protocol=SimpleNamespace(name="p", version=1), rows=[])
    head = next(csv.reader(io.StringIO(csvout.csv_table(table))))
    assert head[3:5] == ["'" + formula, "'-1+2"]

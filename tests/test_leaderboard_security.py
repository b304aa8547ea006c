"""Issue #8 part 3: ids and card paths stay in the submissions tree; YAML is safe; fields are bounded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from leaderboard_support import copy_reported, dump_json, load_json, make_run, register_test_protocols

from zsrobust_bench.errors import SubmissionError
from zsrobust_bench.leaderboard import build_leaderboard, submit_run, validate_submissions
from zsrobust_bench.leaderboard.csvout import csv_text
from zsrobust_bench.leaderboard.problems import errors

BAD_IDS = [
    "../evil",
    "..",
    "a/../../b",
    "/abs/path",
    "a/b",
    ".hidden",
    "UPPER",
    "a..b",
    "",
    "x" * 65,
    "a b",
    "-x",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    subs = tmp_path / "submissions"
    copy_reported(subs)
    return subs


def _card(tree: Path) -> Path:
    return tree / "tga-zsr-vit-b32" / "card.yaml"


@pytest.mark.parametrize("bad", BAD_IDS)
def test_submit_refuses_unsafe_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    register_test_protocols(monkeypatch)
    run = make_run(tmp_path)
    subs = tmp_path / "a" / "submissions"
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(SubmissionError, match="invalid entry id"):
        submit_run(run, bad, subs)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_bad_folder_names_are_reported(tree: Path) -> None:
    (tree / "Bad Name").mkdir()
    found = [p for p in errors(validate_submissions(tree)) if p.file.endswith("Bad Name") and p.field == "id"]
    assert found


def test_symlinks_out_of_the_tree_are_refused(tree: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    os.symlink(secret, tree / "tga-zsr-vit-b32" / "results" / "stolen.json")
    found = [p for p in errors(validate_submissions(tree)) if p.file.endswith("stolen.json")]
    assert found and "symlink" in found[0].message
    os.symlink(tmp_path, tree / "linked-entry")
    assert any(p.file.endswith("linked-entry") for p in errors(validate_submissions(tree)))


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "sub/../../x", "C:\\\\x"])
def test_card_paths_are_confined(tree: Path, path: str) -> None:
    card = _card(tree)
    card.write_text(card.read_text().replace("  sha256: null", f"  sha256: null\n  path: {json.dumps(path)}"))
    assert [p for p in errors(validate_submissions(tree)) if p.field == "checkpoint.path"]


def test_card_path_symlink_escape(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "weights.bin"
    outside.write_bytes(b"x")
    os.symlink(outside, tree / "tga-zsr-vit-b32" / "weights.bin")
    card = _card(tree)
    card.write_text(card.read_text().replace("  sha256: null", '  sha256: null\n  path: "weights.bin"'))
    assert errors(validate_submissions(tree))


def test_yaml_code_tags_do_not_run(tree: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    card = _card(tree)
    card.write_text(card.read_text() + f'extra: !!python/object/apply:os.mkdir ["{marker}"]\n')
    found = [p for p in errors(validate_submissions(tree)) if p.file.endswith("card.yaml")]
    assert found and "not valid YAML" in found[0].message
    assert not marker.exists()


def test_yaml_aliases_are_refused(tree: Path) -> None:
    card = _card(tree)
    card.write_text(card.read_text().replace('venue: "NeurIPS 2024"', "venue: &v NeurIPS\nlicense_x: *v"))
    found = [p for p in errors(validate_submissions(tree)) if p.file.endswith("card.yaml")]
    assert found and "aliases" in found[0].message


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('name: "TGA-ZSR (ViT-B/32)"', f"name: {'x' * 201}", "name"),
        ("footnote: null", f"footnote: {'y' * 2001}", "footnote"),
        ('  - "Lu Yu"', "  - 12", "authors.0"),
        ('venue: "NeurIPS 2024"', "venue: 2024", "venue"),
        ('venue: "NeurIPS 2024"', "venue: 2024-12-01", "venue"),
        ('  url: "https://arxiv.org/abs/2410.21802"', '  url: "javascript:alert(1)"', "paper.url"),
        ('threat_model: {norm: Linf, eps: "1/255"}', "threat_model: {norm: Linf}", "threat_model.eps"),
    ],
)
def test_fields_are_type_and_length_checked(tree: Path, old: str, new: str, field: str) -> None:
    card = _card(tree)
    text = card.read_text()
    assert old in text
    card.write_text(text.replace(old, new))
    assert [p for p in errors(validate_submissions(tree)) if p.field == field], field


def test_oversized_card_is_refused(tree: Path) -> None:
    card = _card(tree)
    card.write_text(card.read_text() + "#" * 70_000 + "\n")
    assert [p for p in errors(validate_submissions(tree)) if "limit" in p.message]


def test_script_name_is_neutralised_everywhere(tree: Path, tmp_path: Path) -> None:
    evil = '<script>alert("x")</script> | [link](javascript:alert(1)) =cmd'
    card = _card(tree)
    card.write_text(card.read_text().replace('name: "TGA-ZSR (ViT-B/32)"', f"name: {json.dumps(evil)}"))
    assert not errors(validate_submissions(tree))
    out = tmp_path / "leaderboard"
    build_leaderboard(tree, out)
    page = (out / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("<script") == 1  # only the builder's own script
    md = (out / "tga-zsr-paper.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md and "\\[link\\]" in md and "\\|" in md
    row = (out / "tga-zsr-paper.csv").read_text().splitlines()[1]
    assert "<script>" in row  # CSV keeps the text (it is data), never as a formula


def test_csv_formula_guard() -> None:
    assert csv_text("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_text("+1") == "'+1" and csv_text("safe") == "safe" and csv_text(-1.5) == "-1.5"


def test_results_cannot_point_outside_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_test_protocols(monkeypatch)
    run = make_run(tmp_path)
    doc = load_json(run / "results.json")
    doc["datasets"]["cifar10"]["samples_file"] = "../../etc/passwd"
    dump_json(run / "results.json", doc)
    with pytest.raises(SubmissionError, match="\\.\\."):
        submit_run(run, "model-a", tmp_path / "submissions")
    doc["datasets"]["cifar10"]["samples_file"] = "/etc/passwd"
    dump_json(run / "results.json", doc)
    with pytest.raises(SubmissionError, match="outside the run"):
        submit_run(run, "model-a", tmp_path / "submissions")

"""`zsbench leaderboard validate`: passes on the committed tree, fails naming file and field otherwise."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from leaderboard_support import REPO, copy_reported, dump_json, load_json, make_run, register_test_protocols

from zsrobust_bench.leaderboard import Problem, submit_run, validate_submissions
from zsrobust_bench.leaderboard.problems import errors
from zsrobust_bench.protocols import reported_protocols


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch submissions tree: one evaluated entry (stub protocol) and one reported entry."""
    register_test_protocols(monkeypatch)
    subs = tmp_path / "submissions"
    submit_run(make_run(tmp_path), "model-a", subs)
    copy_reported(subs)
    return subs


def _errors_at(problems: list[Problem], file_suffix: str, field: str) -> list[Problem]:
    return [p for p in errors(problems) if p.file.endswith(file_suffix) and p.field == field]


def test_committed_submissions_validate() -> None:
    problems = validate_submissions(REPO / "submissions")
    assert not errors(problems), "\n".join(map(str, problems))


def test_reported_protocol_datasets_are_registered_names() -> None:
    from zsrobust_bench.data.registry import get_dataset

    assert reported_protocols()
    for info in reported_protocols().values():
        for name in info.datasets:
            assert get_dataset(name).name == name


def test_scratch_tree_passes(tree: Path) -> None:
    assert not errors(validate_submissions(tree))


def test_bad_schema_names_file_and_field(tree: Path) -> None:
    path = tree / "model-a" / "results" / "stub-pgd.json"
    doc = load_json(path)
    doc["datasets"]["cifar10"]["clean_acc"] = "55.3"  # a number stored as text
    dump_json(path, doc)
    assert _errors_at(
        validate_submissions(tree), "model-a/results/stub-pgd.json", "datasets.cifar10.clean_acc"
    )


def test_bad_card_schema(tree: Path) -> None:
    card = tree / "model-a" / "card.yaml"
    card.write_text(
        card.read_text().replace("authors: []", "authors: 7").replace("license: null", "licence: MIT")
    )
    problems = validate_submissions(tree)
    assert _errors_at(problems, "model-a/card.yaml", "authors")
    assert _errors_at(problems, "model-a/card.yaml", "licence")  # misspelt field
    assert _errors_at(problems, "model-a/card.yaml", "license")  # and the real one is now missing


def test_wrong_average_evaluated(tree: Path) -> None:
    path = tree / "model-a" / "results" / "stub-pgd.json"
    doc = load_json(path)
    doc["means"]["robust_acc"] += 1.0
    dump_json(path, doc)
    found = _errors_at(validate_submissions(tree), "model-a/results/stub-pgd.json", "means.robust_acc")
    assert found and "mean of the 2 per-dataset numbers" in found[0].message


def test_wrong_average_reported(tree: Path) -> None:
    path = tree / "tga-zsr-vit-b32" / "results" / "tga-zsr-paper.json"
    doc = load_json(path)
    doc["means"]["robust_acc_by_eps"]["1/255"] = 43.09  # published: 42.09
    dump_json(path, doc)
    field = "means.robust_acc_by_eps.1/255"
    assert _errors_at(validate_submissions(tree), "tga-zsr-vit-b32/results/tga-zsr-paper.json", field)


def test_wrong_per_dataset_number_against_digest(tree: Path) -> None:
    path = tree / "model-a" / "results" / "stub-pgd.json"
    doc = load_json(path)
    doc["datasets"]["stl10"]["clean_acc"] = 99.0
    doc["means"]["clean_acc"] = (doc["datasets"]["cifar10"]["clean_acc"] + 99.0) / 2
    dump_json(path, doc)
    found = _errors_at(
        validate_submissions(tree), "model-a/results/stub-pgd.json", "datasets.stl10.clean_acc"
    )
    assert found and "per-sample records" in found[0].message


def test_unknown_protocol(tree: Path) -> None:
    old = tree / "model-a" / "results" / "stub-pgd.json"
    doc = load_json(old)
    doc["protocol"]["name"] = "made-up"
    dump_json(tree / "model-a" / "results" / "made-up.json", doc)
    old.unlink()
    found = _errors_at(validate_submissions(tree), "model-a/results/made-up.json", "protocol.name")
    assert found and "unknown protocol" in found[0].message


def test_unknown_protocol_version(tree: Path) -> None:
    path = tree / "tga-zsr-vit-b32" / "results" / "tga-zsr-paper.json"
    doc = load_json(path)
    doc["protocol"]["version"] = 2
    dump_json(path, doc)
    assert _errors_at(validate_submissions(tree), "tga-zsr-paper.json", "protocol.version")


def test_custom_run_rejected(tree: Path) -> None:
    path = tree / "model-a" / "results" / "stub-pgd.json"
    doc = load_json(path)
    doc["protocol"]["custom"] = True
    doc["protocol"]["overrides"] = {"pgd.steps": 10}
    dump_json(path, doc)
    problems = validate_submissions(tree)
    assert _errors_at(problems, "model-a/results/stub-pgd.json", "protocol.custom")
    assert _errors_at(problems, "model-a/results/stub-pgd.json", "protocol.overrides")


def test_modified_parameters_without_custom_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_test_protocols(monkeypatch)
    subs = tmp_path / "submissions"
    submit_run(make_run(tmp_path, "stub-aa"), "model-a", subs)
    assert not errors(validate_submissions(subs))
    path = subs / "model-a" / "results" / "stub-aa.json"
    doc = load_json(path)
    doc["protocol"]["params"]["samples"] = 10  # fewer samples, yet not marked custom
    dump_json(path, doc)
    assert _errors_at(validate_submissions(subs), "model-a/results/stub-aa.json", "protocol.params.samples")


def test_hash_mismatch(tree: Path) -> None:
    card = tree / "model-a" / "card.yaml"
    text = card.read_text()
    old = load_json(tree / "model-a" / "results" / "stub-pgd.json")["model"]["sha256"]
    card.write_text(text.replace(old, "0" * 64))
    found = _errors_at(validate_submissions(tree), "model-a/results/stub-pgd.json", "model.sha256")
    assert found and "card.yaml" in found[0].message


def test_duplicate_id(tree: Path) -> None:
    shutil.copytree(tree / "model-a", tree / "model-b")  # card still says id: model-a
    problems = validate_submissions(tree)
    assert _errors_at(problems, "model-b/card.yaml", "id")
    dup = [p for p in _errors_at(problems, "model-a/card.yaml", "id") if "duplicate" in p.message]
    assert dup and "model-b/card.yaml" in dup[0].message


def test_ids_differing_only_in_punctuation_are_duplicates(tree: Path) -> None:
    shutil.copytree(tree / "model-a", tree / "model_a")
    card = tree / "model_a" / "card.yaml"
    card.write_text(card.read_text().replace("id: model-a", "id: model_a"))
    assert _errors_at(validate_submissions(tree), "model_a/card.yaml", "id")


def test_missing_and_tampered_digest(tree: Path) -> None:
    digest = tree / "model-a" / "digest" / "stub-pgd.json.gz"
    doc = json.loads(gzip.decompress(digest.read_bytes()))
    flags = doc["datasets"]["cifar10"]["clean_correct"]
    doc["datasets"]["cifar10"]["clean_correct"] = ("0" if flags[0] == "1" else "1") + flags[1:]
    digest.write_bytes(gzip.compress(json.dumps(doc).encode()))
    assert _errors_at(
        validate_submissions(tree), "model-a/results/stub-pgd.json", "datasets.cifar10.clean_acc"
    )
    digest.unlink()
    assert _errors_at(validate_submissions(tree), "model-a/digest/stub-pgd.json.gz", "")


def test_strict_json(tree: Path) -> None:
    path = tree / "model-a" / "results" / "stub-pgd.json"
    path.write_text(path.read_text().replace('"clean_acc": ', '"clean_acc": NaN, "x": ', 1))
    found = _errors_at(validate_submissions(tree), "model-a/results/stub-pgd.json", "")
    assert found and "not valid JSON" in found[0].message
    path.write_text('{"schema": "zsbench.results/1", "schema": "zsbench.reported/1"}')
    found = _errors_at(validate_submissions(tree), "model-a/results/stub-pgd.json", "")
    assert found and "duplicate key" in found[0].message


def test_single_entry_path(tree: Path) -> None:
    path = tree / "model-a" / "results" / "stub-pgd.json"
    doc = load_json(path)
    doc["means"]["clean_acc"] = 1.0
    dump_json(path, doc)
    assert not errors(validate_submissions(tree / "tga-zsr-vit-b32"))
    assert errors(validate_submissions(tree / "model-a"))


def test_source_inconsistency_is_a_warning_only_when_declared(tree: Path) -> None:
    path = tree / "tga-zsr-vit-b32" / "results" / "tga-zsr-paper.json"
    doc = load_json(path)
    doc["means"]["robust_acc_by_eps"]["1/255"] = 43.09
    doc["source_inconsistent"] = ["means.robust_acc_by_eps.1/255"]
    doc["note"] = "the paper's mean disagrees with its rows"
    dump_json(path, doc)
    problems = validate_submissions(tree)
    assert not errors(problems)
    assert any(p.severity == "warning" and p.field == "means.robust_acc_by_eps.1/255" for p in problems)


def test_problem_text_names_file_and_field() -> None:
    p = Problem("submissions/x/card.yaml", "paper.url", "bad")
    assert str(p) == "error: submissions/x/card.yaml: paper.url: bad"
    assert p.to_dict()["field"] == "paper.url"


def test_recorded_attack_warnings_validate(tree: Path) -> None:
    """A dataset's sanity checks may carry pyautoattack's warnings (sanity.attack_warnings_check); an
    unknown check name there is an error naming the field."""
    from zsrobust_bench.sanity import attack_warnings_check

    path = tree / "model-a" / "results" / "stub-pgd.json"
    doc = load_json(path)
    fired = [{"attack": "apgd-t", "eps": "1/255", "message": "there are 3 points with zero gradient!"}]
    doc["datasets"]["cifar10"]["sanity"] = [attack_warnings_check(fired)]
    dump_json(path, doc)
    assert not errors(validate_submissions(tree))
    doc["datasets"]["cifar10"]["sanity"][0]["check"] = "attack_warning"
    dump_json(path, doc)
    assert _errors_at(
        validate_submissions(tree), "model-a/results/stub-pgd.json", "datasets.cifar10.sanity.0.check"
    )

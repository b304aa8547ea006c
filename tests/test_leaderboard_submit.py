"""`zsbench submit`: creates or updates an entry, keeps hand-written card fields, refuses bad runs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from leaderboard_support import dump_json, load_json, make_run, register_test_protocols

from zsrobust_bench.errors import SubmissionError
from zsrobust_bench.leaderboard import submit, submit_run, validate_submissions
from zsrobust_bench.leaderboard.problems import errors

HAND_CARD = """\
# hand-written card; comments must survive
schema: zsbench.card/1
id: model-a
name: "My <b>robust</b> CLIP"   # the name people see
authors: ["A. Author"]
paper: {title: "A paper", url: "https://example.org/paper"}
venue: "Workshop 2025"
architecture: null
base_weights: "my own weights"
training_data: "ImageNet"
threat_model: {norm: Linf, eps: "1/255"}
checkpoint:
  location: "https://example.org/model.safetensors"
  sha256: null   # filled by zsbench submit
license: "MIT"
footnote: "Hand-written note."
"""


@pytest.fixture(autouse=True)
def _test_protocols(monkeypatch: pytest.MonkeyPatch) -> None:
    register_test_protocols(monkeypatch)


def test_submit_creates_entry(tmp_path: Path) -> None:
    run = make_run(tmp_path, "stub-aa")
    subs = tmp_path / "submissions"
    report = submit(run, "model-a", subs)
    entry = subs / "model-a"
    assert report.entry_dir == entry and report.card_created
    assert (entry / "results" / "stub-aa.json").read_bytes() == (run / "results.json").read_bytes()
    digest = json.loads(gzip.decompress((entry / "digest" / "stub-aa.json.gz").read_bytes()))
    assert digest["schema"] == "zsbench.digest/1"
    cols = digest["datasets"]["cifar10"]
    first = json.loads((run / "samples" / "cifar10.jsonl").read_text().splitlines()[0])
    assert cols["index"][0] == first["index"] and cols["clean_pred"][0] == first["clean_pred"]
    assert set(cols["by_eps"]) == {"2/255", "4/255"} and len(cols["by_eps"]["4/255"]) == cols["n"] == 40
    card = (entry / "card.yaml").read_text()
    assert load_json(run / "results.json")["model"]["sha256"] in card
    assert not errors(report.problems)
    assert not errors(validate_submissions(subs))


def test_submit_is_deterministic_and_updates(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    subs = tmp_path / "submissions"
    submit_run(run, "model-a", subs)
    before = {p: p.read_bytes() for p in (subs / "model-a").rglob("*") if p.is_file()}
    submit_run(run, "model-a", subs)
    after = {p: p.read_bytes() for p in (subs / "model-a").rglob("*") if p.is_file()}
    assert before == after
    run2 = make_run(tmp_path, name="run2", outcomes=1)  # the same samples, other per-sample results
    assert (run2 / "results.json").read_bytes() != (run / "results.json").read_bytes()
    submit_run(run2, "model-a", subs)
    assert (subs / "model-a" / "results" / "stub-pgd.json").read_bytes() == (
        run2 / "results.json"
    ).read_bytes()
    assert not errors(validate_submissions(subs))


def test_hand_written_card_is_kept_and_only_placeholders_filled(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    subs = tmp_path / "submissions"
    (subs / "model-a").mkdir(parents=True)
    (subs / "model-a" / "card.yaml").write_text(HAND_CARD)
    report = submit(run, "model-a", subs)
    text = (subs / "model-a" / "card.yaml").read_text()
    assert sorted(report.filled) == ["architecture", "checkpoint.sha256"]
    sha = load_json(run / "results.json")["model"]["sha256"]
    expected = HAND_CARD.replace("architecture: null", 'architecture: "ViT-B-32"').replace(
        "sha256: null   #", f'sha256: "{sha}"   #'
    )
    assert text == expected  # every other byte, comments included, is unchanged
    assert not errors(report.problems)


def test_written_fields_are_never_overwritten(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    subs = tmp_path / "submissions"
    (subs / "model-a").mkdir(parents=True)
    wrong = HAND_CARD.replace("sha256: null", f"sha256: {'a' * 64}").replace(
        "architecture: null", "architecture: ViT-L/14"
    )
    (subs / "model-a" / "card.yaml").write_text(wrong)
    report = submit(run, "model-a", subs)
    assert (subs / "model-a" / "card.yaml").read_text() == wrong
    assert report.filled == []
    assert any(p.field == "model.sha256" for p in errors(report.problems))  # the mismatch is reported


def test_submit_refuses_custom_and_unknown_runs(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    with pytest.raises(SubmissionError, match="custom"):
        submit_run(make_run(tmp_path, custom=True), "model-a", subs)
    run = make_run(tmp_path, name="run2")
    doc = load_json(run / "results.json")
    doc["protocol"]["name"] = "made-up"
    dump_json(run / "results.json", doc)
    with pytest.raises(SubmissionError, match="unknown protocol"):
        submit_run(run, "model-a", subs)
    assert not (subs / "model-a").exists()


def test_submit_refuses_modified_samples_and_missing_files(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    subs = tmp_path / "submissions"
    samples = run / "samples" / "cifar10.jsonl"
    samples.write_text(samples.read_text().replace('"clean_correct":false', '"clean_correct":true', 1))
    with pytest.raises(SubmissionError, match="samples_sha256"):
        submit_run(run, "model-a", subs)
    samples.unlink()
    with pytest.raises(SubmissionError, match="not found"):
        submit_run(run, "model-a", subs)
    with pytest.raises(SubmissionError, match="results.json not found"):
        submit_run(tmp_path / "nowhere", "model-a", subs)


def test_submit_refuses_broken_results(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    doc = load_json(run / "results.json")
    doc["means"]["clean_acc"] += 5
    dump_json(run / "results.json", doc)
    with pytest.raises(SubmissionError, match="means.clean_acc"):
        submit_run(run, "model-a", tmp_path / "submissions")


def test_submit_never_replaces_reported_numbers(tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    results = subs / "model-a" / "results"
    results.mkdir(parents=True)
    reported = {
        "schema": "zsbench.reported/1",
        "protocol": {"name": "stub-pgd", "version": 1},
        "citation": {"text": "x", "url": "https://example.org", "where": "Table 1"},
        "decimals": 1,
        "datasets": {},
        "means": {"clean_acc": 50.0, "over": None},
    }
    dump_json(results / "stub-pgd.json", reported)
    with pytest.raises(SubmissionError, match="reported numbers"):
        submit_run(make_run(tmp_path), "model-a", subs)
    assert load_json(results / "stub-pgd.json") == reported

"""Issue 14: forged numbers that once passed `validate` (cherry-picked subsets, radii never attacked)."""

from __future__ import annotations

from pathlib import Path

from leaderboard_support import dump_json, load_json, make_protocol_run

from zsrobust_bench.leaderboard import submit_run, validate_submissions
from zsrobust_bench.leaderboard.problems import errors

SYNTH = ["synth-color", "synth-count", "synth-pattern", "synth-position", "synth-shape"]


def _entry(tmp_path: Path, protocol: str, datasets: list[str], **kw) -> Path:
    subs = tmp_path / "submissions"
    submit_run(make_protocol_run(tmp_path, protocol, datasets, **kw), "entry", subs)
    return subs


def _messages(subs: Path) -> list[str]:
    return [f"{p.field}: {p.message}" for p in errors(validate_submissions(subs))]


def test_protocol_selection_passes(tmp_path: Path) -> None:
    assert not _messages(_entry(tmp_path, "synthetic-pgd", SYNTH))


def test_cherry_picked_robust_records_are_refused(tmp_path: Path) -> None:
    """Keeping only the robust records (accuracies and hashes recomputed) no longer validates."""
    subs = _entry(tmp_path, "synthetic-pgd", SYNTH, keep=lambda r: r["robust_correct"])
    found = _messages(subs)
    assert len([m for m in found if "seeded selection" in m]) == len(SYNTH), found


def test_clean_run_on_40_of_2000_is_refused(tmp_path: Path) -> None:
    subs = _entry(tmp_path, "clean", ["synth-shape"], keep=lambda r: r["index"] < 40)
    assert any("synth-shape.index" in m and "(2000 of 2000)" in m for m in _messages(subs))


def test_shortened_split_is_refused(tmp_path: Path) -> None:
    """n_split 40 would make the first 40 samples 'the full split'; the registered size is 2000."""
    subs = _entry(tmp_path, "clean", ["synth-shape"], n_split=40)
    assert any("n_split: is 40 but the synth-shape test split has 2000" in m for m in _messages(subs))


def test_radius_never_attacked_is_refused(tmp_path: Path) -> None:
    subs = _entry(tmp_path, "synthetic-pgd", SYNTH)
    path = subs / "entry" / "results" / "synthetic-pgd.json"
    doc = load_json(path)
    for block in [doc["means"], *doc["datasets"].values()]:
        block["robust_acc_by_eps"]["1/255"] = block["robust_acc"]
    dump_json(path, doc)
    found = _messages(subs)
    assert len([m for m in found if "eps 1/255 is not a radius" in m]) == len(SYNTH) + 1, found
    assert len([m for m in found if "1/255: has no per-sample records" in m]) == len(SYNTH), found


def test_unregistered_dataset_name_is_refused(tmp_path: Path) -> None:
    """Issue 14: a `clean` results file naming a dataset '=HYPERLINK(...)' does not validate."""
    subs = _entry(tmp_path, "clean", ['=HYPERLINK("x","y")'])
    assert any("is not a registered dataset" in m for m in _messages(subs))


def _card_errors(subs: Path, edit) -> list[str]:
    card = subs / "entry" / "card.yaml"
    card.write_text(edit(card.read_text()))
    return _messages(subs)


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    subs = _entry(tmp_path, "synthetic-pgd", SYNTH)
    found = _card_errors(subs, lambda t: t + 'name: "TeCoA finetuning (ViT-B/32)"\n')
    assert any("duplicate key 'name'" in m for m in found), found


def test_url_with_trailing_newline_is_refused(tmp_path: Path) -> None:
    subs = _entry(tmp_path, "synthetic-pgd", SYNTH)
    found = _card_errors(
        subs, lambda t: t.replace("paper: null", 'paper: {title: "T", url: "https://example.org/x\\n"}')
    )
    assert any(m.startswith("paper.url") for m in found), found


def test_string_mean_is_one_error_and_build_refuses(tmp_path: Path) -> None:
    """Issue 14: "10.6" as a results mean: validate names entry and field; build refuses (SubmissionError)."""
    import pytest

    from zsrobust_bench.errors import SubmissionError
    from zsrobust_bench.leaderboard import build_leaderboard

    subs = _entry(tmp_path, "synthetic-pgd", SYNTH)
    path = subs / "entry" / "results" / "synthetic-pgd.json"
    doc = load_json(path)
    doc["means"]["clean_acc"] = "10.6"
    dump_json(path, doc)
    found = errors(validate_submissions(subs))
    assert [(Path(p.file).name, p.field) for p in found] == [("synthetic-pgd.json", "means.clean_acc")]
    with pytest.raises(SubmissionError, match="means.clean_acc"):
        build_leaderboard(subs, tmp_path / "lb")


def test_impersonating_name_and_invisible_characters_are_refused(tmp_path: Path) -> None:
    subs = _entry(tmp_path, "synthetic-pgd", SYNTH)
    submit_run(make_protocol_run(tmp_path, "synthetic-pgd", SYNTH, name="run2"), "other", subs)
    name = (subs / "entry" / "card.yaml").read_text().split("\nname: ", 1)[1].split("\n", 1)[0]
    card = subs / "other" / "card.yaml"
    old = card.read_text().split("\nname: ", 1)[1].split("\n", 1)[0]
    card.write_text(card.read_text().replace(f"name: {old}", f"name: {name.upper()}"))
    found = _messages(subs)
    assert len([m for m in found if m.startswith("name: duplicate display name")]) == 2, found
    card.write_text(card.read_text().replace(f"name: {name.upper()}", 'name: "Real\\u200b \\u202eone"'))
    found = _messages(subs)
    assert any("invisible characters U+200B, U+202E" in m for m in found), found


def test_attack_backend_is_how_not_what_but_other_params_are_frozen(tmp_path: Path) -> None:
    """A run whose APGD ran in pyautoattack ("reference") ranks with engine runs; a changed step does not."""
    subs = _entry(tmp_path, "synthetic-pgd", SYNTH)
    path = subs / "entry" / "results" / "synthetic-pgd.json"
    doc = load_json(path)
    doc["protocol"]["params"]["attack_backend"] = "reference"
    dump_json(path, doc)
    assert not _messages(subs)
    doc["protocol"]["params"]["seed"] = 1
    dump_json(path, doc)
    assert any(m.startswith("protocol.params.seed: differs from frozen") for m in _messages(subs))

"""Issue 16: the miniature family as evaluated, re-checked leaderboard entries.

The committed entries `submissions/mini-*` carry real `zsbench evaluate` results of the shipped checkpoints;
these tests re-evaluate sampled records of every evaluated entry (the CI re-check), show that one flipped
record fails it, and hold README, cards, shipped files and leaderboard to one source.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from leaderboard_support import REPO

from zsrobust_bench.leaderboard.digest import decode_digest, encode_digest
from zsrobust_bench.leaderboard.entries import EVALUATED, load_tree
from zsrobust_bench.leaderboard.miniature import (
    PROTOCOLS,
    card_text,
    entries,
    miniature_table,
    readme_block,
)
from zsrobust_bench.leaderboard.problems import errors
from zsrobust_bench.leaderboard.recheck import _pick, recheck_entry, recheck_submissions
from zsrobust_bench.leaderboard.validate import validate_submissions

SUBS = REPO / "submissions"
RECHECK_N = 2  # samples re-evaluated per evaluated entry in CI (a synthetic-aa sample costs up to ~8 s)


def _evaluated_entries() -> list:
    found, _ = load_tree(SUBS)
    return [e for e in found if any(rf.kind == EVALUATED for rf in e.results)]


def test_six_evaluated_entries_with_filled_cards_and_digests() -> None:
    evaluated = {e.id: e for e in _evaluated_entries()}
    assert {e.entry_id for e in entries()} <= set(evaluated) and len(evaluated) >= 6
    for e in entries():
        entry = evaluated[e.entry_id]
        assert sorted(rf.protocol for rf in entry.results) == sorted(PROTOCOLS)
        for proto in PROTOCOLS:
            assert (entry.dir / "digest" / f"{proto}.json.gz").is_file()
    for entry in evaluated.values():  # no null placeholders in any evaluated card
        card = entry.card or {}
        assert card.get("architecture") and card["checkpoint"].get("sha256"), entry.id


def test_cards_are_generated_from_recipes_and_the_shipped_files() -> None:
    """Each card equals what `card_text` writes now: a retrained or edited checkpoint changes its sha256."""
    for e in entries():
        path = SUBS / e.entry_id / "card.yaml"
        results = json.loads((SUBS / e.entry_id / "results" / f"{PROTOCOLS[0]}.json").read_text())
        assert path.read_text() == card_text(e, REPO, results["model"]["arch"]), e.entry_id
        assert results["model"]["spec"] == e.repo_path


def test_readme_table_is_rendered_from_the_leaderboard_results() -> None:
    assert readme_block((REPO / "README.md").read_text()) == miniature_table(SUBS)


def test_committed_submissions_validate() -> None:
    assert not errors(validate_submissions(SUBS))


def test_every_evaluated_entry_rechecks() -> None:
    """The CI re-check: sampled records of every evaluated entry are re-evaluated from the shipped files."""
    problems = recheck_submissions(SUBS, RECHECK_N, seed=0)
    assert not errors(problems), [str(p) for p in errors(problems)]
    matched = [p.message for p in problems if f"rechecked {RECHECK_N} samples: all match" in p.message]
    assert len(matched) == len(_evaluated_entries()), [str(p) for p in problems]


def test_one_flipped_record_fails_the_recheck(tmp_path: Path) -> None:
    """Flip the clean flag of one record the re-check will pick (digest re-encoded, so only a re-run shows it)."""
    src = SUBS / "mini-demo"
    entry_dir = tmp_path / "submissions" / "mini-demo"
    shutil.copytree(src, entry_dir)
    digests = {p: decode_digest(entry_dir / "digest" / f"{p}.json.gz") for p in PROTOCOLS}
    (proto, dataset), positions = sorted(_pick(digests, 1, 0, "mini-demo").items())[0]
    cols = digests[proto]["datasets"][dataset]
    pos = positions[0]
    flags = cols["clean_correct"]
    cols["clean_correct"] = flags[:pos] + ("0" if flags[pos] == "1" else "1") + flags[pos + 1 :]
    (entry_dir / "digest" / f"{proto}.json.gz").write_bytes(encode_digest(proto, digests[proto]["datasets"]))
    entry = next(e for e in load_tree(tmp_path / "submissions")[0] if e.id == "mini-demo")
    bad = errors(recheck_entry(entry, 1, seed=0))
    assert len(bad) == 1 and f"index={cols['index'][pos]}" in bad[0].field, bad
    assert "clean_correct: recorded" in bad[0].message


@pytest.mark.parametrize("field", ["shipped", "sha256"])
def test_a_card_pointing_elsewhere_is_refused(tmp_path: Path, field: str) -> None:
    subs = tmp_path / "submissions"
    shutil.copytree(SUBS / "mini-tecoa", subs / "mini-tecoa")
    card = subs / "mini-tecoa" / "card.yaml"
    text = card.read_text()
    if field == "shipped":
        text = text.replace("shipped: miniature/tecoa.safetensors", "shipped: miniature/nope.safetensors")
    else:
        line = next(x for x in text.splitlines() if x.strip().startswith("sha256:"))
        text = text.replace(line, "  sha256: " + "0" * 64)
    card.write_text(text)
    found = [p.field for p in errors(validate_submissions(subs))]
    assert f"checkpoint.{field}" in found, found

"""Fuzz the submission validator with generated inputs: entry ids, card paths (with a symlink out
of the tree), generated cards full of hostile text and types, and raw card bytes. Validation must
always end in a list of problems (never an exception), an accepted id or path must stay inside the
tree, no YAML tag may run, and an accepted card must come out of every generated page neutralised."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest
import yaml
from fuzzing import Tally, run_bounded
from hypothesis import given
from hypothesis import strategies as st
from reliability_craft import (
    BASE_CARD,
    make_entry,
    one_torch_thread,  # noqa: F401 - autouse fixture
)
from test_reliability_submissions import html_problems

from zsrobust_bench.errors import SubmissionError
from zsrobust_bench.leaderboard.build import render_leaderboard
from zsrobust_bench.leaderboard.paths import ID_PATTERN, check_entry_id, confined
from zsrobust_bench.leaderboard.problems import errors
from zsrobust_bench.leaderboard.validate import validate_submissions

ID_ALPHABET = st.sampled_from(list("abcz019._-/\\ .~:$<>\"'\x00\n\tAZé…\u202e"))
SEGMENTS = st.sampled_from(["..", ".", "a", "b.txt", "out", "", "/", "\\", "x\x00", "C:", "~", "%2e%2e", "é"])


def _ids_target(tmp: Path, tally: Tally):
    root = tmp / "subs"
    root.mkdir(exist_ok=True)

    @given(
        st.one_of(
            st.text(ID_ALPHABET, max_size=70), st.text(max_size=20), st.sampled_from(["..", "../x", "a" * 65])
        )
    )
    def fuzz(entry_id: str) -> None:
        try:
            check_entry_id(entry_id)
        except SubmissionError:
            tally.add("refused")
            return
        assert re.match(ID_PATTERN, entry_id) and len(entry_id) <= 64
        assert (root / entry_id).resolve().parent == root.resolve()
        tally.add("accepted")

    return fuzz


def _paths_target(tmp: Path, tally: Tally):
    root = tmp / "entry"
    (root / "a").mkdir(parents=True, exist_ok=True)
    if not (root / "out").is_symlink():
        os.symlink(tmp, root / "out")  # a symlink inside the entry that leaves it

    @given(st.lists(SEGMENTS, min_size=1, max_size=6).map("/".join))
    def fuzz(rel: str) -> None:
        try:
            target = confined(root, rel)
        except SubmissionError:
            tally.add("refused")
            return
        assert target.resolve().is_relative_to(root.resolve()), f"{rel!r} escaped to {target.resolve()}"
        tally.add("accepted")

    return fuzz


HOSTILE_STRINGS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    '=HYPERLINK("http://evil")',
    "[x](javascript:alert(1))",
    "</td></tr></table><script>alert(2)</script>",
    "{{7*7}} ${7*7}",
    "\u202eRTL\u0000nul",
    "a | b | c",
    "../../etc/passwd",
]
TAGS = [
    "!!python/object/apply:os.system ['touch {m}']",
    "!!python/name:os.system",
    "&anchor [1, 2]",
    "*alias",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
]
FIELDS = [
    "name",
    "authors",
    "venue",
    "architecture",
    "base_weights",
    "training_data",
    "license",
    "footnote",
    "code",
    "paper",
    "threat_model",
    "checkpoint",
    "id",
    "schema",
    "extra",
]


def _values(marker: str):
    text = st.one_of(
        st.sampled_from(HOSTILE_STRINGS), st.text(max_size=40), st.text(min_size=190, max_size=260)
    )
    scalar = st.one_of(text, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())
    return st.recursive(
        scalar,
        lambda ch: st.one_of(
            st.lists(ch, max_size=4),
            st.dictionaries(
                st.sampled_from(["title", "url", "norm", "eps", "location", "sha256", "path"]), ch, max_size=4
            ),
        ),
        max_leaves=8,
    )


TEXT_LIMITS = {
    "name": 200,
    "venue": 100,
    "architecture": 100,
    "base_weights": 200,
    "training_data": 300,
    "license": 100,
    "footnote": 2000,
}
URL_TAIL = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs"), blacklist_characters="<>\"'`"), max_size=30
)


def _typed_changes():
    """Well-typed cards whose free text is hostile: these pass validation and reach every page."""
    piece = st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(min_size=1, max_size=30))
    text = st.lists(piece, min_size=1, max_size=3).map("".join).filter(lambda t: t.strip() != "")
    fields = {k: text.map(lambda t, n=n: t[:n]) for k, n in TEXT_LIMITS.items()}
    fields["authors"] = st.lists(text.map(lambda t: t[:200]), min_size=1, max_size=3)
    fields["paper"] = st.fixed_dictionaries(
        {"title": text.map(lambda t: t[:300]), "url": URL_TAIL.map("https://e.org/".__add__)}
    )
    return st.fixed_dictionaries({}, optional=fields)


def _card_text(changes: dict, tags: list[tuple[str, str]], marker: str) -> str:
    card = copy.deepcopy(BASE_CARD)
    card.update(changes)
    text = yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
    for field, tag in tags:
        text += f"{field}: {tag.replace('{m}', marker)}\n"
    return text


def _check_tree(root: Path, tmp: Path, tally: Tally, marker: Path) -> None:
    problems = errors(validate_submissions(root))  # must never raise
    assert not marker.exists(), "a YAML tag executed code"
    if problems:
        tally.add("refused")
        return
    files = render_leaderboard(root, tmp / "out")
    html = files["index.html"].decode()
    assert html_problems(html) == [], html_problems(html)
    for name, data in files.items():
        if name.endswith(".md"):
            assert "<script" not in data.decode().lower(), name
        if name.endswith(".csv"):
            for line in data.decode().splitlines()[1:]:
                assert not re.search(r'(^|,)"?[=+@]', line), f"formula cell in {line!r}"
    tally.add("accepted and built")


def _cards_target(tmp: Path, tally: Tally, marker: Path):
    tags = st.lists(
        st.tuples(st.sampled_from(["footnote", "license", "x"]), st.sampled_from(TAGS)), max_size=2
    )
    wild = st.dictionaries(st.sampled_from(FIELDS), _values(str(marker)), max_size=4)

    @given(case=st.one_of(st.tuples(_typed_changes(), st.just([])), st.tuples(wild, tags)))
    def fuzz(case: tuple[dict, list[tuple[str, str]]]) -> None:
        root = tmp / "cards"
        make_entry(root, "entry-a", _card_text(case[0], case[1], str(marker)))
        _check_tree(root, tmp, tally, marker)

    return fuzz


def _raw_target(tmp: Path, tally: Tally, marker: Path):
    base = yaml.safe_dump(BASE_CARD, sort_keys=False).encode()

    @given(
        st.one_of(
            st.binary(max_size=600),
            st.binary(max_size=64).map(lambda b: base + b),
            st.tuples(st.integers(0, len(base)), st.binary(max_size=16)).map(lambda t: base[: t[0]] + t[1]),
        )
    )
    def fuzz(raw: bytes) -> None:
        root = tmp / "raw"
        make_entry(root, "entry-a", raw)
        _check_tree(root, tmp, tally, marker)

    return fuzz


TARGETS = {
    "submission entry ids": lambda tmp, tally, marker: _ids_target(tmp, tally),
    "submission card paths": lambda tmp, tally, marker: _paths_target(tmp, tally),
    "submission cards": _cards_target,
    "submission raw card bytes": _raw_target,
}


def _run(name: str, tmp_path: Path, say, slow: bool) -> None:
    marker = tmp_path / "PWNED"
    tally = Tally(name, markers=(marker,))
    run_bounded(lambda: TARGETS[name](tmp_path, tally, marker), tally, slow, say)
    assert not marker.exists()
    assert tally.cases > 0


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_submissions(name, tmp_path, say):
    _run(name, tmp_path, say, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_submissions_slow(name, tmp_path, say):
    _run(name, tmp_path, say, slow=True)

"""Untrusted submissions: entry ids and card paths stay inside the submissions tree, YAML and JSON
are parsed safely (no code, no bombs), every field is type- and length-checked, and text that
reaches the HTML, Markdown and CSV outputs is neutralised."""

from __future__ import annotations

import copy
import json
import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from reliability_craft import BASE_CARD, REPORTED, make_entry, one_torch_thread  # noqa: F401 - autouse fixture

from zsrobust_bench.errors import SubmissionError
from zsrobust_bench.leaderboard.build import render_leaderboard
from zsrobust_bench.leaderboard.paths import check_entry_id, confined
from zsrobust_bench.leaderboard.problems import errors
from zsrobust_bench.leaderboard.validate import validate_submissions

HOSTILE_IDS = [
    "../evil",
    "..",
    ".",
    "a/../../b",
    "/etc",
    "a/b",
    "a\\b",
    "evil\x00",
    "<script>alert(1)</script>",
    "",
    "x" * 65,
    "A-Upper",
    "-lead",
    "trail-",
    "a..b",
    ".hidden",
    "ünï",
    "a b",
    "a\nb",
    "~root",
    "$(touch x)",
]


def _tree(tmp_path: Path, card: dict | str | bytes, entry_id: str = "entry-a") -> Path:
    root = tmp_path / "submissions"
    make_entry(root, entry_id, card)
    return root


def _errors(root: Path) -> list[str]:
    return [str(p) for p in errors(validate_submissions(root))]


def _card(**changes: object) -> dict:
    card = copy.deepcopy(BASE_CARD)
    card.update(changes)
    return card


def _outside_files(tmp_path: Path) -> set[str]:
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "submissions" not in p.parts}


# ---------------------------------------------------------------- ids and paths


@pytest.mark.parametrize("entry_id", HOSTILE_IDS)
def test_hostile_entry_ids_are_refused(entry_id):
    with pytest.raises(SubmissionError, match="invalid entry id"):
        check_entry_id(entry_id)


def test_hostile_folder_names_are_problems_not_entries(tmp_path):
    root = tmp_path / "submissions"
    for bad in ("A-Upper", "a..b", "evil name", "<script>"):
        make_entry(root, bad, _card(id="entry-a"))
    found = _errors(root)
    assert len([e for e in found if "invalid entry id" in e]) == 4


@pytest.fixture(scope="module")
def clean_run(tiny_model, tiny_cfg_path, tmp_path_factory) -> Path:
    """A rankable evaluation run (protocol `clean`, synth-color) to submit."""
    import torch

    from zsrobust_bench.evaluate import evaluate

    d = tmp_path_factory.mktemp("clean-run")
    torch.save(tiny_model.state_dict(), d / "tiny.pt")
    evaluate(
        str(d / "tiny.pt"),
        ["synth-color"],
        protocol="clean",
        out=d / "run",
        arch=str(tiny_cfg_path),
        progress=False,
        batch_size=500,
        shard_size=2000,
        cache_dir=d / "cache",
    )
    return d / "run"


def test_submit_refuses_traversal_ids_and_symlinked_folders(clean_run, tmp_path):
    from zsrobust_bench.leaderboard.submit import submit

    subs = tmp_path / "submissions"
    subs.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    before = _outside_files(tmp_path)
    for entry_id in ("../escape", "a/../../escape", "<script>alert(1)</script>", "..", "/tmp/x"):
        with pytest.raises(SubmissionError, match="invalid entry id"):
            submit(clean_run, entry_id, subs)
    (subs / "victim").mkdir()
    os.symlink(outside, subs / "victim" / "results")  # a folder inside the entry that points out
    with pytest.raises(SubmissionError, match="symlinks"):
        submit(clean_run, "victim", subs)
    os.symlink(outside, subs / "linked")  # the entry folder itself points out
    with pytest.raises(SubmissionError, match="not a plain folder"):
        submit(clean_run, "linked", subs)
    assert _outside_files(tmp_path) == before, "submit wrote outside the submissions tree"
    assert not list(outside.iterdir())
    report = submit(clean_run, "tiny-ok", subs)  # and the honest case works
    assert all(p.resolve().is_relative_to(subs.resolve()) for p in report.written)


def test_symlinks_in_entries_are_refused_and_not_followed(tmp_path):
    root = _tree(tmp_path, BASE_CARD)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    entry = root / "entry-b"
    (entry / "results").mkdir(parents=True)
    os.symlink(secret, entry / "card.yaml")
    os.symlink(tmp_path, root / "entry-c")
    found = "\n".join(_errors(root))
    assert "symlink" in found and "entry-c" in found and "entry-b" in found
    assert "TOP-SECRET" not in found


@pytest.mark.parametrize(
    "path", ["../../secret.txt", "/etc/passwd", "ok/../../../x", "a\\..\\b", "x\x00y", "link/secret.txt"]
)
def test_checkpoint_paths_in_cards_are_confined(tmp_path, path):
    root = _tree(tmp_path, _card(checkpoint={"location": "https://e.org/c", "sha256": None, "path": path}))
    os.symlink(tmp_path, root / "entry-a" / "link")
    (tmp_path / "secret.txt").write_text("x")
    assert _errors(root), f"checkpoint.path {path!r} was accepted"


def test_confined_refuses_every_escape(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path, root / "out")
    for rel in ("../x", "/etc", "out/x", "a/../../x", "", "a\\b", "\x00"):
        with pytest.raises(SubmissionError):
            confined(root, rel)
    assert confined(root, "a/b.txt") == root / "a/b.txt"


# ---------------------------------------------------------------- YAML and JSON parsing


@pytest.mark.parametrize(
    "payload",
    [
        '!!python/object/apply:os.system ["touch {m}"]',
        "!!python/object/apply:subprocess.call [[touch, {m}]]",
        '!!python/object/new:os.system ["touch {m}"]',
        "!!python/name:os.system",
        "!!python/object/apply:builtins.exec [\"open('{m}', 'w')\"]",
    ],
)
def test_yaml_code_tags_never_run(tmp_path, payload):
    marker = tmp_path / "PWNED"
    text = json.dumps(BASE_CARD).replace('"footnote": null', f'"footnote": {payload.format(m=marker)}')
    for card in (text, payload.format(m=marker)):
        root = _tree(tmp_path, card)
        assert any("not valid YAML" in e for e in _errors(root))
    assert not marker.exists()


def test_yaml_bombs_are_refused(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    cases = {
        "billion laughs": laughs,
        "deep nesting": "[" * 20_000 + "]" * 20_000,
        "deep mapping": "a: " + "{b: " * 5_000 + "1" + "}" * 5_000,
        "oversized": "name: " + "x" * 70_000,
        "not utf-8": b"\xff\xfename: x",
    }
    for name, text in cases.items():
        assert _errors(_tree(tmp_path / name.replace(" ", "-"), text)), name


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"a": NaN}',
        b'{"schema": "zsbench.reported/1", "schema": "x"}',
        b"\xff\xfe",
        b"",
    ],
    ids=["deep-array", "deep-object", "nan", "duplicate-key", "not-utf8", "empty"],
)
def test_hostile_results_json_is_a_problem_not_a_crash(tmp_path, raw):
    root = _tree(tmp_path, BASE_CARD)
    (root / "entry-a" / "results" / "tecoa-readme.json").write_bytes(raw)
    assert any("tecoa-readme.json" in e for e in _errors(root))


# ---------------------------------------------------------------- field types and lengths


@pytest.mark.parametrize(
    "change",
    [
        {"name": 5},
        {"name": "x" * 201},
        {"name": ""},
        {"authors": "Ada"},
        {"authors": ["x" * 201]},
        {"authors": ["a"] * 101},
        {"paper": {"title": "t", "url": "javascript:alert(1)"}},
        {"paper": {"title": "t", "url": 'https://e.org/"onmouseover=alert(1)'}},
        {"code": "file:///etc/passwd"},
        {"id": "../../etc"},
        {"id": "other-id"},
        {"footnote": "x" * 2001},
        {"unknown_field": 1},
        {"threat_model": {"norm": "Linf", "eps": "<b>1</b>"}},
        {"checkpoint": {"location": None, "sha256": "zz"}},
        {"schema": "zsbench.card/999"},
        {"venue": ["ICLR"]},
        {"license": {"a": 1}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_field_is_type_and_length_checked(tmp_path, change):
    assert _errors(_tree(tmp_path, _card(**change))), f"{change} was accepted"


# ---------------------------------------------------------------- neutralised output


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _own_meta(tag: str, attrs: list[tuple[str, str | None]]) -> bool:
    """The page's own <meta> tags (charset, CSP, viewport)."""
    names = {k for k, _ in attrs}
    return tag == "meta" and bool(names & {"charset", "http-equiv", "name"})


def html_problems(html: str) -> list[str]:
    """Injected markup in a generated page: extra script tags, event handlers, script URLs."""
    parser = _Tags()
    parser.feed(html)
    out = []
    scripts = [t for t, _ in parser.tags if t == "script"]
    if len(scripts) != 1:
        out.append(f"{len(scripts)} <script> tags (the page has exactly one, its own)")
    for tag, attrs in parser.tags:
        for name, value in attrs:
            if name.startswith("on"):
                out.append(f"event handler {name} on <{tag}>")
            scheme = urlsplit("".join(ch for ch in (value or "") if ch > " ")).scheme.lower()
            if name in ("href", "src", "action", "formaction") and scheme not in (
                "",
                "http",
                "https",
                "data",
            ):
                out.append(f"{name}={value!r} on <{tag}>")
        if tag in ("iframe", "object", "embed", "img", "base", "meta") and not _own_meta(tag, attrs):
            out.append(f"unexpected <{tag}>")
    return out


SCRIPT_NAME = "<script>alert(1)</script>"
HOSTILE_TEXT = {
    "name": SCRIPT_NAME,
    "venue": '"><img src=x onerror=alert(1)>',
    "architecture": "</td><script>alert(2)</script>",
    "training_data": "[x](javascript:alert(3)) | col",
    "footnote": '<svg onload=alert(4)> =HYPERLINK("http://x")',
    "authors": ["=cmd|' /C calc'!A0", "<b onmouseover=alert(5)>"],
}


def test_script_entry_name_is_neutralised_everywhere(tmp_path):
    root = _tree(tmp_path, _card(**HOSTILE_TEXT))
    assert not _errors(root), "hostile but well-typed text is valid card content"
    files = render_leaderboard(root, tmp_path / "out")
    html = files["index.html"].decode()
    assert html_problems(html) == []
    assert SCRIPT_NAME not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for name, data in files.items():
        if name.endswith((".html", ".md")):
            assert "<script>alert" not in data.decode(), name
    csv_text = files["tecoa-readme.csv"].decode()
    for line in csv_text.splitlines()[1:]:
        for cell in line.split(","):
            assert not cell.strip('"').startswith(("=", "+", "@")), f"formula cell {cell!r}"
    md = files["tecoa-readme.md"].decode()
    assert "<script>" not in md and "](javascript:" not in md


def test_reported_results_text_is_neutralised_too(tmp_path):
    root = tmp_path / "submissions"
    doc = copy.deepcopy(REPORTED)
    doc["citation"]["text"] = SCRIPT_NAME
    doc["citation"]["where"] = '"><img src=x onerror=alert(1)>'
    make_entry(root, "entry-a", BASE_CARD, doc)
    if _errors(root):
        return  # refused outright is fine too
    html = render_leaderboard(root, tmp_path / "out")["index.html"].decode()
    assert html_problems(html) == [] and SCRIPT_NAME not in html

"""`zsbench submit` / `zsbench leaderboard {validate,build}` run through `main`: exit codes, messages, files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from leaderboard_support import REPO, load_json, make_run, register_test_protocols

from zsrobust_bench.cli import main


@pytest.fixture
def submitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A submissions tree with one entry, model-a, filed by `zsbench submit` from a fabricated run."""
    register_test_protocols(monkeypatch)
    subs = tmp_path / "submissions"
    run = make_run(tmp_path)
    assert main(["submit", str(run), "--id", "model-a", "--submissions", str(subs)]) == 0
    out = capsys.readouterr().out.splitlines()
    entry = subs / "model-a"
    written = [Path(line.removeprefix("wrote ")) for line in out if line.startswith("wrote ")]
    assert sorted(written) == sorted(p for p in entry.rglob("*") if p.is_file())
    assert {p.relative_to(entry).as_posix() for p in written} == {
        "card.yaml",
        "results/stub-pgd.json",
        "digest/stub-pgd.json.gz",
    }
    assert f"created {entry / 'card.yaml'}: fill in name, authors, paper, venue, licence" in out
    assert (
        load_json(entry / "results" / "stub-pgd.json")["datasets"]
        == load_json(run / "results.json")["datasets"]
    )
    return subs


def test_validate_committed_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", "validate", str(REPO / "submissions")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{REPO / 'submissions'}: OK"


def test_submit_again_keeps_the_card(
    submitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = submitted / "model-a" / "card.yaml"
    card.write_text(card.read_text() + "# my note\n")
    run = tmp_path / "run"
    assert main(["submit", str(run), "--id", "model-a", "--submissions", str(submitted)]) == 0
    assert "created" not in capsys.readouterr().out
    assert card.read_text().endswith("# my note\n")


def test_build_writes_what_it_prints_and_check_agrees(
    submitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "lb"
    assert main(["leaderboard", "build", "--submissions", str(submitted), "--out", str(out)]) == 0
    printed = sorted(Path(line) for line in capsys.readouterr().out.splitlines())
    assert printed == sorted(p for p in out.iterdir() if p.is_file())
    assert {"index.html", "README.md", "stub-pgd.md", "stub-pgd.csv"} <= {p.name for p in printed}
    assert "model-a" in (out / "stub-pgd.csv").read_text()

    check = ["leaderboard", "build", "--submissions", str(submitted), "--out", str(out), "--check"]
    assert main(check) == 0
    assert capsys.readouterr() == ("", "")
    (out / "stub-pgd.md").write_text("stale")
    (out / "index.html").unlink()
    assert main(check) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"out of date: {out / 'index.html'}",
        f"out of date: {out / 'stub-pgd.md'}",
        "run `zsbench leaderboard build` and commit the result",
    ]
    assert (out / "stub-pgd.md").read_text() == "stale"  # --check writes nothing


def test_validate_reports_a_duplicate_id(
    submitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(submitted / "model-a", submitted / "model-b")
    assert main(["leaderboard", "validate", str(submitted), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)
    dup = [p for p in problems if p["file"].endswith("model-b/card.yaml") and p["field"] == "id"]
    assert dup and dup[0]["severity"] == "error"

    assert main(["leaderboard", "validate", str(submitted)]) == 1
    captured = capsys.readouterr()
    assert "model-b/card.yaml: id:" in captured.err
    assert captured.err.splitlines()[-1].startswith(f"{submitted}: FAILED, ")

    # build refuses an invalid tree: one error line and exit 2 from the top-level handler, no output folder
    out = tmp_path / "lb"
    assert main(["leaderboard", "build", "--submissions", str(submitted), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zsbench: error: ") and "model-b" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["leaderboard"],
        ["leaderboard", "publish"],
        ["submit", "run"],  # --id is required
        ["leaderboard", "validate", "--recheck", "many"],
    ],
)
def test_bad_arguments_exit_2_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: zsbench ") and "error:" in err


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        (["submit"], ("--id", "--submissions")),
        (
            ["leaderboard", "validate"],
            ("--recheck", "--seed", "--checkpoint", "--data-root", "--device", "--json"),
        ),
        (["leaderboard", "build"], ("--submissions", "--out", "--check")),
    ],
)
def test_each_command_documents_its_own_flags(
    argv: list[str], flags: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: zsbench {' '.join(argv)} ")
    assert all(f"  {flag} " in text for flag in flags)

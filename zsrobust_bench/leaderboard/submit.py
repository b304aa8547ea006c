"""`zsbench submit RUN_DIR --id ID`: create or update a leaderboard entry from an evaluation run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SubmissionError
from ..fileio import atomic_write_bytes, atomic_write_text, sha256_file
from .card import fill_placeholders, new_card_text
from .digest import dataset_digest, encode_digest
from .entries import EVALUATED, REPORTED, ResultsFile, load_card, load_results, parse_card_text
from .paths import (
    CARD_FILE,
    DIGEST_DIR,
    MAX_CARD_BYTES,
    MAX_RESULTS_BYTES,
    RESULTS_DIR,
    check_entry_id,
    id_problem,
    is_inside,
    read_limited,
    run_file,
    symlinks_under,
)
from .problems import Problem, errors
from .validate import evaluated_mean_problems, protocol_problems, validate_submissions


@dataclass
class SubmitReport:
    """What `submit` did: the entry folder, files written, card fields filled, and remaining problems."""

    entry_dir: Path
    written: list[Path] = field(default_factory=list)
    card_created: bool = False
    filled: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _refuse(what: str, problems: list[Problem], hint: str) -> SubmissionError:
    lines = "; ".join(f"{p.field or '(file)'}: {p.message}" for p in problems[:10])
    return SubmissionError(f"{what}: {lines}", hint)


def _read_run(run_dir: Path) -> tuple[bytes, ResultsFile]:
    path = run_dir / "results.json"
    if not path.is_file():
        raise SubmissionError(
            f"{path} not found", "pass the --out folder of a finished `zsbench evaluate` run"
        )
    rf, problems = load_results(path)
    if rf is None or rf.kind != EVALUATED:
        found = problems or [Problem(str(path), "schema", "is a reported-numbers file, not a run")]
        raise _refuse(f"{path} is not a valid evaluation result", found, "re-run `zsbench evaluate`")
    name = rf.doc["protocol"]["name"]
    if id_problem(name):
        raise SubmissionError(f"{path}: protocol name {name!r} cannot be used as a file name")
    rf.protocol = name
    _, problems = protocol_problems(rf)
    problems = errors(problems + evaluated_mean_problems(rf))
    if problems:
        raise _refuse(f"{path} cannot be ranked", problems, "evaluate a named protocol without overrides")
    return read_limited(path, MAX_RESULTS_BYTES), rf


def _digests(run_dir: Path, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, ds in doc["datasets"].items():
        path = run_file(run_dir, ds.get("samples_file") or f"samples/{name}.jsonl")
        if not path.is_file():
            raise SubmissionError(f"per-sample records {path} not found", "submit the complete run folder")
        if ds.get("samples_sha256") and sha256_file(path) != ds["samples_sha256"]:
            raise SubmissionError(
                f"{path} does not match samples_sha256 in results.json", "the run folder was modified"
            )
        out[name] = dataset_digest(path)
    return out


def _entry_dir(submissions_dir: Path, entry_id: str) -> Path:
    check_entry_id(entry_id)
    submissions_dir.mkdir(parents=True, exist_ok=True)
    entry_dir = submissions_dir / entry_id
    if entry_dir.is_symlink() or (entry_dir.exists() and not entry_dir.is_dir()):
        raise SubmissionError(f"{entry_dir} is not a plain folder", "symlinks are not allowed in submissions")
    if not is_inside(entry_dir, submissions_dir):
        raise SubmissionError(f"{entry_dir} leaves {submissions_dir}")
    if entry_dir.is_dir() and symlinks_under(entry_dir):
        raise SubmissionError(f"{entry_dir} contains symlinks", "symlinks are not allowed in submissions")
    return entry_dir


def _card(
    entry_dir: Path, entry_id: str, doc: dict[str, Any], report: SubmitReport
) -> tuple[Path, str] | None:
    """(path, new text) when the card must be written; never changes a field someone wrote."""
    path = entry_dir / CARD_FILE
    if not path.exists() and not path.is_symlink():
        report.card_created = True
        return path, new_card_text(entry_id, doc)
    card, _ = load_card(path)
    if card is None:
        return None  # unreadable card: leave it for the author; validate names the problem
    text = read_limited(path, MAX_CARD_BYTES).decode("utf-8")
    new_text, report.filled = fill_placeholders(text, card, doc)
    if parse_card_text(new_text) == card:
        return None
    return path, new_text


def submit(run_dir: str | Path, entry_id: str, submissions_dir: str | Path = "submissions") -> SubmitReport:
    """Copy a run's results.json and a digest of its per-sample records into submissions/<id>/."""
    run_dir, submissions_dir = Path(run_dir), Path(submissions_dir)
    entry_dir = _entry_dir(submissions_dir, entry_id)
    raw, rf = _read_run(run_dir)
    digests = _digests(run_dir, rf.doc)
    results_path = entry_dir / RESULTS_DIR / f"{rf.protocol}.json"
    if results_path.exists():
        old, _ = load_results(results_path)
        if old is not None and old.kind == REPORTED:
            raise SubmissionError(
                f"{results_path} holds reported numbers", "submit the run under another entry id"
            )
    report = SubmitReport(entry_dir=entry_dir)
    card = _card(entry_dir, entry_id, rf.doc, report)
    digest_path = entry_dir / DIGEST_DIR / f"{rf.protocol}.json.gz"
    atomic_write_bytes(digest_path, encode_digest(rf.protocol, digests))
    atomic_write_bytes(results_path, raw)
    report.written += [digest_path, results_path]
    if card is not None:
        atomic_write_text(card[0], card[1])
        report.written.append(card[0])
    report.problems = validate_submissions(entry_dir)
    return report


def submit_run(run_dir: str | Path, entry_id: str, submissions_dir: str | Path = "submissions") -> Path:
    """Create or update submissions/<entry_id>/ from an evaluation run; returns the entry folder."""
    return submit(run_dir, entry_id, submissions_dir).entry_dir

"""Keep every entry id and path inside the submissions tree, and read files with size limits."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import SubmissionError

ID_PATTERN = r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$"
ID_MAX_LEN = 64
NAME_PATTERN = ID_PATTERN  # protocol names used as file names follow the same rule
CARD_FILE = "card.yaml"
RESULTS_DIR = "results"
DIGEST_DIR = "digest"
MAX_CARD_BYTES = 64 * 1024
MAX_RESULTS_BYTES = 16 * 1024 * 1024
MAX_DIGEST_BYTES = 256 * 1024 * 1024  # decompressed

_ID_RE = re.compile(ID_PATTERN)


def id_problem(entry_id: object) -> str | None:
    """Why `entry_id` is not a safe entry id, or None when it is."""
    if not isinstance(entry_id, str):
        return f"must be a string, got {type(entry_id).__name__}"
    if not entry_id or len(entry_id) > ID_MAX_LEN:
        return f"must be 1 to {ID_MAX_LEN} characters"
    if not _ID_RE.match(entry_id):
        return (
            f"{entry_id!r} is not allowed: use lowercase letters, digits and single '.', '-' or '_' "
            "between them (no '/', no '..', no leading or trailing punctuation)"
        )
    return None


def check_entry_id(entry_id: str) -> str:
    """Return `entry_id` when it is safe as a folder name, else raise SubmissionError."""
    why = id_problem(entry_id)
    if why:
        raise SubmissionError(f"invalid entry id: {why}", "choose an id like 'tecoa-vitb32-eps1'")
    return entry_id


def normalized_id(entry_id: str) -> str:
    """Form used to detect ids that differ only in case or punctuation."""
    return re.sub(r"[._-]+", "-", entry_id.lower())


def relative_path_problem(value: object) -> str | None:
    """Why `value` is not a safe relative path inside an entry, or None when it is."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if "\\" in value or "\x00" in value:
        return "must use '/' separators and no NUL or backslash"
    p = PurePosixPath(value)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", value):
        return "must be relative to the entry folder, not absolute"
    if any(part == ".." for part in p.parts):
        return "must not contain '..'"
    return None


def confined(root: Path, rel: str) -> Path:
    """`root/rel` after checking that it stays inside `root` (symlinks resolved); raises SubmissionError."""
    why = relative_path_problem(rel)
    if why:
        raise SubmissionError(f"path {rel!r} {why}", "use a path relative to the entry folder")
    target = root / rel
    if not is_inside(target, root):
        raise SubmissionError(
            f"path {rel!r} leaves {root}", "symlinks out of the submissions tree are refused"
        )
    return target


def is_inside(path: Path, root: Path) -> bool:
    """True when `path`, with symlinks resolved, lies inside `root` (also resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def symlinks_under(directory: Path) -> list[Path]:
    """Every symlink at or below `directory` (not followed)."""
    found = [directory] if directory.is_symlink() else []
    if found:
        return found
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            if p.is_symlink():
                found.append(p)
    return found


def read_limited(path: Path, limit: int) -> bytes:
    """Bytes of a regular file (not a symlink) of at most `limit` bytes; raises SubmissionError."""
    if path.is_symlink():
        raise SubmissionError(f"{path}: symlinks are not allowed in submissions", "replace it with the file")
    if not path.is_file():
        raise SubmissionError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > limit:
        raise SubmissionError(f"{path}: {size} bytes is over the {limit}-byte limit")
    return path.read_bytes()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads_strict_json(data: bytes | str) -> Any:
    """Parse JSON refusing NaN/Infinity and duplicate keys (ValueError on either)."""
    return json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def run_file(run_dir: Path, value: str) -> Path:
    """A file named in a run's results.json: relative to the run folder, or absolute but inside it."""
    p = Path(value)
    if p.is_absolute():
        if not is_inside(p, run_dir):
            raise SubmissionError(
                f"{value} lies outside the run folder {run_dir}", "keep the run's files together"
            )
        return p
    return confined(run_dir, value)

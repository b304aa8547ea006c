"""Compact per-sample digests: columns of the run's per-sample records, gzipped, for later re-checks."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..engine.records import FLAG_FIELDS, RECORD_FIELDS
from ..errors import SubmissionError
from ..fileio import sha256_file
from .paths import MAX_DIGEST_BYTES, loads_strict_json
from .schema import DIGEST_SCHEMA


def _flag(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "1" if value else "0"
    raise ValueError(f"expected true, false or null, got {value!r}")


def flag_value(ch: str) -> bool | None:
    """Inverse of the one-character flag encoding."""
    return None if ch == "-" else ch == "1"


def _eps_flag(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("robust_correct")
    return _flag(value)


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Per-sample records of a `.jsonl` (or `.jsonl.gz`) file, one JSON object per line."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = loads_strict_json(line)
            except ValueError as exc:
                raise SubmissionError(f"{path}:{lineno}: not a JSON record ({exc})") from exc
            if not isinstance(rec, dict):
                raise SubmissionError(f"{path}:{lineno}: a record must be a JSON object")
            yield rec


def columns_from_records(records: Iterable[dict[str, Any]], where: str) -> dict[str, Any]:
    """Columnar form of per-sample records, sorted by sample index."""
    rows = list(records)
    seen: set[int] = set()
    for i, rec in enumerate(rows):
        missing = [k for k in RECORD_FIELDS if k not in rec]
        if missing:
            raise SubmissionError(
                f"{where}: record {i} lacks {', '.join(missing)}", "re-run `zsbench evaluate`"
            )
        idx = rec["index"]
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0 or idx in seen:
            raise SubmissionError(f"{where}: record {i} has a bad or repeated index {idx!r}")
        seen.add(idx)
    rows.sort(key=lambda r: r["index"])
    labels = sorted({str(k) for r in rows for k in (r.get("by_eps") or {})})
    try:
        out: dict[str, Any] = {k: [r[k] for r in rows] for k in RECORD_FIELDS if k not in FLAG_FIELDS}
        out.update({k: "".join(_flag(r[k]) for r in rows) for k in FLAG_FIELDS})
        if labels:
            out["by_eps"] = {
                lab: "".join(_eps_flag((r.get("by_eps") or {}).get(lab)) for r in rows) for lab in labels
            }
    except ValueError as exc:
        raise SubmissionError(f"{where}: {exc}", "re-run `zsbench evaluate`") from exc
    out["n"] = len(rows)
    return out


def digest_row(cols: dict[str, Any], pos: int) -> dict[str, Any]:
    """The record at `pos` of a digest's columns (by_eps holds robust_correct only): inverse of the columns."""
    rec = {
        k: (flag_value(cols[k][pos]) if k in FLAG_FIELDS else cols[k][pos])
        for k in RECORD_FIELDS
        if k in cols
    }
    by_eps = cols.get("by_eps") or {}
    if by_eps:
        rec["by_eps"] = {lab: {"robust_correct": flag_value(flags[pos])} for lab, flags in by_eps.items()}
    return rec


def dataset_digest(samples_path: Path) -> dict[str, Any]:
    """Digest of one dataset's per-sample file, with the file's sha256."""
    cols = columns_from_records(iter_records(samples_path), str(samples_path))
    cols["samples_sha256"] = sha256_file(samples_path)
    return cols


def encode_digest(protocol: str, datasets: dict[str, dict[str, Any]]) -> bytes:
    """Deterministic gzip bytes of a digest document (no timestamp in the gzip header)."""
    doc = {"schema": DIGEST_SCHEMA, "protocol": protocol, "datasets": datasets}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    return buf.getvalue()


def decode_digest(path: Path) -> Any:
    """Parse a digest file, refusing more than MAX_DIGEST_BYTES once decompressed."""
    if path.is_symlink() or not path.is_file():
        raise SubmissionError(f"{path}: missing or not a regular file")
    with gzip.open(path, "rb") as fh:
        data = fh.read(MAX_DIGEST_BYTES + 1)
    if len(data) > MAX_DIGEST_BYTES:
        raise SubmissionError(f"{path}: decompresses to more than {MAX_DIGEST_BYTES} bytes")
    return loads_strict_json(data)


def accuracy(flags: str) -> float | None:
    """Percent of samples flagged '1' (null counts as not correct); None when every flag is null."""
    if not flags or set(flags) == {"-"}:
        return None
    return 100.0 * flags.count("1") / len(flags)

"""The per-sample record (one JSON line of samples/*.jsonl), its summaries, shard merging and engine stats.

The engine writes these records; the leaderboard's digest, validate and recheck read them. Every
one of them takes the fields from `SampleRecord` here. Pure Python (no torch, no numpy), so the
leaderboard can import it cheaply.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict, get_args, get_type_hints

from ..errors import DataError
from ..fileio import ordinary_file_mode

# no `from __future__ import annotations` here: TypedDict reads NotRequired from evaluated annotations


class EpsOutcome(TypedDict):
    """A sample's outcome at one epsilon (all None when the protocol has no attack)."""

    robust_correct: bool | None
    broken_by: str | None  # attack name, "smaller-eps", or None (robust or clean-wrong)
    broken_step: int | None  # the iterate that broke it (stepwise attacks only)


class SampleRecord(TypedDict):
    """One evaluated sample: clean result, outcome at the first epsilon, every epsilon when several."""

    index: int
    label: int
    clean_pred: int
    clean_correct: bool
    robust_correct: bool | None
    broken_by: str | None
    broken_step: int | None
    by_eps: NotRequired[dict[str, EpsOutcome]]  # only with more than one epsilon
    nonfinite_logits: NotRequired[bool]  # only when a non-finite logit was seen


def _is_flag(field: str) -> bool:
    hint = get_type_hints(SampleRecord)[field]
    return hint is bool or bool in get_args(hint)


# The fields every record carries, in order, and the flags among them (true, false or null).
RECORD_FIELDS: tuple[str, ...] = tuple(
    k for k in SampleRecord.__annotations__ if k in SampleRecord.__required_keys__
)
FLAG_FIELDS: tuple[str, ...] = tuple(k for k in RECORD_FIELDS if _is_flag(k))
NO_ATTACK = EpsOutcome(robust_correct=None, broken_by=None, broken_step=None)


def sample_record(
    index: int,
    label: int,
    clean_pred: int,
    clean_correct: bool,
    per_eps: Sequence[EpsOutcome],
    eps_labels: Sequence[str],
    nonfinite: bool,
) -> SampleRecord:
    """The record of one sample from its clean result and its outcome at each epsilon of the plan."""
    rec = SampleRecord(
        index=index,
        label=label,
        clean_pred=clean_pred,
        clean_correct=clean_correct,
        **(per_eps[0] if per_eps else NO_ATTACK),
    )
    if len(per_eps) > 1:
        rec["by_eps"] = dict(zip(eps_labels, per_eps, strict=True))
    if nonfinite:
        rec["nonfinite_logits"] = True
    return rec


def verdicts(rec: Mapping[str, Any]) -> dict[str, Any]:
    """What a re-evaluation must reproduce: the clean prediction, clean and robust correctness (per eps)."""
    out = {k: rec.get(k) for k in ("clean_pred", "clean_correct", "robust_correct")}
    for label, outcome in (rec.get("by_eps") or {}).items():
        out[f"by_eps.{label}"] = outcome.get("robust_correct")
    return out


def records_to_jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    """Records as JSON lines (sorted keys, no spaces): the bytes of a shard file."""
    return "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)


class SummaryCounter:
    """Accumulates `summarize`'s numbers one record at a time (constant memory)."""

    def __init__(self, eps_labels: Sequence[str]) -> None:
        self.labels = list(eps_labels)
        self.n = 0
        self.clean = 0
        self.robust = [0] * len(self.labels)
        self.broken_by: dict[str, int] = {}
        self.nonfinite = 0

    def add(self, r: Mapping[str, Any]) -> None:
        self.n += 1
        self.clean += bool(r["clean_correct"])
        for k, lab in enumerate(self.labels):
            self.robust[k] += bool(r["robust_correct"] if k == 0 else r["by_eps"][lab]["robust_correct"])
        if self.labels and r.get("broken_by"):
            self.broken_by[r["broken_by"]] = self.broken_by.get(r["broken_by"], 0) + 1
        self.nonfinite += bool(r.get("nonfinite_logits"))

    def result(self) -> dict[str, Any]:
        if self.n == 0:
            return {"n": 0, "clean_acc": 0.0, "robust_acc": None}
        out: dict[str, Any] = {"n": self.n, "clean_acc": round(100.0 * self.clean / self.n, 4)}
        if not self.labels:
            out["robust_acc"] = None
        else:
            by = {lab: round(100.0 * self.robust[k] / self.n, 4) for k, lab in enumerate(self.labels)}
            out["robust_acc"] = by[self.labels[0]]
            out["robust_acc_by_eps"] = by
            out["broken_by"] = dict(sorted(self.broken_by.items()))
        out["nonfinite_logits"] = self.nonfinite
        return out


def summarize(records: Iterable[Mapping[str, Any]], eps_labels: Sequence[str]) -> dict[str, Any]:
    """Per-dataset numbers (percent) from per-sample records."""
    counter = SummaryCounter(eps_labels)
    for r in records:
        counter.add(r)
    return counter.result()


def merge_shards(
    shard_files: Sequence[Path], dest: Path, indices: Sequence[int], eps_labels: Sequence[str]
) -> tuple[dict[str, Any], str]:
    """Concatenate shard files into `dest` atomically, streaming; returns (summary, sha256 of dest's bytes).

    Fails if the records' indices are not exactly `indices` in order (a stale or foreign shard).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    counter = SummaryCounter(eps_labels)
    digest = hashlib.sha256()
    expected = [int(i) for i in indices]
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for path in shard_files:
                with open(path, "rb") as fh:
                    for line in fh:
                        rec = json.loads(line)
                        if counter.n >= len(expected) or rec["index"] != expected[counter.n]:
                            raise DataError(
                                f"{path}: shard records do not match the evaluated indices",
                                "delete that shard folder and re-run; finished shards are kept",
                            )
                        counter.add(rec)
                        digest.update(line)
                        out.write(line)
            if counter.n != len(expected):
                raise DataError(
                    f"the shards of {dest.stem} hold {counter.n} records, expected {len(expected)}",
                    "delete the incomplete shard folder and re-run; finished shards are kept",
                )
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, ordinary_file_mode())  # like every other output, not mkstemp's owner-only 0600
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return counter.result(), digest.hexdigest()


@dataclass
class EngineStats:
    """What one `evaluate_shards` call did: sizes, work and time (results.json `datasets.<name>.engine`)."""

    batch_size: int
    batch_size_requested: int
    oom_backoffs: int
    shards: int
    samples: int
    attacked: int
    device_steps: int
    row_steps: int
    wall_s: float
    precision: str
    compiled: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

"""`validate --recheck N`: re-evaluate N random samples of an entry and compare with its digest."""

from __future__ import annotations

import random
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine.records import verdicts
from ..errors import DataError, SubmissionError, ZSBenchError
from ..fileio import sha256_file
from .digest import columns_from_records, decode_digest, digest_row, iter_records
from .entries import EVALUATED, Entry, ResultsFile
from .paths import DIGEST_DIR, run_file
from .problems import Problem
from .recheck_inputs import card_checkpoint, recheck_dataset, recheck_model_args, recheck_spec

Evaluate = Callable[..., dict[str, Any]]


def _default_evaluate() -> Evaluate:
    from ..evaluate import evaluate

    return evaluate


def _model_spec(entry: Entry, rf: ResultsFile, checkpoint: Path | None) -> tuple[str | None, str]:
    """(model spec to evaluate or None, why not) from --checkpoint, the card's checkpoint (`path` in the
    entry or `shipped` in the package) or the run's spec."""
    if checkpoint is not None:
        return (
            (str(checkpoint), "")
            if checkpoint.is_file()
            else (None, f"--checkpoint {checkpoint} is not a file")
        )
    try:
        named = card_checkpoint(entry)
    except SubmissionError as exc:
        return None, exc.message
    if named is not None:
        return str(named[1]), ""
    spec = str(rf.doc["model"]["spec"])
    usable = recheck_spec(entry.dir, spec)
    if usable is not None:
        return usable, ""
    return None, f"checkpoint {spec} is not present in the entry; pass --checkpoint FILE"


def _arch(model: dict[str, Any], arch: str | None) -> str | None:
    """The --arch to rebuild the run's model with (`arch`, already confined and gated): none for a
    self-describing (zsbench-format) checkpoint, which evaluate built from the config it embeds (its
    recorded name is registered only in that process)."""
    return None if model.get("format") == "zsbench" else arch


def _pick(
    digests: dict[str, dict[str, Any]], n: int, seed: int, entry_id: str
) -> dict[tuple[str, str], list[int]]:
    """Positions (into the digest columns) of `n` random samples, grouped by (protocol, dataset)."""
    pool = [
        (p, d, i)
        for p, dg in sorted(digests.items())
        for d, cols in sorted(dg["datasets"].items())
        for i in range(cols["n"])
    ]
    rng = random.Random(f"zsbench-recheck:{seed}:{entry_id}")
    chosen: dict[tuple[str, str], list[int]] = {}
    for p, d, i in sorted(rng.sample(pool, min(n, len(pool)))):
        chosen.setdefault((p, d), []).append(i)
    return chosen


def _compare_one(
    rf: ResultsFile,
    dfile: str,
    dataset: str,
    dg: dict[str, Any],
    positions: list[int],
    out: Path,
    result: dict[str, Any],
) -> list[Problem]:
    rel = (result.get("datasets", {}).get(dataset) or {}).get("samples_file") or f"samples/{dataset}.jsonl"
    fresh = {rec.get("index"): rec for rec in iter_records(run_file(out, rel))}
    problems = []
    for pos in positions:
        index = dg["index"][pos]
        field = f"datasets.{dataset}.index={index}"
        if index not in fresh:
            problems.append(Problem(dfile, field, "the re-evaluation produced no record for this sample"))
            continue
        # both sides through the digest's columns, so the fresh record is read as the recorded one was
        want = verdicts(digest_row(dg, pos))
        got = verdicts(digest_row(columns_from_records([fresh[index]], "re-evaluated record"), 0))
        diffs = [f"{k}: recorded {want[k]}, re-evaluated {got.get(k)}" for k in want if got.get(k) != want[k]]
        if diffs:
            problems.append(Problem(dfile, field, "; ".join(diffs)))
    return problems


def recheck_entry(
    entry: Entry,
    n: int,
    *,
    seed: int = 0,
    checkpoint: Path | None = None,
    data_root: Path | None = None,
    device: str = "cpu",
    evaluate: Evaluate | None = None,
) -> list[Problem]:
    """Re-evaluate `n` random recorded samples of the entry's evaluated results; mismatches are errors."""
    evaluated = {rf.protocol: rf for rf in entry.results if rf.kind == EVALUATED}
    if not evaluated or n <= 0:
        return []
    digests: dict[str, dict[str, Any]] = {}
    for proto in evaluated:
        try:
            digests[proto] = decode_digest(entry.dir / DIGEST_DIR / f"{proto}.json.gz")
        except (SubmissionError, OSError, EOFError, zlib.error, ValueError, RecursionError):
            continue  # validate reports unreadable digests
    if evaluate is None:
        try:
            evaluate = _default_evaluate()
        except ImportError as exc:
            return [
                Problem(
                    entry.card_file, "", f"cannot recheck: zsrobust_bench.evaluate is unavailable ({exc})"
                )
            ]
    problems: list[Problem] = []
    checked = 0
    for (proto, dataset), positions in _pick(digests, n, seed, entry.id).items():
        rf, dg = evaluated[proto], digests[proto]["datasets"][dataset]
        dfile = str(entry.dir / DIGEST_DIR / f"{proto}.json.gz")
        spec, why = _model_spec(entry, rf, checkpoint)
        if spec is None:
            problems.append(Problem(rf.file, "model.spec", f"recheck skipped: {why}", "warning"))
            continue
        want_sha = rf.doc["model"].get("sha256")
        if Path(spec).is_file() and want_sha and sha256_file(spec) != want_sha:
            problems.append(
                Problem(rf.file, "model.sha256", f"recheck refused: {spec} does not have this hash")
            )
            continue
        model = rf.doc["model"]
        try:  # files only from inside the entry, datasets only by registered name
            arch, pretrained = recheck_model_args(entry.dir, model)
            recheck_dataset(dataset)
        except ZSBenchError as exc:
            problems.append(Problem(rf.file, "model", f"recheck refused: {exc}"))
            continue
        with tempfile.TemporaryDirectory(prefix="zsbench-recheck-") as tmp:
            out = Path(tmp)
            try:
                result = evaluate(
                    spec,
                    [dataset],
                    protocol=proto,
                    out=out,
                    arch=_arch(model, arch),
                    pretrained=pretrained,
                    data_root=data_root,
                    indices={dataset: sorted(dg["index"][p] for p in positions)},
                    seed=int(rf.doc["protocol"]["params"]["seed"]),
                    device=device,
                    progress=False,
                )
            except DataError as exc:
                problems.append(
                    Problem(
                        dfile, f"datasets.{dataset}", f"recheck skipped, data not present: {exc}", "warning"
                    )
                )
                continue
            except ZSBenchError as exc:
                problems.append(Problem(dfile, f"datasets.{dataset}", f"recheck failed: {exc}"))
                continue
            try:
                problems += _compare_one(rf, dfile, dataset, dg, positions, out, result)
            except SubmissionError as exc:
                problems.append(Problem(dfile, f"datasets.{dataset}", f"recheck failed: {exc}"))
                continue
            checked += len(positions)
    if checked:
        bad = sum(1 for p in problems if p.severity == "error")
        summary = f"rechecked {checked} samples: {'all match' if not bad else f'{bad} differ'}"
        problems.append(Problem(entry.card_file, "", summary, "info"))
    return problems


def recheck_submissions(path: str | Path, n: int, **options: Any) -> list[Problem]:
    """`recheck_entry(entry, n, **options)` for every entry under `path` (a submissions tree or one entry
    folder); `options` are `recheck_entry`'s keywords."""
    from .entries import load_tree
    from .validate import resolve_target

    root, only = resolve_target(Path(path))
    entries, _ = load_tree(root)
    problems: list[Problem] = []
    for entry in entries:
        if only is None or entry.id == only:
            problems += recheck_entry(entry, n, **options)
    return problems

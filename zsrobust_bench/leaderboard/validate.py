"""`zsbench leaderboard validate`: schema, averages, protocol, custom runs, hashes, ids, digests, paths."""

from __future__ import annotations

import unicodedata
import zlib
from pathlib import Path
from typing import Any

from ..engine.records import RECORD_FIELDS
from ..errors import SubmissionError
from ..fileio import sha256_file
from ..protocols import ATTACK_NORMS, Protocol, ProtocolInfo, eps_label, find_protocol, lookup_protocol
from .digest import accuracy, decode_digest
from .entries import EVALUATED, Entry, ResultsFile, load_tree
from .paths import CARD_FILE, DIGEST_DIR, RESULTS_DIR, normalized_id
from .problems import Problem
from .recheck_inputs import arch_file_problems, card_checkpoint
from .schema import DIGEST_SCHEMA, schema_problems
from .scores import scores_from_reported

EVALUATED_TOL = 0.01  # percentage points: two-decimal rounding of both the parts and the mean

# Recorded parameters that choose how an attack runs, not what it computes (protocols.fingerprint drops them).
HOW_NOT_WHAT = frozenset({"attack_backend"})


def _decimals(x: float) -> int:
    text = repr(float(x))
    if "e" in text:
        return 6
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def _reported_tol(stated: float, values: list[float], decimals: int | None = None) -> float:
    """Rounding slack for a published mean of published (rounded) numbers: half a unit of each."""
    d_mean = decimals if decimals is not None else max(_decimals(stated), 1)
    d_in = decimals if decimals is not None else min(max(_decimals(v), 1) for v in values)
    return 0.5 * 10**-d_mean + 0.5 * 10**-d_in + 1e-9


def _check_mean(
    file: str, field: str, stated: Any, values: list[Any], tol: float | None, decimals: int | None = None
) -> list[Problem]:
    """Compare a stated mean with the unweighted mean of `values` (tol None: published-rounding slack)."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return [] if stated is None else [Problem(file, field, f"is {stated} but no dataset has this number")]
    if stated is None:
        return [Problem(file, field, "is missing although the datasets have this number")]
    expected = sum(known) / len(known)
    slack = _reported_tol(stated, known, decimals) if tol is None else tol
    if abs(stated - expected) <= slack:
        return []
    return [
        Problem(
            file,
            field,
            f"is {stated} but the mean of the {len(known)} per-dataset numbers is {expected:.4f} "
            f"(allowed rounding difference {slack:.3f})",
        )
    ]


# ---------------------------------------------------------------- evaluated results


def evaluated_mean_problems(rf: ResultsFile) -> list[Problem]:
    """Means equal the per-dataset numbers; robust_acc agrees with robust_acc_by_eps and stays below clean."""
    ds: dict[str, Any] = rf.doc["datasets"]
    means: dict[str, Any] = rf.doc["means"]
    f = rf.file
    problems = _check_mean(
        f, "means.clean_acc", means.get("clean_acc"), [v.get("clean_acc") for v in ds.values()], EVALUATED_TOL
    )
    problems += _check_mean(
        f,
        "means.robust_acc",
        means.get("robust_acc"),
        [v.get("robust_acc") for v in ds.values()],
        EVALUATED_TOL,
    )
    labels = sorted(
        {k for v in ds.values() for k in (v.get("robust_acc_by_eps") or {})}
        | set(means.get("robust_acc_by_eps") or {})
    )
    for label in labels:
        stated = (means.get("robust_acc_by_eps") or {}).get(label)
        values = [(v.get("robust_acc_by_eps") or {}).get(label) for v in ds.values()]
        problems += _check_mean(f, f"means.robust_acc_by_eps.{label}", stated, values, EVALUATED_TOL)
    eps = rf.doc["protocol"]["params"].get("eps") or []
    first = eps_label(float(eps[0])) if eps else None
    for name, v in ds.items():
        by_eps = v.get("robust_acc_by_eps") or {}
        robust, clean = v.get("robust_acc"), v.get("clean_acc")
        if first in by_eps and robust is not None and abs(by_eps[first] - robust) > EVALUATED_TOL:
            problems.append(
                Problem(
                    f,
                    f"datasets.{name}.robust_acc",
                    f"is {robust} but robust_acc_by_eps.{first} is {by_eps[first]}",
                )
            )
        for label, value in [("", robust), *by_eps.items()]:
            if value is not None and clean is not None and value > clean + EVALUATED_TOL:
                field = f"datasets.{name}.robust_acc" + (f"_by_eps.{label}" if label else "")
                problems.append(
                    Problem(
                        f, field, f"is {value}, above clean accuracy {clean}: impossible for one sample set"
                    )
                )
    return problems


def protocol_problems(rf: ResultsFile) -> tuple[ProtocolInfo | None, list[Problem]]:
    """The protocol is known at its version (the current or a superseded one), and (for runs) neither
    custom nor overridden."""
    proto = rf.doc["protocol"]
    f = rf.file
    problems: list[Problem] = []
    if proto["name"] != rf.protocol:
        problems.append(
            Problem(f, "protocol.name", f"is {proto['name']!r} but the file is named {rf.path.name!r}")
        )
    info = lookup_protocol(proto["name"])
    if info is None:
        return None, [
            *problems,
            Problem(f, "protocol.name", f"unknown protocol {proto['name']!r}: see `zsbench protocols list`"),
        ]
    if info.version != proto["version"]:
        # a superseded registered version stays valid (checked against its own frozen parameters,
        # shown with its version and ranked in its own table); anything else is unknown
        older = (
            lookup_protocol(proto["name"], proto["version"]) if isinstance(proto["version"], int) else None
        )
        if older is None:
            problems.append(
                Problem(
                    f,
                    "protocol.version",
                    f"is {proto['version']} but protocol {info.name!r} is at version {info.version} "
                    "and has no such earlier version",
                )
            )
        else:
            info = older
    if rf.kind == EVALUATED:
        if info.kind != "registered":
            problems.append(
                Problem(
                    f,
                    "protocol.name",
                    f"{info.name!r} is a reported-only protocol; evaluated runs use a registered one",
                )
            )
        if proto.get("custom"):
            problems.append(
                Problem(
                    f,
                    "protocol.custom",
                    "custom runs are not ranked: re-run the named protocol without overrides",
                )
            )
        if info.params is not None and not proto.get("custom"):
            for key in sorted(set(info.params) | set(proto["params"])):
                if key in HOW_NOT_WHAT:
                    continue
                if key in info.params and proto["params"].get(key) != info.params[key]:
                    problems.append(
                        Problem(
                            f, f"protocol.params.{key}", f"differs from frozen {info.name} v{info.version}"
                        )
                    )
        if proto.get("overrides"):
            keys = ", ".join(sorted(proto["overrides"]))
            problems.append(
                Problem(
                    f, "protocol.overrides", f"the protocol was modified ({keys}); such runs are not ranked"
                )
            )
    return info, problems


def _radii_problems(rf: ResultsFile, info: ProtocolInfo) -> list[Problem]:
    """Evaluated runs state robust accuracy only at the protocol's own radii."""
    ds: dict[str, Any] = rf.doc["datasets"]
    places = [("means", rf.doc["means"])] + [(f"datasets.{k}", v) for k, v in ds.items()]
    return [
        Problem(
            rf.file, f"{where}.robust_acc_by_eps.{label}", f"eps {label} is not a radius of {info.name!r}"
        )
        for where, block in places
        for label in sorted(block.get("robust_acc_by_eps") or {})
        if info.eps and label not in info.eps
    ]


def _suite_problems(rf: ResultsFile, info: ProtocolInfo) -> list[Problem]:
    if not info.datasets:
        return []
    have, want = set(rf.doc["datasets"]), set(info.datasets)
    problems = []
    if rf.kind == EVALUATED and want - have:
        problems.append(
            Problem(
                rf.file, "datasets", f"protocol {info.name!r} also needs: {', '.join(sorted(want - have))}"
            )
        )
    if have - want:
        problems.append(
            Problem(
                rf.file,
                "datasets",
                f"not datasets of protocol {info.name!r}: {', '.join(sorted(have - want))}",
            )
        )
    return problems


def _hash_problems(entry: Entry, rf: ResultsFile) -> list[Problem]:
    if entry.card is None:
        return []
    card_sha = (entry.card.get("checkpoint") or {}).get("sha256")
    run_sha = rf.doc["model"].get("sha256")
    if card_sha == run_sha:
        if run_sha is None:
            return [
                Problem(
                    rf.file,
                    "model.sha256",
                    "no checkpoint hash: the numbers cannot be tied to a file",
                    "warning",
                )
            ]
        return []
    return [
        Problem(
            rf.file,
            "model.sha256",
            f"{run_sha} does not match checkpoint.sha256 {card_sha} in {entry.card_file}",
        )
    ]


def _digest_problems(entry: Entry, rf: ResultsFile) -> list[Problem]:
    path = entry.dir / DIGEST_DIR / f"{rf.protocol}.json.gz"
    dfile = str(path)
    try:
        doc = decode_digest(path)
    except SubmissionError as exc:
        return [Problem(dfile, "", f"{exc.message}; create it with `zsbench submit RUN_DIR --id {entry.id}`")]
    except (OSError, EOFError, zlib.error, ValueError, RecursionError) as exc:
        return [Problem(dfile, "", f"is not a gzipped JSON digest: {str(exc)[:200]}")]
    problems = schema_problems(doc, DIGEST_SCHEMA, dfile)
    if problems:
        return problems
    if doc["protocol"] != rf.protocol:
        problems.append(Problem(dfile, "protocol", f"is {doc['protocol']!r}, expected {rf.protocol!r}"))
    results_ds: dict[str, Any] = rf.doc["datasets"]
    for name in sorted(set(results_ds) ^ set(doc["datasets"])):
        where = "results" if name not in results_ds else "digest"
        problems.append(Problem(dfile, f"datasets.{name}", f"dataset is missing from the {where}"))
    for name in sorted(set(results_ds) & set(doc["datasets"])):
        problems += _digest_dataset_problems(rf, dfile, name, results_ds[name], doc["datasets"][name])
    return problems


def _digest_dataset_problems(
    rf: ResultsFile, dfile: str, name: str, res: dict[str, Any], dg: dict[str, Any]
) -> list[Problem]:
    problems = []
    n = dg["n"]
    lengths = {c: len(dg[c]) for c in RECORD_FIELDS} | {
        f"by_eps.{k}": len(v) for k, v in (dg.get("by_eps") or {}).items()
    }
    for col, length in lengths.items():
        if length != n:
            problems.append(Problem(dfile, f"datasets.{name}.{col}", f"has {length} values but n is {n}"))
    if problems:
        return problems
    problems += _selection_problems(rf, dfile, name, res, dg)
    eps = rf.doc["protocol"]["params"].get("eps") or []
    backed = set(dg.get("by_eps") or {}) | ({eps_label(float(eps[0]))} if eps else set())
    problems += [
        Problem(
            rf.file, f"datasets.{name}.robust_acc_by_eps.{label}", "has no per-sample records in the digest"
        )
        for label in sorted(set(res.get("robust_acc_by_eps") or {}) - backed)
    ]
    if res["n"] != n:
        problems.append(
            Problem(rf.file, f"datasets.{name}.n", f"is {res['n']} but the digest has {n} records")
        )
    if res.get("samples_sha256") and res["samples_sha256"] != dg["samples_sha256"]:
        problems.append(
            Problem(dfile, f"datasets.{name}.samples_sha256", "does not match samples_sha256 in the results")
        )
    if res.get("subset_sha256"):
        import numpy as np

        from ..data.subsets import indices_sha256

        if indices_sha256(np.asarray(dg["index"], dtype=np.int64)) != res["subset_sha256"]:
            problems.append(
                Problem(dfile, f"datasets.{name}.index", "the sample indices do not hash to subset_sha256")
            )
    checks = [
        ("clean_acc", res.get("clean_acc"), dg["clean_correct"]),
        ("robust_acc", res.get("robust_acc"), dg["robust_correct"]),
    ]
    for label, flags in (dg.get("by_eps") or {}).items():
        checks.append((f"robust_acc_by_eps.{label}", (res.get("robust_acc_by_eps") or {}).get(label), flags))
    for field, stated, flags in checks:
        recomputed = accuracy(flags)
        if stated is None or recomputed is None:
            if (stated is None) != (recomputed is None):
                problems.append(
                    Problem(
                        rf.file, f"datasets.{name}.{field}", f"is {stated} but the records give {recomputed}"
                    )
                )
            continue
        if abs(stated - recomputed) > EVALUATED_TOL:
            problems.append(
                Problem(
                    rf.file,
                    f"datasets.{name}.{field}",
                    f"is {stated} but the per-sample records give {recomputed:.4f}",
                )
            )
    return problems


def _selection_problems(
    rf: ResultsFile, dfile: str, name: str, res: dict[str, Any], dg: dict[str, Any]
) -> list[Problem]:
    """The evaluated indices are the protocol's own seeded selection (data.subsets.protocol_indices) of the
    dataset's full split, so a cherry-picked subset or a shortened split is refused."""
    import numpy as np

    from ..data.registry import get_dataset
    from ..data.subsets import protocol_indices
    from ..data.userfolder import is_user_folder
    from ..errors import ZSBenchError

    proto = find_protocol(rf.protocol)
    if not isinstance(proto, Protocol) or rf.doc["protocol"].get("custom"):
        return []  # unknown, reported-only or custom protocols are refused by protocol_problems
    field = f"datasets.{name}"
    canonical, size = name, None
    if not is_user_folder(name):
        try:
            spec = get_dataset(name)
        except ZSBenchError as exc:
            return [Problem(rf.file, field, f"is not a registered dataset: {exc.message}")]
        canonical, size = spec.name, spec.size_hint
    n_split = res.get("n_split")
    if not isinstance(n_split, int) or isinstance(n_split, bool) or n_split <= 0:
        return [Problem(rf.file, f"{field}.n_split", f"is {n_split!r}; the split size is required")]
    if size is not None and n_split != size:
        return [
            Problem(rf.file, f"{field}.n_split", f"is {n_split} but the {canonical} test split has {size}")
        ]
    selection = res.get("selection") if isinstance(res.get("selection"), dict) else None
    try:
        expected = protocol_indices(proto, canonical, n_split, selection)
    except ValueError as exc:
        return [Problem(rf.file, f"{field}.selection", str(exc))]
    got = np.asarray(dg["index"], dtype=np.int64)
    if expected is None:  # RobustBench's ImageNet list: only the count can be checked without the files
        wanted = proto.samples_for(canonical)
        n_expected = min(n_split, wanted) if wanted is not None else n_split
        if got.size != n_expected or len(np.unique(got)) != got.size:
            return [
                Problem(dfile, f"{field}.index", f"{got.size} distinct samples evaluated, not {n_expected}")
            ]
        return []
    if not np.array_equal(expected, got):
        method = (selection or {}).get("method", "seeded")
        return [
            Problem(
                dfile,
                f"{field}.index",
                f"the {len(dg['index'])} evaluated samples are not protocol {proto.name!r}'s {method} "
                f"selection ({expected.size} of {n_split})",
            )
        ]
    return []


# ---------------------------------------------------------------- reported results


def _reported_problems(rf: ResultsFile, info: ProtocolInfo) -> list[Problem]:
    s = scores_from_reported(rf.doc)
    f = rf.file
    problems = []
    if (
        s.mean_clean is None
        and not s.mean_robust
        and not any(v is not None for v in s.clean.values())
        and not any(s.robust.values())
    ):
        problems.append(Problem(f, "means", "holds no numbers"))
    if info.eps:
        for label in s.eps:
            if label not in info.eps:
                problems.append(
                    Problem(
                        f,
                        "means.robust_acc_by_eps",
                        f"eps {label} is not part of protocol {info.name!r} ({', '.join(info.eps)})",
                    )
                )
    over = s.over
    if over is not None and info.datasets:
        extra = sorted(set(over) - set(info.datasets))
        if extra:
            problems.append(
                Problem(f, "means.over", f"not datasets of protocol {info.name!r}: {', '.join(extra)}")
            )
    if over is None or any(d not in s.datasets for d in over):
        return problems  # the means cover datasets the source does not list one by one
    dec = rf.doc["decimals"]
    metrics = [("means.clean_acc", s.mean_clean, [s.clean[d] for d in over])]
    for label in s.eps:
        values = [s.robust[d].get(label) for d in over]
        metrics.append((f"means.robust_acc_by_eps.{label}", s.mean_robust.get(label), values))
    acknowledged = set(rf.doc.get("source_inconsistent", []))
    for field, stated, values in metrics:
        if stated is None or any(v is None for v in values):
            continue  # a source may print a mean without its parts
        found = _check_mean(f, field, stated, values, None, dec)
        if field in acknowledged:
            found = [
                Problem(p.file, p.field, f"{p.message}; kept as published (see note)", "warning")
                for p in found
            ]
            if not found:
                found = [Problem(f, "source_inconsistent", f"{field} is listed but its mean does agree")]
        problems += found
    for field in sorted(acknowledged - {m[0] for m in metrics}):
        problems.append(Problem(f, "source_inconsistent", f"{field} is not a mean of this file"))
    return problems


# ---------------------------------------------------------------- cards and entries


def _card_problems(entry: Entry) -> list[Problem]:
    card = entry.card
    if card is None:
        return []
    f = entry.card_file
    problems = []
    if card.get("id") != entry.id:
        problems.append(Problem(f, "id", f"is {card.get('id')!r} but the entry folder is {entry.id!r}"))
    threat = card.get("threat_model")
    if isinstance(threat, dict) and threat.get("norm") in ATTACK_NORMS and not threat.get("eps"):
        problems.append(Problem(f, "threat_model.eps", f"is required for norm {threat['norm']}"))
    ckpt = card.get("checkpoint") if isinstance(card.get("checkpoint"), dict) else {}
    try:
        named = card_checkpoint(entry)
    except SubmissionError as exc:
        field = "checkpoint.path" if ckpt.get("path") is not None else "checkpoint.shipped"
        return problems + [Problem(f, field, exc.message)]
    if named is not None and ckpt.get("sha256") and sha256_file(named[1]) != ckpt["sha256"]:
        problems.append(Problem(f, "checkpoint.sha256", f"does not match the file of {named[0]}"))
    return problems


def _id_problems(entries: list[Entry]) -> list[Problem]:
    users: dict[str, list[str]] = {}
    for entry in entries:
        declared = entry.card.get("id") if entry.card else None
        keys = {normalized_id(entry.id)}
        if isinstance(declared, str):
            keys.add(normalized_id(declared))
        for key in keys:
            users.setdefault(key, []).append(entry.card_file)
    problems = []
    for key, files in users.items():
        for f in files if len(files) > 1 else []:
            others = ", ".join(o for o in files if o != f)
            problems.append(Problem(f, "id", f"duplicate id {key!r}: also used by {others}"))
    return problems


def _display_key(name: str) -> str:
    """A display name as readers see it: NFKC, casefolded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def _text_problems(entry: Entry) -> list[Problem]:
    """Card text holds no invisible format/control characters (zero-width, bidi overrides)."""
    card = entry.card or {}
    out = []
    for field in sorted(k for k, v in card.items() if isinstance(v, str)):
        bad = sorted({f"U+{ord(c):04X}" for c in card[field] if unicodedata.category(c) in ("Cf", "Cc")})
        if bad:
            out.append(Problem(entry.card_file, field, f"holds invisible characters {', '.join(bad[:3])}"))
    return out


def _name_problems(entries: list[Entry]) -> list[Problem]:
    """Display names are unique after normalisation, so no entry can pass for another."""
    users: dict[str, list[str]] = {}
    for entry in entries:
        name = (entry.card or {}).get("name")
        if isinstance(name, str):
            users.setdefault(_display_key(name), []).append(entry.card_file)
    return [
        Problem(f, "name", f"duplicate display name: also used by {', '.join(o for o in files if o != f)}")
        for files in users.values()
        if len(files) > 1
        for f in files
    ]


def _entry_problems(entry: Entry) -> list[Problem]:
    problems = _card_problems(entry) + _text_problems(entry)
    if not entry.results and not (entry.dir / "results").is_dir():
        problems.append(Problem(entry.card_file, "", "entry has no results yet; it is not shown", "warning"))
    for rf in entry.results:
        info, found = protocol_problems(rf)
        problems += found
        if rf.kind == EVALUATED:
            problems += evaluated_mean_problems(rf)
            if info is not None:
                problems += _radii_problems(rf, info)
            problems += _hash_problems(entry, rf)
            problems += _digest_problems(entry, rf)
            problems += arch_file_problems(entry, rf)
        elif info is not None:
            problems += _reported_problems(rf, info)
        if info is not None:
            problems += _suite_problems(rf, info)
    return problems


def resolve_target(path: Path) -> tuple[Path, str | None]:
    """(submissions root, single entry id or None) for a path to the tree or to one entry folder."""
    if ((path / CARD_FILE).exists() or (path / RESULTS_DIR).is_dir()) and path.parent != path:
        return path.parent, path.name
    return path, None


def validate_entries(entries: list[Entry]) -> list[Problem]:
    """Semantic checks of already-loaded entries (no id-uniqueness check)."""
    problems: list[Problem] = []
    for entry in entries:
        problems += _entry_problems(entry)
    return problems


def validate_submissions(path: str | Path = "submissions") -> list[Problem]:
    """Every problem in a submissions tree (or one entry folder), sorted by file and field."""
    root, only = resolve_target(Path(path))
    entries, problems = load_tree(root)
    problems += _id_problems(entries) + _name_problems(entries)
    if only is not None:
        prefix = str(root / only)
        problems = [p for p in problems if p.file == prefix or p.file.startswith(prefix + "/")]
        entries = [e for e in entries if e.id == only]
    problems += validate_entries(entries)
    return sorted(set(problems))

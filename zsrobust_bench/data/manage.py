"""Dataset housekeeping behind `zsbench datasets`: list what is registered and present, fetch, verify."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import DataError, ZSBenchError
from .loaders import EvalDataset, find_source, open_eval_dataset, source_kind, source_label, source_location
from .paths import dataset_dir, resolve_data_root
from .registry import all_datasets, dataset_spec, expand, get_dataset
from .registry import suite as suite_members
from .spec import DatasetSpec

log = logging.getLogger(__name__)

LIST_COLUMNS = ("name", "classes", "eval_size", "split", "resolution", "present", "location", "sources")
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PROBE_HOST = ("huggingface.co", 443)


def _names(names: Iterable[str] | None, suite_name: str | None) -> list[str]:
    if suite_name:
        return list(suite_members(suite_name))
    names = list(names or [])
    return expand(names) if names else [s.name for s in all_datasets()]


def list_datasets(
    suite: str | None = None, data_root: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """One row per dataset (all, or a suite's): classes, eval size, split, resolution, presence, sources."""
    root = resolve_data_root(data_root)
    rows = []
    for name in _names(None, suite):
        spec = get_dataset(name)
        found = find_source(spec, root)
        rows.append(
            {
                "name": spec.name,
                "classes": spec.num_classes,
                "eval_size": spec.size_hint,
                "split": spec.eval_split,
                "resolution": "native" if spec.eval_resolution == "native" else "model",
                "present": found is not None,
                "location": None
                if found is None
                else (str(found[1]) if found[1] is not None else "generated"),
                "sources": ", ".join(source_label(s) for s in spec.sources),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------
# prepare
# ----------------------------------------------------------------------------------------------


def network_status(timeout: float = 3.0) -> tuple[bool, str]:
    """(online, reason): offline when HF offline mode is set or huggingface.co cannot be reached quickly."""
    for var in OFFLINE_ENV:
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return False, f"{var}={os.environ[var]} is set"
    try:
        socket.create_connection(PROBE_HOST, timeout=timeout).close()
    except OSError as exc:
        return False, f"cannot reach {PROBE_HOST[0]}: {exc}"
    return True, "online"


def manual_steps(spec: DatasetSpec, data_root: Path) -> list[str]:
    """Commands or instructions, one per source, that put the dataset under the data root by hand."""
    steps = []
    for source in spec.sources:
        target = source_location(spec, source, data_root)
        fetch = source_kind(source.kind).steps
        if fetch is not None and source.ref:
            steps.append(fetch(spec, source, target))
        elif source.instructions:
            steps.append(source.instructions.format(dir=dataset_dir(data_root, spec.name), path=target))
    return steps


def prepare(
    names: Iterable[str], data_root: str | os.PathLike[str] | None = None, *, suite_name: str | None = None
) -> list[dict[str, Any]]:
    """Fetch each dataset into the data root when the machine is online; else report the manual steps.

    Rows: name, status ("present", "downloaded", "offline", "failed" or "manual"), location, message, steps.
    """
    root = resolve_data_root(data_root)
    online: tuple[bool, str] | None = None
    rows = []
    for name in _names(names, suite_name):
        spec = dataset_spec(name)
        found = find_source(spec, root)
        row: dict[str, Any] = {
            "name": spec.name,
            "status": "present",
            "location": None,
            "message": "",
            "steps": [],
        }
        if found is not None:
            row["location"] = str(found[1]) if found[1] is not None else "generated"
            rows.append(row)
            continue
        downloadable = [s for s in spec.sources if source_kind(s.kind).download is not None and s.ref]
        errors = []
        if downloadable and online is None:
            online = network_status()
        for source in downloadable if online and online[0] else []:
            target = source_location(spec, source, root)
            try:
                log.info("downloading %s from %s into %s", spec.name, source_label(source), target)
                target.parent.mkdir(parents=True, exist_ok=True)
                source_kind(source.kind).download(spec, source, target)
            except Exception as exc:  # any download failure is reported and the next source is tried
                errors.append(f"{source_label(source)}: {type(exc).__name__}: {exc}")
                continue
            if find_source(spec, root) is not None:
                row.update(status="downloaded", location=str(target))
                break
            errors.append(f"{source_label(source)}: download finished but no files at {target}")
        else:
            row["steps"] = manual_steps(spec, root)
            if not downloadable:
                row.update(status="manual", message="this dataset is installed by hand")
            elif online is not None and not online[0]:
                row.update(
                    status="offline",
                    message=f"offline: {online[1]}; nothing downloaded, do these steps by hand",
                )
            else:
                row.update(status="failed", message="; ".join(errors))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# verify
# ----------------------------------------------------------------------------------------------


def _verify_one(spec: DatasetSpec, root: Path, limit: int | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": spec.name,
        "ok": False,
        "source": None,
        "split": spec.eval_split,
        "n": 0,
        "expected": spec.size_hint,
        "checked": 0,
        "classes_seen": 0,
        "num_classes": spec.num_classes,
        "unreadable": 0,
        "errors": [],
    }
    try:
        ds = open_eval_dataset(spec, root, image_size=224)
    except ZSBenchError as exc:
        row["errors"].append(str(exc))
        return row
    row["n"] = len(ds)
    row["source"] = source_label(ds.source) if isinstance(ds, EvalDataset) else "generated"
    seen: set[int] = set()
    count = len(ds) if limit is None else min(limit, len(ds))
    for i in range(count):
        try:
            _, label = ds.load(i) if isinstance(ds, EvalDataset) else ds[i]
            seen.add(int(label))
        except DataError as exc:
            row["unreadable"] += 1
            if len(row["errors"]) < 5:
                row["errors"].append(str(exc))
    row["checked"] = count
    row["classes_seen"] = len(seen)
    size_ok = spec.size_hint is None or limit is not None or row["n"] == spec.size_hint
    classes_ok = limit is not None or len(seen) == spec.num_classes
    if not size_ok:
        row["errors"].append(f"{row['n']} samples, expected {spec.size_hint}")
    if not classes_ok:
        row["errors"].append(f"{len(seen)} classes have samples, expected {spec.num_classes}")
    row["ok"] = row["unreadable"] == 0 and size_ok and classes_ok
    return row


def verify(
    names: Iterable[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    *,
    suite_name: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Check each dataset on disk: sample count against the known size, classes present, every image readable.

    Without names or suite, checks the datasets that are present. `limit` checks only the first N items.
    """
    root = resolve_data_root(data_root)
    if names or suite_name:
        specs = [dataset_spec(n) for n in _names(names, suite_name)]
    else:
        specs = [s for s in all_datasets() if find_source(s, root) is not None]
    return [_verify_one(spec, root, limit) for spec in specs]

"""Helpers for the leaderboard tests: the tests' own registered protocols (tests/protocols/) and fake evaluation runs on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zsrobust_bench.data.registry import get_dataset
from zsrobust_bench.data.subsets import indices_sha256, protocol_indices
from zsrobust_bench.fileio import sha256_bytes
from zsrobust_bench.protocols import add_protocol_dir, eps_label, get_protocol
from zsrobust_bench.protocols import registry as protocol_registry

REPO = Path(__file__).resolve().parents[1]
SEED_REPORTED = REPO / "submissions" / "tga-zsr-vit-b32"

# The leaderboard tests' own registered protocols (stub-pgd, stub-aa, stub-synthetic, stub-versioned v1/v2).
TEST_PROTOCOLS = Path(__file__).resolve().parent / "protocols"


# The provenance block of every fabricated results.json (fixed times, so files are byte-stable).
FAKE_PROVENANCE = {
    "zsbench_version": "0.1.0",
    "packages": {},
    "seed": 0,
    "device": "cpu",
    "precision": "fp32",
    "started": "2024-01-01T00:00:00Z",
    "finished": "2024-01-01T00:01:00Z",
    "wall_seconds": 60.0,
}


def register_test_protocols(monkeypatch: pytest.MonkeyPatch, *dirs: Path) -> None:
    """Register the protocol files of TEST_PROTOCOLS (and `dirs`) for one test, as a user's
    `add_protocol_dir` would; the registry forgets them afterwards."""
    monkeypatch.setattr(protocol_registry, "_ADDED", {})
    for d in (TEST_PROTOCOLS, *dirs):
        add_protocol_dir(d)


def _records(dataset: str, indices: list[int], labels: list[str], outcomes: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(sum(map(ord, dataset)) + outcomes)
    out = []
    for i in indices:
        label = int(rng.integers(0, 10))
        clean_ok = bool(rng.random() < 0.7)
        rec: dict[str, Any] = {
            "index": i,
            "label": label,
            "clean_pred": label if clean_ok else (label + 1) % 10,
            "clean_correct": clean_ok,
        }
        robust = []
        for k, _ in enumerate(labels):
            ok = clean_ok and bool(rng.random() < 0.5 / (k + 1)) and (not robust or robust[-1])
            robust.append(ok)
        rec["robust_correct"] = robust[0]
        rec["broken_by"] = None if robust[0] or not clean_ok else "pgd"
        rec["broken_step"] = None if robust[0] or not clean_ok else int(rng.integers(0, 100))
        if len(labels) > 1:
            rec["by_eps"] = {
                lab: {"robust_correct": ok, "broken_by": None if ok else "apgd-ce", "broken_step": None}
                for lab, ok in zip(labels, robust, strict=True)
            }
        out.append(rec)
    return out


def _pct(values: list[bool]) -> float:
    return round(100.0 * sum(values) / len(values), 4)


def make_run(
    root: Path,
    protocol: str = "stub-pgd",
    *,
    n: int | None = None,
    custom: bool = False,
    checkpoint: bytes = b"fake checkpoint bytes",
    name: str = "run",
    version: int | None = None,
    outcomes: int = 0,
) -> Path:
    """A run folder like `zsbench evaluate --out` writes for a registered protocol (at `version`, default
    its current one): results.json plus samples/<dataset>.jsonl on the protocol's own seeded selection.

    `n` keeps only the first n selected samples (such a run is not the protocol's and fails validation);
    `outcomes` picks another fabricated set of per-sample results."""
    proto = get_protocol(protocol, version)
    run = root / name
    (run / "samples").mkdir(parents=True)
    ckpt = run / "model.safetensors"
    ckpt.write_bytes(checkpoint)
    eps = list(proto.eps)
    labels = [eps_label(e) for e in eps]
    datasets: dict[str, Any] = {}
    for ds in proto.datasets:
        n_split = get_dataset(ds).size_hint
        indices = protocol_indices(proto, ds, n_split).tolist()[:n]
        recs = _records(ds, indices, labels, outcomes)
        text = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in recs)
        (run / "samples" / f"{ds}.jsonl").write_text(text)
        by_eps = {labels[0]: _pct([r["robust_correct"] for r in recs])}
        for lab in labels[1:]:
            by_eps[lab] = _pct([r["by_eps"][lab]["robust_correct"] for r in recs])
        datasets[ds] = {
            "n": len(recs),
            "n_split": n_split,
            "clean_acc": _pct([r["clean_correct"] for r in recs]),
            "robust_acc": by_eps[labels[0]],
            "robust_acc_by_eps": by_eps,
            "subset_sha256": indices_sha256(np.array([r["index"] for r in recs], dtype=np.int64)),
            "samples_sha256": sha256_bytes(text.encode()),
            "samples_file": f"samples/{ds}.jsonl",
        }

    def mean(key: str, lab: str | None = None) -> float:
        vals = [d[key][lab] if lab else d[key] for d in datasets.values()]
        return round(sum(vals) / len(vals), 4)

    results = {
        "schema": "zsbench.results/1",
        "model": {
            "spec": str(ckpt),
            "format": "safetensors",
            "sha256": sha256_bytes(checkpoint),
            "arch": "ViT-B-32",
            "pretrained": "openai",
            "kind": "full",
            "random_init": False,
        },
        "protocol": {
            "name": protocol,
            "version": proto.version,
            "custom": custom,
            "overrides": {"pgd.steps": 5} if custom else {},
            "params": json.loads(json.dumps(proto.params())),
        },
        "datasets": datasets,
        "means": {
            "clean_acc": mean("clean_acc"),
            "robust_acc": mean("robust_acc"),
            "robust_acc_by_eps": {lab: mean("robust_acc_by_eps", lab) for lab in labels},
        },
        "sanity": {},
        "provenance": dict(FAKE_PROVENANCE),
    }
    (run / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return run


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def dump_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def copy_reported(submissions: Path, entry: Path = SEED_REPORTED) -> Path:
    """Copy a committed reported entry into a scratch submissions tree."""
    target = submissions / entry.name
    shutil.copytree(entry, target)
    return target


def make_protocol_run(
    root: Path,
    protocol: str,
    datasets: list[str],
    *,
    n_split: int = 2000,
    keep: Any = None,
    name: str = "run",
) -> Path:
    """A run of a real registered protocol on `protocol_indices` (fabricated records; `keep` filters them)."""
    proto = get_protocol(protocol)
    labels = [eps_label(e) for e in proto.eps]
    run = root / name
    (run / "samples").mkdir(parents=True)
    checkpoint = b"fake checkpoint bytes"
    datasets_doc: dict[str, Any] = {}
    for ds in datasets:
        rng = np.random.default_rng(sum(map(ord, ds)))
        recs = []
        for i in protocol_indices(proto, ds, n_split).tolist():
            ok = bool(rng.random() < 0.8)
            robust = (ok and bool(rng.random() < 0.3)) if labels else None
            recs.append(
                {
                    "index": i,
                    "label": 0,
                    "clean_pred": 0 if ok else 1,
                    "clean_correct": ok,
                    "robust_correct": robust,
                    "broken_by": "pgd" if ok and robust is False else None,
                    "broken_step": 1 if ok and robust is False else None,
                }
            )
        recs = [r for r in recs if keep is None or keep(r)]
        text = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in recs)
        (run / "samples" / f"{ds}.jsonl").write_text(text)
        robust_acc = _pct([r["robust_correct"] for r in recs]) if labels else None
        datasets_doc[ds] = {
            "n": len(recs),
            "n_split": n_split,
            "clean_acc": _pct([r["clean_correct"] for r in recs]),
            "robust_acc": robust_acc,
            "robust_acc_by_eps": {labels[0]: robust_acc} if labels else {},
            "subset_sha256": indices_sha256(np.array([r["index"] for r in recs], dtype=np.int64)),
            "samples_sha256": sha256_bytes(text.encode()),
            "samples_file": f"samples/{ds}.jsonl",
        }

    def mean(key: str) -> float | None:
        vals = [d[key] for d in datasets_doc.values()]
        return None if None in vals else round(sum(vals) / len(vals), 4)

    results = {
        "schema": "zsbench.results/1",
        "model": {
            "spec": "model.safetensors",
            "format": "safetensors",
            "sha256": sha256_bytes(checkpoint),
            "arch": "ViT-B-32",
            "kind": "full",
            "random_init": False,
        },
        "protocol": {"name": protocol, "version": proto.version, "custom": False, "overrides": {}},
        "datasets": datasets_doc,
        "means": {
            "clean_acc": mean("clean_acc"),
            "robust_acc": mean("robust_acc"),
            "robust_acc_by_eps": {labels[0]: mean("robust_acc")} if labels else {},
        },
        "sanity": {},
        "provenance": dict(FAKE_PROVENANCE),
    }
    results["protocol"]["params"] = json.loads(json.dumps(proto.params()))
    (run / "model.safetensors").write_bytes(checkpoint)
    (run / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return run

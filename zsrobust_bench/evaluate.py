"""`evaluate`: the library entry point behind `zsbench evaluate` (a notebook can call it too)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import distributed
from .attacks.autoattack import PyAutoAttackAdapter
from .attacks.registry import build_attacks
from .data.preprocess import Preprocess
from .data.registry import dataset_spec, expand
from .data.spec import DatasetSpec
from .data.subsets import Selection, evaluation_subset, indices_sha256
from .data.userfolder import is_user_folder, user_folder_path
from .engine.blocks import ShardSpec
from .engine.plan import EngineConfig, EpsAttacks
from .engine.records import merge_shards, records_to_jsonl
from .engine.run import check_shard_config, evaluate_shards, missing_shards, shard_bounds, shard_files
from .errors import DataError, ZSBenchError
from .fileio import atomic_write_json, atomic_write_text, run_lock, sha256_bytes, sha256_json
from .models.loader import LoadedModel, load_model
from .protocols import Protocol, apply_overrides, eps_label, get_protocol, with_backend
from .provenance import now_iso, provenance
from .request import EvalRequest
from .sanity import attack_checks, attack_warnings_check, consistency_checks, reach_checks
from .zeroshot import build_classifier

log = logging.getLogger(__name__)
SCHEMA = "zsbench.results/1"
# Stepwise attack parameters do not depend on the class count; any count that runs every attack will do.
REACH_CHECK_CLASSES = 1000


def dataset_key(name: str) -> str:
    """File-system-safe key for a dataset name (imagefolder:PATH gets a short path hash)."""
    if is_user_folder(name):
        path = user_folder_path(name)
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name or "data")[:40]
        return f"imagefolder-{base}-{sha256_bytes(str(path.resolve()).encode())[:8]}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _open(spec: DatasetSpec, name: str, data_root: Path | None, image_size: int, preprocess: Preprocess):
    from .data.loaders import open_eval_dataset

    return open_eval_dataset(spec, data_root, image_size, preprocess=preprocess)


def build_plan(
    protocol: Protocol, num_classes: int
) -> tuple[list[EpsAttacks], dict[str, list[dict[str, Any]]]]:
    """Attacks per epsilon (ascending), plus per eps one record per requested attack: what ran with
    all its parameters, or why it was skipped (e.g. targeted attacks with two classes)."""
    plan, records = [], {}
    for eps in sorted(protocol.eps):
        attacks, recs = build_attacks(
            protocol.attack_steps(), eps, num_classes, norm=protocol.norm, backend=protocol.attack_backend
        )
        plan.append(EpsAttacks(eps, attacks, [r["requested"] for r in recs if r.get("ran") is None]))
        records[eps_label(eps)] = recs
    return plan, records


def _attack_checks(
    clf, ds, idx: np.ndarray, num_classes: int, seed: int, path: Path, device: str
) -> list[dict[str, Any]]:
    """Gradient-health and huge-eps masking checks on the first evaluated samples, computed once per run."""
    if path.exists():
        return json.loads(path.read_text())
    import torch

    rows = [ds[int(i)] for i in idx[:32]]
    x = torch.stack([r[0] for r in rows]).float().to(device)
    y = torch.as_tensor([int(r[1]) for r in rows]).to(device)
    checks = attack_checks(clf, x, y, num_classes, seed=seed)
    atomic_write_json(path, checks)
    return checks


def _check_precision(precision: str, device: str) -> None:
    if precision != "fp32" and not device.startswith("cuda"):
        raise ZSBenchError(f"precision {precision} is only supported on CUDA", "CPU evaluation runs fp32")


def evaluate(model: str, datasets: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    """Evaluate `model` in one call: `run(EvalRequest(model=..., datasets=..., **fields))`; each keyword is
    the `EvalRequest` field of its name (an unknown one fails there, naming it)."""
    return run(EvalRequest(model=model, datasets=datasets, **fields))


@dataclass(frozen=True)
class _Context:
    """What every dataset of one run shares: the request, the model, the resolved protocol, engine settings, rank."""

    request: EvalRequest
    lm: LoadedModel
    proto: Protocol
    model_info: dict[str, Any]
    root: Path
    cfg: EngineConfig
    rank: int
    world: int

    @property
    def show(self) -> bool:
        """Progress bars: when asked for, on rank 0 only."""
        return self.request.progress and self.rank == 0


def run(request: EvalRequest) -> dict[str, Any]:
    """Carry out `request`; writes out/results.json and out/samples/*.jsonl and returns the results.

    Resumes: shards already written under out/shards/ with the same configuration are reused.
    """
    out = request.out
    base = get_protocol(request.protocol)
    ov = dict(request.overrides)
    if request.seed is not None:
        ov["seed"] = request.seed
    proto, custom = apply_overrides(base, ov)
    proto = with_backend(proto, request.attack_backend)
    if request.indices is not None:
        custom = True
    reach = reach_checks(build_plan(proto, REACH_CHECK_CLASSES)[1])
    names = expand(request.datasets) if request.datasets else expand([proto.suite] if proto.suite else [])
    if not names:
        raise ZSBenchError(
            "no datasets to evaluate", f"pass --datasets (protocol {proto.name} has no default suite)"
        )
    from .data.paths import resolve_data_root

    root = resolve_data_root(str(request.data_root) if request.data_root is not None else None)
    rank, world = distributed.init_if_needed(request.device)
    device = distributed.local_device(request.device)
    _check_precision(proto.precision, device)
    if request.shard_size <= 0 or request.batch_size <= 0:
        raise ZSBenchError("--batch-size and --shard-size must be positive")
    cfg = EngineConfig(
        batch_size=request.batch_size,
        num_workers=request.num_workers,
        device=device,
        seed=proto.seed,
        precision=proto.precision,
        compile=request.compile,
    )
    started, t0 = now_iso(), time.time()
    lock = run_lock(out) if rank == 0 else _null_lock(out)
    with lock:
        lm = request.loaded or load_model(
            request.model,
            arch=request.arch,
            pretrained=request.pretrained,
            allow_custom_tokenizer=request.allow_custom_tokenizer,
        )
        for w in lm.warnings:
            if rank == 0:
                print(f"WARNING: {w}")
        for check in reach:
            if rank == 0 and check["status"] == "warning":
                print(f"SANITY WARNING: {check['message']}")
        for p in lm.model.parameters():
            p.requires_grad_(False)
        model_info = {k: v for k, v in lm.info.items() if not k.startswith("_")}
        ctx = _Context(request, lm, proto, model_info, root, cfg, rank, world)
        per_dataset: dict[str, Any] = {name: _evaluate_dataset(ctx, name) for name in names}
        distributed.barrier()
        if rank != 0:
            distributed.barrier()  # rank 0 writes results.json, then meets us here
            return json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
        results = _assemble(ctx, custom, ov, per_dataset, names, started, time.time() - t0, reach)
        atomic_write_json(out / "results.json", results)
    distributed.barrier()
    return results


class _null_lock:
    def __init__(self, out: Path) -> None:
        self.out = out

    def __enter__(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass
class _Run:
    """What every pass over one dataset shares: the run's context, the data and its prompts."""

    ctx: _Context
    name: str
    ds: Any
    prompt_set: Any
    num_classes: int


def _checked_config(shard_dir: Path, run_cfg: dict[str, Any], out: Path, name: str, rank: int) -> None:
    """Refuse to resume into shards written with another configuration; record ours on first use."""
    if not check_shard_config(shard_dir, run_cfg, rank):
        raise ZSBenchError(
            f"{out} holds a run of {name} with a different configuration",
            "use another --out, or delete that directory to start over",
        )
    distributed.barrier()


def _run_shards(run: _Run, idx: np.ndarray, plan: list[EpsAttacks], shard_dir: Path, desc: str) -> list[Path]:
    """Evaluate this rank's missing shards of `idx` under `plan`; returns every shard file (in order)."""
    ctx = run.ctx
    bounds = shard_bounds(len(idx), ctx.request.shard_size)
    files = shard_files(shard_dir, bounds)
    mine = missing_shards(files, ctx.rank, ctx.world)
    if not mine:
        return files
    clf = build_classifier(ctx.lm, run.prompt_set, ctx.cfg.device, _cache(ctx))
    total = sum(bounds[k][1] - bounds[k][0] for k in mine)
    bar = tqdm(total=total, desc=desc, unit="img", disable=not ctx.show, leave=True, dynamic_ncols=True)

    def write(k: int, recs: list[dict[str, Any]]) -> None:
        # the shard's warnings first: a shard file on disk means its warnings are on disk too
        _write_attack_warnings(files[k], plan)
        atomic_write_text(files[k], records_to_jsonl(recs))

    specs = [ShardSpec(k, idx[bounds[k][0] : bounds[k][1]]) for k in mine]
    try:
        stats = evaluate_shards(
            clf, run.ds, specs, plan, ctx.cfg, write, num_classes=run.num_classes, on_progress=bar.update
        )
    except DataError as exc:
        raise DataError(f"{run.name}: {exc.message}", exc.hint) from exc
    bar.close()
    distributed.write_engine_stats(shard_dir, ctx.rank, stats.as_dict())
    return files


def _cache(ctx: _Context) -> Path | None:
    return Path(ctx.request.cache_dir) if ctx.request.cache_dir else None


def _warnings_file(shard_file: Path) -> Path:
    return shard_file.with_suffix(".warnings.json")


def _write_attack_warnings(shard_file: Path, plan: list[EpsAttacks]) -> None:
    """Record what pyautoattack warned while this shard ran (written only when something fired)."""
    fired = [
        {"attack": a.name, "eps": eps_label(p.eps), "message": message}
        for p in plan
        for a in p.attacks
        if isinstance(a, PyAutoAttackAdapter)
        for message in a.drain_warnings()
    ]
    if fired:
        atomic_write_json(_warnings_file(shard_file), fired)


def _read_attack_warnings(written: list[Path]) -> list[dict[str, Any]]:
    """Every warning recorded for these shards, in shard order."""
    files = [_warnings_file(f) for f in written]
    return [w for f in files if f.exists() for w in json.loads(f.read_text())]


def _choose(
    ds: Any,
    name: str,
    spec: DatasetSpec,
    proto: Protocol,
    indices: Mapping[str, Sequence[int]] | None,
    n_split: int,
) -> Selection:
    """The evaluated indices: the caller's, or the protocol's selection (data.subsets.evaluation_subset)."""
    if indices is not None and name in indices:
        idx = np.asarray(sorted(set(int(i) for i in indices[name])), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_split):
            raise ZSBenchError(f"requested indices for {name} fall outside 0..{n_split - 1}")
        return Selection(idx, "given")
    return evaluation_subset(
        ds, spec.name, proto.samples_for(spec.name), proto.seed, proto.effective_selection()
    )


def _evaluate_dataset(ctx: _Context, name: str) -> dict[str, Any]:
    """Evaluate one dataset (this rank's shards); on rank 0 merge every shard into its summary."""
    lm, proto, cfg, out, rank = ctx.lm, ctx.proto, ctx.cfg, ctx.request.out, ctx.rank
    indices, root = ctx.request.indices, ctx.root
    spec = dataset_spec(name)
    key = dataset_key(name)
    preprocess = proto.effective_preprocess()
    ds = _open(spec, name, root, lm.image_size, preprocess)
    n_split = len(ds)
    if n_split == 0:
        raise DataError(f"dataset {name} is empty under {root}", f"run `zsbench datasets verify {name}`")
    selection = _choose(ds, name, spec, proto, indices, n_split)
    idx = selection.indices
    subset_hash = indices_sha256(idx)
    prompt_set = spec.prompt_set(proto.prompt_set)
    plan, attack_records = build_plan(proto, spec.num_classes)
    labels = [eps_label(e) for e in sorted(proto.eps)]
    run_cfg = {
        "model_sha256": ctx.model_info.get("sha256"),
        "model_spec": ctx.model_info.get("spec"),
        "pretrained": ctx.model_info.get("pretrained"),
        "arch": lm.arch,
        "protocol": proto.name,
        "version": proto.version,
        "params": proto.params(),
        "preprocess": preprocess.as_dict(),
        "dataset": name,
        "subset_sha256": subset_hash,
        "shard_size": ctx.request.shard_size,
        "prompts": sha256_json({"c": list(prompt_set.classnames), "t": list(prompt_set.templates)}),
    }
    run = _Run(ctx, name, ds, prompt_set, spec.num_classes)
    shard_dir = out / "shards" / key
    _checked_config(shard_dir, run_cfg, out, name, rank)
    written = _run_shards(run, idx, plan, shard_dir, name)
    # FARE reports clean accuracy on the whole split and attacks a subset (see Protocol.clean_on)
    clean_split = proto.clean_on_for(spec.name) == "split" and indices is None
    split_idx = np.arange(n_split, dtype=np.int64)
    split_files: list[Path] = []
    if clean_split and idx.size < n_split:
        split_dir = shard_dir / "clean-split"
        _checked_config(split_dir, {**run_cfg, "subset_sha256": indices_sha256(split_idx)}, out, name, rank)
        split_files = _run_shards(run, split_idx, [], split_dir, f"{name} (clean, whole split)")
    if rank == 0 and any(p.attacks for p in plan) and not (shard_dir / "sanity.json").exists():
        # also when a resume finds every shard done: a kill before sanity.json must not lose the checks
        clf = build_classifier(lm, prompt_set, cfg.device, _cache(ctx))
        _attack_checks(clf, ds, idx, spec.num_classes, proto.seed, shard_dir / "sanity.json", cfg.device)
    distributed.barrier()
    if rank != 0:
        return {}
    samples_path = out / "samples" / f"{key}.jsonl"
    summary, samples_sha = merge_shards(written, samples_path, idx, labels)
    summary.update(
        {
            "n_split": n_split,
            "num_classes": spec.num_classes,
            "subset_sha256": subset_hash,
            "selection": selection.as_dict(),
            "preprocess": preprocess.as_dict() if spec.eval_resolution != "native" else "native",
            "samples_sha256": samples_sha,
            "samples_file": f"samples/{key}.jsonl",
            "prompt_set": proto.prompt_set,
            "templates": len(prompt_set.templates),
            "attacks_run": {eps_label(p.eps): [a.name for a in p.attacks] for p in plan},
            "attacks_skipped": {eps_label(p.eps): p.skipped for p in plan if p.skipped},
            "attacks": attack_records,
            "skipped": 0,
        }
    )
    if clean_split:
        summary.update(_clean_split_summary(summary, split_files, split_idx, out, key))
    engine = distributed.read_engine_stats(shard_dir)
    if engine:
        summary["engine"] = engine
    sanity_path = shard_dir / "sanity.json"
    warned = attack_warnings_check(_read_attack_warnings(written))
    if sanity_path.exists():
        summary["sanity"] = json.loads(sanity_path.read_text()) + ([warned] if warned else [])
    return summary


def _clean_split_summary(
    summary: dict[str, Any], split_files: list[Path], split_idx: np.ndarray, out: Path, key: str
) -> dict[str, Any]:
    """`clean_acc_split` (whole split, as FARE reports clean accuracy) beside the attacked samples' clean_acc."""
    if not split_files:  # every sample was attacked: the evaluated records already cover the split
        return {"clean_acc_split": summary["clean_acc"], "n_clean_split": summary["n"]}
    path = out / "samples" / f"{key}.clean-split.jsonl"
    clean, sha = merge_shards(split_files, path, split_idx, [])
    return {
        "clean_acc_split": clean["clean_acc"],
        "n_clean_split": clean["n"],
        "clean_split_samples_file": f"samples/{key}.clean-split.jsonl",
        "clean_split_samples_sha256": sha,
    }


def _mean(vals: list[float | None]) -> float | None:
    vals = [v for v in vals if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def _assemble(
    ctx: _Context,
    custom: bool,
    overrides: dict[str, Any],
    per_dataset: dict[str, Any],
    names: list[str],
    started: str,
    wall: float,
    reach: list[dict[str, Any]],
) -> dict[str, Any]:
    """The results.json document."""
    proto, cfg = ctx.proto, ctx.cfg
    labels = [eps_label(e) for e in sorted(proto.eps)]
    means: dict[str, Any] = {
        "clean_acc": _mean([per_dataset[n]["clean_acc"] for n in names]),
        # the protocol's clean figure: whole split where it says so, the evaluated samples elsewhere
        **(
            {
                "clean_acc_split": _mean(
                    [per_dataset[n].get("clean_acc_split", per_dataset[n]["clean_acc"]) for n in names]
                )
            }
            if any("clean_acc_split" in per_dataset[n] for n in names)
            else {}
        ),
        "robust_acc": _mean([per_dataset[n].get("robust_acc") for n in names]),
    }
    if labels:
        means["robust_acc_by_eps"] = {
            lab: _mean([per_dataset[n]["robust_acc_by_eps"][lab] for n in names]) for lab in labels
        }
    sanity = _sanity_summary(per_dataset, reach)
    return {
        "schema": SCHEMA,
        "model": ctx.model_info,
        "protocol": {
            "name": proto.name,
            "version": proto.version,
            "custom": bool(custom),
            "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()},
            "description": proto.description,
            "params": proto.params(),
            "preprocess": proto.effective_preprocess().as_dict(),
            "selection": proto.effective_selection(),
        },
        "datasets": per_dataset,
        "means": means,
        "sanity": sanity,
        "provenance": provenance(cfg.seed, cfg.device, cfg.precision, started, wall, ctx.world),
    }


def _sanity_summary(per_dataset: dict[str, Any], reach: list[dict[str, Any]]) -> dict[str, Any]:
    """All checks of the run: attacks that cannot reach eps, consistency (robust <= clean, monotone
    in eps) and per-dataset attack checks."""
    consistency = consistency_checks(per_dataset)
    warnings = [c["message"] for c in reach if c["status"] == "warning"]
    warnings += [f"{c.get('dataset')}: {c['message']}" for c in consistency if c["status"] == "warning"]
    for name, d in per_dataset.items():
        for c in d.get("sanity", []):
            if c.get("status") == "warning":
                warnings.append(f"{name}: {c['message']}")
    return {
        "reach": {"passed": all(c["status"] != "warning" for c in reach), "checks": reach},
        "consistency": {"passed": all(c["status"] != "warning" for c in consistency), "checks": consistency},
        "warnings": warnings,
        "passed": not warnings,
    }

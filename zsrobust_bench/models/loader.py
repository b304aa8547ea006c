"""Load any CLIP-compatible model spec into an open_clip model, weights only.

A spec is a checkpoint path, an open_clip `ARCH:PRETRAINED` tag or `hf-hub:org/name`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from ..errors import CheckpointError, ZSBenchError
from ..fileio import open_regular, sha256_file, sha256_json
from .arch import register_config, require_arch, resolve_arch
from .arch_guard import check_embedded
from .config_gate import build_tokenizer, gate_config, meta_state
from .formats import ParsedCheckpoint, parse_checkpoint
from .hub import HubModel, fetch_hub_model
from .prompters import build_prompted_visual
from .safe_load import check_finite, read_checkpoint

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """An open_clip model plus everything the zero-shot classifier and results.json need."""

    model: nn.Module
    tokenizer: Any
    arch: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    prompts: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def image_tower(self) -> nn.Module:
        """The image encoder taking normalised images, with visual prompts applied when present."""
        if self.prompts:
            return build_prompted_visual(self.model.visual, self.prompts)
        return self.model.visual


def _image_geometry(model: nn.Module) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, tuple | list) else size)
    mean = tuple(float(v) for v in getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(float(v) for v in getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return size, mean, std


class _DropNoPretrainedNotice(logging.Filter):
    """open_clip logs 'No pretrained weights loaded' when we build a model we are about to fill with
    a full checkpoint; that notice would be wrong there, so it is dropped (random init is reported
    by zsbench itself, loudly, where it really happens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def _create_empty(arch_name: str, preprocess: dict[str, Any] | None = None) -> nn.Module:
    root = logging.getLogger()
    filt = _DropNoPretrainedNotice()
    root.addFilter(filt)
    for h in root.handlers:
        h.addFilter(filt)
    try:
        return open_clip.create_model(arch_name, pretrained=None, force_preprocess_cfg=preprocess)
    finally:
        root.removeFilter(filt)
        for h in root.handlers:
            h.removeFilter(filt)


def _create(
    arch_name: str, config: dict[str, Any], pretrained: str | None
) -> tuple[nn.Module, str | None, bool]:
    """Build `arch_name` with base weights: an open_clip tag, a full checkpoint file, or none."""
    if pretrained is None:
        return _create_empty(arch_name), None, True
    if Path(pretrained).is_file():
        parsed = parse_checkpoint(*read_checkpoint(pretrained), where=str(pretrained))
        if parsed.kind != "full":
            raise CheckpointError(
                f"--pretrained {pretrained} is a {parsed.kind} checkpoint",
                "base weights must be a full CLIP checkpoint",
            )
        check_fit(meta_state(config), parsed.state, "full", str(pretrained))
        model = _create_empty(arch_name)
        load_state(model, parsed.state, "full", str(pretrained))
        return model, f"file:{Path(pretrained).name}:sha256:{sha256_file(pretrained)}", False
    tags = open_clip.list_pretrained_tags_by_model(arch_name)
    if pretrained not in tags:
        raise ZSBenchError(
            f"no pretrained weights {pretrained!r} for {arch_name}",
            f"known tags: {', '.join(tags) or 'none'}; or pass a path to a full checkpoint",
        )
    try:
        model = open_clip.create_model(arch_name, pretrained=pretrained)
    except (RuntimeError, OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ZSBenchError(
            f"could not obtain pretrained weights {arch_name}:{pretrained} ({type(exc).__name__}: {exc})".split(
                "\n"
            )[0],
            "this machine is offline (HF_HUB_OFFLINE=1)"
            if offline
            else "check the network or the open_clip cache",
        ) from exc
    return model, pretrained, False


def check_fit(target: dict[str, torch.Tensor], state: dict[str, torch.Tensor], kind: str, where: str) -> None:
    """Refuse `state` unless its keys, shapes and dtypes fit `target` (meta tensors do: nothing is allocated)."""
    scope = [k for k in target if kind == "full" or k.startswith("visual.")]
    missing = [k for k in scope if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = []
    for k, v in state.items():
        if k in target:
            if k == "logit_scale" and v.numel() == target[k].numel():
                continue  # scalar vs 1-element: load_state reshapes it
            if tuple(v.shape) != tuple(target[k].shape):
                mismatched.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}")
            elif target[k].is_floating_point() and not v.is_floating_point():
                mismatched.append(f"{k}: checkpoint dtype {v.dtype} vs model {target[k].dtype}")
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape/dtype mismatches (e.g. {'; '.join(mismatched[:3])})")
        raise CheckpointError(
            f"{where} does not fit the architecture: " + "; ".join(parts),
            "wrong --arch? the checkpoint's shapes must match the model exactly",
        )


def load_state(model: nn.Module, state: dict[str, torch.Tensor], kind: str, where: str) -> None:
    """Strictly load `state` (all keys for full, `visual.*` for vision-only) with a precise error."""
    target = model.state_dict()
    check_fit(target, state, kind, where)
    if "logit_scale" in state:
        state["logit_scale"] = state["logit_scale"].reshape(target["logit_scale"].shape)
    check_finite(state, where)
    merged = dict(target)
    for k, v in state.items():
        merged[k] = v.to(target[k].dtype)
    model.load_state_dict(merged, strict=True)


def _finish(
    model: nn.Module,
    arch: str,
    config: dict[str, Any],
    origin: str,
    info: dict[str, Any],
    prompts: dict[str, torch.Tensor],
    warnings: list[str],
    allow_custom_tokenizer: bool,
) -> LoadedModel:
    model.eval()
    size, mean, std = _image_geometry(model)
    info.setdefault("num_params", int(sum(p.numel() for p in model.parameters())))
    info["arch"] = arch
    # the full config the model was built from (text_cfg, quick_gelu, ...): part of the text-head cache key
    info["_config_sha256"] = sha256_json(config or {})
    for w in warnings:
        log.warning(w)
    tokenizer = build_tokenizer(config, origin, allow_custom_tokenizer=allow_custom_tokenizer)
    return LoadedModel(model, tokenizer, arch, size, mean, std, prompts, info, warnings)


def load_model(
    spec: str, arch: str | None = None, pretrained: str | None = None, *, allow_custom_tokenizer: bool = False
) -> LoadedModel:
    """Load a model spec (checkpoint path, `ARCH:PRETRAINED` or `hf-hub:org/name`) on the CPU in eval mode.

    Every architecture config passes the config gate first; `allow_custom_tokenizer` (the user's
    explicit `--allow-custom-tokenizer`, never set on the leaderboard path) admits a local tokenizer folder.
    """
    if spec.startswith("hf-hub:"):
        return _load_hf_hub(spec, allow_custom_tokenizer)
    path = Path(spec)
    if path.exists() or path.is_symlink():
        return _load_file(path, arch, pretrained, allow_custom_tokenizer)
    if ":" in spec:
        a, tag = spec.split(":", 1)
        name, config = resolve_arch(a, allow_custom_tokenizer=allow_custom_tokenizer)
        if not tag:
            raise ZSBenchError(
                f"model spec {spec!r} names no pretrained tag", "use ARCH:TAG, e.g. ViT-B-32:openai"
            )
        model, base, random_init = _create(name, config, tag)
        info = {
            "spec": spec,
            "format": "open_clip-pretrained",
            "sha256": None,
            "pretrained": base,
            "kind": "full",
            "random_init": random_init,
        }
        return _finish(model, name, config, f"architecture {a}", info, {}, [], allow_custom_tokenizer)
    raise ZSBenchError(
        f"model {spec!r} is not a file, an open_clip ARCH:PRETRAINED tag or hf-hub:ORG/NAME",
        "check the path; for tags see `open_clip.list_pretrained()`",
    )


def _load_hf_hub(spec: str, allow_custom_tokenizer: bool) -> LoadedModel:
    """A hub repository: its open_clip_config.json is gated, its weights read like any checkpoint file."""
    hub: HubModel = fetch_hub_model(spec, allow_custom_tokenizer=allow_custom_tokenizer)
    name = register_config(hub.name, hub.config, hub.origin, allow_custom_tokenizer=allow_custom_tokenizer)
    parsed = parse_checkpoint(*read_checkpoint(hub.weights), where=str(hub.weights))
    if parsed.kind != "full":
        raise CheckpointError(
            f"{spec}: the repository's weights are a {parsed.kind} checkpoint, not a full CLIP"
        )
    check_fit(meta_state(hub.config), parsed.state, "full", str(hub.weights))
    model = _create_empty(name, hub.preprocess)
    load_state(model, dict(parsed.state), "full", str(hub.weights))
    info = {
        "spec": spec,
        "format": "hf-hub",
        "sha256": sha256_file(hub.weights),
        "pretrained": spec,
        "kind": "full",
        "random_init": False,
        "tokenizer": spec,
    }
    return _finish(model, spec, hub.config, hub.origin, info, {}, [], allow_custom_tokenizer)


def _load_file(
    path: Path, arch: str | None, pretrained: str | None, allow_custom_tokenizer: bool
) -> LoadedModel:
    where = str(path)
    with open_regular(path, f"checkpoint {where}"):
        pass  # a FIFO, device or directory is refused here, before anything hashes or parses it
    sha = sha256_file(path)
    obj, meta = read_checkpoint(path)
    parsed: ParsedCheckpoint = parse_checkpoint(obj, meta, where)
    check_embedded(parsed.arch, parsed.arch_config, parsed.pretrained, path.stat().st_size, where)
    warnings: list[str] = []
    gate_kw = {"allow_custom_tokenizer": allow_custom_tokenizer}
    if arch is not None:
        arch_name, config = resolve_arch(arch, **gate_kw)
        origin = f"--arch {arch}"
    elif parsed.arch_config is not None:
        origin = f"{where}: embedded architecture"
        arch_name = register_config(parsed.arch or "zsbench-arch", parsed.arch_config, origin, **gate_kw)
        config = gate_config(parsed.arch_config, origin, **gate_kw)
    elif parsed.arch is not None:
        origin = f"{where}: embedded architecture name"
        arch_name, config = resolve_arch(parsed.arch, origin=origin, **gate_kw)
    elif parsed.default_arch is not None:
        origin = f"{where}: {parsed.format} default architecture"
        arch_name, config = resolve_arch(parsed.default_arch, origin=origin, **gate_kw)
        warnings.append(
            f"{parsed.format} checkpoint: assuming --arch {parsed.default_arch} (what its training code used)"
        )
    else:
        require_arch(parsed.state, where)
        raise AssertionError("unreachable")
    if parsed.state:  # shapes checked on the meta device: a few bytes cannot make the loader allocate
        check_fit(meta_state(config), parsed.state, "full" if parsed.kind == "full" else "vision-only", where)
    base = pretrained or parsed.pretrained
    if base is None and parsed.kind != "full":
        base = parsed.default_pretrained
        if base is not None:
            warnings.append(f"{parsed.format} checkpoint: taking the text tower from {arch_name}:{base}")
    if parsed.kind == "full":
        model = _create_empty(arch_name)
        base_desc, random_init = base, False
    else:
        model, base_desc, random_init = _create(arch_name, config, base)
        if random_init:
            warnings.append(
                f"NO PRETRAINED WEIGHTS: {where} is {parsed.kind} and no --pretrained was given; the text tower "
                "is RANDOMLY INITIALISED, so zero-shot numbers are meaningless"
            )
    if parsed.state:
        load_state(model, dict(parsed.state), "full" if parsed.kind == "full" else "vision-only", where)
    prompts = dict(parsed.prompts)
    check_finite(prompts, where)
    info = {
        "spec": str(path),
        "format": parsed.format,
        "sha256": sha,
        "pretrained": base_desc,
        "kind": parsed.kind,
        "random_init": random_init,
        "notes": list(parsed.notes),
    }
    return _finish(model, arch_name, config, origin, info, prompts, warnings, allow_custom_tokenizer)

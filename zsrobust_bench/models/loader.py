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
from ..fileio import sha256_file, sha256_json
from .arch import require_arch, resolve_arch
from .arch_guard import check_embedded
from .formats import ParsedCheckpoint, parse_checkpoint
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


def _create_empty(arch_name: str) -> nn.Module:
    root = logging.getLogger()
    filt = _DropNoPretrainedNotice()
    root.addFilter(filt)
    for h in root.handlers:
        h.addFilter(filt)
    try:
        return open_clip.create_model(arch_name, pretrained=None)
    finally:
        root.removeFilter(filt)
        for h in root.handlers:
            h.removeFilter(filt)


def _create(arch_name: str, pretrained: str | None) -> tuple[nn.Module, str | None, bool]:
    """Build `arch_name` with base weights: an open_clip tag, a full checkpoint file, or none."""
    if pretrained is None:
        return _create_empty(arch_name), None, True
    if Path(pretrained).is_file():
        model = _create_empty(arch_name)
        parsed = parse_checkpoint(*read_checkpoint(pretrained), where=str(pretrained))
        if parsed.kind != "full":
            raise CheckpointError(
                f"--pretrained {pretrained} is a {parsed.kind} checkpoint",
                "base weights must be a full CLIP checkpoint",
            )
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


def load_state(model: nn.Module, state: dict[str, torch.Tensor], kind: str, where: str) -> None:
    """Strictly load `state` (all keys for full, `visual.*` for vision-only) with a precise error."""
    target = model.state_dict()
    scope = [k for k in target if kind == "full" or k.startswith("visual.")]
    missing = [k for k in scope if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = []
    for k, v in state.items():
        if k in target:
            if k == "logit_scale" and v.numel() == target[k].numel():
                state[k] = v.reshape(target[k].shape)
                continue
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
    check_finite(state, where)
    merged = dict(target)
    for k, v in state.items():
        merged[k] = v.to(target[k].dtype)
    model.load_state_dict(merged, strict=True)


def _finish(
    model: nn.Module, arch: str, info: dict[str, Any], prompts: dict[str, torch.Tensor], warnings: list[str]
) -> LoadedModel:
    model.eval()
    size, mean, std = _image_geometry(model)
    info.setdefault("num_params", int(sum(p.numel() for p in model.parameters())))
    info["arch"] = arch
    # the full config the model was built from (text_cfg, quick_gelu, ...): part of the text-head cache key
    info["_config_sha256"] = sha256_json(open_clip.get_model_config(arch) or {})
    for w in warnings:
        log.warning(w)
    tokenizer = open_clip.get_tokenizer(info.get("tokenizer", arch))
    return LoadedModel(model, tokenizer, arch, size, mean, std, prompts, info, warnings)


def load_model(spec: str, arch: str | None = None, pretrained: str | None = None) -> LoadedModel:
    """Load a model spec (checkpoint path, `ARCH:PRETRAINED` or `hf-hub:org/name`) on the CPU in eval mode."""
    if spec.startswith("hf-hub:"):
        return _load_hf_hub(spec)
    path = Path(spec)
    if path.exists():
        return _load_file(path, arch, pretrained)
    if ":" in spec:
        a, tag = spec.split(":", 1)
        name, _ = resolve_arch(a)
        if not tag:
            raise ZSBenchError(
                f"model spec {spec!r} names no pretrained tag", "use ARCH:TAG, e.g. ViT-B-32:openai"
            )
        model, base, random_init = _create(name, tag)
        info = {
            "spec": spec,
            "format": "open_clip-pretrained",
            "sha256": None,
            "pretrained": base,
            "kind": "full",
            "random_init": random_init,
        }
        return _finish(model, name, info, {}, [])
    raise ZSBenchError(
        f"model {spec!r} is not a file, an open_clip ARCH:PRETRAINED tag or hf-hub:ORG/NAME",
        "check the path; for tags see `open_clip.list_pretrained()`",
    )


def _load_hf_hub(spec: str) -> LoadedModel:
    try:
        model = open_clip.create_model(spec)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ZSBenchError(
            f"could not load {spec} ({type(exc).__name__}: {exc})".split("\n")[0],
            "needs internet or a populated Hugging Face cache",
        ) from exc
    sha = _hub_weights_sha(spec[len("hf-hub:") :])
    info = {
        "spec": spec,
        "format": "hf-hub",
        "sha256": sha,
        "pretrained": spec,
        "kind": "full",
        "random_init": False,
        "tokenizer": spec,
    }
    return _finish(model, spec, info, {}, [])


def _hub_weights_sha(repo: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str) and Path(hit).is_file():
            return sha256_file(hit)
    return None


def _load_file(path: Path, arch: str | None, pretrained: str | None) -> LoadedModel:
    where = str(path)
    sha = sha256_file(path)
    obj, meta = read_checkpoint(path)
    parsed: ParsedCheckpoint = parse_checkpoint(obj, meta, where)
    check_embedded(parsed.arch, parsed.arch_config, parsed.pretrained, path.stat().st_size, where)
    warnings: list[str] = []
    if arch is not None:
        arch_name, _ = resolve_arch(arch)
    elif parsed.arch_config is not None:
        from .arch import register_config

        arch_name = register_config(parsed.arch or "zsbench-arch", parsed.arch_config)
    elif parsed.arch is not None:
        arch_name, _ = resolve_arch(parsed.arch)
    elif parsed.default_arch is not None:
        arch_name, _ = resolve_arch(parsed.default_arch)
        warnings.append(
            f"{parsed.format} checkpoint: assuming --arch {parsed.default_arch} (what its training code used)"
        )
    else:
        require_arch(parsed.state, where)
        raise AssertionError("unreachable")
    base = pretrained or parsed.pretrained
    if base is None and parsed.kind != "full":
        base = parsed.default_pretrained
        if base is not None:
            warnings.append(f"{parsed.format} checkpoint: taking the text tower from {arch_name}:{base}")
    if parsed.kind == "full":
        model = _create_empty(arch_name)
        base_desc, random_init = base, False
    else:
        model, base_desc, random_init = _create(arch_name, base)
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
    return _finish(model, arch_name, info, prompts, warnings)

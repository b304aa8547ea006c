"""Resolve architectures: open_clip model names, config JSON paths, or configs embedded in a checkpoint."""

from __future__ import annotations

import difflib
import json
import tempfile
from pathlib import Path
from typing import Any

import open_clip
import torch

from ..errors import CheckpointError, ZSBenchError
from ..fileio import open_regular, sha256_json
from .config_gate import (
    MAX_CONFIG_BYTES,
    builtin_names,
    check_arch_name,
    gate_builtin,
    gate_config,
    load_config_json,
)

_REGISTERED: dict[str, str] = {}


def register_config(
    name: str, config: dict[str, Any], origin: str, *, allow_custom_tokenizer: bool = False
) -> str:
    """Pass `config` through the config gate and register it with open_clip; returns the name to create it by.

    If `name` is a built-in with a different config, a content-hashed name is used instead so a
    checkpoint can never silently get another architecture.
    """
    check_arch_name(name, origin)
    config = gate_config(config, origin, allow_custom_tokenizer=allow_custom_tokenizer)
    key = sha256_json(config)
    if key in _REGISTERED:
        return _REGISTERED[key]
    existing = open_clip.get_model_config(name) if name in open_clip.list_models() else None
    if existing is not None and sha256_json(existing) == key:
        _REGISTERED[key] = name
        return name
    final = name if existing is None else f"{name}-zsbench-{key[:8]}"
    # open_clip registers configs from files; it keeps what it read after the file is gone, so the
    # temporary directory is removed at once instead of accumulating one per model load.
    with tempfile.TemporaryDirectory(prefix="zsbench-arch-") as tmp:
        path = Path(tmp) / f"{final}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)
    _REGISTERED[key] = final
    return final


def resolve_arch(
    arch: str, *, allow_custom_tokenizer: bool = False, origin: str | None = None
) -> tuple[str, dict[str, Any]]:
    """An open_clip model name or a path to a model-config JSON -> (registered name, gated config).

    `origin` (e.g. the checkpoint that named the architecture) prefixes any refusal.
    """
    p = Path(arch)
    if arch.endswith(".json") or p.is_file():
        return register_arch_file(p, allow_custom_tokenizer=allow_custom_tokenizer)
    where = origin or f"architecture {arch}"
    if arch in builtin_names():
        return arch, gate_builtin(arch, where)
    if arch in open_clip.list_models():  # registered in this process from a gated config
        check_arch_name(arch, where)
        return arch, gate_config(open_clip.get_model_config(arch), where)
    close = difflib.get_close_matches(arch, builtin_names(), n=4)
    raise ZSBenchError(
        f"unknown architecture {arch!r}",
        f"did you mean {', '.join(close)}?"
        if close
        else "pass an open_clip model name or a config JSON path",
    )


def read_arch_file(path: Path, *, allow_custom_tokenizer: bool = False) -> dict[str, Any]:
    """A model-config JSON (a regular file of bounded size) after the config gate; registers nothing."""
    where = str(path)
    if not path.is_file():
        raise ZSBenchError(f"architecture config {where} does not exist or is not a regular file")
    with open_regular(path, where) as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    cfg = load_config_json(data, where)
    if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "embed_dim" not in cfg:
        raise ZSBenchError(
            f"architecture config {where} lacks embed_dim/vision_cfg", "use an open_clip model config"
        )
    return gate_config(cfg, where, allow_custom_tokenizer=allow_custom_tokenizer)


def register_arch_file(path: Path, *, allow_custom_tokenizer: bool = False) -> tuple[str, dict[str, Any]]:
    """Read and gate a model-config JSON, then register it under its file name's stem."""
    cfg = read_arch_file(path, allow_custom_tokenizer=allow_custom_tokenizer)
    name = register_config(path.stem, cfg, str(path), allow_custom_tokenizer=allow_custom_tokenizer)
    return name, cfg


def vit_signature(state: dict[str, torch.Tensor], prefix: str = "visual.") -> dict[str, int] | None:
    """Width, patch size, image size, depth and output dim of a ViT image tower from its weights."""
    conv = state.get(f"{prefix}conv1.weight")
    pos = state.get(f"{prefix}positional_embedding")
    if conv is None or pos is None:
        return None
    layers = len({k.split(".")[3] for k in state if k.startswith(f"{prefix}transformer.resblocks.")})
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    proj = state.get(f"{prefix}proj")
    return {
        "width": int(conv.shape[0]),
        "patch_size": int(conv.shape[-1]),
        "image_size": grid * int(conv.shape[-1]),
        "layers": layers,
        "embed_dim": int(proj.shape[1]) if proj is not None else -1,
    }


def candidate_archs(state: dict[str, torch.Tensor]) -> list[str]:
    """open_clip model names whose ViT image tower has exactly these shapes."""
    sig = vit_signature(state)
    if sig is None:
        return []
    out = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        v = cfg.get("vision_cfg", {})
        if v.get("timm_model_name") or isinstance(v.get("layers"), list | tuple):
            continue
        img = v.get("image_size")
        if isinstance(img, list | tuple):
            img = img[0]
        if (v.get("width"), v.get("patch_size"), img, v.get("layers"), cfg.get("embed_dim")) == (
            sig["width"],
            sig["patch_size"],
            sig["image_size"],
            sig["layers"],
            sig["embed_dim"],
        ):
            out.append(name)
    return sorted(out, key=len)


def require_arch(state: dict[str, torch.Tensor], where: str) -> None:
    """Fail with the candidate architectures when a checkpoint does not say what it is."""
    cands = candidate_archs(state)
    hint = (
        f"pass --arch; architectures whose shapes match: {', '.join(cands[:6])}"
        if cands
        else "pass --arch with an open_clip model name or config JSON"
    )
    raise CheckpointError(f"{where}: the checkpoint does not record its architecture", hint)

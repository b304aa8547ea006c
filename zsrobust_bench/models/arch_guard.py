"""Checks on what an untrusted checkpoint says about itself before any of it is acted on.

A zsbench checkpoint may name its architecture, embed an open_clip model config and name its base
weights. Those strings become file names and model constructors, so: names must be plain
identifiers (no path separators, no `..`); an embedded config may not point at external code or
downloads (Hugging Face / timm pretrained weights or tokenizers); every number in it is bounded;
and the model it declares is first built on the meta device (no memory) and refused when its size
is out of all proportion to the file, so a few bytes cannot make the loader allocate gigabytes.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from ..errors import CheckpointError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_NUMBER = 1_000_000
MAX_LAYERS = 256
MAX_STRING = 128
MAX_CONFIG_DEPTH = 3
SLACK_BYTES = 1 << 30  # what a file may leave to base weights or zero-filled token rows
TOP_KEYS = frozenset(
    {
        "embed_dim",
        "vision_cfg",
        "text_cfg",
        "quick_gelu",
        "custom_text",
        "init_logit_scale",
        "init_logit_bias",
        "nonscalar_logit_scale",
    }
)
EXTERNAL_KEYS = frozenset(
    {"hf_model_name", "hf_tokenizer_name", "hf_model_pretrained", "timm_model_pretrained"}
)
_HINT = "pass --arch (and --pretrained) yourself to load this checkpoint's weights"


def check_embedded_name(value: Any, field: str, where: str) -> str:
    """An architecture name or pretrained tag from inside a checkpoint: a plain identifier, never a path."""
    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        shown = repr(value)[:80]
        raise CheckpointError(
            f"{where}: embedded {field} {shown} is not a plain name (letters, digits, '.', '_', '-')", _HINT
        )
    return value


def _walk(value: Any, path: str, depth: int, where: str) -> None:
    if depth > MAX_CONFIG_DEPTH:
        raise CheckpointError(f"{where}: embedded architecture nests too deeply at {path}", _HINT)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > MAX_STRING:
                raise CheckpointError(f"{where}: embedded architecture has a bad key at {path}", _HINT)
            if k in EXTERNAL_KEYS and v:
                raise CheckpointError(
                    f"{where}: embedded architecture names external code or weights ({path}.{k}); "
                    "nothing was downloaded",
                    _HINT,
                )
            _walk(v, f"{path}.{k}", depth + 1, where)
    elif isinstance(value, list):
        if len(value) > 16:
            raise CheckpointError(f"{where}: embedded architecture list at {path} is too long", _HINT)
        for i, v in enumerate(value):
            _walk(v, f"{path}[{i}]", depth + 1, where)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        limit = MAX_LAYERS if path.endswith("layers") or "layers[" in path else MAX_NUMBER
        if not math.isfinite(value) or abs(value) > limit:
            raise CheckpointError(
                f"{where}: embedded architecture value {path} = {value} is out of range", _HINT
            )
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise CheckpointError(f"{where}: embedded architecture string at {path} is too long", _HINT)
    else:
        raise CheckpointError(
            f"{where}: embedded architecture holds a {type(value).__name__} at {path}", _HINT
        )


def declared_model_bytes(config: dict[str, Any]) -> int:
    """fp32 bytes of every parameter and buffer of the model `config` declares, built on the meta device."""
    import open_clip

    kwargs = {k: v for k, v in config.items() if k != "custom_text"}
    cls = open_clip.CustomTextCLIP if config.get("custom_text") else open_clip.CLIP
    with torch.device("meta"):
        model = cls(**kwargs)
    return 4 * sum(t.numel() for t in model.state_dict().values())


def check_arch_config(config: Any, file_size: int, where: str) -> None:
    """Refuse an embedded open_clip config that is malformed, points outside, or is too big for its file."""
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("vision_cfg"), dict)
        or "embed_dim" not in config
    ):
        raise CheckpointError(f"{where}: embedded architecture is not an open_clip model config", _HINT)
    unknown = sorted(str(k) for k in config if k not in TOP_KEYS)
    if unknown:
        raise CheckpointError(f"{where}: embedded architecture has unsupported keys {unknown[:5]}", _HINT)
    _walk(config, "arch_config", 0, where)
    try:
        need = declared_model_bytes(config)
    except Exception as exc:  # noqa: BLE001 - untrusted config: any failure to build it is a refusal
        raise CheckpointError(
            f"{where}: embedded architecture cannot be built ({type(exc).__name__}: {exc})".split("\n")[0],
            _HINT,
        ) from exc
    budget = 4 * file_size + SLACK_BYTES
    if need > budget:
        raise CheckpointError(
            f"{where}: embedded architecture declares a {need / 2**30:.1f} GiB model but the file holds only "
            f"{file_size} bytes; it was not built",
            "the checkpoint is crafted or corrupt",
        )


def check_embedded(arch: Any, arch_config: Any, pretrained: Any, file_size: int, where: str) -> None:
    """Validate a checkpoint's self-description (name, config, base tag) before the loader uses it."""
    if arch is not None:
        check_embedded_name(arch, "architecture name", where)
    if pretrained is not None:
        check_embedded_name(pretrained, "pretrained tag", where)
    if arch_config is not None:
        check_arch_config(arch_config, file_size, where)

"""The project's own self-describing checkpoint: safetensors with the architecture, base weights
and kind in its metadata, so `zsbench evaluate FILE` needs no extra flags."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from ..fileio import atomic_write_bytes

KINDS = ("full", "vision-only", "visual-prompt")


def save_native(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    *,
    arch: str,
    arch_config: dict[str, Any] | None,
    kind: str,
    pretrained: str | None = None,
    prompts: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    compact_token_rows: list[int] | None = None,
) -> Path:
    """Write a zsbench checkpoint atomically.

    `state` uses open_clip full-model keys (only `visual.*` for vision-only). `compact_token_rows`
    stores just those rows of the token table (the rest load as zeros): for tiny exported models
    whose prompts use a small vocabulary.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    tensors: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        t = v.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[k] = t.contiguous()
    if compact_token_rows is not None and "token_embedding.weight" in tensors:
        table = tensors.pop("token_embedding.weight")
        rows = torch.tensor(sorted(set(compact_token_rows)), dtype=torch.int64)
        tensors["token_embedding.weight.__rows__"] = rows
        tensors["token_embedding.weight.__values__"] = table[rows].contiguous()
        tensors["token_embedding.weight.__shape__"] = torch.tensor(list(table.shape), dtype=torch.int64)
    for k, v in (prompts or {}).items():
        tensors[f"prompter.{k}"] = v.detach().cpu().contiguous()
    info = {"arch": arch, "arch_config": arch_config, "kind": kind, "pretrained": pretrained, **(extra or {})}
    meta = {"zsbench_format": "1", "zsbench_model": json.dumps(info, sort_keys=True)}
    path = Path(path)
    atomic_write_bytes(path, canonical_safetensors(st_save(tensors, metadata=meta)))
    return path


def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its `__metadata__` keys in sorted order.

    The safetensors writer keeps metadata in a hash map whose iteration order changes from process
    to process, so two exports of the same weights could differ in their header bytes; sorting the
    keys makes an export a pure function of its content (same header length, same padding).
    """
    n = int.from_bytes(blob[:8], "little")
    raw = blob[8 : 8 + n]
    header = json.loads(raw)
    meta = header.pop("__metadata__", None)
    canon = {} if meta is None else {"__metadata__": dict(sorted(meta.items()))}
    canon.update(header)
    text = json.dumps(canon, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) != len(raw.rstrip(b" ")):
        raise ValueError("safetensors header did not round-trip through JSON; refusing to rewrite it")
    return blob[:8] + text.ljust(n, b" ") + blob[8 + n :]

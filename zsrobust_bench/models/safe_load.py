"""Weights-only reading of checkpoint files: nothing in a file is ever executed.

`.safetensors` files are read with safetensors; everything else with
`torch.load(weights_only=True)`, which refuses any pickle that would need code. Before that, zip
archives are inspected so a file with unexpected members or absurd sizes is refused without
allocating memory for it.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

SAFETENSORS_MAGIC_MAX_HEADER = 100 * 1024 * 1024


def _is_safetensors(path: Path) -> bool:
    """Detect safetensors by content: 8-byte little-endian header length followed by a JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= min(SAFETENSORS_MAGIC_MAX_HEADER, path.stat().st_size - 8) and head[8:9] == b"{"


def _check_zip(path: Path) -> None:
    """Refuse torch zip archives whose members are not those torch.save writes, or whose sizes lie."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path}: damaged zip archive ({exc})", "the file is truncated or corrupt") from exc
    allowed_leaf = {"data.pkl", "byteorder", "version", ".data", ".format_version", ".storage_alignment"}
    total = 0
    for info in infos:
        parts = info.filename.split("/")
        if len(parts) < 2 or info.filename.startswith("/") or ".." in parts:
            raise CheckpointError(f"{path}: unexpected archive member {info.filename!r}", "not a torch.save file")
        ok = parts[-1] in allowed_leaf or (len(parts) >= 3 and parts[-2] == "data") or parts[1] == ".data"
        if not ok:
            raise CheckpointError(
                f"{path}: unexpected archive member {info.filename!r}",
                "torch.save archives hold only data.pkl, data/<n>, version and byteorder",
            )
        total += info.file_size
    if total > 4 * size + (1 << 20) and all(i.compress_type == zipfile.ZIP_STORED for i in infos):
        raise CheckpointError(f"{path}: archive declares {total} bytes in a {size}-byte file", "file is corrupt")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a checkpoint as plain containers of tensors. Returns (object, safetensors metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty", "the download or copy did not finish")
    if _is_safetensors(path):
        return _read_safetensors(path)
    if zipfile.is_zipfile(path):
        _check_zip(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} needs code to unpickle and was refused; nothing in it was executed",
            "re-save it as a plain state dict (torch.save(model.state_dict())) or as .safetensors",
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})".split("\n")[0]) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dict of weights", "save a state dict")
    return obj, {}


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        meta = header.get("__metadata__") or {}
        size = path.stat().st_size - 8 - n
        for key, info in header.items():
            if key == "__metadata__":
                continue
            start, end = info["data_offsets"]
            if not (0 <= start <= end <= size):
                raise CheckpointError(f"{path}: tensor {key!r} lies outside the file", "the file is truncated")
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged safetensors file ({exc})") from exc
    return dict(tensors), {str(k): str(v) for k, v in meta.items()}


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse NaN or infinite weights, naming the first offending tensor."""
    for key, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{where}: tensor {key!r} holds NaN or infinite values", "the checkpoint is broken")

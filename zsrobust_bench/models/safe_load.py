"""Weights-only reading of checkpoint files: nothing in a file is ever executed.

Safetensors files (recognised by content, never by name) are read with safetensors after their
header is checked against the file size. torch zip archives are inspected first without loading:
every member must be one torch.save writes, uncompressed, inside the file; the pickle is scanned
statically (`pickle_scan`) so every global it names is on a strict allowlist and every storage it
declares matches its archive member byte for byte. Only then does `torch.load(weights_only=True)`
run, so no declared size can make it allocate more than the file holds. Legacy (pre-1.6,
non-zip) torch files are refused: their loader allocates whatever size the file declares.
After loading, every tensor must be a plain dense CPU tensor of a weight dtype whose elements fit
in its storage (no expanded views pretending to hold absurd shapes).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..errors import CheckpointError
from .pickle_scan import RESAVE_HINT, scan_pickle

SAFETENSORS_MAGIC_MAX_HEADER = 100 * 1024 * 1024
MAX_PICKLE_BYTES = 64 * 1024 * 1024
MAX_SMALL_MEMBER = 4096
MAX_MEMBERS = 200_000
MAX_NESTING = 64
WEIGHT_DTYPES = frozenset(
    {
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.int8,
        torch.uint8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    }
)
SAFETENSORS_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL"})
ZIP_MAGIC = b"PK\x03\x04"
_SMALL_LEAVES = frozenset({"byteorder", "version", ".format_version", ".storage_alignment"})
_DOT_DATA = frozenset({"version", "serialization_id"})
_RESAVE = RESAVE_HINT


def _is_safetensors(path: Path) -> bool:
    """Detect safetensors by content: 8-byte little-endian header length followed by a JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n <= min(SAFETENSORS_MAGIC_MAX_HEADER, path.stat().st_size - 8) and head[8:9] == b"{"


def _starts_with_zip_header(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == ZIP_MAGIC


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a checkpoint as plain containers of tensors. Returns (object, safetensors metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "check the path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty", "the download or copy did not finish")
    if _is_safetensors(path):
        obj, meta = _read_safetensors(path)
    elif _starts_with_zip_header(path):
        with open(path, "rb") as fh:  # one handle: what is checked is what is loaded
            check_torch_zip(fh, str(path))
            fh.seek(0)
            obj, meta = _torch_load(fh, path), {}
    else:
        raise CheckpointError(
            f"{path} is neither a torch zip archive nor a safetensors file; nothing in it was executed",
            "legacy (pre-1.6) torch files, bare pickles and damaged files are refused; " + _RESAVE,
        )
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a dict of weights", "save a state dict"
        )
    check_contents(obj, str(path))
    return obj, meta


# ---------------------------------------------------------------- torch zip archives


def check_torch_zip(fh: BinaryIO, where: str) -> None:
    """Refuse a torch zip whose members, sizes or pickle are not what torch.save writes; loads nothing."""
    size = os.fstat(fh.fileno()).st_size
    try:
        with zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
            prefix, pkl_info, data_infos = _check_members(infos, size, where)
            if pkl_info.file_size > MAX_PICKLE_BYTES:
                raise CheckpointError(
                    f"{where}: data.pkl is {pkl_info.file_size} bytes (limit {MAX_PICKLE_BYTES})"
                )
            pkl = zf.read(pkl_info)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
    ) as exc:
        raise CheckpointError(
            f"{where}: damaged zip archive ({type(exc).__name__}: {exc})".split("\n")[0],
            "the file is truncated or corrupt; download it again",
        ) from exc
    scan = scan_pickle(pkl, where)
    for key, ref in scan.storages.items():
        info = data_infos.get(key)
        if info is None:
            raise CheckpointError(
                f"{where}: the pickle declares storage {key} but the archive has no {prefix}/data/{key}"
            )
        if info.file_size != ref.nbytes:
            raise CheckpointError(
                f"{where}: storage {key} declares {ref.numel} x {ref.dtype} ({ref.nbytes} bytes) but its archive "
                f"member holds {info.file_size} bytes",
                "the file is corrupt or crafted; it was not loaded",
            )
    unused = sorted(set(data_infos) - set(scan.storages))
    if unused:
        raise CheckpointError(
            f"{where}: unexpected archive member {prefix}/data/{unused[0]} (no tensor uses it)",
            "torch.save archives hold only the storages their pickle references",
        )


def _check_members(
    infos: list[zipfile.ZipInfo], size: int, where: str
) -> tuple[str, zipfile.ZipInfo, dict[str, zipfile.ZipInfo]]:
    """Member names, compression and extents; returns (prefix, data.pkl info, {storage key: info})."""
    if not infos or len(infos) > MAX_MEMBERS:
        raise CheckpointError(f"{where}: zip archive has {len(infos)} members", "not a torch.save file")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise CheckpointError(f"{where}: zip archive lists a member twice", "the file is crafted or corrupt")
    prefix = names[0].split("/", 1)[0]
    pkl_info: zipfile.ZipInfo | None = None
    data_infos: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        rest = _member_rest(info.filename, prefix, where)
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise CheckpointError(
                f"{where}: archive member {info.filename!r} is compressed or encrypted",
                "torch.save stores members uncompressed; the file is not a torch checkpoint",
            )
        if info.file_size != info.compress_size or info.header_offset < 0:
            raise CheckpointError(f"{where}: archive member {info.filename!r} has inconsistent sizes")
        if info.header_offset + 30 + len(info.filename) + info.file_size > size:
            raise CheckpointError(
                f"{where}: archive member {info.filename!r} lies outside the file", "the file is truncated"
            )
        total += info.file_size
        if rest == "data.pkl":
            pkl_info = info
        elif rest.startswith("data/") and re.fullmatch(r"\d{1,12}", rest[5:]):
            data_infos[rest[5:]] = info
        elif rest in _SMALL_LEAVES or (rest.startswith(".data/") and rest[6:] in _DOT_DATA):
            if info.file_size > MAX_SMALL_MEMBER:
                raise CheckpointError(f"{where}: archive member {info.filename!r} is {info.file_size} bytes")
        else:
            raise CheckpointError(
                f"{where}: unexpected archive member {info.filename!r}",
                "torch.save archives hold only data.pkl, data/<n>, version, byteorder and .data/*",
            )
    if total > size:
        raise CheckpointError(
            f"{where}: archive declares {total} bytes in a {size}-byte file", "the file is corrupt"
        )
    if pkl_info is None:
        raise CheckpointError(f"{where}: zip archive has no {prefix}/data.pkl", "not a torch.save file")
    return prefix, pkl_info, data_infos


def _member_rest(name: str, prefix: str, where: str) -> str:
    """The part of a member name after the archive's single top-level folder."""
    parts = name.split("/")
    bad = (
        len(parts) < 2
        or parts[0] != prefix
        or not prefix
        or name.startswith("/")
        or "\\" in name
        or any(p in ("", ".", "..") for p in parts)
    )
    if bad:
        raise CheckpointError(f"{where}: unexpected archive member {name!r}", "not a torch.save file")
    return "/".join(parts[1:])


def _torch_load(fh: BinaryIO, path: Path) -> Any:
    import pickle

    try:
        return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} needs code to unpickle and was refused; nothing in it was executed", _RESAVE
        ) from exc
    except Exception as exc:  # noqa: BLE001 - untrusted input: any failure to parse is a refusal
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})".split("\n")[0],
            "the file is damaged or not a torch checkpoint",
        ) from exc


# ---------------------------------------------------------------- safetensors


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from safetensors.torch import load_file

    where = str(path)
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{where}: damaged safetensors header ({type(exc).__name__})", "the file is corrupt"
        ) from exc
    meta = _check_safetensors_header(header, path.stat().st_size - 8 - n, where)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - untrusted input: any failure to parse is a refusal
        raise CheckpointError(
            f"{where}: damaged safetensors file ({type(exc).__name__}: {exc})".split("\n")[0]
        ) from exc
    return dict(tensors), meta


def _check_safetensors_header(header: Any, data_size: int, where: str) -> dict[str, str]:
    """Types, dtypes and extents of every entry; returns the string metadata."""
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: safetensors header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise CheckpointError(f"{where}: safetensors __metadata__ must map strings to strings")
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise CheckpointError(f"{where}: safetensors entry {key!r} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{where}: tensor {key!r} has dtype {dtype!r}, which is not a weight dtype",
                f"allowed: {', '.join(sorted(SAFETENSORS_DTYPES))}",
            )
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: tensor {key!r} has a malformed shape {shape!r}")
        ok = isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
        if not ok or not (0 <= offsets[0] <= offsets[1] <= data_size):
            raise CheckpointError(f"{where}: tensor {key!r} lies outside the file", "the file is truncated")
    return dict(meta)


# ---------------------------------------------------------------- loaded contents


def check_contents(obj: Any, where: str) -> None:
    """Refuse anything but plain containers of dense CPU tensors of weight dtypes that fit their storage."""
    todo: list[tuple[Any, str, int]] = [(obj, "", 0)]
    seen: set[int] = set()
    while todo:
        node, name, depth = todo.pop()
        if isinstance(node, dict | list | tuple | set | frozenset | torch.Tensor):
            if id(node) in seen:  # shared or self-referencing containers are walked once
                continue
            seen.add(id(node))
        if depth > MAX_NESTING:
            raise CheckpointError(f"{where}: containers nested deeper than {MAX_NESTING} levels at {name!r}")
        if isinstance(node, torch.Tensor):
            _check_tensor(node, name or "<root>", where)
        elif isinstance(node, dict):
            if any(isinstance(v, torch.Tensor) for v in node.values()) and not all(
                isinstance(k, str) for k in node
            ):
                raise CheckpointError(f"{where}: a dict of tensors at {name!r} has non-string keys")
            for k, v in node.items():
                todo.append((v, _child(name, f".{k}" if name else str(k)), depth + 1))
        elif isinstance(node, list | tuple | set | frozenset):
            for i, v in enumerate(node):
                todo.append((v, _child(name, f"[{i}]"), depth + 1))
        elif not isinstance(node, str | bytes | int | float | type(None) | torch.device | torch.dtype):
            raise CheckpointError(
                f"{where}: {name!r} holds a {type(node).__name__}, which is not weight data"
            )


def _child(name: str, step: str) -> str:
    """A readable path to a nested value, kept short whatever the key lengths."""
    return (name + step)[:200]


def _check_tensor(t: torch.Tensor, name: str, where: str) -> None:
    shown = name
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        raise CheckpointError(f"{where}: {shown!r} is a {type(t).__name__}, not a plain tensor")
    if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
        raise CheckpointError(f"{where}: tensor {shown!r} is not a dense CPU tensor ({t.layout}, {t.device})")
    if t.dtype not in WEIGHT_DTYPES:
        raise CheckpointError(
            f"{where}: tensor {shown!r} has dtype {t.dtype}, which is not a weight dtype",
            "weights are floating point (fp16/bf16/fp32/fp64); buffers may be integer or bool",
        )
    if t.numel() * t.element_size() > t.untyped_storage().nbytes():
        raise CheckpointError(
            f"{where}: tensor {shown!r} declares shape {tuple(t.shape)} ({t.numel()} elements) but its storage "
            f"holds {t.untyped_storage().nbytes()} bytes",
            "an expanded or overlapping view is not a weight; the file is crafted or corrupt",
        )


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse NaN or infinite weights, naming the first offending tensor."""
    for key, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(
                f"{where}: tensor {key!r} holds NaN or infinite values", "the checkpoint is broken"
            )

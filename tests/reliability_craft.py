"""Builders for hostile checkpoint files used by the reliability and fuzz tests (test code only)."""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

TORCH_PREFIX = "archive"


def torch_bytes(obj: Any, **kw: Any) -> bytes:
    """What torch.save writes for `obj`."""
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def members(data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member of a zip archive, in order."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def build_zip(items: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip archive with exactly these members (duplicates allowed, as a crafted file may have)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", compression) as zf:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted here
        for name, data in items:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            zf.writestr(info, data)
    return buf.getvalue()


def with_pickle(data: bytes, pkl: bytes) -> bytes:
    """A torch archive whose data.pkl is replaced by `pkl` (storages kept)."""
    return build_zip([(n, pkl if n.endswith("/data.pkl") else b) for n, b in members(data)])


def pickle_of(data: bytes) -> bytes:
    return next(b for n, b in members(data) if n.endswith("/data.pkl"))


class Reduce:
    """Pickles as a call of `func(*args)`: the classic code-execution payload."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def marker_command(marker: str) -> str:
    return f"touch {marker}"


def evil_payloads(marker: str) -> dict[str, bytes]:
    """Pickle streams that create `marker` when unpickled unsafely, each by a different route."""
    import builtins
    import os
    import subprocess

    write = f"open({marker!r}, 'w').write('pwned')"
    out = {
        "os.system/REDUCE/proto2": pickle.dumps({"w": Reduce(os.system, marker_command(marker))}, protocol=2),
        "builtins.exec/proto2": pickle.dumps({"w": Reduce(builtins.exec, write)}, protocol=2),
        "builtins.eval/proto4-STACK_GLOBAL": pickle.dumps({"w": Reduce(builtins.eval, write)}, protocol=4),
        "subprocess.call/proto3": pickle.dumps({"w": Reduce(subprocess.call, ["touch", marker])}, protocol=3),
        "os.system/proto0-text": pickle.dumps(Reduce(os.system, marker_command(marker)), protocol=0),
    }
    # Hand-written: {'w': posix.system(cmd)} with a GLOBAL opcode inside a state dict value.
    cmd = marker_command(marker).encode()
    out["hand-written GLOBAL posix.system"] = (
        b"\x80\x02}X\x01\x00\x00\x00wcposix\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85Rs."
    )
    return out


def evil_archive(base: bytes, payload: bytes) -> bytes:
    """A well-formed torch archive whose pickle is `payload`."""
    return with_pickle(base, payload)


def legacy_bytes(obj: Any) -> bytes:
    """torch's pre-1.6 (non-zip) serialization of `obj`."""
    return torch_bytes(obj, _use_new_zipfile_serialization=False)


def safetensors_bytes(header: dict[str, Any] | bytes, data: bytes = b"") -> bytes:
    """A safetensors file with this (possibly hostile) header and data section."""
    import json

    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# ---------------------------------------------------------------- submissions

BASE_CARD: dict[str, Any] = {
    "schema": "zsbench.card/1",
    "id": "entry-a",
    "name": "Entry A",
    "authors": ["Ada Lovelace"],
    "paper": {"title": "A paper", "url": "https://example.org/paper"},
    "venue": "ICLR 2023",
    "architecture": "ViT-B/32",
    "base_weights": "openai",
    "training_data": "ImageNet",
    "threat_model": {"norm": "Linf", "eps": "1/255"},
    "checkpoint": {"location": "https://example.org/ckpt", "sha256": None},
    "license": "MIT",
    "footnote": None,
}

REPORTED: dict[str, Any] = {
    "schema": "zsbench.reported/1",
    "citation": {"text": "Someone et al. (2023)", "url": "https://example.org/paper", "where": "Table 1"},
    "datasets": {},
    "decimals": 2,
    "means": {"clean_acc": 55.97, "over": None, "robust_acc_by_eps": {"1/255": 38.18}},
    "protocol": {"name": "tecoa-readme", "version": 1},
}


def make_entry(
    root: Path, entry_id: str, card: dict[str, Any] | str | bytes, results: dict[str, Any] | None = None
) -> Path:
    """submissions/<entry_id>/ with this card (a dict is dumped as YAML; text/bytes are written as is)."""
    import json as _json

    import yaml

    d = root / entry_id
    (d / "results").mkdir(parents=True, exist_ok=True)
    if isinstance(card, dict):
        data = yaml.safe_dump(card, sort_keys=False, allow_unicode=True).encode()
    else:
        data = card.encode() if isinstance(card, str) else card
    (d / "card.yaml").write_bytes(data)
    doc = REPORTED if results is None else results
    (d / "results" / f"{doc['protocol']['name']}.json").write_text(_json.dumps(doc, indent=2))
    return d


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one intra-op thread is 5-20x faster than oversubscribing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

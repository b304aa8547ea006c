"""Hostile model configs for the config-gate tests (test code only): the remote-code tokenizer of
issue #13 and a network guard that turns any connection attempt into a loud failure."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import pytest

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

EVIL_TOK = """\
from pathlib import Path
Path({marker!r}).write_text("the submitter's code ran")
from transformers import PreTrainedTokenizer
class EvilTokenizer(PreTrainedTokenizer):
    pass
"""


def tiny(**text_cfg: Any) -> dict[str, Any]:
    """TINY with extra text_cfg keys."""
    cfg = copy.deepcopy(TINY)
    cfg["text_cfg"].update(text_cfg)
    return cfg


def evil_tokenizer_dir(folder: Path, marker: Path) -> Path:
    """A tokenizer folder whose `auto_map` points transformers at `evil_tok.py`, which writes `marker` at import."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["evil_tok.EvilTokenizer", None]}})
    )
    (folder / "evil_tok.py").write_text(EVIL_TOK.format(marker=str(marker)))
    return folder


class NetworkTouched(BaseException):
    """Raised by the guarded socket; a BaseException so that no `except Exception` can swallow it."""


def install_network_guard(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection attempt fails loudly and is recorded in the returned list."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args)[:200])
        raise NetworkTouched(attempts[-1])

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def hub_snapshot(cache: Path, repo: str, files: dict[str, bytes], revision: str = "0" * 40) -> Path:
    """A Hugging Face hub cache as huggingface_hub lays it out: models--ORG--NAME/{refs/main, snapshots/REV/}."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / revision
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(revision)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap

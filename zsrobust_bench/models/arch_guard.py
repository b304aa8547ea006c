"""Checks on what an untrusted checkpoint says about itself before any of it is acted on.

A zsbench checkpoint may name its architecture, embed an open_clip model config and name its base
weights. Names must be plain identifiers (no path separators, no `..`, nothing open_clip attaches a
download to); an embedded config passes the config gate (`config_gate`: allowlisted keys, bounded
sizes, no external code, tokenizers or weights); and the model it declares, built on the meta
device, is refused when its size is out of all proportion to the file, so a few bytes cannot make
the loader allocate gigabytes.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import CheckpointError
from .config_gate import check_arch_name, gate_config, model_bytes

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SLACK_BYTES = 1 << 30  # what a file may leave to base weights or zero-filled token rows
_HINT = "pass --arch (and --pretrained) yourself to load this checkpoint's weights"


def check_embedded_name(value: Any, field: str, where: str) -> str:
    """An architecture name or pretrained tag from inside a checkpoint: a plain identifier, never a path."""
    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        shown = repr(value)[:80]
        raise CheckpointError(
            f"{where}: embedded {field} {shown} is not a plain name (letters, digits, '.', '_', '-')", _HINT
        )
    return value


def check_arch_config(config: Any, file_size: int, where: str) -> None:
    """Refuse an embedded open_clip config that the gate refuses or that is too big for its file."""
    clean = gate_config(config, f"{where}: embedded architecture")
    need = model_bytes(clean)
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
        check_arch_name(arch, f"{where}: embedded architecture")
    if pretrained is not None:
        check_embedded_name(pretrained, "pretrained tag", where)
    if arch_config is not None:
        check_arch_config(arch_config, file_size, where)

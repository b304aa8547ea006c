"""The reference TeCoA trainer (finetuning, visual prompting, baselines) and contrastive training of small CLIPs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load_config", "train"]


def train(config: dict[str, Any], out_dir: Path, *, resume: bool = False) -> Path:
    """Run a training config (a resolved mapping, or raw: defaults are filled in) into `out_dir`; returns the final checkpoint."""
    from .config import resolve_config
    from .trainer import train as _train

    return _train(resolve_config(config), Path(out_dir), resume=resume)


def load_config(ref: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A shipped config name or YAML path with `key=value` overrides, resolved against the defaults."""
    from .config import load_config as _load

    return _load(ref, overrides)

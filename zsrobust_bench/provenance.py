"""What produced a number: package versions, git commit, device, time."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from . import __version__

PACKAGES = ("torch", "torchvision", "open_clip_torch", "pyautoattack", "numpy", "safetensors", "datasets")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the zsrobust_bench checkout, when it is one (None for an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        res = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def provenance(
    seed: int, device: str, precision: str, started: str, wall: float, world_size: int
) -> dict[str, Any]:
    return {
        "zsbench_version": __version__,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "seed": seed,
        "device": device_name(device),
        "precision": precision,
        "world_size": world_size,
        "started": started,
        "finished": now_iso(),
        "wall_seconds": round(wall, 3),
    }

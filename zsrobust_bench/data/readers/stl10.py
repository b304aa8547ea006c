"""STL-10 binaries (``stl10_binary/{test,train}_{X,y}.bin``), as ``torchvision.datasets.STL10`` downloads them.

Read here rather than through torchvision because torchvision checks md5 sums and rejects re-packed
copies; the format is simple (raw uint8 pixels stored column-major per channel, 1-based labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..spec import DatasetSpec, Source
from .base import ArraySource, ImageSource

STL10_FILES = {"test": ("test_X.bin", "test_y.bin"), "train": ("train_X.bin", "train_y.bin")}


def read_stl10(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    if split not in STL10_FILES:
        raise DataError(f"{spec.name} has no {split!r} split (has {', '.join(STL10_FILES)})")
    x_path, y_path = (path / "stl10_binary" / f for f in STL10_FILES[split])
    for p in (x_path, y_path):
        if not p.is_file():
            raise DataError(f"STL-10 file {p} is missing", f"run `zsbench datasets prepare {spec.name}`")
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    raw = np.fromfile(x_path, dtype=np.uint8)
    if raw.size != labels.size * 3 * 96 * 96:
        raise DataError(
            f"STL-10 file {x_path} holds {raw.size} bytes, expected {labels.size * 3 * 96 * 96} for {labels.size} labels"
        )
    # Stored column-major per channel: (N, C, W, H) -> (N, H, W, C).
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    return ArraySource(np.ascontiguousarray(images), labels, str(x_path))

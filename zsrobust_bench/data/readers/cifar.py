"""CIFAR-10/100 python batches, as ``torchvision.datasets.CIFAR10/100`` download them.

Read here rather than through torchvision because torchvision checks md5 sums and rejects re-packed
copies of the same data. The batches are Python pickles, so they are loaded with an unpickler that
only rebuilds plain containers and numpy arrays: a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ..spec import DatasetSpec, Source
from .base import ArraySource, ImageSource

# CIFAR python pickles: folder, batch files per split, label key.
CIFAR_LAYOUTS: dict[str, tuple[str, dict[str, tuple[str, ...]], str]] = {
    "CIFAR10": (
        "cifar-10-batches-py",
        {"test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))},
        "labels",
    ),
    "CIFAR100": ("cifar-100-python", {"test": ("test",), "train": ("train",)}, "fine_labels"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; anything else is refused, not executed."""

    ALLOWED = frozenset(
        [
            (mod, name)
            for mod in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy")
            for name in ("_reconstruct", "scalar", "ndarray", "dtype")
        ]
        + [("_codecs", "encode")]  # how protocol-2 pickles written by Python 3 store bytes
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (a data batch holds only arrays)")


def _load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR batch dict with str keys (the official files are Python 2 pickles: latin1, as torchvision)."""
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise DataError(
            f"cannot read CIFAR batch {path}: {exc}", "the file is corrupt or not a CIFAR python batch"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {path} is not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    folder, files, label_key = CIFAR_LAYOUTS[source.ref]
    if split not in files:
        raise DataError(f"{spec.name} has no {split!r} split (has {', '.join(files)})")
    images, labels, names = [], [], []
    for name in files[split]:
        batch_path = path / folder / name
        if not batch_path.is_file():
            raise DataError(
                f"CIFAR batch {batch_path} is missing", f"run `zsbench datasets prepare {spec.name}`"
            )
        batch = _load_pickle(batch_path)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"CIFAR batch {batch_path} lacks 'data' or {label_key!r}")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch[label_key]) != len(data):
            raise DataError(
                f"CIFAR batch {batch_path} has data of shape {data.shape} for {len(batch[label_key])} labels"
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
        names.append(str(batch_path))
    return ArraySource(np.concatenate(images), np.concatenate(labels), " + ".join(names))

"""Source kind ``torchvision``: the files a ``torchvision.datasets`` class downloads.

The source's ``read`` option picks how they are read: through the torchvision class itself
(``class``, the default), by this package's own readers where torchvision's md5 checks would reject
re-packed files (``cifar-pickle``, ``stl10-binary``), or as class folders (``folders``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ...errors import DataError
from ..paths import dataset_dir
from ..spec import DatasetSpec, Source
from .base import ImageSource, Reader
from .cifar import read_cifar
from .imagefolder import read_folder_tree
from .stl10 import read_stl10


class TorchvisionSource:
    """Items of a torchvision dataset object; `describe` finds the image path where the class keeps one."""

    PATH_ATTRS = ("_image_files", "_images", "_samples", "samples")

    def __init__(self, ds: Any, where: str) -> None:
        self.ds, self.where = ds, where

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image, label = self.ds[index]
        return image, int(label)

    def describe(self, index: int) -> str:
        for attr in self.PATH_ATTRS:
            seq = getattr(self.ds, attr, None)
            if seq is not None:
                item = seq[index]
                return str(item[0] if isinstance(item, tuple) else item)
        return f"item {index} of {self.where}"


def _read_torchvision_class(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    import torchvision.datasets

    kwargs = source.options.get("splits", {}).get(split)
    if kwargs is None:
        raise DataError(f"{spec.name}: torchvision.datasets.{source.ref} gives no {split!r} split here")
    cls = getattr(torchvision.datasets, source.ref)
    try:
        ds = cls(root=str(path), download=False, **kwargs)
    except RuntimeError as exc:
        raise DataError(
            f"torchvision.datasets.{source.ref} files under {path} are missing or incomplete: {exc}",
            f"run `zsbench datasets prepare {spec.name}`",
        ) from exc
    return TorchvisionSource(ds, f"torchvision.datasets.{source.ref} in {path}")


def _read_torchvision_folders(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    tree = path / source.options["folders"]
    if not tree.is_dir():
        raise DataError(
            f"{spec.name}: expected the class folders at {tree}",
            f"run `zsbench datasets prepare {spec.name}`",
        )
    return read_folder_tree(spec, tree, source.options, split)


TORCHVISION_READERS: dict[str, Reader] = {
    "class": _read_torchvision_class,
    "cifar-pickle": read_cifar,
    "stl10-binary": read_stl10,
    "folders": _read_torchvision_folders,
}


def locate_torchvision(spec: DatasetSpec, source: Source, root: Path, split: str) -> Path | None:
    return dataset_dir(root, spec.name) / source.options.get("dir", "torchvision")


def read_torchvision(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    return TORCHVISION_READERS[source.options.get("read", "class")](spec, source, path, split)

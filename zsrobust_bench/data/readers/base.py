"""What every reader returns: an ImageSource, the raw (PIL image, int label) items of one split.

Readers differ only in where the pixels live (an array in memory, files, tar members, arrow rows);
the ImageSource protocol hides that from EvalDataset. The two sources here are shared by several
readers: ArraySource for formats that decode to one uint8 array (CIFAR pickles, STL-10 binaries),
and SubsetSource for splits zsbench cuts out of a larger set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ..spec import DatasetSpec, Source


class ImageSource(Protocol):
    """Raw items of one split: a PIL image (decoded lazily) and an int label."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Image.Image, int]: ...

    def describe(self, index: int) -> str: ...


# A source kind's pair: where a split's files are under the data root, and how to read them.
Locator = Callable[[DatasetSpec, Source, Path, str], "Path | None"]
Reader = Callable[[DatasetSpec, Source, Path, str], ImageSource]


@dataclass
class ArraySource:
    """Images held in a uint8 (N,H,W,3) array (CIFAR pickles, STL-10 binaries)."""

    images: np.ndarray
    labels: np.ndarray
    where: str

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.labels[index])

    def describe(self, index: int) -> str:
        return f"image {index} of {self.where}"


@dataclass
class SubsetSource:
    """Some items of another source, in the given order."""

    base: ImageSource
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.base[self.indices[index]]

    def describe(self, index: int) -> str:
        return self.base.describe(self.indices[index])

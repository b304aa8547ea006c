"""EvalDataset: one split of a dataset as model-ready items, whichever reader produced it.

It wraps a reader's ImageSource, decodes each image to RGB, checks the label against the spec's
class count and turns the image into pixels, so a corrupt file or a wrong label raises a DataError
naming the file instead of surfacing later as a silent wrong number.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ...errors import DataError
from ..preprocess import DEFAULT_PREPROCESS, Preprocess
from ..spec import DatasetSpec, Source
from .base import ImageSource
from .images import DECODE_ERRORS, pil_to_pixels, to_rgb


class EvalDataset(Dataset):
    """One split of a dataset: checked labels and model-ready pixels; `describe(i)` names item i's file."""

    def __init__(
        self,
        spec: DatasetSpec,
        split: str,
        source: Source,
        location: Path,
        items: ImageSource,
        image_size: int,
        preprocess: Preprocess = DEFAULT_PREPROCESS,
    ) -> None:
        self.spec, self.split, self.source, self.location, self.items = spec, split, source, location, items
        self.image_size = None if spec.eval_resolution == "native" else int(image_size)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> str:
        return self.items.describe(index)

    def load(self, index: int) -> tuple[Image.Image, int]:
        """Decoded RGB image and label of item `index`; DataError names the file if either is bad."""
        try:
            image, label = self.items[index]
            image = to_rgb(image)
        except DECODE_ERRORS as exc:
            raise DataError(
                f"cannot read image {self.describe(index)} (dataset {self.spec.name}, item {index}): {exc}",
                f"the file is corrupt or truncated; re-create it (`zsbench datasets prepare {self.spec.name}`) "
                f"and check with `zsbench datasets verify {self.spec.name}`",
            ) from exc
        label = int(label)
        if not 0 <= label < self.spec.num_classes:
            raise DataError(
                f"label {label} of {self.describe(index)} is outside 0..{self.spec.num_classes - 1} "
                f"(dataset {self.spec.name} has {self.spec.num_classes} classes)",
                "the copy on disk does not match this dataset's label set",
            )
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        image, label = self.load(index)
        return pil_to_pixels(image, self.image_size, self.preprocess), label

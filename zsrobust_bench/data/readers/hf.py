"""Source kind ``hf``: copies of HF hub datasets, as WebDataset shards or local ``datasets`` copies.

``format: webdataset`` reads a clip-benchmark repo (see webdataset.py); ``format: auto`` reads a
local HF ``datasets`` copy (a ``save_to_disk`` folder or parquet files) with the ``datasets``
library, imported only when such a copy is opened. Images are decoded here rather than by
``datasets`` so that errors name the row and file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from ...errors import DataError, ZSBenchError
from ...fileio import open_regular
from ..paths import dataset_dir
from ..spec import DatasetSpec, Source
from .base import ImageSource, Reader
from .webdataset import read_webdataset

MAX_IMAGE_BYTES = 64 * 1024 * 1024  # one encoded image; far above any benchmark image


class HFSource:
    """Rows of an HF `datasets` Dataset; images are decoded here so errors name the row and file."""

    def __init__(
        self,
        ds: Any,
        where: str,
        num_classes: int,
        image_column: str | None,
        label_column: str | None,
        root: Path | None = None,
    ) -> None:
        import datasets

        feats = ds.features
        self.image_column = image_column or next(
            (k for k, f in feats.items() if isinstance(f, datasets.Image)), None
        )
        class_labels = [k for k, f in feats.items() if isinstance(f, datasets.ClassLabel)]
        guesses = [k for k in ("label", "labels", "cls", "fine_label") if k in feats]
        self.label_column = label_column or next(iter(class_labels + guesses), None)
        if self.image_column is None or self.label_column is None:
            raise DataError(
                f"HF dataset in {where} has no image or label column (columns: {', '.join(feats)})",
                "give the columns an Image and a ClassLabel/int feature named 'label'",
            )
        label_feat = feats[self.label_column]
        if isinstance(label_feat, datasets.ClassLabel) and label_feat.num_classes != num_classes:
            raise DataError(
                f"HF dataset in {where}: column {self.label_column!r} has {label_feat.num_classes} classes, expected {num_classes}"
            )
        self.ds = ds.select_columns([self.image_column, self.label_column]).cast_column(
            self.image_column, datasets.Image(decode=False)
        )
        self.where = where
        self.root = root

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        row = self.ds[index]
        cell = row[self.image_column]
        data = cell.get("bytes")
        if data is None:
            data = self._path_cell(cell.get("path"), index)
        return Image.open(io.BytesIO(data)), int(row[self.label_column])

    def _path_cell(self, value: Any, index: int) -> bytes:
        """An image stored by path: a regular file inside the dataset's folder, never any path a row names."""
        root = self.root.resolve() if self.root is not None else None
        path = Path(str(value)) if isinstance(value, str) and value else None
        if path is not None and root is not None and not path.is_absolute():
            path = root / path
        if path is None or root is None or not path.resolve().is_relative_to(root):
            raise DataError(
                f"row {index} of {self.where}: image path {str(value)[:120]!r} lies outside the dataset folder",
                "store images as bytes (datasets.Image embeds them) or keep them inside the folder",
            )
        try:
            with open_regular(path) as fh:
                data = fh.read(MAX_IMAGE_BYTES + 1)
        except ZSBenchError as exc:
            raise DataError(f"row {index} of {self.where}: {exc.message}") from exc
        if len(data) > MAX_IMAGE_BYTES:
            raise DataError(f"row {index} of {self.where}: image {path} is over {MAX_IMAGE_BYTES} bytes")
        return data

    def describe(self, index: int) -> str:
        path = self.ds[index][self.image_column].get("path")
        return f"row {index} of {self.where}" + (f" ({path})" if path else "")


def _load_hf_split(path: Path, split: str) -> Any:
    import datasets

    if (path / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(path))
        if split not in dd:
            raise DataError(f"HF dataset in {path} has no split {split!r} (has {', '.join(dd)})")
        return dd[split]
    for candidate in (path / split, path):
        if (candidate / "state.json").is_file():
            return datasets.load_from_disk(str(candidate))
    for pattern in (
        f"{split}-*.parquet",
        f"{split}.parquet",
        f"{split}/*.parquet",
        f"data/{split}-*.parquet",
        f"data/{split}/*.parquet",
    ):
        files = sorted(path.glob(pattern))
        if files:
            # Converted once to a memory-mapped arrow cache kept next to the data.
            return datasets.Dataset.from_parquet(
                [str(f) for f in files], cache_dir=str(path / ".arrow-cache")
            )
    raise DataError(
        f"no HF dataset for split {split!r} in {path}",
        f"expected a save_to_disk folder (dataset_dict.json) or {split}-*.parquet files",
    )


def _read_hf_local(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    ds = _load_hf_split(path, split)
    return HFSource(
        ds,
        f"{path} (split {split})",
        spec.num_classes,
        source.options.get("image_column"),
        source.options.get("label_column"),
        root=path,
    )


HF_FORMATS: dict[str, Reader] = {"webdataset": read_webdataset, "auto": _read_hf_local}


def locate_hf(spec: DatasetSpec, source: Source, root: Path, split: str) -> Path | None:
    base = dataset_dir(root, spec.name) / source.options.get("dir", "hf")
    if source.options.get("format", "auto") == "webdataset":
        return base / source.options.get("split_dirs", {}).get(split, split)
    return base


def read_hf(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    return HF_FORMATS[source.options.get("format", "auto")](spec, source, path, split)

"""Open an evaluation dataset from the copy on disk; items are (float32 (3,H,W) pixels in [0,1], label).

A spec lists its sources in order of preference; the first whose files are under the data root is
read. Files on disk are read in their published formats, by the same code path for every user:

- ``hf``: a clip-benchmark WebDataset repo (``<split>/{0..n-1}.tar`` + ``classnames.txt``, read
  with ``tarfile``), or a local HF ``datasets`` copy (``save_to_disk`` folder or parquet files);
- ``torchvision``: the files a ``torchvision.datasets`` class downloads (CIFAR pickles and STL-10
  binaries are read by small readers here, since torchvision's md5 checks reject re-packed files);
- ``imagefolder``: one folder per class, or an annotation list (Tiny-ImageNet val, Hateful Memes);
  ``imagefolder:PATH`` names a user's own folder (see ``data.userfolder``);
- ``manual``: instructions only;
- ``synthetic``: generated in process (``data.synthetic``), no files.

Pixels are RGB (grey, palette and RGBA images are converted). Datasets with eval_resolution
"native" keep their stored size; the others are resized and centre-cropped here, before any
attack, by the protocol's ``Preprocess`` (default: bicubic, antialiased, shorter side to
``image_size``, crop ``image_size``). Missing data, a
corrupt image or a label out of range raises DataError naming the path.

This module is the public entry: it picks the source and dispatches to its kind in the one registry
of source kinds (``readers.kinds.SOURCE_KINDS``). The format readers live in
``zsrobust_bench.data.readers`` (one module per format); their public names are re-exported here.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..errors import DataError
from .paths import dataset_dir, resolve_data_root
from .preprocess import DEFAULT_PREPROCESS, Preprocess
from .readers.base import ArraySource, ImageSource, Locator, Reader, SubsetSource
from .readers.cifar import CIFAR_LAYOUTS
from .readers.dataset import EvalDataset
from .readers.hf import HF_FORMATS, HFSource
from .readers.imagefolder import IMAGE_EXTENSIONS, INDEXERS, FileListSource, index_class_folders
from .readers.images import DECODE_ERRORS, pil_to_pixels, to_rgb
from .readers.kinds import SOURCE_KINDS, SourceKind, source_kind
from .readers.splits import SPLIT_HASH_VERSION, seeded_split
from .readers.stl10 import STL10_FILES
from .readers.torchvision_files import TORCHVISION_READERS, TorchvisionSource
from .readers.webdataset import WDS_IMAGE_EXTENSIONS, TarSource
from .spec import DatasetSpec, Source

__all__ = [
    "CIFAR_LAYOUTS",
    "DECODE_ERRORS",
    "HF_FORMATS",
    "IMAGE_EXTENSIONS",
    "INDEXERS",
    "SOURCE_KINDS",
    "SPLIT_HASH_VERSION",
    "STL10_FILES",
    "TORCHVISION_READERS",
    "WDS_IMAGE_EXTENSIONS",
    "ArraySource",
    "EvalDataset",
    "FileListSource",
    "HFSource",
    "ImageSource",
    "Locator",
    "Reader",
    "SourceKind",
    "SubsetSource",
    "TarSource",
    "TorchvisionSource",
    "find_source",
    "index_class_folders",
    "missing_data_error",
    "open_eval_dataset",
    "pil_to_pixels",
    "seeded_split",
    "source_kind",
    "source_label",
    "source_location",
    "to_rgb",
]


def source_location(
    spec: DatasetSpec, source: Source, data_root: Path, split: str | None = None
) -> Path | None:
    """Where `source` keeps `split` (default: the eval split) under the data root; None if nowhere."""
    kind = source_kind(source.kind)
    if kind.locate is None:
        return None
    return kind.locate(spec, source, Path(data_root), split or spec.eval_split)


def find_source(
    spec: DatasetSpec, data_root: Path, split: str | None = None
) -> tuple[Source, Path | None] | None:
    """The first source whose files exist (in-process sources always count); None if none is present."""
    for source in spec.sources:
        if source_kind(source.kind).generate is not None:
            return source, None
        path = source_location(spec, source, data_root, split)
        if path is not None and path.exists():
            return source, path
    return None


def source_label(source: Source) -> str:
    """Short human label of a source, e.g. 'hf:clip-benchmark/wds_cars' or 'torchvision:CIFAR10'."""
    if source.kind == "hf" and not source.ref:
        return "hf:local"
    return f"{source.kind}:{source.ref}" if source.ref else source.kind


def missing_data_error(spec: DatasetSpec, data_root: Path, split: str) -> DataError:
    """The DataError for a dataset with no source present: every path looked at plus what to do."""
    lines, steps = [], []
    for source in spec.sources:
        path = source_location(spec, source, data_root, split)
        lines.append(f"  {source_label(source)}: {path if path is not None else '(installed by hand)'}")
        if source.instructions:
            where = path if path is not None else dataset_dir(data_root, spec.name)
            steps.append(source.instructions.format(dir=dataset_dir(data_root, spec.name), path=where))
    head = f"dataset {spec.name} ({split} split) not found under data root {data_root}"
    if not Path(data_root).exists():
        head += f" (the data root {data_root} does not exist)"
    hint = f"run `zsbench datasets prepare {spec.name}` (set --data-root or ZSBENCH_DATA to use another data root)"
    if steps:
        hint += "; by hand: " + " | ".join(steps)
    return DataError(head + "; looked at:\n" + "\n".join(lines), hint)


def open_eval_dataset(
    spec: DatasetSpec,
    data_root: Path | None,
    image_size: int,
    split: str | None = None,
    preprocess: Preprocess = DEFAULT_PREPROCESS,
) -> Dataset:
    """Items (float32 (3,H,W) in [0,1], int label) of `split` (default: the eval split) from the first
    present source, resized and cropped by `preprocess` (a protocol's) unless stored at native size."""
    split = split or spec.eval_split
    root = resolve_data_root(None) if data_root is None else Path(data_root)
    for source in spec.sources:
        kind = source_kind(source.kind)
        if kind.generate is not None:
            return kind.generate(source, split)
        path = source_location(spec, source, root, split)
        if path is not None and path.exists():
            items = kind.read(spec, source, path, split)
            return EvalDataset(spec, split, source, path, items, image_size, preprocess)
    raise missing_data_error(spec, root, split)

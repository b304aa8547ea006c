"""Open an evaluation dataset from the copy on disk; items are (float32 (3,H,W) pixels in [0,1], label).

A spec lists its sources in order of preference; the first whose files are under the data root is
read. Files on disk are read in their published formats, by the same code path for every user:

- ``hf``: a clip-benchmark WebDataset repo (``<split>/{0..n-1}.tar`` + ``classnames.txt``, read
  with ``tarfile``), or a local HF ``datasets`` copy (``save_to_disk`` folder or parquet files);
- ``torchvision``: the files a ``torchvision.datasets`` class downloads (CIFAR pickles and STL-10
  binaries are read by small readers here, since torchvision's md5 checks reject re-packed files);
- ``imagefolder``: one folder per class, or an annotation list (Tiny-ImageNet val, Hateful Memes);
  ``imagefolder:PATH`` names a user's own folder (see ``spec_for_imagefolder``);
- ``manual``: instructions only.

Pixels are RGB (grey, palette and RGBA images are converted). Datasets with eval_resolution
"native" keep their stored size; the others are resized (bicubic, antialiased, shorter side to
``image_size``) and centre-cropped to ``image_size`` here, before any attack. Missing data, a
corrupt image or a label out of range raises DataError naming the path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..errors import DataError
from .paths import dataset_dir, resolve_data_root
from .spec import DatasetSpec, PromptSet, Source, read_lines_resource

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
WDS_IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")  # clip-benchmark's order of preference
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
SPLIT_HASH_VERSION = "zsbench-split/v1"


class ImageSource(Protocol):
    """Raw items of one split: a PIL image (decoded lazily) and an int label."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Image.Image, int]: ...

    def describe(self, index: int) -> str: ...


LoaderFn = Callable[[DatasetSpec, "Path | None", int, "str | None"], Dataset]
Locator = Callable[[DatasetSpec, Source, Path, str], "Path | None"]
Reader = Callable[[DatasetSpec, Source, Path, str], ImageSource]

_CUSTOM_LOADERS: dict[str, LoaderFn] = {}


def register_source_loader(kind: str, fn: LoaderFn) -> None:
    """Let `fn(spec, data_root, image_size, split)` open every dataset whose source is of `kind`."""
    _CUSTOM_LOADERS[kind] = fn


# ----------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """Decode fully and convert to 8-bit RGB (16-bit grey is scaled, not clipped)."""
    image.load()
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def pil_to_pixels(image: Image.Image, size: int | None) -> torch.Tensor:
    """RGB image -> float32 (3,H,W) in [0,1]; with `size`, bicubic resize of the shorter side + centre crop."""
    if size is not None:
        image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        image = TF.center_crop(image, [size, size])
    return TF.pil_to_tensor(image).to(torch.float32).div_(255.0)


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
    ) -> None:
        self.spec, self.split, self.source, self.location, self.items = spec, split, source, location, items
        self.image_size = None if spec.eval_resolution == "native" else int(image_size)

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
        return pil_to_pixels(image, self.image_size), label


# ----------------------------------------------------------------------------------------------
# Item sources
# ----------------------------------------------------------------------------------------------


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
class FileListSource:
    """Image files (paths relative to `root`) with labels."""

    root: Path
    files: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.open(self.root / self.files[index]), self.labels[index]

    def describe(self, index: int) -> str:
        return str(self.root / self.files[index])


@dataclass
class TarSource:
    """Samples of WebDataset shards: (shard, data offset, size, member name, label), read without extraction."""

    samples: list[tuple[str, int, int, str, int]]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        shard, offset, size, _, label = self.samples[index]
        with open(shard, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise OSError(f"shard ends after {len(data)} of {size} bytes")
        return Image.open(io.BytesIO(data)), label

    def describe(self, index: int) -> str:
        shard, _, _, name, _ = self.samples[index]
        return f"{shard}:{name}"


class HFSource:
    """Rows of an HF `datasets` Dataset; images are decoded here so errors name the row and file."""

    def __init__(
        self, ds: Any, where: str, num_classes: int, image_column: str | None, label_column: str | None
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

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        row = self.ds[index]
        cell = row[self.image_column]
        data = cell.get("bytes")
        image = Image.open(io.BytesIO(data)) if data is not None else Image.open(cell["path"])
        return image, int(row[self.label_column])

    def describe(self, index: int) -> str:
        path = self.ds[index][self.image_column].get("path")
        return f"row {index} of {self.where}" + (f" ({path})" if path else "")


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


# ----------------------------------------------------------------------------------------------
# Splits zsbench defines itself
# ----------------------------------------------------------------------------------------------


def seeded_split(
    keys: Sequence[str], labels: Sequence[int], rule: Mapping[str, int], dataset: str, split: str
) -> list[int]:
    """Indices (sorted) of `split` ("test", "train" or "all") under a per-class hash-ordered rule.

    Inside each class, items are ranked by sha256("zsbench-split/v1:<dataset>:<key>"), where key is
    "<class folder>/<file name>"; rule {"train_per_class": k} makes the first k train and the rest
    test, {"test_per_class": k} makes the first k test and the rest train.
    """
    if split == "all":
        return list(range(len(keys)))
    if split not in ("test", "train"):
        raise DataError(f"dataset {dataset} has splits test, train and all; not {split!r}")
    ((kind, k),) = rule.items()
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(i)
    chosen: list[int] = []
    for label, members in sorted(by_label.items()):
        if len(members) <= k:
            raise DataError(
                f"class {label} of {dataset} has {len(members)} images; its split needs more than {k}",
                "the copy on disk looks incomplete: re-run `zsbench datasets prepare " + dataset + "`",
            )
        ranked = sorted(
            members,
            key=lambda i: hashlib.sha256(f"{SPLIT_HASH_VERSION}:{dataset}:{keys[i]}".encode()).digest(),
        )
        first, rest = ranked[:k], ranked[k:]
        test, train = (rest, first) if kind == "train_per_class" else (first, rest)
        chosen.extend(test if split == "test" else train)
    return sorted(chosen)


# ----------------------------------------------------------------------------------------------
# Class folders and annotation lists
# ----------------------------------------------------------------------------------------------


def _class_list(stem: str) -> tuple[str, ...]:
    return read_lines_resource("zsrobust_bench.data", f"classnames/{stem}.folders.txt")


def _wanted(name: str, opts: Mapping[str, Any]) -> bool:
    if "glob" in opts:
        return Path(name).match(opts["glob"])
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def index_class_folders(
    root: Path, classes: Sequence[str] | None, opts: Mapping[str, Any]
) -> tuple[list[str], list[int]]:
    """(relative file paths, labels) of a class-folder tree; labels follow `classes` (else sorted folder names)."""
    exclude = set(opts.get("exclude", ()))
    present = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in exclude
    )
    if classes is None:
        classes = present
        if not classes:
            raise DataError(f"no class folders in {root}", "put one sub-folder of images per class there")
    else:
        missing = [c for c in classes if not (root / c).is_dir()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(classes)} class folders are missing in {root} (e.g. {', '.join(missing[:3])})",
                "the data root points at the wrong folder or the copy is incomplete",
            )
        flat = all("/" not in c for c in classes)
        extra = sorted(set(present) - set(classes)) if flat else []
        if extra:
            raise DataError(
                f"{root} has folders that are not classes of this dataset: {', '.join(extra[:5])}",
                "point the data root at the folder that holds exactly the class folders",
            )
    files: list[str] = []
    labels: list[int] = []
    sub = opts.get("class_subdir", "")
    for label, cls in enumerate(classes):
        folder = root / cls / sub if sub else root / cls
        names = sorted(f.name for f in folder.iterdir() if f.is_file() and _wanted(f.name, opts))
        if not names:
            raise DataError(f"class folder {folder} has no images")
        files.extend(str(Path(cls, sub, n).as_posix()) if sub else f"{cls}/{n}" for n in names)
        labels.extend([label] * len(names))
    return files, labels


def _index_tsv(
    root: Path, classes: Sequence[str] | None, opts: Mapping[str, Any]
) -> tuple[list[str], list[int]]:
    """Tiny-ImageNet val style: `annotations` lines "<file>\\t<class id>...", images in `images/`."""
    if classes is None:
        raise DataError(f"annotation list in {root} needs a class list")
    ann = root / opts["annotations"]
    if not ann.is_file():
        raise DataError(f"annotation file {ann} is missing")
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DataError(f"{ann} line {n}: unknown class in {line!r}")
        files.append(f"{opts.get('images', '.')}/{parts[0]}")
        labels.append(index[parts[1]])
    return files, labels


def _index_jsonl(
    root: Path, classes: Sequence[str] | None, opts: Mapping[str, Any]
) -> tuple[list[str], list[int]]:
    """Hateful Memes style: JSON lines with "img" (path relative to root) and "label"."""
    files, labels = [], []
    for name in opts["annotations"]:
        ann = root / name
        if not ann.is_file():
            raise DataError(f"annotation file {ann} is missing")
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "label" not in row or "img" not in row:
                raise DataError(
                    f"{ann} line {n} has no 'img' or 'label'", "use the release whose test files carry labels"
                )
            files.append(str(row["img"]))
            labels.append(int(row["label"]))
    return files, labels


INDEXERS: dict[
    str, Callable[[Path, Sequence[str] | None, Mapping[str, Any]], tuple[list[str], list[int]]]
] = {
    "folders": index_class_folders,
    "tsv": _index_tsv,
    "jsonl": _index_jsonl,
}


def _split_options(spec: DatasetSpec, source: Source, split: str) -> dict[str, Any] | None:
    """Source options merged with its per-split options; None when the source lacks that split."""
    opts = {k: v for k, v in source.options.items() if k != "splits"}
    splits = source.options.get("splits")
    if splits is None:
        return opts
    if split not in splits:
        return None
    return {**opts, **splits[split]}


def _read_folder_tree(spec: DatasetSpec, path: Path, opts: Mapping[str, Any], split: str) -> ImageSource:
    classes = _class_list(opts["classes"]) if opts.get("classes") else None
    files, labels = INDEXERS[opts.get("index", "folders")](path, classes, opts)
    items = FileListSource(path, files, labels)
    rule = opts.get("split_rule")
    if rule:
        return SubsetSource(items, seeded_split(files, labels, rule, spec.name, split))
    return items


def _locate_imagefolder(spec: DatasetSpec, source: Source, root: Path, split: str) -> Path | None:
    opts = _split_options(spec, source, split)
    if opts is None:
        return None
    base = Path(source.ref) if Path(source.ref).is_absolute() else dataset_dir(root, spec.name) / source.ref
    return base / opts.get("path", ".")


def _read_imagefolder(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    return _read_folder_tree(spec, path, _split_options(spec, source, split) or {}, split)


# ----------------------------------------------------------------------------------------------
# torchvision layouts
# ----------------------------------------------------------------------------------------------

# CIFAR python pickles: folder, batch files per split, label key.
CIFAR_LAYOUTS: dict[str, tuple[str, dict[str, tuple[str, ...]], str]] = {
    "CIFAR10": (
        "cifar-10-batches-py",
        {"test": ("test_batch",), "train": tuple(f"data_batch_{i}" for i in range(1, 6))},
        "labels",
    ),
    "CIFAR100": ("cifar-100-python", {"test": ("test",), "train": ("train",)}, "fine_labels"),
}
STL10_FILES = {"test": ("test_X.bin", "test_y.bin"), "train": ("train_X.bin", "train_y.bin")}


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


def _read_cifar(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
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


def _read_stl10(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
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
    return _read_folder_tree(spec, tree, source.options, split)


TORCHVISION_READERS: dict[str, Reader] = {
    "class": _read_torchvision_class,
    "cifar-pickle": _read_cifar,
    "stl10-binary": _read_stl10,
    "folders": _read_torchvision_folders,
}


def _locate_torchvision(spec: DatasetSpec, source: Source, root: Path, split: str) -> Path | None:
    return dataset_dir(root, spec.name) / source.options.get("dir", "torchvision")


def _read_torchvision(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    return TORCHVISION_READERS[source.options.get("read", "class")](spec, source, path, split)


# ----------------------------------------------------------------------------------------------
# HF hub copies: clip-benchmark WebDataset repos and local `datasets` copies
# ----------------------------------------------------------------------------------------------


def _shard_order(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 62, path.stem)


def _index_shard(shard: Path) -> list[tuple[str, int, int, str, int]]:
    """Samples of one tar shard: members grouped by key (name up to the first dot of the file name)."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    labels: dict[str, int] = {}
    size = shard.stat().st_size
    try:
        with tarfile.open(shard, "r:") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot:
                    continue
                key = f"{folder}/{stem}" if folder else stem
                groups.setdefault(key, {})[ext.lower()] = member
                if member.offset_data + member.size > size:
                    raise DataError(f"webdataset shard {shard} is truncated inside {member.name}")
                if ext.lower() == "cls":
                    fh = tf.extractfile(member)
                    text = fh.read().decode().strip() if fh else ""
                    if not text.lstrip("-").isdigit():
                        raise DataError(
                            f"webdataset shard {shard}: label file {member.name} holds {text!r}, not an integer"
                        )
                    labels[key] = int(text)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"webdataset shard {shard} is unreadable (truncated or corrupt): {exc}") from exc
    samples = []
    for key, members in groups.items():
        ext = next((e for e in WDS_IMAGE_EXTENSIONS if e in members), None)
        if ext is None or key not in labels:
            raise DataError(
                f"webdataset shard {shard}: sample {key!r} lacks an image or a .cls label (has {', '.join(members)})"
            )
        m = members[ext]
        samples.append((str(shard), m.offset_data, m.size, m.name, labels[key]))
    return samples


def _read_webdataset(spec: DatasetSpec, source: Source, split_dir: Path, split: str) -> ImageSource:
    shards = sorted(split_dir.glob("*.tar"), key=_shard_order)
    if not shards:
        raise DataError(f"no .tar shards in {split_dir}", f"run `zsbench datasets prepare {spec.name}`")
    nshards_file = split_dir / "nshards.txt"
    if nshards_file.is_file() and int(nshards_file.read_text().strip()) != len(shards):
        raise DataError(
            f"{split_dir} has {len(shards)} shards but nshards.txt says {nshards_file.read_text().strip()}",
            f"the download is incomplete: run `zsbench datasets prepare {spec.name}` again",
        )
    names_file = split_dir.parent / "classnames.txt"
    if names_file.is_file():
        n = sum(1 for line in names_file.read_text().splitlines() if line.strip())
        if n != spec.num_classes:
            raise DataError(f"{names_file} lists {n} classes; dataset {spec.name} has {spec.num_classes}")
    samples = [s for shard in shards for s in _index_shard(shard)]
    return TarSource(samples)


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
    )


HF_FORMATS: dict[str, Reader] = {"webdataset": _read_webdataset, "auto": _read_hf_local}


def _locate_hf(spec: DatasetSpec, source: Source, root: Path, split: str) -> Path | None:
    base = dataset_dir(root, spec.name) / source.options.get("dir", "hf")
    if source.options.get("format", "auto") == "webdataset":
        return base / source.options.get("split_dirs", {}).get(split, split)
    return base


def _read_hf(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    return HF_FORMATS[source.options.get("format", "auto")](spec, source, path, split)


def _locate_manual(spec: DatasetSpec, source: Source, root: Path, split: str) -> Path | None:
    return None


def _read_manual(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    raise DataError(f"{spec.name} must be installed by hand: {source.instructions}")


BUILTIN_SOURCES: dict[str, tuple[Locator, Reader]] = {
    "hf": (_locate_hf, _read_hf),
    "torchvision": (_locate_torchvision, _read_torchvision),
    "imagefolder": (_locate_imagefolder, _read_imagefolder),
    "manual": (_locate_manual, _read_manual),
}


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def source_location(
    spec: DatasetSpec, source: Source, data_root: Path, split: str | None = None
) -> Path | None:
    """Where `source` keeps `split` (default: the eval split) under the data root; None if nowhere."""
    if source.kind not in BUILTIN_SOURCES:
        return None
    return BUILTIN_SOURCES[source.kind][0](spec, source, Path(data_root), split or spec.eval_split)


def find_source(
    spec: DatasetSpec, data_root: Path, split: str | None = None
) -> tuple[Source, Path | None] | None:
    """The first source whose files exist (in-process sources always count); None if none is present."""
    for source in spec.sources:
        if source.kind in _CUSTOM_LOADERS:
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
    spec: DatasetSpec, data_root: Path | None, image_size: int, split: str | None = None
) -> Dataset:
    """Items (float32 (3,H,W) in [0,1], int label) of `split` (default: the eval split) from the first present source."""
    split = split or spec.eval_split
    root = resolve_data_root(None) if data_root is None else Path(data_root)
    for source in spec.sources:
        if source.kind in _CUSTOM_LOADERS:
            return _CUSTOM_LOADERS[source.kind](spec, root, image_size, split)
        if source.kind not in BUILTIN_SOURCES:
            raise DataError(f"dataset {spec.name}: no loader for source kind {source.kind!r}")
        locate, read = BUILTIN_SOURCES[source.kind]
        path = locate(spec, source, root, split)
        if path is not None and path.exists():
            return EvalDataset(spec, split, source, path, read(spec, source, path, split), image_size)
    raise missing_data_error(spec, root, split)


# ----------------------------------------------------------------------------------------------
# imagefolder:PATH
# ----------------------------------------------------------------------------------------------

IMAGEFOLDER_PREFIX = "imagefolder:"
DEFAULT_USER_TEMPLATE = "a photo of a {}."


def _read_user_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def spec_for_imagefolder(path: str | os.PathLike[str]) -> DatasetSpec:
    """Spec for a user's folder: sorted sub-folders are labels; classnames.txt / templates.txt there if present."""
    text = str(path)
    root = (
        Path(text[len(IMAGEFOLDER_PREFIX) :] if text.startswith(IMAGEFOLDER_PREFIX) else text)
        .expanduser()
        .resolve()
    )
    if not root.is_dir():
        raise DataError(
            f"imagefolder path {root} is not a directory",
            "pass imagefolder:PATH with one sub-folder per class",
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"imagefolder path {root} has no class sub-folders",
            "put the images of each class in its own sub-folder",
        )
    names_file, templates_file = root / "classnames.txt", root / "templates.txt"
    classnames = _read_user_lines(names_file) if names_file.is_file() else classes
    if len(classnames) != len(classes):
        raise DataError(
            f"{names_file} has {len(classnames)} names for {len(classes)} class folders",
            "write one class name per line, in the sorted order of the folder names",
        )
    templates = _read_user_lines(templates_file) if templates_file.is_file() else [DEFAULT_USER_TEMPLATE]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise DataError(f"{templates_file}: every template needs exactly one {{}} (bad: {bad[:3]})")
    prompts = PromptSet(tuple(classnames), tuple(templates))
    return DatasetSpec(
        name=f"{IMAGEFOLDER_PREFIX}{root}",
        num_classes=len(classes),
        prompt_sets={"tecoa": prompts, "clip": prompts},
        eval_split="test",
        sources=(Source("imagefolder", str(root), {"splits": {"test": {"path": "."}}}),),
        split_note="every image under the folder; sorted sub-folder names are the labels",
        license="user data",
    )

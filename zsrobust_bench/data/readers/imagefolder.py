"""Source kind ``imagefolder``: one folder of images per class, or images plus an annotation list.

Many datasets are published (or prepared) as plain image files: a class-folder tree (labels follow
a packaged class list, else the sorted folder names), a Tiny-ImageNet-val style TSV list, or a
Hateful-Memes style JSON-lines list. Reading them with PIL directly needs no extra dependency and
lets errors name the exact file. ``split_rule`` cuts a seeded split from a pool without one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ...errors import DataError
from ..paths import dataset_dir
from ..spec import DatasetSpec, Source, read_lines_resource
from .base import ImageSource, SubsetSource
from .splits import seeded_split

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


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


def read_folder_tree(spec: DatasetSpec, path: Path, opts: Mapping[str, Any], split: str) -> ImageSource:
    classes = _class_list(opts["classes"]) if opts.get("classes") else None
    files, labels = INDEXERS[opts.get("index", "folders")](path, classes, opts)
    items = FileListSource(path, files, labels)
    rule = opts.get("split_rule")
    if rule:
        return SubsetSource(items, seeded_split(files, labels, rule, spec.name, split))
    return items


def locate_imagefolder(spec: DatasetSpec, source: Source, root: Path, split: str) -> Path | None:
    opts = _split_options(spec, source, split)
    if opts is None:
        return None
    base = Path(source.ref) if Path(source.ref).is_absolute() else dataset_dir(root, spec.name) / source.ref
    return base / opts.get("path", ".")


def read_imagefolder(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    return read_folder_tree(spec, path, _split_options(spec, source, split) or {}, split)

"""``imagefolder:PATH``: a DatasetSpec for a user's own class-folder tree, built on the fly.

Lets anyone evaluate on their own images without registering a dataset: sorted sub-folder names are
the labels, and optional ``classnames.txt`` / ``templates.txt`` files in the folder give the prompts.
The spec's single source is of kind ``imagefolder``, so the images are read by readers/imagefolder.py.
The registry's ``dataset_spec`` is the one place that turns such a name into a spec.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .spec import DatasetSpec, PromptSet, Source

IMAGEFOLDER_PREFIX = "imagefolder:"
DEFAULT_USER_TEMPLATE = "a photo of a {}."


def is_user_folder(name: str) -> bool:
    """True for an ``imagefolder:PATH`` dataset name (a user's folder, not a registered dataset)."""
    return name.startswith(IMAGEFOLDER_PREFIX)


def user_folder_path(name: str | os.PathLike[str]) -> Path:
    """The folder an ``imagefolder:PATH`` name (or a bare path) points at, as written (not resolved)."""
    text = str(name)
    return Path(text[len(IMAGEFOLDER_PREFIX) :] if is_user_folder(text) else text)


def _read_user_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _inserts_class_name(template: str) -> bool:
    """True when `template.format(name)` works and contains the class name exactly once."""
    marker = "\x00class\x00"
    try:
        return template.format(marker).count(marker) == 1
    except (ValueError, IndexError, KeyError):
        return False


def spec_for_imagefolder(path: str | os.PathLike[str]) -> DatasetSpec:
    """Spec for a user's folder: sorted sub-folders are labels; classnames.txt / templates.txt there if present."""
    root = user_folder_path(path).expanduser().resolve()
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
    if len(classes) < 2:
        raise DataError(
            f"imagefolder path {root} has {len(classes)} class sub-folder; zero-shot classification needs two or more",
            "put the images of each class in its own sub-folder",
        )
    if len(classnames) != len(classes):
        raise DataError(
            f"{names_file} has {len(classnames)} names for {len(classes)} class folders",
            "write one class name per line, in the sorted order of the folder names",
        )
    dupes = sorted({c for c in classnames if classnames.count(c) > 1})
    if dupes:
        raise DataError(
            f"{names_file if names_file.is_file() else root}: duplicate class names {dupes[:3]}",
            "every class needs its own name, or two labels get the same text embedding",
        )
    templates = _read_user_lines(templates_file) if templates_file.is_file() else [DEFAULT_USER_TEMPLATE]
    bad = [t for t in templates if not _inserts_class_name(t)]
    if bad or not templates:
        raise DataError(
            f"{templates_file}: every template needs exactly one {{}} that formats to the class name (bad: {bad[:3]})",
            "write templates such as 'a photo of a {}.'; no other braces",
        )
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

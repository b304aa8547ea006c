"""Source kind ``manual``: datasets that must be installed by hand; there are no files to read.

Such a source is never present under the data root; it exists so that the missing-data error can
print its instructions next to the paths of the other sources.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..spec import DatasetSpec, Source
from .base import ImageSource


def locate_manual(spec: DatasetSpec, source: Source, root: Path, split: str) -> Path | None:
    return None


def read_manual(spec: DatasetSpec, source: Source, path: Path, split: str) -> ImageSource:
    raise DataError(f"{spec.name} must be installed by hand: {source.instructions}")

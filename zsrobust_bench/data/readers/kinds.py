"""The one registry of source kinds: for each ``Source.kind``, how its sources are found, opened and fetched.

A file kind has ``locate`` (where a split's files are expected under the data root; None: nowhere)
and ``read`` (those files as raw items, which data.loaders wraps in an EvalDataset). An in-process
kind has only ``generate`` (the split as a ready Dataset): it needs no files and is always present.
A downloadable kind also has ``download`` (fetch a source with a ref into its location) and
``steps`` (the same fetch as a command to run by hand), used by ``zsbench datasets prepare``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ...errors import DataError
from .. import synthetic
from ..downloads import download_hf, download_torchvision, hf_steps, torchvision_steps
from ..spec import DatasetSpec, Source
from .base import Locator, Reader
from .hf import locate_hf, read_hf
from .imagefolder import locate_imagefolder, read_imagefolder
from .manual import locate_manual, read_manual
from .torchvision_files import locate_torchvision, read_torchvision

Generator = Callable[[Source, str], Dataset]
Downloader = Callable[[DatasetSpec, Source, Path], None]
Steps = Callable[[DatasetSpec, Source, Path], str]


@dataclass(frozen=True)
class SourceKind:
    """How the sources of one kind are found and opened (files: locate + read; in process: generate),
    and for downloadable kinds fetched (download, and steps to do it by hand)."""

    locate: Locator | None = None
    read: Reader | None = None
    generate: Generator | None = None
    download: Downloader | None = None
    steps: Steps | None = None

    def __post_init__(self) -> None:
        if (self.generate is None) == (self.locate is None or self.read is None):
            raise ValueError("a source kind has either locate and read, or generate")
        if (self.download is None) != (self.steps is None):
            raise ValueError("a downloadable source kind has both download and steps")


SOURCE_KINDS: dict[str, SourceKind] = {
    "hf": SourceKind(locate_hf, read_hf, download=download_hf, steps=hf_steps),
    "torchvision": SourceKind(
        locate_torchvision, read_torchvision, download=download_torchvision, steps=torchvision_steps
    ),
    "imagefolder": SourceKind(locate_imagefolder, read_imagefolder),
    "manual": SourceKind(locate_manual, read_manual),
    synthetic.SOURCE_KIND: SourceKind(generate=synthetic.open_task),
}


def source_kind(kind: str) -> SourceKind:
    """The registered source kind `kind`; unknown kinds fail naming the known ones."""
    if kind not in SOURCE_KINDS:
        raise DataError(
            f"no loader for source kind {kind!r}", f"known kinds: {', '.join(sorted(SOURCE_KINDS))}"
        )
    return SOURCE_KINDS[kind]

"""Readers of the on-disk formats evaluation datasets come in, one module per format.

Each built-in source kind is a pair of functions: ``locate(spec, source, data_root, split)`` says
where the split's files are expected (None: nowhere on disk), and ``read(spec, source, path, split)``
returns an ImageSource (base.py) of raw (PIL image, label) items, which data.loaders wraps in an
EvalDataset (dataset.py). BUILTIN_SOURCES below is that registry; data.loaders is the public entry.

- hf.py: HF hub copies (clip-benchmark WebDataset shards, webdataset.py; local ``datasets`` copies)
- torchvision_files.py: files of ``torchvision.datasets`` classes (cifar.py, stl10.py, class folders)
- imagefolder.py: class-folder trees and annotation lists; userfolder.py: ``imagefolder:PATH`` specs
- manual.py: sources installed by hand
- images.py: decoding to RGB and pixels; splits.py: seeded splits of datasets that publish none
"""

from __future__ import annotations

from .base import Locator, Reader
from .hf import locate_hf, read_hf
from .imagefolder import locate_imagefolder, read_imagefolder
from .manual import locate_manual, read_manual
from .torchvision_files import locate_torchvision, read_torchvision

BUILTIN_SOURCES: dict[str, tuple[Locator, Reader]] = {
    "hf": (locate_hf, read_hf),
    "torchvision": (locate_torchvision, read_torchvision),
    "imagefolder": (locate_imagefolder, read_imagefolder),
    "manual": (locate_manual, read_manual),
}

__all__ = ["BUILTIN_SOURCES"]

"""Readers of the on-disk formats evaluation datasets come in, one module per format.

Each file source kind is a pair of functions: ``locate(spec, source, data_root, split)`` says
where the split's files are expected (None: nowhere on disk), and ``read(spec, source, path, split)``
returns an ImageSource (base.py) of raw (PIL image, label) items, which data.loaders wraps in an
EvalDataset (dataset.py). kinds.py holds the one registry of source kinds (``SOURCE_KINDS``, the
synthetic world's in-process kind included); data.loaders is the public entry.

- hf.py: HF hub copies (clip-benchmark WebDataset shards, webdataset.py; local ``datasets`` copies)
- torchvision_files.py: files of ``torchvision.datasets`` classes (cifar.py, stl10.py, class folders)
- imagefolder.py: class-folder trees and annotation lists (``imagefolder:PATH`` specs: data/userfolder.py)
- manual.py: sources installed by hand
- images.py: decoding to RGB and pixels; splits.py: seeded splits of datasets that publish none
"""

"""clip-benchmark WebDataset repos: ``<split>/{0..n-1}.tar`` shards of ``<key>.<image ext>`` + ``<key>.cls``.

Most zero-shot benchmarks are published on the HF hub in this layout. The shards are indexed with
the standard ``tarfile`` module and each image is read by seeking to its offset, so nothing is
extracted and no ``webdataset`` dependency is needed; a truncated shard or a sample without an
image or label is reported with the shard's path.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ...errors import DataError, ZSBenchError
from ...fileio import open_regular
from ..spec import DatasetSpec, Source
from .base import ImageSource

WDS_IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")  # clip-benchmark's order of preference
MAX_LABEL_BYTES = 64  # a .cls member holds one integer


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


def _shard_order(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 62, path.stem)


def _index_shard(shard: Path) -> list[tuple[str, int, int, str, int]]:
    """Samples of one tar shard: members grouped by key (name up to the first dot of the file name)."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    labels: dict[str, int] = {}
    try:
        raw = open_regular(shard)  # a FIFO or device named *.tar is refused instead of read forever
    except ZSBenchError as exc:
        raise DataError(f"webdataset shard {exc.message}") from exc
    size = os.fstat(raw.fileno()).st_size
    try:
        with raw, tarfile.open(fileobj=raw, mode="r:") as tf:
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
                    if member.size > MAX_LABEL_BYTES:
                        raise DataError(
                            f"webdataset shard {shard}: label file {member.name} is {member.size} bytes"
                        )
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


def read_webdataset(spec: DatasetSpec, source: Source, split_dir: Path, split: str) -> ImageSource:
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

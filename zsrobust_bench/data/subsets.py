"""Which samples of a split are evaluated: ONE entry point, `evaluation_subset`, for evaluation and checks.

Two ways to choose, named by a protocol's `selection`:

- ``seeded``: a seeded random subset chosen by index only (never by batch size or workers).
- ``fare``: the samples FARE attacked. FARE's CLIP_benchmark fork (chs20/RobustVLM@7de10ee,
  CLIP_benchmark/) reads each clip-benchmark webdataset as ``wds.WebDataset("{0..N-1}.tar")``
  (clip_benchmark/datasets/builder.py#L678-698), shuffles it with
  ``dataset.shuffle(10000, initial=10000, rng=random.Random(args.seed))`` (cli.py#L258, seed 0 by
  default, #L39), batches it by 50 (cli.py#L273-279; bash/run_benchmark_adv.sh#L15 ``--batch_size 50``)
  in a torch DataLoader with 4 workers (cli.py#L33 ``--num_workers`` default 4), and attacks the
  first ``--n_samples`` 1000 of that stream (metrics/zeroshot_classification.py#L137-147). With
  webdataset 0.2.48 (RVLM requirements.txt#L158) each worker reads the shards ``w::4``
  (webdataset shardlists.py ``split_by_worker``) and shuffles its own stream with its own copy of
  ``Random(0)``; the DataLoader hands out the workers' batches in turn. `fare_stream_order`
  reproduces that order from the shard sizes alone. ImageNet: FARE uses RobustBench's
  ``load_clean_dataset(imagenet, 5000)`` (RVLM CLIP_eval/clip_robustbench.py#L294-296), i.e. the
  fixed list ``robustbench/helper_files/imagenet_test_image_ids.txt`` (RobustBench@78fcc9e,
  robustbench/data.py#L146-164, loaders.py#L19-26), shipped here as
  ``selections/robustbench-imagenet-5000.txt`` (WordNet id, validation image number; file order).
  When the dataset was read from another source (no webdataset shards, or ImageNet without its
  original file names) FARE's samples cannot be identified: the seeded subset is used and the
  selection says so.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..fileio import sha256_bytes
from .spec import read_lines_resource

T = TypeVar("T")

# FARE's CLIP_benchmark settings (see the module docstring for the lines).
FARE_WORKERS = 4
FARE_BATCH = 50
FARE_SHUFFLE_BUFFER = 10_000
FARE_SHUFFLE_INITIAL = 10_000
ROBUSTBENCH_IMAGENET = "selections/robustbench-imagenet-5000.txt"


@dataclass(frozen=True)
class Selection:
    """The evaluated indices (sorted) of a split and how they were chosen."""

    indices: np.ndarray
    method: str  # "all", "seeded", "fare-webdataset", "robustbench-imagenet"
    note: str = ""
    shard_sizes: tuple[int, ...] = field(default=())  # fare-webdataset: what validate rebuilds the order from

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "n": int(self.indices.size), "note": self.note}
        if self.shard_sizes:
            out["shard_sizes"] = list(self.shard_sizes)
        return out


def subset_seed(seed: int, dataset: str) -> int:
    """A 64-bit seed derived from the run seed and the dataset name (stable across platforms)."""
    digest = hashlib.sha256(f"zsbench-subset:{seed}:{dataset}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def select_indices(n_total: int, n_samples: int | None, seed: int, dataset: str) -> np.ndarray:
    """Sorted indices of the evaluated samples: all of them, or a seeded random subset of size n."""
    if n_total <= 0:
        return np.zeros(0, dtype=np.int64)
    if n_samples is None or n_samples >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if n_samples <= 0:
        raise ValueError(f"sample count must be positive, got {n_samples}")
    rng = np.random.Generator(np.random.PCG64(subset_seed(seed, dataset)))
    return np.sort(rng.permutation(n_total)[:n_samples]).astype(np.int64)


def indices_sha256(indices: np.ndarray) -> str:
    """Hash of the evaluated index list, recorded in results.json."""
    return sha256_bytes(np.ascontiguousarray(indices, dtype="<i8").tobytes())


def buffer_shuffle(stream: Iterable[T], bufsize: int, initial: int, rng: random.Random) -> Iterator[T]:
    """webdataset's streaming shuffle (0.2.48 ``filters._shuffle``), same draws, same order.

    Items enter a buffer two at a time while it is below `bufsize`; once it holds `initial`, every
    item read is followed by one pick: a uniform position `rng.randint(0, len - 1)`, whose item is
    emitted and replaced by the buffer's last item. At the end the buffer is emptied the same way.
    """
    initial = min(initial, bufsize)
    source = iter(stream)
    pool: list[T] = []

    def pick() -> T:
        k = rng.randint(0, len(pool) - 1)
        chosen, last = pool[k], pool.pop()
        if k < len(pool):
            pool[k] = last
        return chosen

    for item in source:
        pool.append(item)
        if len(pool) < bufsize:
            extra = next(source, _END)
            if extra is not _END:
                pool.append(extra)
        if len(pool) >= initial:
            yield pick()
    while pool:
        yield pick()


_END: Any = object()


def fare_stream_order(
    shard_sizes: Sequence[int],
    seed: int = 0,
    *,
    workers: int = FARE_WORKERS,
    batch: int = FARE_BATCH,
    bufsize: int = FARE_SHUFFLE_BUFFER,
    initial: int = FARE_SHUFFLE_INITIAL,
) -> list[int]:
    """Global sample indices (shards in order, samples in tar order) in the order FARE's loader yields them."""
    starts = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(int).tolist()
    per_worker: list[list[list[int]]] = []
    for w in range(max(1, workers)):
        mine = [
            i for s in range(w, len(shard_sizes), max(1, workers)) for i in range(starts[s], starts[s + 1])
        ]
        shuffled = list(buffer_shuffle(mine, bufsize, initial, random.Random(seed)))
        per_worker.append([shuffled[k : k + batch] for k in range(0, len(shuffled), batch)])
    order: list[int] = []
    for k in range(max((len(b) for b in per_worker), default=0)):
        for batches in per_worker:  # the DataLoader takes the workers' batches in turn, skipping spent ones
            if k < len(batches):
                order.extend(batches[k])
    return order


def robustbench_imagenet_ids() -> list[str]:
    """RobustBench's 5000 ImageNet validation images, as ``<wnid>/ILSVRC2012_val_<8 digits>.JPEG``, file order."""
    rows = read_lines_resource("zsrobust_bench.data", ROBUSTBENCH_IMAGENET)
    out = []
    for row in rows:
        wnid, number = row.split()
        out.append(f"{wnid}/ILSVRC2012_val_{int(number):08d}.JPEG")
    return out


def _webdataset_shards(items: Any) -> list[int] | None:
    """Per-shard sample counts (shard order) of a webdataset TarSource, None for any other source."""
    from .readers.webdataset import TarSource

    if not isinstance(items, TarSource):
        return None
    sizes: dict[str, int] = {}
    for shard, *_ in items.samples:
        sizes[shard] = sizes.get(shard, 0) + 1
    return list(sizes.values())


def _imagenet_files(items: Any) -> list[str] | None:
    from .readers.imagefolder import FileListSource

    return list(items.files) if isinstance(items, FileListSource) else None


def _fare_subset(
    items: Any, n_total: int, n_samples: int | None, seed: int, dataset: str
) -> Selection | None:
    """FARE's samples when the source allows identifying them; None when it does not."""
    if dataset == "imagenet":
        files = _imagenet_files(items)
        if files is None:
            return None
        where = {f.replace("\\", "/"): i for i, f in enumerate(files)}
        wanted = robustbench_imagenet_ids()[: n_samples or None]
        missing = [f for f in wanted if f not in where]
        if missing:
            return None
        note = "RobustBench's fixed ImageNet list (first n in file order)"
        return Selection(
            np.sort(np.asarray([where[f] for f in wanted], dtype=np.int64)), "robustbench-imagenet", note
        )
    sizes = _webdataset_shards(items)
    if sizes is None:
        return None
    order = fare_stream_order(sizes, seed)
    chosen = order if n_samples is None else order[:n_samples]
    note = (
        f"FARE's webdataset stream: {len(sizes)} shard(s), {FARE_WORKERS} loader workers, shuffle buffer "
        f"{FARE_SHUFFLE_BUFFER} with random.Random({seed}), batches of {FARE_BATCH}; first {len(chosen)}"
    )
    return Selection(
        np.sort(np.asarray(chosen, dtype=np.int64)), "fare-webdataset", note, tuple(int(x) for x in sizes)
    )


def evaluation_subset(
    dataset: Any, name: str, n_samples: int | None, seed: int, selection: str = "seeded"
) -> Selection:
    """The indices to evaluate of an opened split (`data.loaders.open_eval_dataset`'s result).

    `selection` is a protocol's: "seeded" or "fare" (FARE's own samples where the source allows it,
    else the seeded subset, with a note saying why). Leaderboard checks call this same function.
    """
    n_total = len(dataset)
    if n_samples is None or n_samples >= n_total:
        return Selection(select_indices(n_total, None, seed, name), "all")
    if selection == "fare":
        chosen = _fare_subset(getattr(dataset, "items", None), n_total, n_samples, seed, name)
        if chosen is not None:
            return chosen
        note = (
            "FARE's samples cannot be identified in this copy of the dataset (not the clip-benchmark "
            "webdataset shards; ImageNet: not the original validation file names): seeded subset instead"
        )
        return Selection(select_indices(n_total, n_samples, seed, name), "seeded", note)
    if selection != "seeded":
        raise ValueError(f"unknown sample selection {selection!r}; known: seeded, fare")
    return Selection(select_indices(n_total, n_samples, seed, name), "seeded")


def protocol_indices(
    proto: Any, dataset: str, n_split: int, selection: dict[str, Any] | None = None
) -> np.ndarray | None:
    """The indices a protocol evaluates on `dataset` (canonical name) of `n_split` samples, rebuilt
    without the data: what `zsbench leaderboard validate` compares a results file's indices with.

    `selection` is the results file's recorded selection. FARE's webdataset stream is rebuilt from the
    recorded shard sizes (which must add up to the split); RobustBench's ImageNet list needs the
    folder's file names, so it returns None (the count is still checked by the caller). Every other
    case is the seeded rule `evaluation_subset` uses.
    """
    n_samples = proto.samples_for(dataset)
    method = (selection or {}).get("method")
    if proto.effective_selection() == "fare" and method == "fare-webdataset":
        sizes = (selection or {}).get("shard_sizes")
        if not isinstance(sizes, list) or not all(isinstance(x, int) and x > 0 for x in sizes):
            raise ValueError("a fare-webdataset selection must record its shard_sizes")
        if sum(sizes) != n_split:
            raise ValueError(f"the recorded shard sizes add up to {sum(sizes)}, not the split's {n_split}")
        order = fare_stream_order(sizes, proto.seed)
        return np.sort(np.asarray(order if n_samples is None else order[:n_samples], dtype=np.int64))
    if proto.effective_selection() == "fare" and method == "robustbench-imagenet":
        return None
    return select_indices(n_split, n_samples, proto.seed, dataset)

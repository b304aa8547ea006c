"""Training data: the synthetic world pre-rendered once into uint8 tensors (cached on disk, keyed by
the generator's source), ImageFolder trees (ImageNet train), and a step-indexed batch plan.

Every batch is a pure function of (seed, step): the global batch's indices come from a per-epoch
permutation, each process takes its contiguous slice, so resuming at step k or changing the number
of processes yields the same global batches. The inner attack's random starts are drawn the same way
(`global_uniform`).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch.utils.data import DataLoader, Dataset, Sampler

from ..distributed import DistInfo, barrier
from ..errors import DataError
from ..fileio import atomic_write_bytes

TASK_ORDER = ("color", "shape", "count", "position", "pattern")


def _world_version() -> str:
    from ..data import synthetic

    return hashlib.sha256(inspect.getsource(synthetic).encode()).hexdigest()[:16]


def _render_range(args: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    from ..data import synthetic

    split, lo, hi = args
    imgs = np.empty((hi - lo, 3, synthetic.IMAGE_SIZE, synthetic.IMAGE_SIZE), dtype=np.uint8)
    attrs = np.empty((hi - lo, len(TASK_ORDER)), dtype=np.int64)
    for j, i in enumerate(range(lo, hi)):
        img, scene = synthetic.generate(split, i)
        imgs[j] = np.round(img * 255).astype(np.uint8)
        attrs[j] = [scene.attr(t) for t in TASK_ORDER]
    return imgs, attrs


def render_synthetic(
    split: str, n: int, workers: int = 2, cache_dir: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples 0..n-1 of a synthetic split as (uint8 images (n,3,32,32), attributes (n,5) in TASK_ORDER)."""
    from ..data import synthetic
    from ..zeroshot import cache_root

    if n > synthetic.SPLIT_SIZES[split]:
        raise DataError(f"synthetic split {split} has {synthetic.SPLIT_SIZES[split]} samples, {n} requested")
    path = (cache_dir or cache_root()) / "synthetic" / f"{split}-{n}-{_world_version()}.safetensors"
    if path.is_file():
        try:
            t = load_file(path)
            if t["images"].shape[0] == n:
                return t["images"], t["attrs"]
        except (SafetensorError, KeyError, OSError):
            pass  # a damaged cache entry is re-rendered below
    chunk = 2000
    jobs = [(split, lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    if workers > 1 and len(jobs) > 1:
        with get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_range, jobs)
    else:
        parts = [_render_range(j) for j in jobs]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    attrs = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    atomic_write_bytes(path, save({"images": images.contiguous(), "attrs": attrs.contiguous()}))
    return images, attrs


def shared_render(split: str, n: int, dist: DistInfo, workers: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """render_synthetic on rank 0 first (fills the cache), then on the other ranks (cache hit)."""
    if dist.is_main:
        out = render_synthetic(split, n, workers)
    barrier()
    if not dist.is_main:
        out = render_synthetic(split, n, 1)
    return out


@dataclass(frozen=True)
class BatchPlan:
    """Global batch indices per optimizer step: per-epoch seeded permutations, last partial batch dropped."""

    n: int
    global_batch: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise DataError(f"{self.n} training samples do not fill one global batch of {self.global_batch}")

    def global_indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed((self.seed * 1_000_033 + epoch) & ((1 << 63) - 1))
        perm = torch.randperm(self.n, generator=g)
        return perm[pos * self.global_batch : (pos + 1) * self.global_batch]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of a step: the resumable data position."""
        return divmod(step, self.steps_per_epoch)


def rank_rows(global_batch: int, dist: DistInfo) -> slice:
    """This process's contiguous slice of a global batch."""
    if global_batch % dist.world_size:
        raise DataError(f"global batch {global_batch} is not divisible by {dist.world_size} processes")
    b = global_batch // dist.world_size
    return slice(dist.rank * b, (dist.rank + 1) * b)


def global_uniform(
    seed: int,
    step: int,
    global_shape: tuple[int, ...],
    rows: slice,
    device: torch.device | str = "cpu",
    salt: int = 0,
) -> torch.Tensor:
    """Uniform[-1,1] noise for the rows `rows` of a global batch, from a (seed, step, salt) generator
    on `device` (drawn for the whole global batch, so every process count sees the same noise)."""
    g = torch.Generator(device=device).manual_seed((seed * 1_000_003 + step * 7919 + salt) & ((1 << 63) - 1))
    return (torch.rand(global_shape, generator=g, device=device) * 2 - 1)[rows]


class StepSampler(Sampler[list[int]]):
    """Batch sampler yielding this process's indices for steps start..total-1 of a plan."""

    def __init__(self, plan: BatchPlan, rows: slice, start: int, total: int) -> None:
        self.plan, self.rows, self.start, self.total = plan, rows, start, total

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.total):
            yield self.plan.global_indices(step)[self.rows].tolist()


class ImageFolderTrain(Dataset):
    """torchvision ImageFolder as [0,1] tensors: resize the short side, centre crop, no augmentation
    (TeCoA: Resize(256) bilinear + CenterCrop(224); FARE: open_clip's Resize(224) bicubic + CenterCrop(224))."""

    def __init__(
        self, root: str | Path, image_size: int, resize: int | None = None, interpolation: str = "bicubic"
    ) -> None:
        from torchvision import datasets, transforms

        root = Path(root)
        if not root.is_dir():
            raise DataError(
                f"training data folder {root} does not exist",
                "set data.root to an ImageFolder tree (ImageNet train)",
            )
        resize = int(round(image_size * 256 / 224)) if resize is None else int(resize)
        mode = transforms.InterpolationMode(interpolation)
        tf = transforms.Compose(
            [
                transforms.Resize(resize, interpolation=mode),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
            ]
        )
        self.inner = datasets.ImageFolder(str(root), transform=tf)
        self.classes = self.inner.classes

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.inner[i]
        return x, int(y)


def imagefolder_batches(
    ds: Dataset, plan: BatchPlan, rows: slice, start: int, total: int, workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images, labels, dataset indices) for steps start..total-1 through a DataLoader with workers."""
    sampler = StepSampler(plan, rows, start, total)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, persistent_workers=False)
    for step, (x, y) in zip(range(start, total), loader, strict=True):
        yield x, y, plan.global_indices(step)[rows]

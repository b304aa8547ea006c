"""A procedurally generated zero-shot world: small scenes of coloured shapes on patterned
backgrounds, with one caption vocabulary shared by five zero-shot tasks (colour, shape, count,
position, pattern). Deterministic: sample i of a split is drawn from a generator seeded by
(world seed, split, i), so any subset, order, batch size or worker count gives the same pixels.

A tiny CLIP learns it contrastively on a CPU in minutes; the demo model and the trainer's
miniature TeCoA reproduction (train on one task, test zero-shot robustness on the others) use it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .spec import DatasetSpec, PromptSet, Source

IMAGE_SIZE = 32
WORLD_SEED = 20230501
SPLIT_SIZES = {"train": 200_000, "val": 1_000, "test": 2_000}
SOURCE_KIND = "synthetic"  # the source kind of the synthetic specs (opened in process, no files)

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "cyan": (0.10, 0.85, 0.90),
}
SHAPES = ("circle", "square", "triangle", "cross")
COUNTS = ("one", "two", "three")
POSITIONS = ("left", "right", "top", "bottom")
PATTERNS = ("plain", "striped", "dotted", "checkered")

# Task name -> (attribute values in label order, templates). Each template is the caption grammar
# below with every other attribute left out, so zero-shot prompts are in the caption language.
TASKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "color": (tuple(COLORS), ("a photo of {} shape.",)),
    "shape": (SHAPES, ("a photo of {}.",)),
    "count": (COUNTS, ("a photo of {} shape.",)),
    "position": (POSITIONS, ("a photo of shape on the {}.",)),
    "pattern": (PATTERNS, ("a photo of shape on a {} background.",)),
}


@dataclass(frozen=True)
class Scene:
    """The attributes of one synthetic image (indices into the attribute tuples)."""

    color: int
    shape: int
    count: int
    position: int
    pattern: int

    def attr(self, task: str) -> int:
        return int(getattr(self, task))


def _rng(split: str, index: int, seed: int = WORLD_SEED) -> np.random.Generator:
    digest = hashlib.sha256(f"zsbench-synthetic:{seed}:{split}:{index}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "little")))


def sample_scene(rng: np.random.Generator) -> Scene:
    return Scene(
        color=int(rng.integers(len(COLORS))),
        shape=int(rng.integers(len(SHAPES))),
        count=int(rng.integers(len(COUNTS))),
        position=int(rng.integers(len(POSITIONS))),
        pattern=int(rng.integers(len(PATTERNS))),
    )


def _background(pattern: str, rng: np.random.Generator, n: int) -> np.ndarray:
    base = rng.uniform(0.35, 0.6)
    amp = rng.uniform(0.12, 0.2)
    yy, xx = np.mgrid[0:n, 0:n]
    period = int(rng.integers(4, 6))
    phase = int(rng.integers(0, period))
    if pattern == "plain":
        field = np.zeros((n, n))
    elif pattern == "striped":
        field = (((yy + phase) // (period // 2 + 1)) % 2) * 2.0 - 1
    elif pattern == "dotted":
        field = ((((yy + phase) % period) < 2) & (((xx + phase) % period) < 2)) * 2.0 - 1
    else:  # checkered
        field = ((((yy + phase) // 3) + ((xx + phase) // 3)) % 2) * 2.0 - 1
    grey = base + amp * field * 0.5
    img = np.repeat(grey[None], 3, axis=0)
    return img + rng.normal(0, 0.02, size=img.shape)


def _mask(shape: str, cy: float, cx: float, r: float, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.62)
    bar = r * 0.38
    return ((np.abs(dy) <= bar) & (np.abs(dx) <= r)) | ((np.abs(dx) <= bar) & (np.abs(dy) <= r))


# Allowed object-centre boxes (y0, y1, x0, x1) per position; the boxes do not overlap.
_POSITION_BOXES = {
    "left": (9.0, 23.0, 4.0, 11.0),
    "right": (9.0, 23.0, 21.0, 28.0),
    "top": (4.0, 11.0, 9.0, 23.0),
    "bottom": (21.0, 28.0, 9.0, 23.0),
}


def render(scene: Scene, rng: np.random.Generator, n: int = IMAGE_SIZE) -> np.ndarray:
    """Render a scene to a float32 (3,n,n) array in [0,1]."""
    img = _background(PATTERNS[scene.pattern], rng, n)
    color = np.array(list(COLORS.values())[scene.color]) + rng.normal(0, 0.04, 3)
    k = scene.count + 1
    r = rng.uniform(3.6, 4.4) if k == 1 else rng.uniform(2.9, 3.4)
    y0, y1, x0, x1 = _POSITION_BOXES[POSITIONS[scene.position]]
    centres: list[tuple[float, float]] = []
    for _ in range(200):
        if len(centres) == k:
            break
        cy, cx = rng.uniform(y0, y1), rng.uniform(x0, x1)
        if all((cy - a) ** 2 + (cx - b) ** 2 >= (2 * r + 1.2) ** 2 for a, b in centres):
            centres.append((cy, cx))
    if len(centres) < k:  # deterministic fallback layout along the box's long side
        centres = [(y0 + (y1 - y0) * (i + 0.5) / k, x0 + (x1 - x0) * (i + 0.5) / k) for i in range(k)]
    for cy, cx in centres:
        m = _mask(SHAPES[scene.shape], cy, cx, r, n)
        img[:, m] = np.clip(color, 0, 1)[:, None]
    return np.clip(img, 0, 1).astype(np.float32)


def generate(split: str, index: int, n: int = IMAGE_SIZE) -> tuple[np.ndarray, Scene]:
    """Image and scene for sample `index` of `split` (pure function of its arguments)."""
    if split not in SPLIT_SIZES:
        raise KeyError(f"synthetic split {split!r} unknown; splits: {sorted(SPLIT_SIZES)}")
    rng = _rng(split, index)
    scene = sample_scene(rng)
    return render(scene, rng, n), scene


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption naming a random non-empty subset of the scene's attributes."""
    keep = rng.random(5) < 0.5
    if not keep.any():
        keep[int(rng.integers(5))] = True
    words = ["a photo of"]
    if keep[2]:
        words.append(COUNTS[scene.count])
    if keep[0]:
        words.append(list(COLORS)[scene.color])
    words.append(SHAPES[scene.shape] if keep[1] else "shape")
    if keep[3]:
        words.append(f"on the {POSITIONS[scene.position]}")
    if keep[4]:
        words.append(f"on a {PATTERNS[scene.pattern]} background")
    return " ".join(words) + "."


def vocabulary() -> list[str]:
    """Every caption the world can produce is built from these words."""
    words = {"a", "photo", "of", "shape", "on", "the", "background", "."}
    words.update(COLORS, SHAPES, COUNTS, POSITIONS, PATTERNS)
    return sorted(words)


class SyntheticTask(Dataset):
    """One zero-shot task: images with the task attribute as label."""

    def __init__(self, task: str, split: str, size: int | None = None) -> None:
        if task not in TASKS:
            raise KeyError(f"unknown synthetic task {task!r}")
        self.task, self.split = task, split
        self.size = SPLIT_SIZES[split] if size is None else size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < self.size:
            raise IndexError(i)
        img, scene = generate(self.split, i)
        return torch.from_numpy(img), scene.attr(self.task)


class SyntheticCaptions(Dataset):
    """Image-caption pairs for contrastive training (caption drawn per index, deterministic)."""

    def __init__(self, split: str = "train", size: int | None = None, epoch: int = 0) -> None:
        self.split = split
        self.size = SPLIT_SIZES[split] if size is None else size
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        img, scene = generate(self.split, i)
        return torch.from_numpy(img), caption(scene, _rng(f"caption-{self.epoch}", i))


def open_task(source: Source, split: str) -> SyntheticTask:
    """The split of the task a synthetic source names (its ref ends in ``:<task>``)."""
    return SyntheticTask(source.ref.rsplit(":", 1)[1], split)


def synthetic_specs() -> list[DatasetSpec]:
    """One spec per zero-shot task of the world, named ``synth-<task>``, in TASKS order."""
    out = []
    for task, (names, templates) in TASKS.items():
        ps = PromptSet(classnames=names, templates=templates)
        out.append(
            DatasetSpec(
                name=f"synth-{task}",
                num_classes=len(names),
                prompt_sets={"tecoa": ps, "clip": ps, "synthetic": ps},
                eval_split="test",
                sources=(Source(SOURCE_KIND, f"zsrobust_bench.data.synthetic:{task}"),),
                aliases=(f"synthetic-{task}",),
                eval_resolution="native",
                native_size=IMAGE_SIZE,
                split_note=f"generated: train {SPLIT_SIZES['train']}, val {SPLIT_SIZES['val']}, "
                f"test {SPLIT_SIZES['test']} samples, seed {WORLD_SEED}",
                homepage="",
                license="MIT (generated)",
                size_hint=SPLIT_SIZES["test"],
                synthetic=True,
            )
        )
    return out


SUITES: dict[str, tuple[str, ...]] = {"synthetic": tuple(f"synth-{t}" for t in TASKS)}

"""Seeded, deterministic evaluation subsets, chosen by index only (never by batch size or workers)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..fileio import sha256_bytes


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


def protocol_indices(proto: Any, dataset: str, n_split: int) -> np.ndarray:
    """The indices a protocol evaluates on `dataset` (canonical name) of `n_split` samples.

    The one selection rule shared by `evaluate` and `zsbench leaderboard validate`, so a results file
    whose subset is not the protocol's own is refused.
    """
    return select_indices(n_split, proto.samples_for(dataset), proto.seed, dataset)

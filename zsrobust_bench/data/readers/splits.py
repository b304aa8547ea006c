"""Seeded splits: the test/train split of datasets that publish none, made reproducible by hashing.

Some datasets (e.g. Caltech-101/256) come as one pool of images; zsbench cuts its own split out of
it. Ranking the items of each class by a sha256 of a versioned key (not by a random generator)
gives every user the same split from the same files, independent of file order, platform or
library versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from ...errors import DataError

SPLIT_HASH_VERSION = "zsbench-split/v1"


def seeded_split(
    keys: Sequence[str], labels: Sequence[int], rule: Mapping[str, int], dataset: str, split: str
) -> list[int]:
    """Indices (sorted) of `split` ("test", "train" or "all") under a per-class hash-ordered rule.

    Inside each class, items are ranked by sha256("zsbench-split/v1:<dataset>:<key>"), where key is
    "<class folder>/<file name>"; rule {"train_per_class": k} makes the first k train and the rest
    test, {"test_per_class": k} makes the first k test and the rest train.
    """
    if split == "all":
        return list(range(len(keys)))
    if split not in ("test", "train"):
        raise DataError(f"dataset {dataset} has splits test, train and all; not {split!r}")
    ((kind, k),) = rule.items()
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(i)
    chosen: list[int] = []
    for label, members in sorted(by_label.items()):
        if len(members) <= k:
            raise DataError(
                f"class {label} of {dataset} has {len(members)} images; its split needs more than {k}",
                "the copy on disk looks incomplete: re-run `zsbench datasets prepare " + dataset + "`",
            )
        ranked = sorted(
            members,
            key=lambda i: hashlib.sha256(f"{SPLIT_HASH_VERSION}:{dataset}:{keys[i]}".encode()).digest(),
        )
        first, rest = ranked[:k], ranked[k:]
        test, train = (rest, first) if kind == "train_per_class" else (first, rest)
        chosen.extend(test if split == "test" else train)
    return sorted(chosen)

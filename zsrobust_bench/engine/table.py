"""Outcomes of one shard's samples as arrays, filled in as rows pass the stages, then turned into records."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .blocks import ShardSpec
from .records import EpsOutcome, SampleRecord, sample_record

NOT_BROKEN = -1
SMALLER_EPS = -2


class ShardTable:
    """Outcomes of one shard's samples, filled in as its rows pass the stages."""

    def __init__(self, spec: ShardSpec, n_eps: int) -> None:
        n = len(spec)
        self.key = spec.key
        self.n = n
        self.ids = np.asarray(spec.indices, dtype=np.int64)
        self.label = np.full(n, -1, dtype=np.int64)
        self.pred = np.full(n, -1, dtype=np.int64)
        self.clean_ok = np.zeros(n, dtype=bool)
        self.robust = np.zeros((n_eps, n), dtype=bool)
        self.by = np.full((n_eps, n), NOT_BROKEN, dtype=np.int32)
        self.step = np.full((n_eps, n), -1, dtype=np.int64)
        self.nonfinite = np.zeros(n, dtype=bool)
        self.done = 0

    def set_clean(self, pos: np.ndarray, label: np.ndarray, pred: np.ndarray, finite: np.ndarray) -> None:
        ok = (pred == label) & finite
        self.label[pos] = label
        self.pred[pos] = pred
        self.clean_ok[pos] = ok
        self.robust[:, pos] = ok[None, :]
        self.nonfinite[pos] |= ~finite

    def set_broken(self, eps_index: int, pos: np.ndarray, code: int, step: np.ndarray) -> None:
        """Rows broken at eps `eps_index`: not robust there nor at any larger eps (never attacked there)."""
        self.robust[eps_index:, pos] = False
        self.by[eps_index, pos] = code
        self.step[eps_index, pos] = step
        self.by[eps_index + 1 :, pos] = SMALLER_EPS

    def records(self, names: Sequence[str], eps_labels: Sequence[str]) -> list[SampleRecord]:
        """One record per sample, in shard order (the per-sample record format of samples/*.jsonl)."""
        if (self.label < 0).any():
            raise RuntimeError(f"shard {self.key}: records requested before every row had its clean pass")

        def name(code: int) -> str | None:
            return None if code == NOT_BROKEN else ("smaller-eps" if code == SMALLER_EPS else names[code])

        robust, by, step = self.robust.tolist(), self.by.tolist(), self.step.tolist()
        return [
            sample_record(
                int(self.ids[p]),
                int(self.label[p]),
                int(self.pred[p]),
                bool(self.clean_ok[p]),
                [
                    EpsOutcome(
                        robust_correct=robust[j][p],
                        broken_by=name(by[j][p]),
                        broken_step=step[j][p] if step[j][p] >= 0 else None,
                    )
                    for j in range(len(eps_labels))
                ],
                eps_labels,
                bool(self.nonfinite[p]),
            )
            for p in range(self.n)
        ]

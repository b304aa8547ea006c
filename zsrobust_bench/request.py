"""`EvalRequest`: everything one evaluation is asked to do, described in one place.

`evaluate.run(request)` carries it out; `evaluate.evaluate(model, ...)` builds one from keyword
arguments of the same names (the one-call form for notebooks and scripts: `evaluate(model, datasets, **fields)`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models.loader import LoadedModel


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    """One evaluation: which model, under which protocol, on which data, where to write, how to run."""

    model: str
    """Checkpoint path, open_clip `ARCH:PRETRAINED` tag or `hf-hub:org/name` (recorded as the model spec)."""
    out: Path
    """Output directory: results.json, samples/, and shards/ a re-run resumes from."""
    datasets: tuple[str, ...] | None = None
    """Dataset names, aliases, suites or `imagefolder:PATH`; None: the protocol's suite."""
    protocol: str = "tecoa-pgd"
    """Named protocol (`zsbench protocols list`)."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Protocol overrides (`protocols.apply_overrides`); any change makes the run custom."""
    seed: int | None = None
    """Replaces the protocol's seed (as an override)."""
    attack_backend: str | None = None
    """"engine" or "reference": the APGD implementation; recorded in the params, does not make the run custom."""
    indices: Mapping[str, Sequence[int]] | None = None
    """Evaluate exactly these split indices per dataset instead of the protocol's selection (custom)."""
    arch: str | None = None
    """open_clip model name or model-config JSON path, for checkpoints that do not name their architecture."""
    pretrained: str | None = None
    """Base weights providing what the checkpoint lacks (e.g. the text tower of a vision-only checkpoint)."""
    allow_custom_tokenizer: bool = False
    """Accept a model config whose tokenizer is not open_clip's default (models.config_gate)."""
    loaded: LoadedModel | None = None
    """An already loaded model to evaluate instead of loading `model` (which is still recorded)."""
    data_root: str | Path | None = None
    """Dataset root; None: $ZSBENCH_DATA, else ~/.cache/zsbench/data."""
    cache_dir: str | Path | None = None
    """Where class text embeddings are cached by content hash; None: not cached on disk."""
    device: str = "cpu"
    """Torch device; under torchrun each rank takes its local CUDA device."""
    batch_size: int = 128
    """Images per forward/backward pass (halved on CUDA out-of-memory)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    shard_size: int = 512
    """Samples per shard: the unit of resuming and of distributing over ranks."""
    compile: bool = False
    """torch.compile the image tower (worth it on CUDA)."""
    progress: bool = True
    """Show progress bars (rank 0 only)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "overrides", dict(self.overrides or {}))
        if self.datasets is not None:
            object.__setattr__(self, "datasets", tuple(self.datasets))

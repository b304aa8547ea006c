"""Checkpoints: resumable training state (weights-only loadable: tensors and primitives, RNG states as
tensors), the project's self-describing export, and TeCoA's training-dict export."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..fileio import atomic_write_bytes
from ..models.native import save_native
from ..models.prompters import PromptedVisual
from .modules import BaseModel

TRAIN_STATE = "train-state.pt"
STATE_VERSION = 2  # 2: adds log_window (the logging window sums, for resume-exact logs)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and primitives."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached": float(cached),
        "python": torch.tensor(pystate, dtype=torch.int64),
        "python_version": int(version),
        "python_gauss": gauss,
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_cached"])
    )
    random.setstate(
        (state["python_version"], tuple(int(v) for v in state["python"].tolist()), state["python_gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically torch.save the resumable state (must stay loadable with weights_only=True)."""
    buf = io.BytesIO()
    torch.save({"version": STATE_VERSION, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_train_state(path: Path) -> dict[str, Any]:
    """Load a resumable state with torch.load(weights_only=True)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(
            f"cannot read training state {path}: {type(exc).__name__}: {exc}".split("\n")[0]
        ) from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path} is not a zsbench training state (version {STATE_VERSION})")
    return state


def _token_rows(table: torch.Tensor) -> list[int] | None:
    """Rows of a token table worth storing (non-zero ones) when that saves at least half."""
    nz = (table != 0).any(dim=1).nonzero().flatten().tolist()
    return nz if len(nz) <= table.shape[0] // 2 else None


def _split_prompts(tower: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    if not isinstance(tower, PromptedVisual):
        return tower, {}
    prompts: dict[str, torch.Tensor] = {}
    if tower.pad is not None:
        prompts.update({k: v.detach().cpu() for k, v in tower.pad.state_dict().items()})
    if tower.tokens is not None:
        prompts["prompt"] = tower.tokens.prompt.detach().cpu()
    return tower.visual, prompts


def export_native(
    path: Path,
    base: BaseModel,
    clip: nn.Module,
    tower: nn.Module,
    *,
    dtype: torch.dtype | None = None,
    compact_rows: list[int] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the project's checkpoint: vision-only (+ prompts) over an open_clip tag, else self-contained full.

    `clip` is the whole CLIP whose `visual` is the trained tower's ViT (same module objects).
    """
    _, prompts = _split_prompts(tower)
    sd = {k: v.detach().cpu() for k, v in clip.state_dict().items()}
    if base.pretrained is not None:
        visual = {k: v for k, v in sd.items() if k.startswith("visual.")}
        kind = "visual-prompt" if prompts else "vision-only"
        return save_native(
            path,
            visual,
            arch=base.arch,
            arch_config=base.arch_config,
            kind=kind,
            pretrained=base.pretrained,
            prompts=prompts,
            extra=extra,
            dtype=dtype,
        )
    rows = compact_rows if compact_rows is not None else _token_rows(sd["token_embedding.weight"])
    # A self-contained file holds the text tower too: kind "full" (the loader applies prompts of any kind).
    return save_native(
        path,
        sd,
        arch=base.arch,
        arch_config=base.arch_config,
        kind="full",
        prompts=prompts,
        extra=extra,
        dtype=dtype,
        compact_token_rows=rows,
    )


def export_tecoa(
    path: Path, tower: nn.Module, *, epoch: int, best_acc1: float, optimizer: dict[str, Any] | None
) -> Path:
    """TeCoA's dict: epoch, state_dict (padding prompt), add_prompter (token prompt),
    vision_encoder_state_dict (finetuned tower), best_acc1, optimizer."""
    visual, prompts = _split_prompts(tower)
    pads = {f"module.{k}": v for k, v in prompts.items() if k.startswith("pad_")}
    width = int(visual.transformer.width) if hasattr(visual, "transformer") else 0
    tok = prompts.get("prompt", torch.zeros(1, 0, width))
    obj: dict[str, Any] = {
        "epoch": int(epoch),
        "state_dict": pads,
        "add_prompter": {"module.prompt": tok},
        "best_acc1": float(best_acc1),
        "optimizer": optimizer or {},
    }
    if not prompts:
        obj["vision_encoder_state_dict"] = {k: v.detach().cpu() for k, v in visual.state_dict().items()}
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path

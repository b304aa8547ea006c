"""Device-side settings of the engine: precision, memory layout, optional compilation, OOM detection.

- fp32 means fp32: on CUDA, TF32 matmuls and convolutions are switched off for the run (PyTorch
  enables TF32 convolutions by default, which would silently lower the precision of ResNets).
- bf16/fp16 autocast only when the protocol asks for it (CUDA only; the attack records it).
- On CUDA, inputs and the image tower use channels-last. Attention already runs through
  `scaled_dot_product_attention` (open_clip's `nn.MultiheadAttention`, `need_weights=False`),
  which picks the fused kernels itself.
- `compile`: the image tower is wrapped in `torch.compile(dynamic=False)`; the pool always runs
  the same batch shape, so it compiles once per mode (inference for the clean pass, gradient for
  attacks) and the compiled tower is reused across datasets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def is_cuda(device: str | torch.device) -> bool:
    """Whether `device` names a CUDA device."""
    return torch.device(device).type == "cuda"


def input_format(device: str | torch.device) -> torch.memory_format:
    """Memory layout for image batches: channels-last on CUDA, contiguous elsewhere."""
    return torch.channels_last if is_cuda(device) else torch.contiguous_format


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """Autocast for a precision; fp32 is a no-op, bf16/fp16 exist only on CUDA."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _DTYPES:
        raise ValueError(f"unknown precision {precision!r}; known: fp32, bf16, fp16")
    if not is_cuda(device):
        raise ValueError(f"precision {precision} is only supported on CUDA; CPU evaluation runs fp32")
    return torch.autocast(device_type="cuda", dtype=_DTYPES[precision])


@contextlib.contextmanager
def strict_precision(precision: str, device: str | torch.device) -> Iterator[None]:
    """For fp32 on CUDA, switch TF32 off for the duration (restored afterwards)."""
    if precision != "fp32" or not is_cuda(device):
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def prepare_model(model: nn.Module, device: str | torch.device, compile_tower: bool = False) -> nn.Module:
    """Move the classifier to `device` in eval mode without parameter gradients; CUDA layout; optional compile."""
    model = model.to(device)
    if model.training:
        raise RuntimeError("evaluation requires the model in eval mode")
    for p in model.parameters():
        p.requires_grad_(False)
    if is_cuda(device):
        model = model.to(memory_format=torch.channels_last)
    tower = getattr(model, "image_tower", None)
    if compile_tower and isinstance(tower, nn.Module) and not _is_compiled(tower):
        model.image_tower = _compiled(tower)
    return model


_COMPILED: dict[int, nn.Module] = {}


def _compiled(tower: nn.Module) -> nn.Module:
    """One compiled wrapper per tower (the cache is what makes the second dataset free)."""
    key = id(tower)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(tower, dynamic=False)
    return _COMPILED[key]


def _is_compiled(module: nn.Module) -> bool:
    return hasattr(module, "_orig_mod")


def release_memory(device: str | torch.device) -> None:
    """Return cached blocks to the driver after an out-of-memory error."""
    if is_cuda(device):
        torch.cuda.empty_cache()

"""Model loading: any CLIP-compatible checkpoint, weights only."""

from .formats import FORMATS, ParsedCheckpoint, parse_checkpoint
from .loader import LoadedModel, load_model, load_state
from .safe_load import read_checkpoint

__all__ = [
    "FORMATS",
    "LoadedModel",
    "ParsedCheckpoint",
    "load_model",
    "load_state",
    "parse_checkpoint",
    "read_checkpoint",
]

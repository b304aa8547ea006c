"""Pixels: decode any PIL image to 8-bit RGB, then to a float32 (3,H,W) tensor in [0,1].

Every reader hands back PIL images in whatever mode the file stores (grey, 16-bit grey, palette,
RGBA); converting them here, in one place, keeps the pixels a model sees identical whichever
format the dataset came in. Resizing (the protocol's `Preprocess`: shorter side, antialiased) and
centre-cropping also happen here, before any attack.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..preprocess import DEFAULT_PREPROCESS, Preprocess, preprocess_pil, to_pixels

# What a corrupt or truncated image file raises while being decoded.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def to_rgb(image: Image.Image) -> Image.Image:
    """Decode fully and convert to 8-bit RGB (16-bit grey is scaled, not clipped)."""
    image.load()
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def pil_to_pixels(
    image: Image.Image, size: int | None, preprocess: Preprocess = DEFAULT_PREPROCESS
) -> torch.Tensor:
    """RGB image -> float32 (3,H,W) in [0,1]; with `size` (the model's input size), the protocol's
    resize + centre crop first (default: bicubic, shorter side to `size`, crop `size`)."""
    if size is not None:
        image = preprocess_pil(image, preprocess, size)
    return to_pixels(image)

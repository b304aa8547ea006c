"""Pixels: decode any PIL image to 8-bit RGB, then to a float32 (3,H,W) tensor in [0,1].

Every reader hands back PIL images in whatever mode the file stores (grey, 16-bit grey, palette,
RGBA); converting them here, in one place, keeps the pixels a model sees identical whichever
format the dataset came in. Resizing (bicubic, antialiased, shorter side) and centre-cropping also
happen here, before any attack.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

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


def pil_to_pixels(image: Image.Image, size: int | None) -> torch.Tensor:
    """RGB image -> float32 (3,H,W) in [0,1]; with `size`, bicubic resize of the shorter side + centre crop."""
    if size is not None:
        image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        image = TF.center_crop(image, [size, size])
    return TF.pil_to_tensor(image).to(torch.float32).div_(255.0)

"""Evaluation preprocessing: how a stored image becomes the pixels that are attacked.

It is part of a protocol (different papers resize differently, and the pixels attacked differ), so
each protocol declares one and every loader applies the one it is given. Values cite their source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

INTERPOLATIONS: dict[str, InterpolationMode] = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


@dataclass(frozen=True)
class Preprocess:
    """How a stored image becomes the pixels that are attacked (PIL resize of the shorter side, then a
    centre crop). "model" means the model's input size. Datasets kept at their stored resolution
    (CIFAR-10/100, STL-10, the synthetic world: `eval_resolution == "native"`) skip it in every
    protocol, as TeCoA and FARE do; the classifier then resizes inside its forward pass."""

    resize: int | str
    interpolation: str  # "bilinear" or "bicubic"
    crop: int | str

    def __post_init__(self) -> None:
        for key in ("resize", "crop"):
            value = getattr(self, key)
            if value != "model" and not (isinstance(value, int) and value > 0):
                raise ValueError(f"preprocess {key} must be a positive int or 'model', got {value!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocess interpolation must be one of {tuple(INTERPOLATIONS)}")

    def as_dict(self) -> dict[str, Any]:
        return {"resize": self.resize, "interpolation": self.interpolation, "crop": self.crop}

    def sizes(self, image_size: int) -> tuple[int, int]:
        """(shorter side after resizing, crop size) for a model whose input is `image_size`."""

        def px(v: int | str) -> int:
            return int(image_size) if v == "model" else int(v)

        return px(self.resize), px(self.crop)

    def text(self) -> str:
        """e.g. 'Resize(256, bilinear) + CenterCrop(224)'."""
        return f"Resize({self.resize}, {self.interpolation}) + CenterCrop({self.crop})"


# What every protocol did before preprocessing was declared (and what a protocol without one does):
# bicubic resize of the shorter side to the model's input size + centre crop (data/readers/images.py).
DEFAULT_PREPROCESS = Preprocess("model", "bicubic", "model")
# TeCoA's test loaders: transforms.Resize(256) (torchvision's default interpolation, bilinear) +
# CenterCrop(224) + ToTensor (TeCoA finetuning.py#L321-327, used for every non-CIFAR/STL dataset
# at #L379-430); the model then resizes bicubically to 224 (#L148-153, a no-op at 224).
TECOA_PREPROCESS = Preprocess(256, "bilinear", 224)
# FARE (CLIP_benchmark fork): open_clip's eval transform without its Normalize (RVLM
# CLIP_benchmark/clip_benchmark/cli.py#L236) = Resize(image_size, BICUBIC) + CenterCrop(image_size)
# (open_clip_torch 2.19.0, the version RVLM requirements.txt#L91 pins: src/open_clip/transform.py#L125-126).
OPEN_CLIP_PREPROCESS = Preprocess("model", "bicubic", "model")


def preprocess_pil(image: Image.Image, preprocess: Preprocess, image_size: int) -> Image.Image:
    """Resize the shorter side (PIL, antialiased) and centre-crop, as torchvision's Resize + CenterCrop do."""
    resize, crop = preprocess.sizes(image_size)
    image = TF.resize(image, resize, interpolation=INTERPOLATIONS[preprocess.interpolation], antialias=True)
    return TF.center_crop(image, [crop, crop])


def to_pixels(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 (3,H,W) in [0,1] (torchvision's ToTensor, exactly)."""
    return TF.pil_to_tensor(image).to(torch.float32).div_(255.0)

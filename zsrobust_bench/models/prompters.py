"""TeCoA's visual prompts: a learned pixel border (padding prompt) and learned tokens appended
after the patch tokens of a ViT (token prompt). Both act inside the classifier's forward, so an
attack goes through them."""

from __future__ import annotations

import torch
from torch import nn


class PadPrompter(nn.Module):
    """Adds a learned border of `pad` pixels to a (normalised) image of side `image_size`."""

    def __init__(self, image_size: int, pad: int) -> None:
        super().__init__()
        if not 0 < 2 * pad < image_size:
            raise ValueError(f"padding prompt of {pad} px does not fit a {image_size} px image")
        inner = image_size - 2 * pad
        self.image_size, self.pad = image_size, pad
        self.pad_up = nn.Parameter(torch.zeros(1, 3, pad, image_size))
        self.pad_down = nn.Parameter(torch.zeros(1, 3, pad, image_size))
        self.pad_left = nn.Parameter(torch.zeros(1, 3, inner, pad))
        self.pad_right = nn.Parameter(torch.zeros(1, 3, inner, pad))

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PadPrompter:
        up = tensors["pad_up"]
        m = cls(image_size=int(up.shape[-1]), pad=int(up.shape[-2]))
        m.load_state_dict({k: tensors[k] for k in ("pad_up", "pad_down", "pad_left", "pad_right")})
        return m

    def border(self) -> torch.Tensor:
        base = torch.zeros(
            1, 3, self.image_size - 2 * self.pad, self.image_size - 2 * self.pad, device=self.pad_up.device
        )
        mid = torch.cat([self.pad_left, base, self.pad_right], dim=3)
        return torch.cat([self.pad_up, mid, self.pad_down], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"padding prompt expects {self.image_size} px inputs, got {tuple(x.shape[-2:])}")
        return x + self.border().to(x.dtype)


class TokenPrompter(nn.Module):
    """`n` learned tokens (width = ViT width) appended after the patch tokens, zero positional embedding."""

    def __init__(self, n: int, width: int) -> None:
        super().__init__()
        self.prompt = nn.Parameter(torch.zeros(1, n, width))

    @classmethod
    def from_tensor(cls, prompt: torch.Tensor) -> TokenPrompter:
        m = cls(int(prompt.shape[1]), int(prompt.shape[2]))
        m.load_state_dict({"prompt": prompt})
        return m


def vit_forward_with_tokens(visual: nn.Module, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip VisionTransformer forward with extra tokens appended after the patch tokens
    (after the positional embedding, before ln_pre), then the usual pooling and projection."""
    if not hasattr(visual, "conv1") or not hasattr(visual, "class_embedding"):
        raise TypeError("token prompts need a ViT image tower (open_clip VisionTransformer)")
    x = visual.conv1(x)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = torch.cat([x, tokens.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.patch_dropout(x)
    x = visual.ln_pre(x)
    x = visual.transformer(x)
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled


class PromptedVisual(nn.Module):
    """Image tower with optional padding and token prompts; input is the normalised image."""

    def __init__(
        self, visual: nn.Module, pad: PadPrompter | None = None, tokens: TokenPrompter | None = None
    ) -> None:
        super().__init__()
        self.visual, self.pad, self.tokens = visual, pad, tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = self.pad(x)
        if self.tokens is not None:
            return vit_forward_with_tokens(self.visual, x, self.tokens.prompt)
        return self.visual(x)


def build_prompted_visual(visual: nn.Module, prompts: dict[str, torch.Tensor]) -> PromptedVisual:
    """Wrap `visual` with the prompts found in a checkpoint (pad_* and/or prompt)."""
    pad = PadPrompter.from_tensors(prompts) if "pad_up" in prompts else None
    tok = TokenPrompter.from_tensor(prompts["prompt"]) if "prompt" in prompts else None
    if (
        tok is not None
        and hasattr(visual, "transformer")
        and tok.prompt.shape[-1] != visual.transformer.width
    ):
        raise ValueError(
            f"token prompt width {tok.prompt.shape[-1]} does not match the ViT width {visual.transformer.width}"
        )
    return PromptedVisual(visual, pad, tok)

"""The trained modules: the base CLIP, which of its parameters train, and the heads.

`ImageClassifier` maps [0,1] pixels to logits in train or eval mode (the ZeroShotClassifier of the
benchmark refuses train mode): the benchmark's resize + normalise (`zeroshot.model_input`), the image
tower (with visual prompts), then the benchmark's zero-shot head (`zeroshot.class_logits`, TeCoA's
100 * cosine to frozen text embeddings) or a learned one-hot linear head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from ..data.spec import PromptSet
from ..errors import ZSBenchError
from ..models.prompters import PadPrompter, PromptedVisual, TokenPrompter
from ..zeroshot import class_logits, compute_class_embeddings, model_input

DEMO_ASSET = "demo-clip.safetensors"


def demo_model_path() -> Path:
    """Path of the shipped tiny CLIP trained on the synthetic world."""
    res = resources.files("zsrobust_bench") / "assets" / DEMO_ASSET
    if not res.is_file():
        raise ZSBenchError(
            f"the shipped demo model {DEMO_ASSET} is missing", "run `zsbench train demo-contrastive`"
        )
    return Path(str(res))


@dataclass
class BaseModel:
    """The CLIP a run starts from, plus what an exported checkpoint must record about it."""

    model: nn.Module
    tokenizer: Any
    arch: str
    arch_config: dict[str, Any]
    pretrained: str | None  # open_clip tag the checkpoint can name, or None (self-contained export)
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_base(model_cfg: dict[str, Any], seed: int) -> BaseModel:
    """Build the starting CLIP: an open_clip tag, a checkpoint file, the shipped demo, or a random init."""
    from ..models.arch import register_config
    from ..models.config_gate import build_tokenizer, gate_config
    from ..models.loader import load_model

    pretrained = model_cfg.get("pretrained")
    if model_cfg.get("arch_config") is not None:
        if pretrained is not None:
            raise ZSBenchError("model.arch_config builds a model from scratch; drop model.pretrained")
        origin = "training recipe model.arch_config"
        cfg = gate_config(model_cfg["arch_config"], origin)
        name = register_config(model_cfg.get("arch") or "zsbench-arch", cfg, origin)
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
        tokenizer = build_tokenizer(cfg, origin)
        size = int(cfg["vision_cfg"]["image_size"])
        mean, std = tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD)
        return BaseModel(model, tokenizer, model_cfg.get("arch") or name, cfg, None, size, mean, std)
    if pretrained is None:
        raise ZSBenchError("model.pretrained is required (an open_clip tag, a checkpoint path or 'demo')")
    if pretrained == "demo":
        loaded = load_model(str(demo_model_path()))
        tag = None
    elif Path(str(pretrained)).exists():
        loaded = load_model(str(pretrained), arch=model_cfg.get("arch"))
        tag = None
    else:
        if not model_cfg.get("arch"):
            raise ZSBenchError("model.arch is required with an open_clip pretrained tag")
        loaded = load_model(f"{model_cfg['arch']}:{pretrained}")
        tag = str(pretrained)
    if loaded.prompts:
        raise ZSBenchError(
            "training from a visual-prompt checkpoint is not supported; start from its base model"
        )
    arch_config = open_clip.get_model_config(loaded.arch)
    if arch_config is None:
        raise ZSBenchError(f"no open_clip config for architecture {loaded.arch}")
    return BaseModel(
        loaded.model,
        loaded.tokenizer,
        loaded.arch,
        copy.deepcopy(arch_config),
        tag,
        loaded.image_size,
        loaded.mean,
        loaded.std,
    )


def vit_width(visual: nn.Module) -> int:
    """Token width of an open_clip ViT image tower."""
    if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
        raise ZSBenchError("this method needs a ViT image tower (open_clip VisionTransformer)")
    return int(visual.transformer.width)


def make_prompted(
    visual: nn.Module, image_size: int, prompt_cfg: dict[str, Any], seed: int
) -> PromptedVisual:
    """Wrap the tower with a padding prompt of `pad` px and/or `tokens` appended token prompts."""
    g = torch.Generator().manual_seed(seed + 101)
    std = float(prompt_cfg.get("init_std", 1.0))
    pad = tok = None
    if int(prompt_cfg.get("pad") or 0) > 0:
        pad = PadPrompter(image_size, int(prompt_cfg["pad"]))
        with torch.no_grad():
            for p in pad.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    if int(prompt_cfg.get("tokens") or 0) > 0:
        tok = TokenPrompter(int(prompt_cfg["tokens"]), vit_width(visual))
        with torch.no_grad():
            tok.prompt.copy_(torch.randn(tok.prompt.shape, generator=g) * std)
    return PromptedVisual(visual, pad, tok)


# Registration order of OpenAI CLIP's VisionTransformer (R-TeCoA replace/model.py:170-224, the `clip`
# package TeCoA runs): the tower's own tensors first (class_embedding, positional_embedding, proj),
# then conv1, ln_pre, the blocks (attn, ln_1, mlp, ln_2 each), ln_post. open_clip registers a block's
# ln_1 before attn and ln_2 before mlp, so its parameters() order differs from TeCoA's.
_OPENAI_TOP = {
    "class_embedding": 0,
    "positional_embedding": 1,
    "proj": 2,
    "conv1": 3,
    "ln_pre": 4,
    "ln_post": 6,
}
_OPENAI_BLOCK = {"attn": 0, "ln_1": 1, "mlp": 2, "ln_2": 3}


def openai_parameter_order(visual: nn.Module) -> list[str]:
    """The tower's parameter names in the order OpenAI CLIP's `model.visual.parameters()` yields them."""
    vit_width(visual)

    def key(name: str) -> tuple[int, int, int]:
        parts = name.split(".")
        if parts[0] == "transformer" and parts[1] == "resblocks" and parts[3] in _OPENAI_BLOCK:
            return (5, int(parts[2]), _OPENAI_BLOCK[parts[3]])
        if parts[0] in _OPENAI_TOP:
            return (_OPENAI_TOP[parts[0]], 0, 0)
        raise ZSBenchError(f"image tower parameter {name!r} has no place in OpenAI CLIP's parameter order")

    names = [n for n, _ in visual.named_parameters()]
    return sorted(names, key=key)  # stable: within a module, open_clip and OpenAI agree


def select_trainable(tower: nn.Module, mode: str, partial_blocks: int, partial_params: int = 1) -> list[str]:
    """Freeze everything in the image tower except what `mode` trains; returns the trainable names.

    `last-params` trains the last `partial_params` parameter tensors of the tower in OpenAI CLIP's
    registration order, TeCoA's `--last_num_ft N` (R-TeCoA finetuning.py:251:
    list(model.module.visual.parameters())[-N:]).
    """
    visual = tower.visual if isinstance(tower, PromptedVisual) else tower
    for p in tower.parameters():
        p.requires_grad_(False)
    if mode == "prompt":
        if not isinstance(tower, PromptedVisual):
            raise ZSBenchError("trainable=prompt needs prompt.pad or prompt.tokens")
        for m in (tower.pad, tower.tokens):
            if m is not None:
                for p in m.parameters():
                    p.requires_grad_(True)
    elif mode in ("full", "all"):
        for p in visual.parameters():
            p.requires_grad_(True)
    elif mode == "partial":
        vit_width(visual)
        blocks = visual.transformer.resblocks
        if not 0 < partial_blocks <= len(blocks):
            raise ZSBenchError(f"partial_blocks={partial_blocks} outside 1..{len(blocks)}")
        for m in list(blocks)[-partial_blocks:] + [visual.ln_post]:
            for p in m.parameters():
                p.requires_grad_(True)
        if visual.proj is not None:
            visual.proj.requires_grad_(True)
    elif mode == "last-params":
        ordered = openai_parameter_order(visual)
        if not 0 < partial_params <= len(ordered):
            raise ZSBenchError(f"partial_params={partial_params} outside 1..{len(ordered)}")
        params = dict(visual.named_parameters())
        for name in ordered[-partial_params:]:
            params[name].requires_grad_(True)
    elif mode == "linear-probe":
        if getattr(visual, "proj", None) is None:
            raise ZSBenchError("linear-probe trains the ViT image projection `proj`, which this tower lacks")
        visual.proj.requires_grad_(True)
    else:
        raise ZSBenchError(f"unknown trainable mode {mode!r}")
    return [n for n, p in tower.named_parameters() if p.requires_grad]


class Preprocess(nn.Module):
    """[0,1] pixels -> bicubic resize to the model size (when needed) -> normalise."""

    def __init__(self, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return model_input(x, self.image_size, self.mean, self.std)


class ImageClassifier(nn.Module):
    """pixels -> logits: TeCoA's text head (100 * cos to fixed class embeddings) or a one-hot linear head."""

    def __init__(
        self, tower: nn.Module, pre: Preprocess, text_emb: torch.Tensor | None, linear: nn.Linear | None
    ) -> None:
        super().__init__()
        if (text_emb is None) == (linear is None):
            raise ValueError("exactly one of text_emb and linear")
        self.tower, self.pre, self.linear = tower, pre, linear
        self.register_buffer(
            "text_emb", None if text_emb is None else F.normalize(text_emb.float(), dim=-1), persistent=False
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The unnormalised image embedding (FARE's phi(x), `output_normalize=False`)."""
        return self.tower(self.pre(x))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of embeddings: the one-hot linear head or 100 * cos to the class text embeddings."""
        if self.linear is not None:
            return self.linear(z.float())
        return class_logits(z, self.text_emb)

    def forward(self, x: torch.Tensor, features: bool = False) -> torch.Tensor:
        z = self.embed(x)
        return z if features else self.head(z)


@torch.no_grad()
def text_embeddings(
    model: nn.Module, tokenizer: Any, classnames: list[str], templates: list[str], device: torch.device
) -> torch.Tensor:
    """The benchmark's class embeddings (`zeroshot.compute_class_embeddings`) of the text tower on
    `device`, computed in eval mode without a graph; the tower's train/eval flag is restored."""
    was = model.training
    model.eval()
    emb = compute_class_embeddings(model, tokenizer, PromptSet(tuple(classnames), tuple(templates)), device)
    model.train(was)
    return emb.to(device)


class ContrastiveCLIP(nn.Module):
    """Both towers for CLIP training: (normalised image features, normalised text features, logit scale)."""

    def __init__(self, model: nn.Module, pre: Preprocess) -> None:
        super().__init__()
        self.model, self.pre = model, pre

    def forward(
        self, x: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fi = F.normalize(self.model.encode_image(self.pre(x)).float(), dim=-1)
        ft = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return fi, ft, self.model.logit_scale.exp().float()

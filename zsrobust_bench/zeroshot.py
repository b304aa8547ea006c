"""The zero-shot classifier every attack runs against.

Input: float pixels in [0,1], (B,3,H,W), at the dataset's native or loader size. Inside: bicubic
resize to the model's input size (when needed), normalisation, the image tower (with visual
prompts), L2 normalisation, logits = 100 * cosine to the class embeddings. The class embedding is
the L2-normalised mean of the normalised text embeddings over the templates.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .data.spec import PromptSet
from .fileio import atomic_write_bytes, sha256_bytes, sha256_json
from .models.loader import LoadedModel

log = logging.getLogger(__name__)
LOGIT_SCALE = 100.0


def model_input(x: torch.Tensor, image_size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[0,1] pixels -> the image tower's input: bicubic resize to `image_size` (when needed), normalise."""
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False)
    return (x - mean) / std


def class_logits(image_embedding: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """The zero-shot head: 100 * cosine of fp32 image embeddings to (normalised) class embeddings."""
    return LOGIT_SCALE * F.normalize(image_embedding.float(), dim=-1) @ class_embeddings.t()


def cache_root() -> Path:
    """Cache directory: $ZSBENCH_CACHE, else ~/.cache/zsbench."""
    return Path(os.environ.get("ZSBENCH_CACHE", Path.home() / ".cache" / "zsbench"))


class ZeroShotClassifier(nn.Module):
    """pixels in [0,1] -> 100 * cos(image embedding, class embeddings). Always in eval mode."""

    def __init__(
        self,
        image_tower: nn.Module,
        class_embeddings: torch.Tensor,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.image_tower = image_tower
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.image_size = int(image_size)
        super().train(False)
        self.image_tower.train(False)

    def train(self, mode: bool = True) -> ZeroShotClassifier:
        """Evaluation never runs in train mode (dropout, batch-norm updates): this stays in eval."""
        if mode:
            raise RuntimeError("ZeroShotClassifier is evaluation-only; train mode is not allowed")
        return super().train(False)

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return model_input(x, self.image_size, self.mean, self.std)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(self.preprocess(x)).float(), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.image_tower.training:
            raise RuntimeError("ZeroShotClassifier must run in eval mode")
        return class_logits(self.image_tower(self.preprocess(x)), self.class_embeddings)


def text_tower_hash(model: nn.Module) -> str:
    """Content hash of every non-image weight (the text tower): the text head's cache key."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if k.startswith("visual."):
            continue
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(
            v.detach().cpu().contiguous().numpy().tobytes()
            if v.dtype != torch.bfloat16
            else v.float().numpy().tobytes()
        )
    return h.hexdigest()


@torch.inference_mode()
def compute_class_embeddings(
    model: nn.Module,
    tokenizer,
    prompt_set: PromptSet,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Mean of normalised template embeddings per class, re-normalised. Shape (C, D), fp32."""
    out = []
    for name in prompt_set.classnames:
        texts = [t.format(name) for t in prompt_set.templates]
        embs = []
        for i in range(0, len(texts), batch_size):
            tok = tokenizer(texts[i : i + batch_size]).to(device)
            embs.append(F.normalize(model.encode_text(tok).float(), dim=-1))
        mean = torch.cat(embs).mean(dim=0)
        out.append(F.normalize(mean, dim=-1))
    return torch.stack(out).cpu()


def class_embeddings_cached(
    loaded: LoadedModel,
    prompt_set: PromptSet,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
) -> tuple[torch.Tensor, str]:
    """Class embeddings from the on-disk cache keyed by (text tower, model config, class names, templates), else computed.

    A cache entry whose content hash does not verify is rebuilt, never used.
    """
    tower = loaded.info.get("_text_hash")
    if tower is None:
        tower = text_tower_hash(loaded.model)
        loaded.info["_text_hash"] = tower
    key = sha256_json(
        {
            "text": tower,
            "config": loaded.info.get("_config_sha256"),
            "tokenizer": loaded.info.get("tokenizer", loaded.arch),
            "classnames": list(prompt_set.classnames),
            "templates": list(prompt_set.templates),
        }
    )
    path = (cache_dir or cache_root()) / "text-heads" / f"{key}.safetensors"
    if path.is_file():
        data = path.read_bytes()
        try:
            tensors = st_load(data)
            emb = tensors["class_embeddings"]
            digest = tensors["digest"]
            well_formed = (
                digest.dtype == torch.uint8
                and emb.dtype == torch.float32
                and emb.dim() == 2
                and emb.shape[0] == len(prompt_set.classnames)
            )
            if well_formed and sha256_bytes(emb.numpy().tobytes()) == bytes(digest.tolist()).hex():
                return emb, key
            log.warning("text-head cache %s failed its hash check; rebuilding", path)
        except (SafetensorError, KeyError, ValueError) as exc:
            log.warning("text-head cache %s unreadable (%s); rebuilding", path, exc)
    model = loaded.model.to(device)
    emb = compute_class_embeddings(model, loaded.tokenizer, prompt_set, device)
    digest = torch.tensor(list(bytes.fromhex(sha256_bytes(emb.numpy().tobytes()))), dtype=torch.uint8)
    atomic_write_bytes(path, st_save({"class_embeddings": emb.contiguous(), "digest": digest}))
    return emb, key


def build_classifier(
    loaded: LoadedModel,
    prompt_set: PromptSet,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
) -> ZeroShotClassifier:
    """A ZeroShotClassifier for one dataset's prompt set, on `device`, in eval mode."""
    emb, _ = class_embeddings_cached(loaded, prompt_set, device, cache_dir)
    clf = ZeroShotClassifier(loaded.image_tower(), emb, loaded.image_size, loaded.mean, loaded.std)
    return clf.to(device).eval()

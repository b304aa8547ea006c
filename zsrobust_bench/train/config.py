"""Training configs as data: shipped YAML recipes by name, user YAML files, `--set key=value` overrides
and validation against the defaults (an unknown key fails instead of being ignored)."""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ZSBenchError

DEFAULTS: dict[str, Any] = {
    "name": None,
    "description": "",
    "method": "tecoa",  # tecoa | fare (unsupervised embedding loss) | contrastive
    "seed": 0,
    "model": {
        "arch": None,  # open_clip name (ViT-B-32) or null with arch_config
        "arch_config": None,  # open_clip config dict for a model built from scratch
        "pretrained": None,  # open_clip tag (openai), a checkpoint path, "demo" (shipped tiny CLIP) or null
    },
    "trainable": "full",  # full | partial | last-params | linear-probe | prompt | all (contrastive)
    "partial_blocks": 1,  # partial: the last N transformer blocks (+ ln_post, proj)
    "partial_params": 1,  # last-params: the last N parameter tensors of the tower (TeCoA --last_num_ft)
    "prompt": {"pad": 0, "tokens": 0, "init_std": 1.0},
    "head": "text",  # text (TeCoA: 100*cos to frozen text embeddings) | onehot (standard AT baseline)
    "labels": "true",  # true | pseudo (zero-shot predictions of the frozen original model)
    "data": {
        "kind": "synthetic",  # synthetic | synthetic-captions | imagefolder
        "task": "shape",  # synthetic task (synthetic kind)
        "size": 20000,  # synthetic images pre-rendered once
        "root": None,  # imagefolder: folder with one sub-folder per class (ImageNet train)
        "dataset": None,  # registry name or imagefolder:PATH whose class names label the imagefolder classes
        "image_size": 224,  # imagefolder: resize(short side) + centre crop(size)
        "resize": None,  # imagefolder short side; null: round(256/224 * image_size)
        "interpolation": "bicubic",  # imagefolder resize: bicubic | bilinear
        "workers": 4,
    },
    "text": {
        "prompt_set": "tecoa",
        "templates": None,
    },  # templates override, e.g. ["This is a photo of a {}"]
    # momentum: 0 = plain sign-gradient PGD; > 0 = FARE's momentum step (attacks/pgd.py PGD(momentum=...));
    # clamp_start: clip x + random start into [0,1] before the first gradient (FARE does not)
    "attack": {
        "eps": 0.0,
        "steps": 0,
        "step_size": 0.0,
        "random_start": True,
        "momentum": 0.0,
        "clamp_start": True,
    },
    # decay: "matrices" (weight decay on >= 2-d weights only) | "all" (every parameter, as FARE/TeCoA do)
    "optimizer": {
        "name": "sgd",
        "lr": 1e-5,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "decay": "matrices",
    },
    "schedule": {"warmup": 0, "kind": "cosine"},  # cosine | constant
    "batch_size": 128,  # global batch over all processes
    "steps": None,  # total optimizer steps (or epochs)
    "epochs": None,
    "amp": True,  # autocast + GradScaler on CUDA; CPU always runs fp32
    "amp_dtype": "float16",
    "grad_clip": None,
    "checkpoint_every": 500,
    "keep_checkpoints": 3,  # step checkpoints kept in checkpoints/ (the resumable state is always the latest)
    "device": None,  # null: cuda:LOCAL_RANK when available, else cpu
    "log_every": 10,
    "validation": {
        "datasets": [],  # held-out zero-shot datasets (registry names); best checkpoint by mean robust acc
        "split": None,  # null: the dataset's eval split
        "n": 500,
        "every": 500,
        "eps": None,  # null: attack.eps
        "steps": 10,
        "step_size": None,  # null: eps / 4
        "batch_size": 256,
        "prompt_set": "tecoa",
        "data_root": None,
    },
    "final_eval": {"datasets": [], "split": None, "n": None, "eps": None, "steps": 10},
    # positives: "diagonal" (plain CLIP: caption i belongs to image i) or "matching" (soft targets over every
    # caption in the batch whose named attributes the image has: the synthetic world knows which pairs match)
    # caption_keep: probability that a caption names each attribute (at least one is named); the
    # world's grammar uses 0.5, fewer named attributes leave fewer shortcuts (colour alone) to match.
    "contrastive": {
        "init_logit_scale": 14.285714,
        "max_logit_scale": 100.0,
        "positives": "diagonal",
        "caption_keep": 0.5,
    },
    "export": {"dtype": None, "compact_tokens": False, "tecoa_dict": True, "copy_final_to": None},
    "progress": True,
}

_FRACTION = re.compile(r"^\s*([0-9.]+)\s*/\s*([0-9.]+)\s*$")


def shipped_configs() -> list[str]:
    """Names of the recipes shipped in the package."""
    root = resources.files("zsrobust_bench.train") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ZSBenchError(f"training config {where} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ZSBenchError(f"training config {where} must be a mapping, got {type(data).__name__}")
    return data


def read_config(ref: str) -> dict[str, Any]:
    """A shipped config name (`tecoa-paper`) or a YAML path -> the raw mapping (no defaults)."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ZSBenchError(
                f"training config {ref} does not exist", f"shipped configs: {', '.join(shipped_configs())}"
            )
        data = _read_yaml(path.read_text(), ref)
        data.setdefault("name", path.stem)
        return data
    res = resources.files("zsrobust_bench.train") / "configs" / f"{ref}.yaml"
    if not res.is_file():
        raise ZSBenchError(
            f"unknown training config {ref!r}",
            f"shipped configs: {', '.join(shipped_configs())}; or a YAML path",
        )
    data = _read_yaml(res.read_text(), ref)
    data.setdefault("name", ref)
    return data


def _merge(base: dict[str, Any], over: dict[str, Any], path: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{path}{k}"
        if k not in base:
            raise ZSBenchError(f"unknown training config key {key!r}", f"known: {', '.join(sorted(base))}")
        if isinstance(base[k], dict) and base[k] and isinstance(v, dict):
            out[k] = _merge(base[k], v, f"{key}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`a.b=value` strings -> nested mapping; values parsed with yaml.safe_load."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ZSBenchError(f"--set {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ZSBenchError(f"--set {item!r} conflicts with another --set")
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def number(value: Any, where: str) -> float:
    """A float from a number or a fraction string like "1/255"."""
    if isinstance(value, bool):
        raise ZSBenchError(f"config {where}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _FRACTION.match(value)
        if m:
            return float(m.group(1)) / float(m.group(2))
        try:
            return float(value)
        except ValueError:
            pass
    raise ZSBenchError(f"config {where}: expected a number or a fraction like 1/255, got {value!r}")


def resolve_config(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- raw <- overrides, with numeric fields normalised and choices checked."""
    cfg = _merge(_merge(DEFAULTS, raw), overrides or {})
    for sect, keys in (
        ("attack", ("eps", "step_size")),
        ("validation", ("eps", "step_size")),
        ("final_eval", ("eps",)),
    ):
        for k in keys:
            if cfg[sect][k] is not None:
                cfg[sect][k] = number(cfg[sect][k], f"{sect}.{k}")
    cfg["optimizer"]["lr"] = number(cfg["optimizer"]["lr"], "optimizer.lr")
    choices = {
        "method": ("tecoa", "fare", "contrastive"),
        "trainable": ("full", "partial", "last-params", "linear-probe", "prompt", "all"),
        "head": ("text", "onehot"),
        "labels": ("true", "pseudo"),
    }
    for k, allowed in choices.items():
        if str(cfg[k]) not in allowed:
            raise ZSBenchError(f"config {k}={cfg[k]!r} is not one of {', '.join(allowed)}")
    cfg["labels"] = str(cfg["labels"])
    if cfg["optimizer"]["name"] not in ("sgd", "adamw"):
        raise ZSBenchError(f"optimizer.name={cfg['optimizer']['name']!r} is not one of sgd, adamw")
    if cfg["optimizer"]["decay"] not in ("matrices", "all"):
        raise ZSBenchError(f"optimizer.decay={cfg['optimizer']['decay']!r} is not one of matrices, all")
    if cfg["data"]["interpolation"] not in ("bicubic", "bilinear"):
        raise ZSBenchError(
            f"data.interpolation={cfg['data']['interpolation']!r} is not one of bicubic, bilinear"
        )
    if not 0 <= float(cfg["attack"]["momentum"]) < 1:
        raise ZSBenchError(f"attack.momentum={cfg['attack']['momentum']!r} must be in [0, 1)")
    if cfg["method"] == "fare" and cfg["head"] != "text":
        raise ZSBenchError(
            "method fare trains without labels; its text head only logs accuracy: use head=text"
        )
    if (cfg["steps"] is None) == (cfg["epochs"] is None):
        raise ZSBenchError("set exactly one of steps and epochs in the training config")
    if cfg["contrastive"]["positives"] not in ("diagonal", "matching"):
        raise ZSBenchError("contrastive.positives must be diagonal or matching")
    keep = cfg["contrastive"]["caption_keep"]
    probs = list(keep.values()) if isinstance(keep, dict) else [keep]
    attrs = ("color", "shape", "count", "position", "pattern")
    if (isinstance(keep, dict) and set(keep) != set(attrs)) or not all(
        isinstance(p, int | float) and not isinstance(p, bool) and 0 < p <= 1 for p in probs
    ):
        raise ZSBenchError(
            f"contrastive.caption_keep={keep!r} must be a probability in (0, 1] or one per attribute {', '.join(attrs)}"
        )
    if cfg["method"] == "contrastive" and cfg["data"]["kind"] != "synthetic-captions":
        raise ZSBenchError("method contrastive trains on data.kind=synthetic-captions")
    if cfg["trainable"] == "prompt" and not (cfg["prompt"]["pad"] or cfg["prompt"]["tokens"]):
        raise ZSBenchError("trainable=prompt needs prompt.pad > 0 or prompt.tokens > 0")
    if cfg["head"] == "onehot" and cfg["labels"] == "pseudo":
        raise ZSBenchError("pseudo labels come from the text head's zero-shot predictions; use head=text")
    return cfg


def load_config(ref: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read and resolve a config by name or path with `key=value` overrides."""
    return resolve_config(read_config(ref), parse_overrides(overrides or []))

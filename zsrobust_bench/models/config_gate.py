"""The one gate every open_clip model config passes before open_clip, timm or a tokenizer sees it.

An open_clip config is not inert data: `hf_tokenizer_name` + `tokenizer_kwargs` reach
`transformers.AutoTokenizer.from_pretrained` (a path or hub id whose `auto_map` runs Python when
`trust_remote_code` is set), `hf_model_name` and `timm_model_name: "hf-hub:..."` download configs
and weights, `tokenizer_kwargs.bpe_path` opens any file, a registered name containing "siglip"
makes `open_clip.get_tokenizer` fetch a sentencepiece model over HTTP, and sizes such as
`context_length` allocate before any weight is read (open_clip/factory.py get_tokenizer,
create_model; tokenizer.py HFTokenizer, SimpleTokenizer; model.py _build_vision_tower,
_build_text_tower; open_clip 3.3.0). So whatever its origin (a built-in name, an `--arch` file, a
checkpoint's metadata, a submission, a hub `open_clip_config.json`, a training recipe, a zoo
entry) a config is checked against an allowlist of keys, each with a type and bounds, the model
it declares is built on the meta device (no memory) and its fp32 parameters and buffers
(the causal attention mask included) are bounded. Tokenizers are built here from the checked
config, never by open_clip from a name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
TIMM_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.]{0,127}$")
MAX_CONFIG_BYTES = 64 * 1024
MAX_DEPTH = 4
MAX_LIST = 16
MAX_STRING = 256
MAX_WIDTH = 8192
MAX_LAYERS = 256
MAX_HEADS = 256
MAX_IMAGE_SIZE = 1024
MAX_IMAGE_TOKENS = 4096  # (image_size / patch_size)^2; open_clip's built-in ViTs use at most 729
MAX_CONTEXT = 1024  # text tokens; open_clip's built-ins use at most 77
MAX_VOCAB = 1_000_000
MAX_MODEL_BYTES = 12 * 2**30  # fp32 parameters + buffers; ViT-bigG-14 (the largest CLIP ViT) is 9.5 GiB
NAME_FRAGMENTS_REFUSED = ("siglip",)  # open_clip.get_tokenizer downloads a tokenizer for these names
HINT = "only open_clip model configs with known keys, bounded sizes and open_clip's own tokenizers load"
CUSTOM_TOKENIZER_HINT = "for a local tokenizer of your own, `zsbench evaluate --allow-custom-tokenizer`"

Rule = Callable[[Any, "Gate"], "str | None"]  # why `value` is refused, or None


@dataclass(frozen=True)
class Gate:
    """Where a config came from (named in every refusal) and what its user explicitly allowed."""

    origin: str
    allow_custom_tokenizer: bool = False

    def refuse(self, path: str, why: str, hint: str = HINT) -> ConfigError:
        return ConfigError(_one_line(f"{self.origin}: {path} {why}; nothing was loaded"), hint)


def _one_line(text: str) -> str:
    """Control characters (a newline in a file name, say) escaped, so a refusal stays one line."""
    return CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)


# ---------------------------------------------------------------- value rules


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(lo: int, hi: int) -> Rule:
    def rule(v: Any, gate: Gate) -> str | None:
        return None if _is_int(v) and lo <= v <= hi else f"= {_show(v)} is not an integer in [{lo}, {hi}]"

    return rule


def _float(lo: float, hi: float) -> Rule:
    def rule(v: Any, gate: Gate) -> str | None:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi
        return None if ok else f"= {_show(v)} is not a number in [{lo}, {hi}]"

    return rule


def _bool(v: Any, gate: Gate) -> str | None:
    return None if isinstance(v, bool) else f"= {_show(v)} is not true/false"


def _enum(*allowed: Any) -> Rule:
    def rule(v: Any, gate: Gate) -> str | None:
        ok = any(v == a and type(v) is type(a) for a in allowed)
        return None if ok else f"= {_show(v)} is not one of {', '.join(map(repr, allowed))}"

    return rule


def _optional(inner: Rule) -> Rule:
    def rule(v: Any, gate: Gate) -> str | None:
        return None if v is None else inner(v, gate)

    return rule


def _ints(n: int, lo: int, hi: int) -> Rule:
    def rule(v: Any, gate: Gate) -> str | None:
        ok = isinstance(v, list) and len(v) == n and all(_is_int(x) and lo <= x <= hi for x in v)
        return None if ok else f"= {_show(v)} is not a list of {n} integers in [{lo}, {hi}]"

    return rule


def _int_or_ints(n: int, lo: int, hi: int) -> Rule:
    one, many = _int(lo, hi), _ints(n, lo, hi)

    def rule(v: Any, gate: Gate) -> str | None:
        return one(v, gate) if not isinstance(v, list) else many(v, gate)

    return rule


def _never(why: str) -> Rule:
    def rule(v: Any, gate: Gate) -> str | None:
        return None if v in (None, False, "") else why

    return rule


def _timm_name(v: Any, gate: Gate) -> str | None:
    """A model of timm's own registry (built locally); `hf-hub:` / `local-dir:` names would fetch configs."""
    if v is None:
        return None
    if not isinstance(v, str) or not TIMM_NAME_RE.match(v):
        return f"= {_show(v)} is not a plain timm model name (hub ids and paths download or read files)"
    import timm

    return None if timm.is_model(v) else f"= {_show(v)} is not a model in timm's registry"


def _tokenizer_name(v: Any, gate: Gate) -> str | None:
    """open_clip's own hub tokenizers, or (with the user's explicit flag) a local tokenizer folder."""
    if v is None or v in known_tokenizers():
        return None
    if gate.allow_custom_tokenizer and isinstance(v, str) and Path(v).is_dir():
        return None
    return (
        f"= {_show(v)} names a tokenizer that is not one of open_clip's own "
        "(a tokenizer folder or hub repository can run code through transformers)"
    )


@dataclass(frozen=True)
class Nested:
    """A nested object (or null) whose keys must all be in `fields`."""

    fields: Mapping[str, Rule]

    def __call__(self, v: Any, gate: Gate) -> str | None:
        return None if v is None or isinstance(v, dict) else f"= {_show(v)} is not an object"


def _three_floats(lo: float, hi: float) -> Rule:
    one = _float(lo, hi)

    def rule(v: Any, gate: Gate) -> str | None:
        ok = isinstance(v, list) and len(v) == 3 and all(one(x, gate) is None for x in v)
        return None if ok else f"= {_show(v)} is not a list of 3 numbers in [{lo}, {hi}]"

    return rule


ACT_KWARGS = {"approximate": _enum("none", "tanh")}
NORM_KWARGS = {"eps": _float(1e-12, 1e-2)}
BLOCK_FLAGS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")

# open_clip/model.py CLIPVisionCfg: every field open_clip reads, minus those that reach the network.
VISION_FIELDS: dict[str, Rule] = {
    "layers": _int_or_ints(4, 1, 64),  # an int: ViT depth; 4 ints: ModifiedResNet stages
    "width": _int(1, MAX_WIDTH),
    "head_width": _int(1, 1024),
    "mlp_ratio": _float(0.25, 16.0),
    "patch_size": _optional(_int(1, MAX_IMAGE_SIZE)),
    "image_size": _int_or_ints(2, 8, MAX_IMAGE_SIZE),
    "ls_init_value": _optional(_float(-10.0, 10.0)),
    "patch_dropout": _float(0.0, 0.99),
    "attentional_pool": _bool,
    "attn_pooler_queries": _int(1, 1024),
    "attn_pooler_heads": _int(1, MAX_HEADS),
    "no_ln_pre": _bool,
    "pos_embed_type": _enum("learnable", "sin_cos_2d"),
    "final_ln_after_pool": _bool,
    "pool_type": _enum("tok", "avg", "none"),
    "output_tokens": _bool,
    "act_kwargs": Nested(ACT_KWARGS),
    "norm_kwargs": Nested(NORM_KWARGS),
    "block_type": _optional(_enum("default", "custom")),
    **{k: _bool for k in BLOCK_FLAGS},
    "timm_model_name": _timm_name,
    "timm_model_pretrained": _never("would download ImageNet weights for the timm tower"),
    "timm_pool": _enum("", "avg", "token", "map", "abs_attn", "rot_attn"),
    "timm_proj": _optional(_enum("", "linear", "mlp", "none")),
    "timm_proj_bias": _bool,
    "timm_drop": _float(0.0, 1.0),
    "timm_drop_path": _optional(_float(0.0, 1.0)),
}

# open_clip/tokenizer.py: SimpleTokenizer(clean=...) and HFTokenizer(clean=, strip_sep_token=) take
# these; anything else (bpe_path opens a file, trust_remote_code runs code) is refused.
TOKENIZER_KWARGS: dict[str, Rule] = {
    "clean": _enum("lower", "whitespace", "canonicalize"),
    "strip_sep_token": _bool,
}

# open_clip/model.py CLIPTextCfg, minus the Hugging Face text tower (config and weights download).
TEXT_FIELDS: dict[str, Rule] = {
    "context_length": _int(1, MAX_CONTEXT),
    "vocab_size": _int(1, MAX_VOCAB),
    "hf_tokenizer_name": _tokenizer_name,
    "tokenizer_mode": _optional(_enum("clips")),
    "tokenizer_kwargs": Nested(TOKENIZER_KWARGS),
    "width": _int(1, MAX_WIDTH),
    "heads": _int(1, MAX_HEADS),
    "layers": _int(1, MAX_LAYERS),
    "mlp_ratio": _float(0.25, 16.0),
    "ls_init_value": _optional(_float(-10.0, 10.0)),
    "embed_cls": _bool,
    "pad_id": _int(0, MAX_VOCAB),
    "eos_id": _int(0, MAX_VOCAB),
    "no_causal_mask": _bool,
    "final_ln_after_pool": _bool,
    "pool_type": _enum("first", "last", "argmax", "eos", "none"),
    "proj_bias": _bool,
    "proj_type": _enum("linear", "mlp", "none"),
    "output_tokens": _bool,
    "act_kwargs": Nested(ACT_KWARGS),
    "norm_kwargs": Nested(NORM_KWARGS),
    "block_type": _optional(_enum("default", "custom")),
    **{k: _bool for k in BLOCK_FLAGS},
    "hf_model_name": _never("names a Hugging Face text model (its config, weights and code download)"),
}

# open_clip/model.py CLIP / CustomTextCLIP keyword arguments (CoCa's multimodal_cfg is not a zero-shot CLIP).
TOP_FIELDS: dict[str, Rule] = {
    "embed_dim": _int(1, MAX_WIDTH),
    "vision_cfg": Nested(VISION_FIELDS),
    "text_cfg": Nested(TEXT_FIELDS),
    "quick_gelu": _bool,
    "custom_text": _bool,
    "init_logit_scale": _float(-100.0, 100.0),
    "init_logit_bias": _optional(_float(-100.0, 100.0)),
    "nonscalar_logit_scale": _bool,
}

# open_clip/transform.py PreprocessCfg (a hub open_clip_config.json's `preprocess_cfg`).
PREPROCESS_FIELDS: dict[str, Rule] = {
    "size": _int_or_ints(2, 8, MAX_IMAGE_SIZE),
    "mode": _enum("RGB"),
    "mean": _three_floats(-10.0, 10.0),
    "std": _three_floats(1e-6, 10.0),
    "interpolation": _enum("bicubic", "bilinear", "nearest", "random"),
    "resize_mode": _enum("shortest", "longest", "squash"),
    "fill_color": _int(0, 255),
}


# ---------------------------------------------------------------- structure


def _show(v: Any) -> str:
    """A value for a one-line message: repr, control characters escaped, at most 60 characters."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _walk(value: Any, path: str, depth: int, gate: Gate) -> None:
    """Plain JSON values only, shallow, short; `trust_remote_code` is named wherever it hides."""
    if depth > MAX_DEPTH:
        raise gate.refuse(path, f"nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not KEY_RE.match(k):
                raise gate.refuse(path or "config", f"has a key {_show(k)} that is not a short plain name")
            if k == "trust_remote_code":
                raise gate.refuse(
                    f"{path}.{k}".lstrip("."), "is never allowed (it runs code shipped with a model)"
                )
            _walk(v, f"{path}.{k}".lstrip("."), depth + 1, gate)
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise gate.refuse(path, f"is a list of {len(value)} items (at most {MAX_LIST})")
        for i, v in enumerate(value):
            _walk(v, f"{path}[{i}]", depth + 1, gate)
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise gate.refuse(path, f"is a string of {len(value)} characters (at most {MAX_STRING})")
    elif value is not None and not isinstance(value, bool | int | float):
        raise gate.refuse(path, f"holds a {type(value).__name__}, not a JSON value")


def _check_mapping(value: dict[str, Any], fields: Mapping[str, Rule], path: str, gate: Gate) -> None:
    for key, v in value.items():
        where = f"{path}.{key}" if path else key
        rule = fields.get(key)
        if rule is None:
            allowed = ", ".join(sorted(fields))
            raise gate.refuse(where, "is not an allowed key", f"allowed here: {allowed[:300]}")
        why = rule(v, gate)
        if why is not None:
            hint = CUSTOM_TOKENIZER_HINT if rule is _tokenizer_name else HINT
            raise gate.refuse(where, why, hint)
        if isinstance(rule, Nested) and isinstance(v, dict):
            _check_mapping(v, rule.fields, where, gate)


def _cross_checks(config: dict[str, Any], gate: Gate) -> None:
    """Relations between fields that bound what open_clip computes outside the meta device."""
    vision, text = config["vision_cfg"], config.get("text_cfg", {})
    size = vision.get("image_size", 224)
    side = max(size) if isinstance(size, list) else size
    patch = vision.get("patch_size", 16)
    if not vision.get("timm_model_name") and not isinstance(vision.get("layers"), list):
        tokens = (side // max(patch or 1, 1)) ** 2
        if tokens > MAX_IMAGE_TOKENS:
            raise gate.refuse(
                "vision_cfg.image_size/patch_size", f"make {tokens} image tokens (at most {MAX_IMAGE_TOKENS})"
            )
    vocab = text.get("vocab_size", 49408)
    for key in ("pad_id", "eos_id"):
        if key in text and text[key] >= vocab:
            raise gate.refuse(f"text_cfg.{key}", f"= {text[key]} is not below vocab_size {vocab}")


# ---------------------------------------------------------------- the model it declares


def _build_on_meta(config: dict[str, Any]) -> torch.nn.Module:
    import open_clip

    kwargs = {k: v for k, v in config.items() if k != "custom_text"}
    cls = open_clip.CustomTextCLIP if config.get("custom_text") else open_clip.CLIP
    with torch.device("meta"):
        return cls(**kwargs)


def meta_state(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict (meta tensors: shapes and dtypes, no memory) of a gated config's model."""
    return _build_on_meta(config).state_dict()


@lru_cache(maxsize=64)
def _bytes_of(config_json: str) -> int:
    model = _build_on_meta(json.loads(config_json))
    tensors = list(model.parameters()) + list(model.buffers())  # buffers: the attention mask too
    return 4 * sum(t.numel() for t in tensors)


def model_bytes(config: dict[str, Any]) -> int:
    """fp32 bytes of every parameter and buffer (non-persistent ones included) of the declared model."""
    return _bytes_of(json.dumps(config, sort_keys=True))


# ---------------------------------------------------------------- public gate


def gate_config(
    config: Any, origin: str, *, allow_custom_tokenizer: bool = False, max_bytes: int = MAX_MODEL_BYTES
) -> dict[str, Any]:
    """Check an open_clip model config from any origin; returns a plain copy or raises ConfigError."""
    gate = Gate(origin, allow_custom_tokenizer)
    if not isinstance(config, dict):
        raise gate.refuse("config", f"is a {type(config).__name__}, not an open_clip model config object")
    _walk(config, "", 0, gate)
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config or (key != "embed_dim" and not isinstance(config[key], dict)):
            raise gate.refuse(
                key, "is missing (an open_clip model config has embed_dim, vision_cfg, text_cfg)"
            )
    _check_mapping(config, TOP_FIELDS, "", gate)
    clean = json.loads(json.dumps(config))
    _cross_checks(clean, gate)
    try:
        need = model_bytes(clean)
    except Exception as exc:  # noqa: BLE001 - an untrusted config that open_clip cannot build is refused
        first = f"{type(exc).__name__}: {exc}".split("\n")[0][:200]
        raise gate.refuse("config", f"does not build an open_clip model ({first})") from exc
    if need > max_bytes:
        raise gate.refuse(
            "config",
            f"declares a model of {need / 2**30:.1f} GiB (fp32 parameters and buffers; at most "
            f"{max_bytes / 2**30:.1f} GiB here); it was not built",
        )
    return clean


def gate_preprocess(config: Any, origin: str) -> dict[str, Any]:
    """Check a hub config's `preprocess_cfg` (mean, std, size...); returns a plain copy."""
    gate = Gate(origin)
    if not isinstance(config, dict):
        raise gate.refuse("preprocess_cfg", "is not an object")
    _walk(config, "preprocess_cfg", 1, gate)
    _check_mapping(config, PREPROCESS_FIELDS, "preprocess_cfg", gate)
    return json.loads(json.dumps(config))


def check_arch_name(name: Any, origin: str) -> str:
    """A name a config is registered under: a plain identifier open_clip attaches no download to."""
    gate = Gate(origin)
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise gate.refuse(
            "architecture name", f"{_show(name)} is not a plain name (letters, digits, '.', '_', '-')"
        )
    low = name.lower()
    bad = next((f for f in NAME_FRAGMENTS_REFUSED if f in low), None)
    if bad is not None:
        raise gate.refuse(
            "architecture name",
            f"{_show(name)} contains {bad!r}, for which open_clip fetches a tokenizer over the network",
        )
    return name


def builtin_names() -> tuple[str, ...]:
    """Architectures shipped with open_clip (its model_configs folder), not names registered since."""
    return tuple(sorted(_shipped_configs()))


def gate_builtin(name: str, origin: str) -> dict[str, Any]:
    """The gated config of one of open_clip's shipped architectures (checked before anything is built)."""
    shipped = _shipped_configs()
    if name not in shipped:
        raise Gate(origin).refuse("architecture", f"{_show(name)} is not an open_clip built-in")
    return gate_config(json.loads(shipped[name]), f"{origin} (open_clip built-in {name})")


def known_tokenizers() -> frozenset[str]:
    """Hub tokenizers that open_clip's own shipped configs name (data files only; loaded without remote code)."""
    return _known_tokenizers()


def load_config_json(data: bytes | str, origin: str) -> Any:
    """Parse a config's JSON text: at most MAX_CONFIG_BYTES, no NaN, no nesting that exhausts the stack."""
    gate = Gate(origin)
    size = len(data)
    if size > MAX_CONFIG_BYTES:
        raise gate.refuse("JSON", f"is {size} bytes (at most {MAX_CONFIG_BYTES})")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError as exc:
        raise gate.refuse("JSON", "nests too deeply to parse") from exc
    except ValueError as exc:
        raise gate.refuse("JSON", f"is not valid JSON ({str(exc)[:120]})") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# ---------------------------------------------------------------- tokenizers


def build_tokenizer(config: dict[str, Any], origin: str, *, allow_custom_tokenizer: bool = False) -> Any:
    """The tokenizer a gated config declares, built here with only allowlisted arguments.

    open_clip's `get_tokenizer(name)` is never used: it picks a downloading tokenizer from name
    fragments and passes every `tokenizer_kwargs` key on. Remote code is always off.
    """
    from open_clip.tokenizer import SimpleTokenizer

    gate = Gate(origin, allow_custom_tokenizer)
    text = config.get("text_cfg") or {}
    _check_mapping(
        {k: text[k] for k in ("hf_tokenizer_name", "tokenizer_kwargs") if k in text},
        TEXT_FIELDS,
        "text_cfg",
        gate,
    )
    context = int(text.get("context_length", 77))
    kwargs = dict(text.get("tokenizer_kwargs") or {})
    name = text.get("hf_tokenizer_name")
    if not name:
        kwargs.pop("strip_sep_token", None)  # an HFTokenizer argument; SimpleTokenizer has no such option
        return SimpleTokenizer(context_length=context, **kwargs)
    from open_clip.tokenizer import HFTokenizer

    try:
        return HFTokenizer(
            name,
            context_length=context,
            tokenizer_mode=text.get("tokenizer_mode"),
            trust_remote_code=False,
            **kwargs,
        )
    except ImportError as exc:
        raise gate.refuse(
            "text_cfg.hf_tokenizer_name", f"= {_show(name)} needs `transformers` ({exc})"
        ) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).split("\n")[0][:160]
        raise gate.refuse(
            "text_cfg.hf_tokenizer_name", f"= {_show(name)} could not be loaded ({first})"
        ) from exc


# ---------------------------------------------------------------- open_clip's shipped data


@lru_cache(maxsize=1)
def _shipped_configs() -> dict[str, str]:
    import open_clip

    folder = Path(open_clip.__file__).parent / "model_configs"
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.json"))}


@lru_cache(maxsize=1)
def _known_tokenizers() -> frozenset[str]:
    names = set()
    for text in _shipped_configs().values():
        name = (json.loads(text).get("text_cfg") or {}).get("hf_tokenizer_name")
        if isinstance(name, str) and name:
            names.add(name)
    return frozenset(names)

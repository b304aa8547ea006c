"""Checkpoint formats as a registry: each spec detects itself from a file's keys (never its name)
and converts it to open_clip key names plus optional visual prompts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError
from .config_gate import load_config_json

WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict")
STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")
TEXT_MARKERS = ("token_embedding.weight", "text_projection", "ln_final.weight")
VISUAL_MARKERS = ("conv1.weight", "class_embedding", "attnpool.c_proj.weight", "trunk.")


@dataclass
class ParsedCheckpoint:
    """A checkpoint in open_clip terms. `state` uses full-model keys (`visual.*` for the image tower)."""

    format: str
    kind: str  # "full" | "vision-only" | "visual-prompt"
    state: dict[str, torch.Tensor]
    prompts: dict[str, torch.Tensor] = field(default_factory=dict)
    arch: str | None = None
    arch_config: dict[str, Any] | None = None
    pretrained: str | None = None
    default_arch: str | None = None  # what the format's own tooling always used (e.g. TeCoA: ViT-B-32)
    default_pretrained: str | None = None
    notes: list[str] = field(default_factory=list)


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (`module.`, `model.`) that every key shares."""
    changed = True
    while changed and state:
        changed = False
        for p in STRIP_PREFIXES:
            if all(isinstance(k, str) and k.startswith(p) for k in state):
                state = {k[len(p) :]: v for k, v in state.items()}
                changed = True
    return state


def unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """Descend through `state_dict` / `model` / `module` nesting to the tensor dict, strip prefixes."""
    depth = 0
    while isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None or depth > 4:
            tensors = (
                {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
                if isinstance(obj, dict)
                else {}
            )
            if tensors:
                obj = tensors
                break
            raise CheckpointError(
                "no tensors found in the checkpoint",
                f"expected a state dict (possibly under {', '.join(WRAPPER_KEYS)}); top-level keys: "
                f"{sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__}",
            )
        obj = inner
        depth += 1
    return strip_prefixes(dict(obj))


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in state.items()}


def _prompt_tensors(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """TeCoA prompter dicts: `state_dict` pad_* (padding) and `add_prompter` prompt (tokens)."""
    out: dict[str, torch.Tensor] = {}
    pads = obj.get("state_dict")
    if isinstance(pads, dict):
        for k, v in strip_prefixes(dict(pads)).items():
            if k in ("pad_up", "pad_down", "pad_left", "pad_right") and isinstance(v, torch.Tensor):
                out[k] = v
    tok = obj.get("add_prompter")
    if isinstance(tok, dict):
        tok = strip_prefixes(dict(tok))
        p = tok.get("prompt")
        if isinstance(p, torch.Tensor) and p.numel() > 0:
            out["prompt"] = p
    return out


# --- detectors and converters -------------------------------------------------------------------


def _detect_zsbench(obj: dict[str, Any], meta: dict[str, str]) -> bool:
    return "zsbench_format" in meta or "zsbench_format" in obj


def _convert_zsbench(obj: dict[str, Any], meta: dict[str, str]) -> ParsedCheckpoint:
    if "zsbench_model" in meta:  # bounded size, no NaN, and deep nesting is a refusal, not a RecursionError
        info = load_config_json(meta["zsbench_model"], "zsbench checkpoint metadata zsbench_model")
    else:
        info = obj.get("zsbench_model", {})
    if not isinstance(info, dict):
        raise CheckpointError("zsbench checkpoint metadata `zsbench_model` is not a JSON object")
    version = str(meta.get("zsbench_format", obj.get("zsbench_format")))
    if version != "1":
        raise CheckpointError(
            f"zsbench checkpoint format version {version} is not supported", "upgrade zsbench"
        )
    tensors = obj if meta else obj.get("state_dict", {})
    if not isinstance(tensors, dict):
        raise CheckpointError("zsbench checkpoint has no state_dict of tensors")
    tensors = {k: v for k, v in tensors.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    state = {k: v for k, v in tensors.items() if not k.startswith("prompter.")}
    prompts = {k[len("prompter.") :]: v for k, v in tensors.items() if k.startswith("prompter.")}
    kind = info.get("kind", "full")
    if kind not in ("full", "vision-only", "visual-prompt"):
        raise CheckpointError(f"zsbench checkpoint has unknown kind {kind!r}")
    return ParsedCheckpoint(
        format="zsbench",
        kind=kind,
        state=_expand_token_rows(state),
        prompts=prompts,
        arch=info.get("arch"),
        arch_config=info.get("arch_config"),
        pretrained=info.get("pretrained"),
    )


def _expand_token_rows(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo the compact token table (only used rows stored) that small exports may use."""
    rows_key, vals_key = "token_embedding.weight.__rows__", "token_embedding.weight.__values__"
    if rows_key not in state:
        return state
    state = dict(state)
    rows, vals = state.pop(rows_key), state.pop(vals_key, None)
    shape = _token_table_shape(rows, vals, state.pop("token_embedding.weight.__shape__", None))
    table = torch.zeros(shape, dtype=vals.dtype)
    table[rows.long()] = vals
    state["token_embedding.weight"] = table
    return state


MAX_TOKEN_TABLE = 1 << 28  # elements: far above any CLIP vocabulary x width


def _token_table_shape(
    rows: torch.Tensor, vals: torch.Tensor | None, shape: torch.Tensor | None
) -> list[int]:
    """The compact token table's declared (V, D), checked against its rows and values before allocating."""
    ok = (
        vals is not None
        and shape is not None
        and shape.dim() == 1
        and shape.numel() == 2
        and not shape.is_floating_point()
        and vals.is_floating_point()
        and vals.dim() == 2
        and rows.dim() == 1
        and not rows.is_floating_point()
        and rows.numel() == vals.shape[0]
    )
    if ok:
        v, d = (int(x) for x in shape.tolist())
        ok = v > 0 and d == vals.shape[1] and v * d <= MAX_TOKEN_TABLE
        ok = ok and (rows.numel() == 0 or (int(rows.min()) >= 0 and int(rows.max()) < v))
    if not ok:
        raise CheckpointError(
            "compact token table (token_embedding.weight.__rows__/__values__/__shape__) is malformed",
            "the checkpoint is corrupt or crafted",
        )
    return [v, d]


def _detect_tecoa_ft(obj: dict[str, Any], meta: dict[str, str]) -> bool:
    return isinstance(obj.get("vision_encoder_state_dict"), dict)


def _convert_tecoa_ft(obj: dict[str, Any], meta: dict[str, str]) -> ParsedCheckpoint:
    visual = strip_prefixes(dict(obj["vision_encoder_state_dict"]))
    prompts = _prompt_tensors(obj)
    return ParsedCheckpoint(
        format="tecoa-finetune",
        kind="visual-prompt" if prompts else "vision-only",
        state=_prefixed(visual, "visual."),
        prompts=prompts,
        default_arch="ViT-B-32",
        default_pretrained="openai",
        notes=["TeCoA training dict: OpenAI-CLIP ViT keys loaded into open_clip model.visual"],
    )


def _detect_tecoa_vp(obj: dict[str, Any], meta: dict[str, str]) -> bool:
    return "add_prompter" in obj or bool(_prompt_tensors(obj))


def _convert_tecoa_vp(obj: dict[str, Any], meta: dict[str, str]) -> ParsedCheckpoint:
    prompts = _prompt_tensors(obj)
    if not prompts:
        raise CheckpointError(
            "TeCoA visual-prompt checkpoint holds no prompt tensors", "is it a finetuning checkpoint?"
        )
    return ParsedCheckpoint(
        format="tecoa-prompt",
        kind="visual-prompt",
        state={},
        prompts=prompts,
        default_arch="ViT-B-32",
        default_pretrained="openai",
        notes=["TeCoA visual-prompting dict: padding/token prompts on a frozen CLIP"],
    )


def _detect_full(obj: dict[str, Any], meta: dict[str, str]) -> bool:
    state = unwrap(obj)
    return any(k in state for k in TEXT_MARKERS) and any(k.startswith("visual.") for k in state)


def _convert_full(obj: dict[str, Any], meta: dict[str, str]) -> ParsedCheckpoint:
    return ParsedCheckpoint(format="open_clip-full", kind="full", state=unwrap(obj))


def _detect_visual(obj: dict[str, Any], meta: dict[str, str]) -> bool:
    state = unwrap(obj)
    if any(k in state for k in TEXT_MARKERS):
        return False
    return any(k == m or k.startswith(m) for k in state for m in VISUAL_MARKERS) or all(
        k.startswith("visual.") for k in state
    )


def _convert_visual(obj: dict[str, Any], meta: dict[str, str]) -> ParsedCheckpoint:
    state = unwrap(obj)
    if not all(k.startswith("visual.") for k in state):
        state = _prefixed(state, "visual.")
    return ParsedCheckpoint(
        format="open_clip-visual",
        kind="vision-only",
        state=state,
        notes=["bare image-tower state dict (e.g. FARE's released files)"],
    )


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    description: str
    detect: Callable[[dict[str, Any], dict[str, str]], bool]
    convert: Callable[[dict[str, Any], dict[str, str]], ParsedCheckpoint]


FORMATS: tuple[CheckpointFormat, ...] = (
    CheckpointFormat(
        "zsbench",
        "zsrobust-bench self-describing export (arch, base weights, kind)",
        _detect_zsbench,
        _convert_zsbench,
    ),
    CheckpointFormat(
        "tecoa-finetune",
        "TeCoA finetuning dict (`vision_encoder_state_dict`)",
        _detect_tecoa_ft,
        _convert_tecoa_ft,
    ),
    CheckpointFormat(
        "tecoa-prompt",
        "TeCoA visual-prompt dict (`state_dict` pads + `add_prompter`)",
        _detect_tecoa_vp,
        _convert_tecoa_vp,
    ),
    CheckpointFormat("open_clip-full", "full open_clip CLIP state dict", _detect_full, _convert_full),
    CheckpointFormat(
        "open_clip-visual", "bare open_clip `visual` state dict (FARE)", _detect_visual, _convert_visual
    ),
)


def parse_checkpoint(obj: dict[str, Any], meta: dict[str, str], where: str) -> ParsedCheckpoint:
    """Detect the format from the keys and convert; unknown layouts fail with the keys seen."""
    for fmt in FORMATS:
        try:
            hit = fmt.detect(obj, meta)
        except CheckpointError:
            hit = False
        if hit:
            return fmt.convert(obj, meta)
    keys = sorted(map(str, obj))[:10]
    raise CheckpointError(
        f"{where}: unrecognised checkpoint layout (top-level keys: {keys})",
        "supported: " + "; ".join(f.description for f in FORMATS),
    )

"""`hf-hub:ORG/NAME` models: the repository's config passes the config gate, its weights the checkpoint reader.

open_clip's own `create_model("hf-hub:...")` / `get_tokenizer("hf-hub:...")` would hand the
repository's `open_clip_config.json` to open_clip and transformers unchecked (a tokenizer named
there with `trust_remote_code` runs the repository's Python) and load its weights with its own
reader. Here only two files are fetched (file names from open_clip/constants.py), through
huggingface_hub (which honours HF_HUB_OFFLINE and its cache): the config, read with a size limit
and gated, and the weights, read by `safe_load` like any other checkpoint.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ZSBenchError
from ..fileio import open_regular
from .config_gate import MAX_CONFIG_BYTES, gate_config, gate_preprocess, load_config_json

HUB_PREFIX = "hf-hub:"
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
CONFIG_FILE = "open_clip_config.json"  # open_clip/constants.py HF_CONFIG_NAME
WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)  # HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
CONFIG_KEYS = frozenset({"model_cfg", "preprocess_cfg"})  # what open_clip/push_to_hf_hub.py writes
_HINT = "needs internet or a populated Hugging Face cache"


@dataclass(frozen=True)
class HubModel:
    """A hub repository's gated model config, preprocessing and local weights file."""

    repo: str
    origin: str
    name: str  # the plain name the config is registered under (never derived from the repository's text)
    config: dict[str, Any]
    preprocess: dict[str, Any]
    weights: Path


def parse_repo(spec: str) -> str:
    """`hf-hub:ORG/NAME` -> `ORG/NAME`, refusing anything that is not a plain repository id."""
    repo = spec[len(HUB_PREFIX) :] if spec.startswith(HUB_PREFIX) else spec
    if not REPO_RE.match(repo) or ".." in repo:
        raise ZSBenchError(f"{spec!r} is not a Hugging Face repository id", "use hf-hub:ORG/NAME")
    return repo


def _download(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as exc:  # noqa: BLE001 - every hub failure (offline, missing, HTTP) is one refusal
        raise ZSBenchError(
            f"could not obtain {filename} of hf-hub:{repo} ({type(exc).__name__}: {exc})".split("\n")[0][
                :300
            ],
            _HINT,
        ) from exc


def fetch_hub_model(spec: str, *, allow_custom_tokenizer: bool = False) -> HubModel:
    """Fetch and gate `spec`'s config, then fetch its weights file (nothing else from the repository)."""
    repo = parse_repo(spec)
    origin = f"hf-hub:{repo} {CONFIG_FILE}"
    path = _download(repo, CONFIG_FILE)
    with open_regular(path, origin) as fh:
        doc = load_config_json(fh.read(MAX_CONFIG_BYTES + 1), origin)
    if not isinstance(doc, dict) or not isinstance(doc.get("model_cfg"), dict):
        raise ZSBenchError(f"{origin}: has no model_cfg object", "not an open_clip hub repository")
    unknown = sorted(str(k) for k in doc if k not in CONFIG_KEYS)
    if unknown:
        raise ZSBenchError(
            f"{origin}: unknown top-level keys {unknown[:5]}", "expected model_cfg and preprocess_cfg"
        )
    config = gate_config(doc["model_cfg"], origin, allow_custom_tokenizer=allow_custom_tokenizer)
    preprocess = gate_preprocess(doc.get("preprocess_cfg") or {}, origin)
    weights = None
    errors = []
    for filename in WEIGHT_FILES:
        try:
            weights = _download(repo, filename)
            break
        except ZSBenchError as exc:
            errors.append(exc.message)
    if weights is None:
        raise ZSBenchError(errors[-1], _HINT)
    name = "hub-" + hashlib.sha256(repo.encode()).hexdigest()[:12]
    return HubModel(repo, origin, name, config, preprocess, weights)

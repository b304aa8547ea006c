"""`zoo:NAME` -> a local checkpoint path (or open_clip tag) plus arch/pretrained for the model loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .download import download
from .registry import ZooEntry, get_entry

ZOO_PREFIX = "zoo:"


@dataclass(frozen=True)
class ResolvedModel:
    """What `models.loader.load_model` takes: spec, arch and base weights."""

    spec: str
    arch: str | None
    pretrained: str | None


def fetch_entry(entry: ZooEntry) -> Path | None:
    """The local file of ENTRY (downloaded when needed); None for open_clip tags (open_clip fetches those)."""
    if entry.kind == "url":
        return download(entry)
    if entry.kind == "hf-hub":
        from huggingface_hub import hf_hub_download  # respects HF_HUB_OFFLINE and HF_HUB_CACHE

        loc = entry.location
        return Path(hf_hub_download(loc["repo"], str(entry.file), revision=loc.get("revision")))
    return None


def resolve_entry(entry: ZooEntry) -> ResolvedModel:
    """Fetch ENTRY and say how the ordinary loader should build it."""
    path = fetch_entry(entry)
    if path is None:
        return ResolvedModel(spec=entry.location["tag"], arch=None, pretrained=None)
    return ResolvedModel(spec=str(path), arch=entry.arch, pretrained=entry.base_weights)


def resolve_zoo_spec(spec: str) -> ResolvedModel:
    """Resolve `zoo:NAME` (fetching the checkpoint); any other spec passes through unchanged."""
    if not spec.startswith(ZOO_PREFIX):
        return ResolvedModel(spec=spec, arch=None, pretrained=None)
    return resolve_entry(get_entry(spec[len(ZOO_PREFIX) :]))

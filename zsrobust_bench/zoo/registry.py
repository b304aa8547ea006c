"""Zoo registry: entries.yaml (shipped) plus files added with `add_zoo_file`, looked up by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ZSBenchError

SCHEMA = "zsbench.zoo/1"
LOCATION_KINDS = ("url", "hf-hub", "open_clip")
REQUIRED = (
    "name",
    "location",
    "file",
    "sha256",
    "format",
    "arch",
    "base_weights",
    "license",
    "paper",
    "source",
)


class ZooError(ZSBenchError):
    """An unknown zoo name, a malformed zoo file or a failed/refused download."""


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint: where it is published and how to load it."""

    name: str
    location: dict[str, str]
    file: str | None
    sha256: str | None
    format: str
    arch: str
    base_weights: str | None
    license: str | None
    paper: str | None
    source: str
    leaderboard_entry: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """Where it lives: url, hf-hub or open_clip (a pretrained tag)."""
        return self.location["kind"]

    def where(self) -> str:
        """The location as one string (URL, hf-hub id or open_clip tag)."""
        loc = self.location
        return {"url": loc.get("url"), "hf-hub": f"hf-hub:{loc.get('repo')}", "open_clip": loc.get("tag")}[
            self.kind
        ] or ""

    def as_dict(self) -> dict[str, Any]:
        """Every field, for `zoo show --json`."""
        d = {k: getattr(self, k) for k in (*REQUIRED, "leaderboard_entry")}
        d.update(self.extra)
        return d


def _entry(raw: dict[str, Any], where: str) -> ZooEntry:
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ZooError(f"zoo entry {raw.get('name')!r} in {where} lacks {', '.join(missing)}")
    loc = raw["location"]
    if not isinstance(loc, dict) or loc.get("kind") not in LOCATION_KINDS:
        raise ZooError(f"zoo entry {raw['name']!r} in {where}: location.kind must be one of {LOCATION_KINDS}")
    if loc["kind"] != "open_clip" and not raw["file"]:
        raise ZooError(f"zoo entry {raw['name']!r} in {where}: a downloaded checkpoint needs `file`")
    known = {*REQUIRED, "leaderboard_entry"}
    return ZooEntry(**{k: raw.get(k) for k in known}, extra={k: v for k, v in raw.items() if k not in known})


def load_zoo_file(path: Path) -> list[ZooEntry]:
    """Parse one zoo YAML file into entries."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ZooError(f"{path} is not a zoo file (expected schema: {SCHEMA})")
    return [_entry(e, str(path)) for e in data.get("entries") or []]


_EXTRA: dict[str, ZooEntry] = {}


def _shipped() -> dict[str, ZooEntry]:
    path = Path(str(resources.files("zsrobust_bench.zoo").joinpath("entries.yaml")))
    return {e.name: e for e in load_zoo_file(path)}


def add_zoo_file(path: Path) -> list[ZooEntry]:
    """Register the entries of an extra zoo file (e.g. a lab's own checkpoints); names must be new."""
    entries = load_zoo_file(path)
    taken = set(_shipped()) | set(_EXTRA)
    for e in entries:
        if e.name in taken:
            raise ZooError(f"zoo entry {e.name!r} from {path} is already registered")
    _EXTRA.update({e.name: e for e in entries})
    return entries


def list_entries() -> list[ZooEntry]:
    """All registered entries, shipped first, each group sorted by name."""
    return sorted(_shipped().values(), key=lambda e: e.name) + sorted(_EXTRA.values(), key=lambda e: e.name)


def get_entry(name: str) -> ZooEntry:
    """The entry called NAME, or a one-line error listing the names."""
    entries = {e.name: e for e in list_entries()}
    if name not in entries:
        raise ZooError(f"no zoo entry {name!r}", f"known: {', '.join(entries)}")
    return entries[name]


def entry_for_leaderboard(entry_id: str) -> ZooEntry:
    """The zoo checkpoint behind leaderboard entry ENTRY_ID."""
    hits = [e for e in list_entries() if e.leaderboard_entry == entry_id]
    if not hits:
        raise ZooError(f"leaderboard entry {entry_id!r} has no zoo checkpoint", "see `zsbench zoo list`")
    return hits[0]

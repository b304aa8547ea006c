"""One registry for every protocol version, registered or reported, read from versioned YAML files:
the shipped ones in `protocols/defs/` plus any directory a user adds with `add_protocol_dir`.

A file holds one protocol at one version (`kind: registered` or `kind: reported`). The highest
version of a name is its current one; older versions stay loadable, so results recorded under them
remain readable and checkable.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..data.preprocess import Preprocess
from ..errors import ZSBenchError
from .enums import Norm
from .eps import eps_label, parse_eps
from .info import ProtocolInfo, registered_info
from .model import AttackStep, Protocol

Entry = Protocol | ProtocolInfo

# Attack parameters that are radii in pixel units: written "1/255" in the files, shown as k/255.
PIXEL_PARAMS = ("step_size",)


def _radius(value: Any, where: str) -> float:
    if isinstance(value, str):
        return parse_eps(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ZSBenchError(f"{where}: expected a radius like 4/255 or a number, got {value!r}")
    return float(value)


def _attack(raw: Any, where: str) -> AttackStep:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ZSBenchError(f"{where}: each attack is a mapping with a name, got {raw!r}")
    params = {k: v for k, v in raw.items() if k != "name"}
    for key in PIXEL_PARAMS:
        if params.get(key) is not None:
            params[key] = _radius(params[key], f"{where}: {raw['name']}.{key}")
    return AttackStep(raw["name"], params)


REGISTERED_KEYS = {
    "kind", "name", "version", "description", "suite", "norm", "eps", "attacks", "samples",
    "samples_by_dataset", "prompt_set", "precision", "seed", "preprocess", "selection", "clean_on",
    "clean_on_by_dataset", "datasets",
}  # fmt: skip
REPORTED_KEYS = {
    "kind", "name", "version", "title", "description", "norm", "eps", "primary_eps", "datasets", "average",
    "source",
}  # fmt: skip


def _registered(raw: dict[str, Any], where: str) -> Protocol:
    preprocess = raw.get("preprocess")
    try:
        return Protocol(
            name=raw["name"],
            version=raw["version"],
            description=raw["description"],
            suite=raw["suite"],
            norm=Norm.parse(raw["norm"], where),
            eps=tuple(_radius(e, f"{where}: eps") for e in raw["eps"]),
            attacks=tuple(_attack(a, where) for a in raw["attacks"]),
            samples=raw["samples"],
            samples_by_dataset=dict(raw["samples_by_dataset"]),
            prompt_set=raw["prompt_set"],
            precision=raw["precision"],
            seed=raw["seed"],
            preprocess=None if preprocess is None else Preprocess(**preprocess),
            selection=raw.get("selection"),
            clean_on=raw.get("clean_on"),
            clean_on_by_dataset=dict(raw.get("clean_on_by_dataset") or {}),
            datasets=tuple(raw.get("datasets") or ()),
        )
    except KeyError as exc:
        raise ZSBenchError(f"{where}: a registered protocol needs {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ZSBenchError(f"{where}: {exc}") from exc


def _reported(raw: dict[str, Any], where: str) -> ProtocolInfo:
    try:
        eps = tuple(str(e) for e in raw["eps"])
        if [eps_label(parse_eps(e)) for e in eps] != list(eps):
            raise ZSBenchError(f"{where}: eps labels must be written as eps_label writes them, got {eps}")
        Norm.parse(raw["norm"], where)
        return ProtocolInfo(
            name=raw["name"],
            version=raw["version"],
            kind="reported",
            title=raw["title"],
            description=raw["description"],
            eps=eps,
            primary_eps=raw["primary_eps"],
            datasets=tuple(raw["datasets"]),
            average=raw["average"],
            source_url=raw["source"]["url"],
            source_text=raw["source"]["text"],
        )
    except KeyError as exc:
        raise ZSBenchError(f"{where}: a reported protocol needs {exc.args[0]!r}") from exc


# kind -> (allowed keys, reader)
KINDS: dict[str, tuple[set[str], Callable[[dict[str, Any], str], Any]]] = {
    "registered": (REGISTERED_KEYS, _registered),
    "reported": (REPORTED_KEYS, _reported),
}


def load_protocol_file(path: Path) -> Entry:
    """One protocol file -> a Protocol (kind: registered) or a ProtocolInfo (kind: reported)."""
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ZSBenchError(f"protocol file {where} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        raise ZSBenchError(f"protocol file {where}: needs `kind:` one of {', '.join(KINDS)}")
    keys, read = KINDS[raw["kind"]]
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise ZSBenchError(
            f"protocol file {where}: unknown keys {', '.join(unknown)}", f"known: {sorted(keys)}"
        )
    if (
        not isinstance(raw.get("name"), str)
        or isinstance(raw.get("version"), bool)
        or not isinstance(raw.get("version"), int)
    ):
        raise ZSBenchError(f"protocol file {where}: needs a string `name` and an integer `version`")
    if Path(path).stem != f"{raw['name']}-v{raw['version']}":
        raise ZSBenchError(f"protocol file {where} must be named {raw['name']}-v{raw['version']}.yaml")
    return read(raw, where)


def read_protocol_dir(path: Path) -> list[Entry]:
    """Every `*.yaml` protocol file in a directory, sorted by file name."""
    root = Path(path)
    if not root.is_dir():
        raise ZSBenchError(f"protocol directory {root} does not exist")
    return [load_protocol_file(p) for p in sorted(root.glob("*.yaml"))]


def _shipped_dir() -> Path:
    return Path(str(resources.files("zsrobust_bench.protocols").joinpath("defs")))


_ADDED: dict[tuple[str, int], Entry] = {}  # from add_protocol_dir
_SHIPPED: dict[tuple[str, int], Entry] = {}


def _table() -> dict[tuple[str, int], Entry]:
    """(name, version) -> entry: the shipped files (read once), then the added directories."""
    if not _SHIPPED:
        _SHIPPED.update(_index(read_protocol_dir(_shipped_dir()), {}))
    return {**_SHIPPED, **_ADDED}


def _index(entries: list[Entry], taken: dict[tuple[str, int], Entry]) -> dict[tuple[str, int], Entry]:
    out: dict[tuple[str, int], Entry] = {}
    kinds = {name: _kind(e) for (name, _), e in taken.items()}
    for e in entries:
        key = (e.name, e.version)
        if key in taken or key in out:
            raise ZSBenchError(f"protocol {e.name!r} version {e.version} is already registered")
        if kinds.setdefault(e.name, _kind(e)) != _kind(e):
            raise ZSBenchError(f"protocol {e.name!r} cannot be both registered and reported")
        out[key] = e
    return out


def _kind(entry: Entry) -> str:
    return "registered" if isinstance(entry, Protocol) else "reported"


def add_protocol_dir(path: Path) -> list[Entry]:
    """Register every protocol file of a user's directory; each (name, version) must be new."""
    added = _index(read_protocol_dir(path), _table())
    _ADDED.update(added)
    return list(added.values())


def versions(name: str) -> list[Entry]:
    """Every version of protocol `name`, oldest first (empty when unknown)."""
    return sorted((e for (n, _), e in _table().items() if n == name), key=lambda e: e.version)


def find_protocol(name: str, version: int | None = None) -> Entry | None:
    """Protocol `name` of either kind at `version` (default: its current one), None when unknown."""
    found = versions(name)
    if version is None:
        return found[-1] if found else None
    return next((e for e in found if e.version == version), None)


def get_protocol(name: str, version: int | None = None) -> Protocol:
    """The current version of registered protocol `name`, or the given (possibly superseded) version."""
    found = [e for e in versions(name) if isinstance(e, Protocol)]
    if not found:
        known = sorted(p.name for p in list_protocols())
        raise ZSBenchError(f"unknown protocol {name!r}", f"known protocols: {', '.join(known)}")
    if version is None:
        return found[-1]
    for p in found:
        if p.version == version:
            return p
    raise ZSBenchError(
        f"protocol {name!r} has no version {version}", f"known versions: {[p.version for p in found]}"
    )


def all_protocol_versions() -> list[Protocol]:
    """Every version of every registered protocol, current and superseded."""
    return [e for e in _table().values() if isinstance(e, Protocol)]


def _listing_order() -> list[str]:
    """Shipped protocol names in release order (defs/ORDER.txt), the order `zsbench protocols list` shows."""
    text = (_shipped_dir() / "ORDER.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def list_protocols() -> list[Protocol]:
    """The current version of every registered protocol: shipped ones in release order, then users' by name."""
    names = {p.name for p in all_protocol_versions()}
    shipped = [n for n in _listing_order() if n in names]
    return [get_protocol(n) for n in shipped + sorted(names - set(shipped))]


def superseded() -> list[Protocol]:
    """Registered versions that a newer version of the same name replaced."""
    current = {(p.name, p.version) for p in list_protocols()}
    return [p for p in all_protocol_versions() if (p.name, p.version) not in current]


def reported_protocols() -> dict[str, ProtocolInfo]:
    """The current version of every reported protocol, by name."""
    names = sorted({e.name for e in _table().values() if isinstance(e, ProtocolInfo)})
    out = {n: find_protocol(n) for n in names}
    return {n: e for n, e in out.items() if isinstance(e, ProtocolInfo)}


def lookup_protocol(name: str, version: int | None = None) -> ProtocolInfo | None:
    """Leaderboard facts for a registered or reported protocol at `version` (default: current; a
    superseded registered version says so), None when neither kind knows it."""
    entry = find_protocol(name, version)
    if entry is None or isinstance(entry, ProtocolInfo):
        return entry
    return registered_info(entry, versions(name)[-1].version)

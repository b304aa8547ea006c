"""The dataset registry: specs by canonical name or alias, and named suites."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ..errors import ZSBenchError
from .spec import DatasetSpec

_SPECS: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}
_SUITES: dict[str, tuple[str, ...]] = {}
_LOADED = False


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a spec; names and aliases must be unique."""
    for key in (spec.name, *spec.aliases):
        k = _norm(key)
        if k in _ALIASES and _ALIASES[k] != spec.name:
            raise ValueError(f"dataset name {key!r} already registered for {_ALIASES[k]!r}")
        _ALIASES[k] = spec.name
    _SPECS[spec.name] = spec
    return spec


def register_suite(name: str, members: Iterable[str]) -> None:
    _SUITES[name] = tuple(members)


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import catalog, synthetic  # noqa: F401  (modules register their specs on import)


def get_dataset(name: str) -> DatasetSpec:
    """Spec for a canonical name or alias; unknown names fail with close matches."""
    _ensure_loaded()
    k = _norm(name)
    if k not in _ALIASES:
        close = difflib.get_close_matches(k, list(_ALIASES), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `zsbench datasets list`"
        raise ZSBenchError(f"unknown dataset {name!r}", hint)
    return _SPECS[_ALIASES[k]]


def all_datasets() -> list[DatasetSpec]:
    _ensure_loaded()
    return list(_SPECS.values())


def suites() -> dict[str, tuple[str, ...]]:
    _ensure_loaded()
    return dict(_SUITES)


def suite(name: str) -> tuple[str, ...]:
    _ensure_loaded()
    if name not in _SUITES:
        raise ZSBenchError(f"unknown suite {name!r}", f"known suites: {', '.join(sorted(_SUITES))}")
    return _SUITES[name]


def expand(names: Iterable[str]) -> list[str]:
    """Resolve a mix of dataset names, aliases and suite names into canonical dataset names."""
    _ensure_loaded()
    out: list[str] = []
    for n in names:
        if n in _SUITES:
            members = _SUITES[n]
        elif n.startswith("imagefolder:"):
            members = (n,)
        else:
            members = (get_dataset(n).name,)
        for m in members:
            if m not in out:
                out.append(m)
    return out

"""The dataset registry: specs by canonical name or alias, named suites, and ``imagefolder:PATH`` specs.

The table is built once, on first use, from pure functions: the catalog of real datasets
(``catalog.catalog_specs``, prompt files beside it) and the synthetic world
(``synthetic.synthetic_specs``). Nothing registers itself on import.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from ..errors import ZSBenchError
from . import catalog, synthetic
from .spec import DatasetSpec
from .userfolder import is_user_folder, spec_for_imagefolder


@dataclass(frozen=True)
class Table:
    """Specs by canonical name, normalised names and aliases to canonical names, suites by name."""

    specs: Mapping[str, DatasetSpec]
    aliases: Mapping[str, str]
    suites: Mapping[str, tuple[str, ...]]


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def build_table(specs: Iterable[DatasetSpec], suites: Mapping[str, Sequence[str]]) -> Table:
    """A registry table from specs and suites; names and aliases must be unique."""
    by_name: dict[str, DatasetSpec] = {}
    aliases: dict[str, str] = {}
    for spec in specs:
        for key in (spec.name, *spec.aliases):
            k = _norm(key)
            if k in aliases and aliases[k] != spec.name:
                raise ValueError(f"dataset name {key!r} already registered for {aliases[k]!r}")
            aliases[k] = spec.name
        by_name[spec.name] = spec
    return Table(by_name, aliases, {name: tuple(members) for name, members in suites.items()})


@cache
def table() -> Table:
    """The registry's table: the catalog's datasets and suites, then the synthetic world's."""
    return build_table(
        [*catalog.catalog_specs(), *synthetic.synthetic_specs()],
        {**catalog.SUITES, **synthetic.SUITES},
    )


def get_dataset(name: str) -> DatasetSpec:
    """Spec for a canonical name or alias; unknown names fail with close matches."""
    t = table()
    k = _norm(name)
    if k not in t.aliases:
        close = difflib.get_close_matches(k, list(t.aliases), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `zsbench datasets list`"
        raise ZSBenchError(f"unknown dataset {name!r}", hint)
    return t.specs[t.aliases[k]]


def dataset_spec(name: str) -> DatasetSpec:
    """Spec for any dataset name a user may pass: a registered name or alias, or ``imagefolder:PATH``."""
    return spec_for_imagefolder(name) if is_user_folder(name) else get_dataset(name)


def all_datasets() -> list[DatasetSpec]:
    """Every registered spec, catalog first, in registration order."""
    return list(table().specs.values())


def suites() -> dict[str, tuple[str, ...]]:
    """Every named suite and its members."""
    return dict(table().suites)


def suite(name: str) -> tuple[str, ...]:
    """The members of suite `name`; unknown suites fail naming the known ones."""
    known = table().suites
    if name not in known:
        raise ZSBenchError(f"unknown suite {name!r}", f"known suites: {', '.join(sorted(known))}")
    return known[name]


def expand(names: Iterable[str]) -> list[str]:
    """Resolve a mix of dataset names, aliases and suite names into canonical dataset names."""
    known = table().suites
    out: list[str] = []
    for n in names:
        if n in known:
            members = known[n]
        elif is_user_folder(n):
            members = (n,)
        else:
            members = (get_dataset(n).name,)
        for m in members:
            if m not in out:
                out.append(m)
    return out

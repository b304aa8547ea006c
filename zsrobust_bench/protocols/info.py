"""What the leaderboard needs to know about a protocol of either kind: a registered one (run by
zsbench, with every frozen parameter) or a reported one (a publication's protocol, results copied)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .eps import eps_label
from .model import Protocol


@dataclass(frozen=True)
class ProtocolInfo:
    """One protocol at one version, as leaderboard tables and checks see it."""

    name: str
    version: int
    kind: str  # "registered" (run by zsbench) or "reported" (a published paper's protocol)
    title: str
    description: str
    eps: tuple[str, ...] = ()
    primary_eps: str | None = None
    datasets: tuple[str, ...] = ()  # expected datasets in display order; empty when not fixed
    average: str = "unweighted mean over the datasets"
    source_url: str | None = None
    source_text: str | None = None
    synthetic: bool = False
    params: dict[str, Any] | None = None  # every frozen parameter, as results.json records it, when known
    superseded_by: int | None = None  # the current version, when this one is an older registered version

    @property
    def slug(self) -> str:
        """File-name key: the name, plus `-v<N>` for a superseded version (never ranked with the current one)."""
        return self.name if self.superseded_by is None else f"{self.name}-v{self.version}"


def members(protocol: Protocol) -> tuple[str, ...]:
    """The protocol's datasets: the members it froze, else its suite's members now, else none."""
    from ..data.registry import suite

    if protocol.datasets:
        return protocol.datasets
    return tuple(suite(protocol.suite)) if protocol.suite else ()


def registered_info(protocol: Protocol, current: int) -> ProtocolInfo:
    """The leaderboard's view of a registered protocol; `current` is the name's current version."""
    from ..data.registry import get_dataset

    datasets = members(protocol)
    eps = tuple(eps_label(e) for e in protocol.eps)
    return ProtocolInfo(
        name=protocol.name,
        version=protocol.version,
        kind="registered",
        title=protocol.name,
        description=protocol.description,
        eps=eps,
        primary_eps=eps[0] if eps else None,
        datasets=datasets,
        synthetic=bool(datasets) and all(get_dataset(d).synthetic for d in datasets),
        params=json.loads(json.dumps(protocol.params())),  # the JSON form results.json holds
        superseded_by=current if current != protocol.version else None,
    )

"""Protocol facts the leaderboard needs: the package's registered protocols plus the reported ones."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..errors import ZSBenchError


@dataclass(frozen=True)
class ProtocolInfo:
    """What a leaderboard table needs to know about one protocol."""

    name: str
    version: int
    kind: str  # "registered" (zsrobust_bench.protocols) or "reported" (a published paper's protocol)
    title: str
    description: str
    eps: tuple[str, ...] = ()
    primary_eps: str | None = None
    datasets: tuple[str, ...] = ()  # expected datasets in display order; empty when not fixed
    average: str = "unweighted mean over the datasets"
    source_url: str | None = None
    synthetic: bool = False
    params: dict[str, Any] | None = None  # every frozen parameter, as results.json records it, when known
    superseded_by: int | None = None  # the current version, when this one is an older registered version

    @property
    def slug(self) -> str:
        """File-name key: the name, plus `-v<N>` for a superseded version (never ranked with the current one)."""
        return self.name if self.superseded_by is None else f"{self.name}-v{self.version}"


class RegistryUnavailable(ZSBenchError):
    """zsrobust_bench.protocols cannot be imported, so registered protocols cannot be checked."""


def eps_label(eps: float) -> str:
    """'2/255' for multiples of 1/255, else the shortest decimal form."""
    k = eps * 255
    if eps > 0 and math.isclose(k, round(k), abs_tol=1e-6):
        return f"{round(k)}/255"
    return format(eps, "g")


def eps_value(label: str) -> float:
    """Numeric value of an eps label such as '4/255' or '0.5'."""
    num, _, den = label.partition("/")
    return float(num) / float(den) if den else float(num)


@functools.cache
def reported_protocols() -> dict[str, ProtocolInfo]:
    """The published protocols that `reported` results may name (package data, versioned)."""
    text = resources.files(__package__).joinpath("reported_protocols.json").read_text(encoding="utf-8")
    out: dict[str, ProtocolInfo] = {}
    for name, p in json.loads(text)["protocols"].items():
        out[name] = ProtocolInfo(
            name=name,
            version=int(p["version"]),
            kind="reported",
            title=p["title"],
            description=p["description"],
            eps=tuple(p["eps"]),
            primary_eps=p["primary_eps"],
            datasets=tuple(p["datasets"]),
            average=p["average"],
            source_url=p["source"]["url"],
        )
    return out


def _get_registered(name: str, version: int | None = None) -> Any | None:
    """The registered protocol object for `name` (at `version`, default the current one), None when
    unknown; RegistryUnavailable if not importable."""
    try:
        from .. import protocols
    except ImportError as exc:
        raise RegistryUnavailable(
            f"cannot check protocol {name!r}: zsrobust_bench.protocols is not importable ({exc})"
        ) from exc
    try:
        return protocols.get_protocol(name, version)
    except (ZSBenchError, KeyError, LookupError):
        return None


def _suite_members(proto: Any) -> tuple[str, ...]:
    for attr in ("datasets", "suite"):
        value = getattr(proto, attr, None)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        if isinstance(value, str) and value:
            try:
                from ..data.registry import suite

                return tuple(suite(value))
            except (ZSBenchError, ImportError):
                return ()
    return ()


def _is_synthetic(proto: Any, members: tuple[str, ...]) -> bool:
    flag = getattr(proto, "synthetic", None)
    if isinstance(flag, bool):
        return flag
    suite_name = getattr(proto, "suite", None)
    if isinstance(suite_name, str) and "synthetic" in suite_name:
        return True
    if not members:
        return False
    try:
        from ..data.registry import get_dataset

        return all(get_dataset(m).synthetic for m in members)
    except (ZSBenchError, ImportError):
        return False


def _frozen_params(proto: Any) -> dict[str, Any] | None:
    params = getattr(proto, "params", None)
    if not callable(params):
        return None
    return json.loads(json.dumps(params()))  # the JSON form results.json holds (tuples become lists)


def _registered_info(proto: Any, current: int | None = None) -> ProtocolInfo:
    members = _suite_members(proto)
    description = getattr(proto, "description", None) or getattr(proto, "summary", None) or ""
    eps = tuple(eps_label(float(e)) for e in getattr(proto, "eps", ()) or ())
    return ProtocolInfo(
        name=str(proto.name),
        version=int(proto.version),
        kind="registered",
        title=str(proto.name),
        description=str(description),
        eps=eps,
        primary_eps=eps[0] if eps else None,
        datasets=members,
        synthetic=_is_synthetic(proto, members),
        params=_frozen_params(proto),
        superseded_by=current if current is not None and current != int(proto.version) else None,
    )


def lookup_protocol(name: str, version: int | None = None) -> ProtocolInfo | None:
    """Facts for a registered or reported protocol (registered: at `version`, default the current
    one; superseded versions say so), None when neither knows it."""
    reported = reported_protocols()
    if name in reported:
        info = reported[name]
        return info if version is None or version == info.version else None
    proto = _get_registered(name, version)
    if proto is None:
        return None
    current = _get_registered(name)
    return _registered_info(proto, None if current is None else int(current.version))

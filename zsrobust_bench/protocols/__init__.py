"""Named, frozen evaluation protocols, as data: one YAML file per protocol version in `defs/`.

A change to any parameter makes a new version (a new file); the old file stays, so results recorded
under it remain readable and checkable. A run may override parameters; it is then marked `custom`
in results.json and the leaderboard never ranks it with the protocol. Reported protocols (a paper's
protocol whose results are copied, never run) live in the same form, marked `kind: reported`.
Every value taken from a paper's code cites its source next to it in the files; docs/fidelity.md
has the parameter-by-parameter comparison. `add_protocol_dir` registers a user's own files.
"""

from .enums import ATTACK_NORMS, Norm, Precision
from .eps import eps_label, parse_eps
from .info import ProtocolInfo
from .model import AttackStep, Protocol
from .overrides import ATTACK_BACKENDS, apply_overrides, following_step_fraction, with_backend
from .registry import (
    add_protocol_dir,
    all_protocol_versions,
    find_protocol,
    get_protocol,
    list_protocols,
    load_protocol_file,
    lookup_protocol,
    reported_protocols,
    superseded,
)

__all__ = [
    "ATTACK_BACKENDS",
    "ATTACK_NORMS",
    "AttackStep",
    "Norm",
    "Precision",
    "Protocol",
    "ProtocolInfo",
    "add_protocol_dir",
    "all_protocol_versions",
    "apply_overrides",
    "eps_label",
    "find_protocol",
    "following_step_fraction",
    "get_protocol",
    "list_protocols",
    "load_protocol_file",
    "lookup_protocol",
    "parse_eps",
    "reported_protocols",
    "superseded",
    "with_backend",
]

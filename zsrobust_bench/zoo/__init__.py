"""Model zoo: released robust CLIP checkpoints as data, downloaded to the cache and loaded by name."""

from .registry import ZooEntry, add_zoo_file, get_entry, list_entries
from .resolve import ZOO_PREFIX, ResolvedModel, resolve_zoo_spec

__all__ = [
    "ZOO_PREFIX",
    "ResolvedModel",
    "ZooEntry",
    "add_zoo_file",
    "get_entry",
    "list_entries",
    "resolve_zoo_spec",
]

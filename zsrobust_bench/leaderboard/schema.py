"""Versioned JSON Schemas for cards, reported results, digests and evaluated results; validation to Problems."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

import jsonschema

from .problems import Problem

CARD_SCHEMA = "zsbench.card/1"
REPORTED_SCHEMA = "zsbench.reported/1"
DIGEST_SCHEMA = "zsbench.digest/1"
RESULTS_SCHEMA = "zsbench.results/1"

_FILES = {
    CARD_SCHEMA: ("zsrobust_bench.leaderboard", "card-1.json"),
    REPORTED_SCHEMA: ("zsrobust_bench.leaderboard", "reported-1.json"),
    DIGEST_SCHEMA: ("zsrobust_bench.leaderboard", "digest-1.json"),
    RESULTS_SCHEMA: ("zsrobust_bench.schemas", "results-1.json"),
}


@functools.cache
def load_schema(schema_id: str) -> dict[str, Any]:
    """The JSON Schema document for a schema id such as 'zsbench.card/1'."""
    package, name = _FILES[schema_id]
    return json.loads(resources.files(package).joinpath(name).read_text(encoding="utf-8"))


@functools.cache
def _validator(schema_id: str) -> jsonschema.protocols.Validator:
    schema = load_schema(schema_id)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _field(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path)


def _problems(file: str, err: jsonschema.ValidationError) -> list[Problem]:
    path = list(err.absolute_path)
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [k for k in err.validator_value if k not in err.instance]
        return [Problem(file, _field([*path, k]), "is required but missing") for k in missing]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(str(k) for k in err.instance if k not in allowed)
        if extra:
            return [
                Problem(file, _field([*path, k]), "is not a known field (check the spelling)") for k in extra
            ]
    message = err.message if len(err.message) <= 300 else err.message[:300] + "..."
    return [Problem(file, _field(path) or "(top level)", message)]


def schema_problems(doc: Any, schema_id: str, file: str) -> list[Problem]:
    """Every schema violation of `doc`, each with its dotted field path (sorted, no duplicates)."""
    found: set[Problem] = set()
    for err in _validator(schema_id).iter_errors(doc):
        found.update(_problems(file, err))
    return sorted(found)

"""Write a new card from a run, and fill only null placeholders of an existing one (text-preserving)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from .entries import parse_card_text
from .schema import CARD_SCHEMA

FILLABLE = ("checkpoint.sha256", "architecture", "base_weights")

_TEMPLATE = """\
# Model card for the zsrobust-bench leaderboard (schema {schema}).
# Edit the human-written fields. `zsbench submit` never overwrites a field you wrote; it only fills
# these null placeholders from the run: checkpoint.sha256, architecture, base_weights.
schema: {schema}
id: {id}
name: {name}
authors: []            # e.g. ["Ada Lovelace", "Alan Turing"]
paper: null            # or {{title: "...", url: "https://..."}}
venue: null            # e.g. "ICLR 2023"
architecture: {architecture}
base_weights: {base_weights}
training_data: null    # e.g. "ImageNet-1k train"
threat_model: null     # trained for, e.g. {{norm: Linf, eps: "1/255"}}; {{norm: none}} for no defence
checkpoint:
  location: null       # where others can get it: a URL or hf-hub:org/name
  sha256: {sha256}
license: null
footnote: null
"""


def _scalar(value: Any) -> str:
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def new_card_text(entry_id: str, results: dict[str, Any]) -> str:
    """YAML text of a fresh card prefilled from a run's results.json."""
    model = results["model"]
    return _TEMPLATE.format(
        schema=CARD_SCHEMA,
        id=entry_id,
        name=_scalar(entry_id),
        architecture=_scalar(model.get("arch")),
        base_weights=_scalar(model.get("pretrained")),
        sha256=_scalar(model.get("sha256")),
    )


def _get(card: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = card
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(card: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = card
    for part in parents:
        node = node[part]
    node[last] = value


def _replace_null_line(text: str, dotted: str, value: str) -> str | None:
    """Text with the `key: null` line of `dotted` (depth 1 or 2) set to `value`, or None if not found once."""
    parts = dotted.split(".")
    lines = text.splitlines(keepends=True)
    null_re = r"(?P<pre>{indent}{key}:)[ \t]*(?:null|~)?(?P<post>[ \t]+#.*)?[ \t]*$"
    start, stop, indent = 0, len(lines), ""
    if len(parts) == 2:
        heads = [
            i
            for i, ln in enumerate(lines)
            if re.match(rf"{re.escape(parts[0])}:[ \t]*(#.*)?$", ln.rstrip("\n"))
        ]
        if len(heads) != 1:
            return None
        start = heads[0] + 1
        stop = next((i for i in range(start, len(lines)) if re.match(r"[^\s#]", lines[i])), len(lines))
        indent = r"[ \t]+"
    pattern = re.compile(null_re.format(indent=indent, key=re.escape(parts[-1])))
    hits = [i for i in range(start, stop) if pattern.match(lines[i].rstrip("\n"))]
    if len(hits) != 1:
        return None
    i = hits[0]
    m = pattern.match(lines[i].rstrip("\n"))
    assert m is not None
    lines[i] = f"{m.group('pre')} {json.dumps(value, ensure_ascii=False)}{m.group('post') or ''}\n"
    return "".join(lines)


def fill_placeholders(text: str, card: dict[str, Any], results: dict[str, Any]) -> tuple[str, list[str]]:
    """(new text, filled fields): null FILLABLE fields set from the run; every other byte is kept."""
    model = results["model"]
    source = {
        "checkpoint.sha256": model.get("sha256"),
        "architecture": model.get("arch"),
        "base_weights": model.get("pretrained"),
    }
    filled: list[str] = []
    for dotted in FILLABLE:
        present, current = _get(card, dotted)
        value = source[dotted]
        if not present or current is not None or not isinstance(value, str):
            continue
        new_text = _replace_null_line(text, dotted, value)
        if new_text is None:
            continue
        expected = copy.deepcopy(card)
        _set(expected, dotted, value)
        if parse_card_text(new_text) != expected:
            continue  # the edit would change more than this field: leave the card alone
        text, card = new_text, expected
        filled.append(dotted)
    return text, filled

"""Load the submissions tree: entry folders, their cards (YAML) and results files (JSON), safely."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import SubmissionError
from .paths import (
    CARD_FILE,
    MAX_CARD_BYTES,
    MAX_RESULTS_BYTES,
    RESULTS_DIR,
    id_problem,
    loads_strict_json,
    read_limited,
    symlinks_under,
)
from .problems import Problem
from .schema import CARD_SCHEMA, REPORTED_SCHEMA, RESULTS_SCHEMA, schema_problems

MAX_FLOW_DEPTH = 64
EVALUATED = "evaluated"
REPORTED = "reported"


@dataclass
class ResultsFile:
    """One results file of an entry: evaluated (from `zsbench evaluate`) or reported (published numbers)."""

    path: Path
    protocol: str  # the file name's stem, which must equal the protocol name inside
    doc: dict[str, Any]
    kind: str  # EVALUATED or REPORTED

    @property
    def file(self) -> str:
        return str(self.path)


@dataclass
class Entry:
    """A submissions/<id>/ folder: card plus results files (only those that parsed and fit their schema)."""

    id: str
    dir: Path
    card: dict[str, Any] | None
    results: list[ResultsFile] = field(default_factory=list)

    @property
    def card_file(self) -> str:
        return str(self.dir / CARD_FILE)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would let the later one win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ValueError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_card_text(text: str) -> Any:
    """YAML card -> Python object via yaml.safe_load, refusing anchors and aliases (no expansion tricks)."""
    if max(itertools.accumulate((ch in "[{") - (ch in "]}") for ch in text), default=0) > MAX_FLOW_DEPTH:
        raise ValueError(f"[ ] and {{ }} nest deeper than {MAX_FLOW_DEPTH} levels")
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise ValueError("YAML anchors and aliases are not allowed in cards")
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_card(path: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Parse and schema-check one card; the card is returned only when it is a mapping."""
    file = str(path)
    if not path.exists() and not path.is_symlink():
        return None, [Problem(file, "", "missing: every entry needs a card.yaml")]
    try:
        text = read_limited(path, MAX_CARD_BYTES).decode("utf-8")
        card = parse_card_text(text)
    except SubmissionError as exc:
        return None, [Problem(file, "", exc.message)]
    except UnicodeDecodeError:
        return None, [Problem(file, "", "is not UTF-8 text")]
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        return None, [Problem(file, "", f"is not valid YAML: {str(exc)[:300]}")]
    if not isinstance(card, dict):
        return None, [Problem(file, "", "must be a YAML mapping of card fields")]
    return card, schema_problems(card, CARD_SCHEMA, file)


def load_results(path: Path) -> tuple[ResultsFile | None, list[Problem]]:
    """Parse and schema-check one results file (the `schema` field picks evaluated or reported)."""
    file = str(path)
    try:
        doc = loads_strict_json(read_limited(path, MAX_RESULTS_BYTES))
    except SubmissionError as exc:
        return None, [Problem(file, "", exc.message)]
    except (ValueError, RecursionError) as exc:  # includes JSONDecodeError and UnicodeDecodeError
        return None, [Problem(file, "", f"is not valid JSON: {str(exc)[:300]}")]
    if not isinstance(doc, dict):
        return None, [Problem(file, "", "must be a JSON object")]
    schema_id = doc.get("schema")
    if schema_id == RESULTS_SCHEMA:
        kind = EVALUATED
    elif schema_id == REPORTED_SCHEMA:
        kind = REPORTED
    else:
        return None, [
            Problem(
                file,
                "schema",
                f"unknown schema {schema_id!r}: expected {RESULTS_SCHEMA} or {REPORTED_SCHEMA}",
            )
        ]
    problems = schema_problems(doc, schema_id, file)
    if problems:
        return None, problems
    return ResultsFile(path=path, protocol=path.stem, doc=doc, kind=kind), []


def load_entry(entry_dir: Path) -> tuple[Entry | None, list[Problem]]:
    """Load one entry folder with its security checks (id, symlinks); None when it cannot be used at all."""
    entry_id = entry_dir.name
    why = id_problem(entry_id)
    if why:
        return None, [Problem(str(entry_dir), "id", f"invalid entry id (folder name): {why}")]
    links = symlinks_under(entry_dir)
    if links:
        return None, [
            Problem(str(p), "", "symlinks are not allowed in submissions (they could point outside the tree)")
            for p in links
        ]
    card, problems = load_card(entry_dir / CARD_FILE)
    entry = Entry(id=entry_id, dir=entry_dir, card=card)
    results_dir = entry_dir / RESULTS_DIR
    if results_dir.is_dir():
        for path in sorted(results_dir.iterdir()):
            if path.suffix != ".json" or not path.is_file():
                problems.append(
                    Problem(str(path), "", "unexpected file: results/ holds only <protocol>.json files")
                )
                continue
            rf, found = load_results(path)
            problems.extend(found)
            if rf is not None:
                entry.results.append(rf)
    return entry, problems


def entry_dirs(root: Path) -> list[Path]:
    """Entry folders under the submissions root, sorted; files and hidden names are not entries."""
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p.is_dir() or p.is_symlink()))


def load_tree(root: Path) -> tuple[list[Entry], list[Problem]]:
    """Load every entry under `root` (a submissions folder)."""
    if not root.is_dir():
        raise SubmissionError(
            f"{root}: no such submissions folder", "pass the folder that holds one folder per entry"
        )
    entries: list[Entry] = []
    problems: list[Problem] = []
    for d in entry_dirs(root):
        if d.is_symlink() or not d.is_dir():
            problems.append(Problem(str(d), "", "entries must be plain folders, not symlinks"))
            continue
        entry, found = load_entry(d)
        problems.extend(found)
        if entry is not None:
            entries.append(entry)
    return entries, problems

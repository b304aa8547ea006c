"""Dataset specifications as data: what a dataset is, where it comes from and how it is prompted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Source:
    """One way to obtain a dataset.

    kind: "hf" (HF `datasets` hub id or webdataset repo), "torchvision" (class name in
    torchvision.datasets), "imagefolder" (folder under the data root), "synthetic" (generated in
    process) or "manual" (instructions only); readers/kinds.py says how each kind is found and opened.
    """

    kind: str
    ref: str
    options: Mapping[str, Any] = field(default_factory=dict)
    instructions: str = ""


@dataclass(frozen=True)
class PromptSet:
    """Class names (label order) plus templates, each with one `{}`."""

    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    def prompts(self, label: int) -> list[str]:
        return [t.format(self.classnames[label]) for t in self.templates]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the engine needs to know about one evaluation dataset.

    `prompt_sets` maps a name ("tecoa", "clip", ...) to a PromptSet; protocols pick one by name.
    `eval_resolution` is "native" (attacked at the stored size, e.g. CIFAR) or "model" (resize and
    centre-crop to the model's input size before the attack).
    """

    name: str
    num_classes: int
    prompt_sets: Mapping[str, PromptSet]
    eval_split: str
    sources: tuple[Source, ...]
    aliases: tuple[str, ...] = ()
    eval_resolution: str = "model"
    native_size: int | None = None
    split_note: str = ""
    homepage: str = ""
    license: str = ""
    size_hint: int | None = None  # number of samples in the eval split, where known
    synthetic: bool = False

    def __post_init__(self) -> None:
        for key, ps in self.prompt_sets.items():
            if len(ps.classnames) != self.num_classes:
                raise ValueError(
                    f"dataset {self.name}: prompt set {key!r} has {len(ps.classnames)} class names, "
                    f"expected {self.num_classes}"
                )
            for t in ps.templates:
                if t.count("{}") != 1:
                    raise ValueError(f"dataset {self.name}: template {t!r} must contain exactly one '{{}}'")
        if self.eval_resolution not in ("native", "model"):
            raise ValueError(f"dataset {self.name}: eval_resolution must be 'native' or 'model'")

    def prompt_set(self, key: str) -> PromptSet:
        """The prompt set `key`; falls back to nothing (raises) so a protocol never silently uses another."""
        if key not in self.prompt_sets:
            raise KeyError(f"dataset {self.name} has no prompt set {key!r} (has {sorted(self.prompt_sets)})")
        return self.prompt_sets[key]


def read_lines_resource(package: str, name: str) -> tuple[str, ...]:
    """Non-empty lines of a text file shipped as package data."""
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())

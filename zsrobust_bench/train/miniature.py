"""The miniature family: the shipped finetunes of the demo CLIP on the synthetic world (one per
method), the recipe behind each, and the one command that regenerates each shipped file byte for byte."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ZSBenchError

ASSET_DIR = "zsrobust_bench/assets/miniature"  # repository-relative, as the regeneration commands write it
# Shipping settings: fp16 weights, no validation or final evaluation (neither changes the weights: every
# random draw of the training loop comes from (seed, step)-keyed generators).
SHIP_OVERRIDES = (
    "progress=false",
    "validation.datasets=[]",
    "final_eval.datasets=[]",
    "export.dtype=float16",
)


@dataclass(frozen=True)
class Member:
    """One shipped model: file stem, table label, shipped recipe and its overrides."""

    key: str
    label: str
    recipe: str
    overrides: tuple[str, ...] = ()

    def ship_overrides(self, copy_to: str | None = None) -> list[str]:
        """--set values that produce the shipped file (copied to `copy_to`, default the asset path)."""
        dest = copy_to if copy_to is not None else f"{ASSET_DIR}/{self.key}.safetensors"
        return [*self.overrides, *SHIP_OVERRIDES, f"export.copy_final_to={dest}"]

    def command(self, out: str = "runs/miniature") -> str:
        """The shell command (from the repository root) that regenerates the shipped file."""
        sets = " ".join(f"--set '{o}'" for o in self.ship_overrides())
        return f"zsbench train {self.recipe} --out {out}/{self.key} {sets}"


FAMILY: tuple[Member, ...] = (
    Member("tecoa", "TeCoA finetuning", "synthetic-tecoa"),
    Member("vp", "TeCoA visual prompting", "synthetic-vp"),
    Member("fare", "FARE (unsupervised)", "synthetic-fare"),
    Member("advtrain", "Adv. training, one-hot head", "synthetic-advtrain"),
    Member(
        "clean",
        "Clean finetuning (TeCoA head)",
        "synthetic-tecoa",
        ("attack.steps=0", "name=synthetic-clean"),
    ),
)


def member(key: str) -> Member:
    """The family member with file stem `key`."""
    for m in FAMILY:
        if m.key == key:
            return m
    raise ZSBenchError(f"no miniature model {key!r}", f"known: {', '.join(m.key for m in FAMILY)}")


def shipped_path(key: str) -> Path:
    """Path of a shipped miniature checkpoint inside the installed package."""
    res = resources.files("zsrobust_bench") / "assets" / "miniature" / f"{member(key).key}.safetensors"
    if not res.is_file():
        raise ZSBenchError(f"the shipped miniature model {key}.safetensors is missing", member(key).command())
    return Path(str(res))

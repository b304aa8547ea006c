"""What a results file may point the re-check at: files inside its own entry, or plain names.

A results file is written by the submitter, so every path in it is untrusted: `model.spec`,
`model.arch` and `model.pretrained` may name a file only when it lies inside the entry folder
(symlinks resolved), an architecture file must pass the config gate, and a dataset must be a
registered name (an `imagefolder:PATH` would make the re-checker read any folder). Everything
else the re-check loads comes from the re-checker's own command line (`--checkpoint`,
`--data-root`). Nothing executable is taken from an entry: the gate refuses configs that name
tokenizer folders, remote code or downloads, and checkpoints are read as weights only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SubmissionError, ZSBenchError
from .entries import Entry, ResultsFile
from .paths import confined, is_inside
from .problems import Problem


def _looks_like_path(value: str) -> bool:
    if value.startswith("hf-hub:"):  # a hub id (its config is gated when it is loaded), not a path
        return False
    return "/" in value or "\\" in value or value.endswith(".json") or value.startswith((".", "~"))


def entry_file(entry_dir: Path, value: str, field: str) -> Path:
    """A file a results file names: relative to the entry (or cwd-relative/absolute) but inside the entry."""
    for candidate in (entry_dir / value, Path(value)):
        if is_inside(candidate, entry_dir) and candidate.is_file() and not candidate.is_symlink():
            return candidate.resolve()
    raise SubmissionError(
        f"{field} {value!r} is not a file inside the entry folder {entry_dir}",
        "a results file may only name files of its own entry; pass --checkpoint for yours",
    )


def shipped_root() -> Path:
    """Where checkpoints shipped with the package live (a card's `checkpoint.shipped` is relative to it)."""
    from importlib import resources

    return Path(str(resources.files("zsrobust_bench").joinpath("assets")))


def card_checkpoint(entry: Entry) -> tuple[str, Path] | None:
    """(card field, file) of the checkpoint a card names: `checkpoint.path` inside the entry, or
    `checkpoint.shipped` inside the package's assets; None when it names neither. Raises SubmissionError
    for a path that leaves its folder or is not a regular file."""
    ckpt = (entry.card or {}).get("checkpoint")
    if not isinstance(ckpt, dict):
        return None
    for field, root in (("path", entry.dir), ("shipped", None)):
        rel = ckpt.get(field)
        if rel is None:
            continue
        base = root if root is not None else shipped_root()
        where = "the entry folder" if root is not None else "the package's assets"
        target = confined(base, str(rel))
        if not target.is_file() or target.is_symlink():
            raise SubmissionError(f"checkpoint.{field} {rel!r} is not a file in {where}")
        return f"checkpoint.{field}", target
    return None


def recheck_spec(entry_dir: Path, spec: str) -> str | None:
    """The results file's model spec when the re-check may use it: a tag, a hub id, or a file in the entry."""
    if spec.startswith("hf-hub:") or (":" in spec and "/" not in spec.split(":", 1)[0]):
        return spec
    try:
        return str(entry_file(entry_dir, spec, "model.spec"))
    except SubmissionError:
        return None


def recheck_model_args(entry_dir: Path, model: dict[str, Any]) -> tuple[str | None, str | None]:
    """(arch, pretrained) for the re-check: plain names as recorded, files only from inside the entry.

    An architecture file is passed through the config gate here, before the re-check starts.
    """
    from ..models.arch import read_arch_file

    out: list[str | None] = []
    for key in ("arch", "pretrained"):
        value = model.get(key)
        if value is None:
            out.append(None)
        elif not isinstance(value, str):
            raise SubmissionError(f"model.{key} is a {type(value).__name__}, not a name or a path")
        elif _looks_like_path(value) or (entry_dir / value).is_file() or Path(value).exists():
            path = entry_file(entry_dir, value, f"model.{key}")
            if key == "arch":
                read_arch_file(path)
            out.append(str(path))
        else:
            out.append(value)
    return out[0], out[1]


def recheck_dataset(name: str) -> None:
    """A dataset the re-check may evaluate: a registered name, never a path."""
    if ":" in name or _looks_like_path(name):
        raise SubmissionError(
            f"dataset {name!r} names a path; the re-check reads only registered datasets from --data-root"
        )


def arch_file_problems(entry: Entry, rf: ResultsFile) -> list[Problem]:
    """validate: an architecture file a results file names lies inside the entry and passes the config gate."""
    from ..models.arch import read_arch_file

    value = (rf.doc.get("model") or {}).get("arch")
    if not isinstance(value, str) or not (_looks_like_path(value) or (entry.dir / value).is_file()):
        return []
    try:
        read_arch_file(entry_file(entry.dir, value, "model.arch"))
    except ZSBenchError as exc:
        return [Problem(rf.file, "model.arch", str(exc))]
    return []

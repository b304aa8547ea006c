"""Fetching the downloadable source kinds into the data root, and the same fetch as a command to run by hand.

``zsbench datasets prepare`` calls a kind's download when the machine is online and prints its steps
when it is not; readers/kinds.py registers both with the kind.
"""

from __future__ import annotations

from pathlib import Path

from .spec import DatasetSpec, Source


def _hf_split_dir(spec: DatasetSpec, source: Source) -> str:
    return source.options.get("split_dirs", {}).get(spec.eval_split, spec.eval_split)


def _torchvision_kwargs(spec: DatasetSpec, source: Source) -> dict:
    splits = source.options.get("splits", {})
    return splits.get(spec.eval_split, splits.get("all", {}))


def download_hf(spec: DatasetSpec, source: Source, target: Path) -> None:
    """The eval split's shards (plus class names and templates) of an HF hub dataset repo, beside `target`."""
    from huggingface_hub import snapshot_download

    snapshot_download(
        repo_id=source.ref,
        repo_type="dataset",
        local_dir=str(target.parent),
        allow_patterns=[
            f"{_hf_split_dir(spec, source)}/*",
            "classnames.txt",
            "zeroshot_classification_templates.txt",
            "dataset_type.txt",
        ],
    )


def download_torchvision(spec: DatasetSpec, source: Source, target: Path) -> None:
    """The eval split of a ``torchvision.datasets`` class, downloaded by the class itself into `target`."""
    import torchvision.datasets

    getattr(torchvision.datasets, source.ref)(
        root=str(target), download=True, **_torchvision_kwargs(spec, source)
    )


def hf_steps(spec: DatasetSpec, source: Source, target: Path) -> str:
    """The ``hf download`` command that does what download_hf does."""
    return (
        f"hf download {source.ref} --repo-type dataset --include '{_hf_split_dir(spec, source)}/*' "
        f"--include classnames.txt --local-dir {target.parent}"
    )


def torchvision_steps(spec: DatasetSpec, source: Source, target: Path) -> str:
    """The python one-liner that does what download_torchvision does, plus the source's instructions."""
    args = "".join(f", {k}={v!r}" for k, v in _torchvision_kwargs(spec, source).items())
    step = f"python -c \"import torchvision; torchvision.datasets.{source.ref}(root='{target}', download=True{args})\""
    if source.instructions:
        step += f" (or by hand: {source.instructions.format(dir=target.parent, path=target)})"
    return step

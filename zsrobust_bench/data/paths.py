"""Where datasets live on disk.

The data root is chosen, first match wins, from:

1. ``--data-root PATH`` on the command line (or the ``data_root`` argument of a library call),
2. the ``ZSBENCH_DATA`` environment variable,
3. ``~/.cache/zsbench/data``.

Each dataset keeps its files in ``<data root>/<dataset name>/`` (for example
``~/.cache/zsbench/data/cifar10/``); ``zsbench datasets list`` shows which are present and
``zsbench datasets prepare NAME`` fetches one.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ZSBENCH_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/zsbench/data")
DATA_ROOT_HELP = (
    f"directory that holds the datasets, one sub-folder per dataset "
    f"(default: ${ENV_VAR}, else {DEFAULT_DATA_ROOT})"
)


def resolve_data_root(cli_value: str | os.PathLike[str] | None) -> Path:
    """The data root: the command-line value, else $ZSBENCH_DATA, else ~/.cache/zsbench/data (not created)."""
    if cli_value is not None and str(cli_value) != "":
        return Path(cli_value).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_ROOT.expanduser()


def dataset_dir(data_root: Path, name: str) -> Path:
    """The folder that holds one dataset's files under the data root."""
    return Path(data_root) / name

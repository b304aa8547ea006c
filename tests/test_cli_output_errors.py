"""Issue 14: a read-only output folder or a full disk ends in one line and exit 2, not a traceback, and
leaves no half-written results (writes are atomic). Root ignores permission bits, so the refusal of the
file system is injected where every output file is created (fileio's temporary file)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from zsrobust_bench import fileio
from zsrobust_bench.cli import main


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_unwritable_output_is_one_line_exit_2(
    tmp_path: Path,
    demo_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    code: int,
) -> None:
    def refuse(*args: object, dir: str | None = None, **kw: object) -> tuple[int, str]:
        raise OSError(code, os.strerror(code), dir)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    out = tmp_path / "out"
    argv = [str(demo_model), "--protocol", "clean", "--datasets", "synth-shape", "--samples", "8"]
    rc = main(["evaluate", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert (
        len(err) == 2 and err[0].startswith("zsbench: error: cannot write ") and os.strerror(code) in err[0]
    )
    assert err[1].startswith("zsbench: hint: ")
    assert not (out / "results.json").exists()

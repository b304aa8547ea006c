"""A real `zsbench evaluate` run (tiny random CLIP, synthetic suite) through submit, validate, --recheck, build."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsrobust_bench.leaderboard import build_leaderboard, submit, validate_submissions
from zsrobust_bench.leaderboard.problems import errors
from zsrobust_bench.leaderboard.recheck import recheck_submissions

pytestmark = pytest.mark.slow  # about 1-2 minutes on two CPU cores


def test_real_run_end_to_end(tmp_path: Path, tiny_model, tiny_cfg_path: Path) -> None:
    from safetensors.torch import save_file

    from zsrobust_bench.evaluate import evaluate

    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(ckpt))
    run, subs = tmp_path / "run", tmp_path / "submissions"
    evaluate(str(ckpt), None, protocol="synthetic-pgd", out=run, arch=str(tiny_cfg_path), progress=False)
    report = submit(run, "tiny-random", subs)
    assert report.card_created and not errors(report.problems), report.problems
    problems = recheck_submissions(subs, 6, seed=1, checkpoint=ckpt)
    assert not errors(problems) and any("all match" in p.message for p in problems), problems
    files = {p.name for p in build_leaderboard(subs, tmp_path / "lb")}
    assert "synthetic-pgd.md" in files
    assert "synthetic suite" in (tmp_path / "lb" / "synthetic-pgd.md").read_text()
    assert not errors(validate_submissions(subs))

"""Exports are byte-reproducible: the safetensors writer orders metadata keys per process, so the
project rewrites the header with sorted keys; the same export in separate processes gives one hash."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load, save

from zsrobust_bench.models.native import canonical_safetensors

_EXPORT = """
import hashlib, sys, torch
from safetensors.torch import save
from zsrobust_bench.models.native import canonical_safetensors, save_native
g = torch.Generator().manual_seed(0)
state = {"visual.proj": torch.randn(8, 4, generator=g), "logit_scale": torch.tensor(4.6)}
meta = {f"key{i}": str(i) for i in range(8)}
blob = canonical_safetensors(save(state, metadata=meta))
path = sys.argv[1]
save_native(path, state, arch="x", arch_config={"b": 1, "a": 2}, kind="full",
            extra={"train_step": 3, "method": "fare"}, dtype=torch.float16)
print(hashlib.sha256(blob).hexdigest(), hashlib.sha256(open(path, "rb").read()).hexdigest())
"""


def _header(blob: bytes) -> tuple[int, bytes]:
    n = int.from_bytes(blob[:8], "little")
    return n, blob[8 : 8 + n]


def test_canonical_header_sorts_metadata_and_keeps_the_rest() -> None:
    state = {"b": torch.arange(6.0).view(2, 3), "a": torch.ones(2, dtype=torch.float16)}
    blob = save(state, metadata={"zeta": "1", "alpha": "2", "mid": "3"})
    n, raw = _header(blob)
    header = json.loads(raw)
    meta = header.pop("__metadata__")
    # The same file with the metadata written in reverse order, as another process may write it.
    rev = {"__metadata__": dict(sorted(meta.items(), reverse=True)), **header}
    text = json.dumps(rev, separators=(",", ":")).encode()
    shuffled = blob[:8] + text.ljust(n, b" ") + blob[8 + n :]
    a, b = canonical_safetensors(shuffled), canonical_safetensors(blob)
    assert a == b and len(a) == len(blob)
    assert list(json.loads(_header(a)[1])["__metadata__"]) == ["alpha", "mid", "zeta"]
    back = load(a)
    assert all(torch.equal(back[k], v) for k, v in state.items())
    assert canonical_safetensors(a) == a


def test_exports_in_separate_processes_are_byte_identical(tmp_path: Path) -> None:
    hashes = set()
    for i in range(2):
        res = subprocess.run(
            [sys.executable, "-c", _EXPORT, str(tmp_path / f"e{i}.safetensors")],
            capture_output=True,
            text=True,
            timeout=300,
            env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(Path(__file__).parents[1])},
        )
        assert res.returncode == 0, res.stderr[-2000:]
        hashes.add(res.stdout.strip())
    assert len(hashes) == 1, hashes
    files = {hashlib.sha256((tmp_path / f"e{i}.safetensors").read_bytes()).hexdigest() for i in range(2)}
    assert len(files) == 1

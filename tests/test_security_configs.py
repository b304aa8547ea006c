"""Model configs as an attack surface (issues #13 and #14): the remote-code tokenizer payload through a
submission and through a hub repository, and checkpoint metadata that used to reach the network,
memory or the file system before any refusal. Every case must end in one ZSBenchError line naming
the key, with no marker file, no connection attempt and no large allocation."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from leaderboard_support import make_run, register_test_protocols
from safetensors.torch import save as st_save
from security_payloads import (
    TINY,
    evil_tokenizer_dir,
    hub_snapshot,
    install_network_guard,
    tiny,
)

from zsrobust_bench.cli import main
from zsrobust_bench.errors import ConfigError, ZSBenchError
from zsrobust_bench.leaderboard import submit_run
from zsrobust_bench.leaderboard.problems import errors
from zsrobust_bench.leaderboard.recheck import recheck_submissions
from zsrobust_bench.models import load_model
from zsrobust_bench.models.config_gate import (
    MAX_CONTEXT,
    build_tokenizer,
    gate_builtin,
    gate_config,
    known_tokenizers,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_GROWTH_MIB = 256


@pytest.fixture(scope="module")
def tiny_bytes() -> bytes:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY)
    return st_save({k: v.contiguous() for k, v in model.state_dict().items()})


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Connection attempts raise (and are recorded) for the duration of the test."""
    return install_network_guard(monkeypatch)


@pytest.fixture
def alarm() -> Iterator[None]:
    """A hang (a FIFO opened for reading) fails the test after 30 s instead of blocking the suite."""

    def fail(*_: object) -> None:
        raise TimeoutError("blocked: something opened a FIFO or read forever")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- #13 (a): a submission's arch.json


def _evil_entry(tmp_path: Path, tiny_bytes: bytes, arch: dict) -> tuple[Path, Path, Path]:
    """(run, entry, marker): a submitted entry whose results point the re-check at its own arch.json + tok/."""
    run = make_run(tmp_path, checkpoint=tiny_bytes)
    subs = Path("submissions")
    submit_run(run, "evil-entry", subs)
    entry, marker = subs / "evil-entry", tmp_path / "MARKER"
    evil_tokenizer_dir(entry / "tok", marker)
    (entry / "arch.json").write_text(json.dumps(arch))
    results = entry / "results" / "stub-pgd.json"
    doc = json.loads(results.read_text())
    doc["model"]["arch"] = "submissions/evil-entry/arch.json"
    results.write_text(json.dumps(doc, indent=2))
    return run, entry, marker


@pytest.mark.parametrize(
    ("text_cfg", "key"),
    [
        (
            {
                "hf_tokenizer_name": "submissions/evil-entry/tok",
                "tokenizer_kwargs": {"trust_remote_code": True},
            },
            "text_cfg.tokenizer_kwargs.trust_remote_code",
        ),
        ({"hf_tokenizer_name": "submissions/evil-entry/tok"}, "text_cfg.hf_tokenizer_name"),
    ],
    ids=["trust-remote-code", "tokenizer-folder"],
)
def test_submission_tokenizer_payload_is_refused_by_validate_and_recheck(
    tmp_path, tiny_bytes, monkeypatch, capsys, no_network, text_cfg, key
):
    monkeypatch.chdir(tmp_path)
    register_test_protocols(monkeypatch)
    run, entry, marker = _evil_entry(tmp_path, tiny_bytes, tiny(**text_cfg))
    argv = ["leaderboard", "validate", "--recheck", "4", "--checkpoint", str(run / "model.safetensors")]
    assert main([*argv, str(entry)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if key in ln]
    # validate names it, and the re-check refuses it (once per dataset) before evaluating anything
    assert sum("recheck refused" in ln for ln in lines) == 2 and len(lines) == 3, err
    assert all("arch.json" in ln for ln in lines)
    assert not marker.exists() and not no_network


def test_loader_refuses_the_payload_even_with_the_custom_tokenizer_flag(tmp_path, tiny_bytes, no_network):
    marker = tmp_path / "MARKER"
    tok = evil_tokenizer_dir(tmp_path / "tok", marker)
    ckpt = tmp_path / "tiny.safetensors"
    ckpt.write_bytes(tiny_bytes)
    hostile = tmp_path / "hostile.json"
    hostile.write_text(
        json.dumps(tiny(hf_tokenizer_name=str(tok), tokenizer_kwargs={"trust_remote_code": True}))
    )
    for flag in (False, True):  # trust_remote_code is never allowed, whatever the user says
        with pytest.raises(
            ConfigError, match=r"hostile\.json: text_cfg\.tokenizer_kwargs\.trust_remote_code"
        ):
            load_model(str(ckpt), arch=str(hostile), allow_custom_tokenizer=flag)
    folder = tmp_path / "folder.json"
    folder.write_text(json.dumps(tiny(hf_tokenizer_name=str(tok))))
    with pytest.raises(
        ConfigError, match=r"folder\.json: text_cfg\.hf_tokenizer_name .* not one of open_clip"
    ):
        load_model(str(ckpt), arch=str(folder))
    # with the user's explicit flag the folder is admitted, but loaded without remote code: still no marker
    with pytest.raises(ZSBenchError, match="text_cfg.hf_tokenizer_name"):
        load_model(str(ckpt), arch=str(folder), allow_custom_tokenizer=True)
    assert not marker.exists() and not no_network


def test_results_file_cannot_point_the_recheck_outside_the_entry(tmp_path, tiny_bytes, monkeypatch):
    monkeypatch.chdir(tmp_path)
    register_test_protocols(monkeypatch)
    run, entry, _ = _evil_entry(tmp_path, tiny_bytes, TINY)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(TINY))
    calls: list[tuple] = []

    def record(*args: object, **kwargs: object) -> dict:
        calls.append((args, kwargs))
        raise AssertionError("the re-check must not start")

    results = entry / "results" / "stub-pgd.json"
    doc = json.loads(results.read_text())
    ckpt = str(run / "model.safetensors")
    for field, value in (("arch", str(outside)), ("arch", "../../outside.json"), ("pretrained", ckpt)):
        doc["model"] = {**doc["model"], "arch": "ViT-B-32", "pretrained": "openai", field: value}
        results.write_text(json.dumps(doc, indent=2))
        bad = errors(recheck_submissions(entry, 3, checkpoint=Path(ckpt), evaluate=record))
        assert bad and all(f"model.{field}" in p.message and "inside the entry" in p.message for p in bad), (
            bad
        )
    # the results file's own spec (a path on the submitter's machine) is never used
    doc["model"] = {**doc["model"], "arch": "ViT-B-32", "pretrained": "openai", "spec": ckpt}
    results.write_text(json.dumps(doc, indent=2))
    problems = recheck_submissions(entry, 3, evaluate=record)
    assert any("not present in the entry" in p.message for p in problems) and not calls


# ---------------------------------------------------------------- #13 (b): a hub repository


def _hub_files(model_cfg: dict, weights: bytes, marker: Path) -> dict[str, bytes]:
    doc = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    return {
        "open_clip_config.json": json.dumps(doc).encode(),
        "open_clip_model.safetensors": weights,
        "tokenizer_config.json": json.dumps(
            {"auto_map": {"AutoTokenizer": ["evil_tok.EvilTokenizer", None]}}
        ).encode(),
        "evil_tok.py": f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n".encode(),
    }


def test_hub_payload_is_refused_by_zsbench_evaluate(tmp_path, tiny_bytes):
    """The exact reproduction: `zsbench evaluate hf-hub:org/name` from a local hub cache, HF_HUB_OFFLINE=1."""
    marker = tmp_path / "MARKER"
    cfg = tiny(hf_tokenizer_name="org/name", tokenizer_kwargs={"trust_remote_code": True})
    hub_snapshot(tmp_path / "hf" / "hub", "org/name", _hub_files(cfg, tiny_bytes, marker))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_HUB_CACHE", None)
    argv = [sys.executable, "-m", "zsrobust_bench.cli", "evaluate", "hf-hub:org/name"]
    argv += ["--protocol", "synthetic-pgd", "--out", str(tmp_path / "out"), "--device", "cpu"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("zsbench: error: hf-hub:org/name open_clip_config.json: ")
    assert "text_cfg.tokenizer_kwargs.trust_remote_code is never allowed" in first
    assert "Traceback" not in done.stderr and not marker.exists()


def test_hub_tokenizer_named_by_the_repository_is_refused(tmp_path, tiny_bytes, monkeypatch, no_network):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    marker = tmp_path / "MARKER"
    hub_snapshot(
        tmp_path / "hub", "org/name", _hub_files(tiny(hf_tokenizer_name="org/name"), tiny_bytes, marker)
    )
    with pytest.raises(
        ConfigError, match=r"hf-hub:org/name open_clip_config\.json: text_cfg\.hf_tokenizer_name"
    ):
        load_model("hf-hub:org/name")
    assert not marker.exists() and not no_network


def test_clean_hub_repository_loads_through_the_gate(tmp_path, tiny_bytes, monkeypatch, no_network):
    """Control: a repository with a plain config loads, weights read by safe_load, preprocessing applied."""
    import huggingface_hub.constants
    from open_clip.tokenizer import SimpleTokenizer
    from safetensors.torch import load as st_load

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_snapshot(tmp_path / "hub", "org/clean", _hub_files(TINY, tiny_bytes, tmp_path / "MARKER"))
    lm = load_model("hf-hub:org/clean")
    want = st_load(tiny_bytes)
    got = lm.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())
    assert isinstance(lm.tokenizer, SimpleTokenizer) and lm.mean == (0.5, 0.5, 0.5) and lm.std == (0.25,) * 3
    assert lm.info["sha256"] and lm.info["format"] == "hf-hub" and not no_network


# ---------------------------------------------------------------- #14: checkpoint metadata


def _native(tmp_path: Path, name: str, state: dict, info: dict) -> Path:
    meta = {"zsbench_format": "1", "zsbench_model": json.dumps(info)}
    path = tmp_path / name
    path.write_bytes(st_save({k: v.contiguous() for k, v in state.items()}, metadata=meta))
    return path


def _tiny_state(tiny_bytes: bytes) -> dict:
    from safetensors.torch import load as st_load

    return dict(st_load(tiny_bytes))


METADATA_CASES = {
    # name: (zsbench_model info, the words the one-line refusal must contain)
    "siglip-name": ({"arch": "my-siglip", "arch_config": TINY, "kind": "full"}, "contains 'siglip'"),
    "roberta-builtin": ({"arch": "roberta-ViT-B-32", "kind": "full"}, "text_cfg.hf_model_name"),
    "timm-hub": (
        {
            "arch": "x",
            "arch_config": {**TINY, "vision_cfg": {"timm_model_name": "hf-hub:evil/x", "image_size": 32}},
        },
        "vision_cfg.timm_model_name",
    ),
    "vit-l-14-tiny-file": ({"arch": "ViT-L-14", "kind": "full"}, "does not fit the architecture"),
    "vit-bigg-14-tiny-file": ({"arch": "ViT-bigG-14", "kind": "full"}, "does not fit the architecture"),
    "context-30000": ({"arch": "x", "arch_config": tiny(context_length=30000)}, "text_cfg.context_length"),
    "context-70000": ({"arch": "x", "arch_config": tiny(context_length=70000)}, "text_cfg.context_length"),
    "bpe-path-passwd": (
        {"arch": "x", "arch_config": tiny(tokenizer_kwargs={"bpe_path": "/etc/passwd"})},
        "text_cfg.tokenizer_kwargs.bpe_path is not an allowed key",
    ),
    "bpe-path-fifo": (
        {"arch": "x", "arch_config": tiny(tokenizer_kwargs={"bpe_path": "FIFO"})},
        "text_cfg.tokenizer_kwargs.bpe_path is not an allowed key",
    ),
}


@pytest.mark.parametrize("case", sorted(METADATA_CASES))
def test_checkpoint_metadata_is_refused_before_network_memory_or_files(
    tmp_path, tiny_bytes, no_network, alarm, case
):
    info, words = METADATA_CASES[case]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    info = json.loads(json.dumps(info).replace('"FIFO"', json.dumps(str(fifo))))
    path = _native(tmp_path, f"{case}.safetensors", _tiny_state(tiny_bytes), {"kind": "full", **info})
    before = _peak_mib()
    with pytest.raises(ZSBenchError) as err:
        load_model(str(path))
    grown = _peak_mib() - before
    text = str(err.value)
    assert words in text and path.name in text and "\n" not in text, text
    assert "root:" not in text and not no_network
    assert grown < MAX_GROWTH_MIB, f"{case}: refusal grew the peak by {grown:.0f} MiB"


@pytest.mark.parametrize("depth", [100_000, 20_000])
def test_deeply_nested_metadata_is_one_line(tmp_path, tiny_bytes, depth, no_network):
    path = tmp_path / "deep.safetensors"
    meta = {"zsbench_format": "1", "zsbench_model": "[" * depth + "]" * depth}
    path.write_bytes(st_save(_tiny_state(tiny_bytes), metadata=meta))
    with pytest.raises(ZSBenchError, match="zsbench checkpoint metadata zsbench_model: JSON") as err:
        load_model(str(path))
    assert "\n" not in str(err.value)
    deep_arch = tmp_path / "deep.json"
    deep_arch.write_text("[" * depth + "]" * depth)
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(tiny_bytes)
    with pytest.raises(ZSBenchError, match=r"deep\.json: JSON"):
        load_model(str(plain), arch=str(deep_arch))


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_checkpoint_path_that_is_not_a_regular_file_is_refused_before_reading(tmp_path, kind, alarm):
    path = {"dev-zero": Path("/dev/zero"), "fifo": tmp_path / "ckpt", "directory": tmp_path / "dir.pt"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(ZSBenchError, match="not a regular file") as err:
        load_model(str(path))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the gate itself


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            {"text_cfg": {**TINY["text_cfg"], "tokenizer_kwargs": {"additional_special_tokens": ["x"]}}},
            "tokenizer_kwargs",
        ),
        (
            {
                "vision_cfg": {
                    **TINY["vision_cfg"],
                    "timm_model_name": "convnext_tiny",
                    "timm_model_pretrained": True,
                }
            },
            "timm_model_pretrained",
        ),
        ({"vision_cfg": {**TINY["vision_cfg"], "timm_model_name": "local-dir:/tmp"}}, "timm_model_name"),
        ({"vision_cfg": {**TINY["vision_cfg"], "norm_kwargs": {"device": "cuda"}}}, "norm_kwargs.device"),
        ({"text_cfg": {**TINY["text_cfg"], "context_length": MAX_CONTEXT + 1}}, "context_length"),
        ({"vision_cfg": {**TINY["vision_cfg"], "image_size": 1024, "patch_size": 1}}, "image tokens"),
        ({"multimodal_cfg": {"width": 64}}, "multimodal_cfg is not an allowed key"),
        ({"vision_cfg": {**TINY["vision_cfg"], "width": 8192, "layers": 64}}, "GiB"),
        ({"text_cfg": {**TINY["text_cfg"], "heads": 3}}, "does not build"),
    ],
    ids=[
        "tokenizer-kwarg",
        "timm-pretrained",
        "timm-local-dir",
        "norm-kwarg",
        "context",
        "tokens",
        "coca",
        "size",
        "heads",
    ],
)
def test_gate_names_the_refused_key(change, key):
    with pytest.raises(ConfigError, match="origin-x: ") as err:
        gate_config({**TINY, **change}, "origin-x")
    assert key in str(err.value) and "\n" not in str(err.value)


def test_gate_admits_what_open_clip_ships_for_clip_models():
    cfg = gate_builtin("ViT-B-32", "test")
    assert cfg["vision_cfg"]["patch_size"] == 32
    with pytest.raises(ConfigError, match="text_cfg.hf_model_name"):
        gate_builtin("roberta-ViT-B-32", "test")
    with pytest.raises(ConfigError, match="not an open_clip built-in"):
        gate_builtin("../ViT-B-32", "test")
    assert "timm/ViT-B-16-SigLIP" in known_tokenizers()
    allowed = tiny(tokenizer_kwargs={"clean": "canonicalize"})
    tok = build_tokenizer(gate_config(allowed, "test"), "test")
    assert tok.context_length == 77 and tok("a photo of a cat").shape == (1, 77)


def test_training_recipe_arch_config_passes_the_gate(tmp_path):
    from zsrobust_bench.train.modules import load_base

    hostile = tiny(tokenizer_kwargs={"bpe_path": "/etc/passwd"})
    with pytest.raises(
        ConfigError, match="training recipe model.arch_config: text_cfg.tokenizer_kwargs.bpe_path"
    ):
        load_base({"arch": "x", "arch_config": hostile, "pretrained": None}, seed=0)
    with pytest.raises(ConfigError, match="contains 'siglip'"):
        load_base({"arch": "tiny-siglip", "arch_config": TINY, "pretrained": None}, seed=0)


# ---------------------------------------------------------------- code that would bypass the gate

BYPASSES = {"get_tokenizer", "load_dataset", "from_pretrained", "get_model_config_from_hf", "HFTokenizer"}


def test_no_code_path_reaches_tokenizers_datasets_or_hub_code_around_the_gate():
    """Only config_gate builds tokenizers (never by name); no dataset scripts; remote code is never on."""
    import ast

    found = []
    for path in sorted((REPO_ROOT / "zsrobust_bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            where = f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
            if name in BYPASSES and path.name != "config_gate.py":
                found.append(f"{where} calls {name}")
            for kw in node.keywords:
                if kw.arg == "trust_remote_code" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{where} passes trust_remote_code={ast.unparse(kw.value)}")
    assert not found, found


@pytest.mark.slow  # builds all of open_clip's shipped configs on the meta device: about a minute
def test_gate_over_every_open_clip_builtin(capsys):
    """How many of open_clip's shipped configs the gate admits, and why the others are refused."""
    from zsrobust_bench.models.config_gate import builtin_names

    reasons: dict[str, list[str]] = {}
    for name in builtin_names():
        try:
            gate_builtin(name, "builtin")
            reasons.setdefault("admitted", []).append(name)
        except ConfigError as exc:
            why = next(k for k in ("hf_model_name", "multimodal_cfg", "GiB", "") if k in exc.message)
            reasons.setdefault(why or "other", []).append(name)
    with capsys.disabled():
        counts = ", ".join(f"{k} {len(v)}" for k, v in sorted(reasons.items()))
        print(f"\n[gate] open_clip {len(builtin_names())} built-in configs: {counts}")
    assert {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-bigG-14", "RN50"} <= set(reasons["admitted"])
    assert "roberta-ViT-B-32" in reasons["hf_model_name"] and "coca_ViT-B-32" in reasons["multimodal_cfg"]
    assert "other" not in reasons, reasons.get("other")


def test_recheck_model_args_keep_names_and_hub_ids_but_confine_paths(tmp_path, monkeypatch):
    from zsrobust_bench.errors import SubmissionError
    from zsrobust_bench.leaderboard.recheck_inputs import recheck_dataset, recheck_model_args

    monkeypatch.chdir(tmp_path)
    entry = tmp_path / "submissions" / "e"
    entry.mkdir(parents=True)
    (entry / "arch.json").write_text(json.dumps(TINY))
    (tmp_path / "cwd-file").write_text("x")
    assert recheck_model_args(entry, {"arch": "ViT-B-32", "pretrained": "openai"}) == ("ViT-B-32", "openai")
    hub = {"arch": "hf-hub:org/name", "pretrained": "hf-hub:org/name"}
    assert recheck_model_args(entry, hub) == ("hf-hub:org/name", "hf-hub:org/name")
    inside = str((entry / "arch.json").resolve())
    for value in ("arch.json", "submissions/e/arch.json", inside):
        assert recheck_model_args(entry, {"arch": value}) == (inside, None)
    for value in ("cwd-file", "../../cwd-file", "/etc/passwd"):
        with pytest.raises(SubmissionError, match="not a file inside the entry folder"):
            recheck_model_args(entry, {"arch": "ViT-B-32", "pretrained": value})
    for name in ("imagefolder:/etc", "../x", "a/b"):
        with pytest.raises(SubmissionError, match="names a path"):
            recheck_dataset(name)
    recheck_dataset("cifar10")

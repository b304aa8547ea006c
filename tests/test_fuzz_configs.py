"""Fuzz the config gate with generated open_clip configs carrying hostile keys and values (remote
code, tokenizer paths and hub ids, FIFOs, downloads, huge sizes, odd types). Every case must be
accepted as a config with only allowlisted keys and a bounded model, or end in a one-line
ConfigError; nothing else may escape, no socket may be opened and no marker file may appear."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from fuzzing import Tally, run_bounded
from hypothesis import given
from hypothesis import strategies as st
from security_payloads import TINY, evil_tokenizer_dir, install_network_guard

from zsrobust_bench.errors import ConfigError
from zsrobust_bench.models.config_gate import (
    MAX_MODEL_BYTES,
    TOP_FIELDS,
    Nested,
    build_tokenizer,
    gate_config,
    model_bytes,
)

EXAMPLES = int(os.environ.get("ZSBENCH_FUZZ_CONFIG_EXAMPLES", "40"))
PLACES = (
    "",
    "vision_cfg",
    "text_cfg",
    "text_cfg.tokenizer_kwargs",
    "vision_cfg.norm_kwargs",
    "text_cfg.act_kwargs",
)
HOSTILE_KEYS = (
    "trust_remote_code",
    "bpe_path",
    "hf_tokenizer_name",
    "hf_model_name",
    "hf_model_pretrained",
    "timm_model_name",
    "timm_model_pretrained",
    "tokenizer_kwargs",
    "tokenizer_mode",
    "auto_map",
    "cache_dir",
    "pretrained",
    "revision",
    "multimodal_cfg",
    "additional_special_tokens",
    "clean",
    "custom_text",
    "context_length",
    "vocab_size",
    "width",
    "layers",
    "heads",
    "image_size",
    "patch_size",
    "mlp_ratio",
    "pos_embed_type",
    "eps",
    "device",
    "a\nb",
    "../x",
)


BENIGN = st.one_of(  # allowlisted keys with values open_clip's own configs use
    st.tuples(st.just("text_cfg"), st.just("context_length"), st.integers(8, 77)),
    st.tuples(
        st.just("text_cfg.tokenizer_kwargs"), st.just("clean"), st.sampled_from(["lower", "canonicalize"])
    ),
    st.tuples(st.just("text_cfg"), st.just("hf_tokenizer_name"), st.just("timm/ViT-B-16-SigLIP")),
    st.tuples(st.just("vision_cfg"), st.just("pos_embed_type"), st.just("sin_cos_2d")),
    st.tuples(st.just("vision_cfg.norm_kwargs"), st.just("eps"), st.just(1e-6)),
    st.tuples(st.just(""), st.just("quick_gelu"), st.booleans()),
    st.tuples(st.just("text_cfg"), st.just("pool_type"), st.sampled_from(["argmax", "last"])),
)


def _values(tok_dir: Path, fifo: Path) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.sampled_from(
            [
                "/etc/passwd",
                str(fifo),
                str(tok_dir),
                "hf-hub:evil/x",
                "local-dir:/tmp",
                "org/name",
                "timm/ViT-B-16-SigLIP",
                "convnext_tiny",
                "canonicalize",
                "sin_cos_2d",
                "",
            ]
        ),
        st.sampled_from([-5, 0, 1, 2, 8, 64, 77, 30000, 70000, 10**6, 10**12]),
        st.sampled_from([0.5, 4.0, float("nan"), float("inf"), 1e308, -1.0]),
        st.booleans(),
        st.none(),
        st.text(max_size=8),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(HOSTILE_KEYS), inner, max_size=3)
        ),
        max_leaves=6,
    )


def _place(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    node = cfg
    for part in [p for p in where.split(".") if p]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    return node


def _allowlisted(cfg: dict[str, Any], fields: dict[str, Any]) -> bool:
    for key, value in cfg.items():
        rule = fields.get(key)
        if rule is None:
            return False
        if isinstance(rule, Nested) and isinstance(value, dict) and not _allowlisted(value, rule.fields):
            return False
    return True


def _target(tmp: Path, tally: Tally):
    marker = tmp / "MARKER"
    tok_dir = evil_tokenizer_dir(tmp / "tok", marker)
    fifo = tmp / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    key = st.one_of(st.sampled_from(HOSTILE_KEYS), st.text(max_size=10))

    hostile = st.tuples(st.sampled_from(PLACES), key, _values(tok_dir, fifo))

    @given(st.lists(st.one_of(BENIGN, hostile), min_size=1, max_size=4))
    def fuzz(changes: list[tuple[str, str, Any]]) -> None:
        cfg = copy.deepcopy(TINY)
        for where, k, v in changes:
            _place(cfg, where)[k] = v
        try:
            clean = gate_config(cfg, "fuzz")
        except ConfigError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("fuzz: ")
            tally.add("refused")
            return
        assert _allowlisted(clean, TOP_FIELDS) and "trust_remote_code" not in repr(clean)
        assert model_bytes(clean) <= MAX_MODEL_BYTES
        if not clean["text_cfg"].get("hf_tokenizer_name"):  # hub tokenizers need the network: not built here
            tok = build_tokenizer(clean, "fuzz")
            assert tok("a photo").shape[-1] == clean["text_cfg"].get("context_length", 77)
        assert not marker.exists()
        tally.add("accepted")

    return fuzz


def _run(tmp_path: Path, say, monkeypatch: pytest.MonkeyPatch, slow: bool) -> None:
    attempts = install_network_guard(monkeypatch)
    tally = Tally("hostile model configs through the config gate", markers=(tmp_path / "MARKER",))
    run_bounded(lambda: _target(tmp_path, tally), tally, slow, say, EXAMPLES)
    assert tally.cases > 0 and not attempts and not (tmp_path / "MARKER").exists()


def test_fuzz_config_gate(tmp_path, say, monkeypatch):
    _run(tmp_path, say, monkeypatch, False)


@pytest.mark.slow
def test_fuzz_config_gate_slow(tmp_path, say, monkeypatch):
    _run(tmp_path, say, monkeypatch, True)

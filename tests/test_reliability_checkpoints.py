"""Untrusted checkpoints: code, memory bombs, lies about sizes, damage and odd dtypes all end in a
clear CheckpointError; nothing in the file runs and nothing is allocated beyond what the file holds."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from reliability_craft import (
    Reduce,
    build_zip,
    evil_archive,
    evil_payloads,
    legacy_bytes,
    members,
    one_torch_thread,  # noqa: F401 - autouse fixture
    pickle_of,
    safetensors_bytes,
    torch_bytes,
    with_pickle,
)
from safetensors.torch import save as st_save

from zsrobust_bench.errors import CheckpointError, ZSBenchError
from zsrobust_bench.models import load_model
from zsrobust_bench.models.safe_load import check_contents, read_checkpoint

SMALL = {"a.weight": torch.randn(4, 3), "a.bias": torch.zeros(4), "n": torch.tensor(7)}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _refused(path: Path, match: str | None = None) -> str:
    with pytest.raises(CheckpointError, match=match) as err:
        read_checkpoint(path)
    return str(err.value)


@pytest.fixture()
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if torch.load is reached: the refusal must come from the static checks."""

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("torch.load was called on a file the static checks should refuse")

    monkeypatch.setattr(torch, "load", boom)


# ---------------------------------------------------------------- code execution


def test_payloads_are_live_when_unpickled_unsafely(tmp_path):
    """Control: every payload really creates its marker under plain pickle.loads."""
    for i, (name, payload) in enumerate(evil_payloads(str(tmp_path / "live-{}")).items()):
        marker = tmp_path / f"live-{i}"
        payload = evil_payloads(str(marker))[name]
        pickle.loads(payload)  # noqa: S301 - the control case, on our own payload
        assert marker.exists(), name


@pytest.mark.parametrize("container", ["torch-zip", "legacy", "bare-pickle"])
def test_code_payloads_never_run(tmp_path, container, tiny_cfg_path):
    marker = tmp_path / "PWNED"
    base = torch_bytes(SMALL)
    for name, payload in evil_payloads(str(marker)).items():
        if container == "torch-zip":
            data = evil_archive(base, payload)
        elif container == "legacy":
            data = legacy_bytes({"w": Reduce(__import__("os").system, f"touch {marker}")})
        else:
            data = payload
        path = _write(tmp_path, "evil.pt", data)
        msg = _refused(path)
        assert "nothing in it was executed" in msg, (name, msg)
        with pytest.raises(CheckpointError):
            load_model(str(path), arch=str(tiny_cfg_path))
        assert not marker.exists(), f"{container}/{name} executed code"


def test_memory_bomb_bytearray_is_refused_statically(tmp_path, no_torch_load):
    payload = pickle.dumps({"w": Reduce(bytearray, 1 << 40)}, protocol=2)
    path = _write(tmp_path, "bomb.pt", evil_archive(torch_bytes(SMALL), payload))
    assert "builtins.bytearray" in _refused(path, "allocate any amount of memory")


@pytest.mark.parametrize(
    "global_name",
    [
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch.Tensor",
        "torch._tensor._rebuild_from_type_v2",
        "collections.Counter",
        "torch.ComplexFloatStorage",
    ],
)
def test_globals_torch_allows_but_weights_never_need_are_refused(tmp_path, global_name, no_torch_load):
    module, name = global_name.rsplit(".", 1)
    pkl = b"\x80\x02}X\x01\x00\x00\x00wc" + f"{module}\n{name}\n".encode() + b")Rs."
    path = _write(tmp_path, "odd.pt", evil_archive(torch_bytes(SMALL), pkl))
    assert global_name in _refused(path)


# ---------------------------------------------------------------- memory and declared sizes


def test_declared_storage_larger_than_its_member_is_refused(tmp_path, no_torch_load):
    data = torch_bytes({"w": torch.zeros(2)})
    pkl = pickle_of(data)
    i = pkl.index(b"K\x02t")  # numel 2 of storage 0
    huge = pkl[:i] + b"J" + struct.pack("<i", 2**31 - 1) + b"t" + pkl[i + 3 :]
    msg = _refused(_write(tmp_path, "huge.pt", with_pickle(data, huge)))
    assert "declares 2147483647" in msg and "holds 8 bytes" in msg


def test_expanded_view_with_absurd_shape_is_refused(tmp_path):
    path = _write(tmp_path, "view.pt", torch_bytes({"w": torch.zeros(1).expand(10**12)}))
    msg = _refused(path, "storage")
    assert "1000000000000" in msg


def test_shape_beyond_storage_is_refused(tmp_path):
    data = torch_bytes({"w": torch.zeros(2)})
    pkl = pickle_of(data).replace(b"K\x02\x85", b"J" + struct.pack("<i", 10**9) + b"\x85", 1)
    assert pkl != pickle_of(data)
    _refused(_write(tmp_path, "shape.pt", with_pickle(data, pkl)))


def test_shared_container_dag_is_walked_once():
    node: list = [torch.zeros(1)]
    for _ in range(60):  # 2**60 paths, 60 distinct lists
        node = [node, node]
    check_contents({"deep": node}, "dag")
    with pytest.raises(CheckpointError, match="nested deeper"):
        deep: list = []
        cur = deep
        for _ in range(100):
            cur.append([])
            cur = cur[0]
        check_contents({"x": deep}, "deep")


# ---------------------------------------------------------------- damage


def _tiny_files() -> dict[str, bytes]:
    return {"zip": torch_bytes(SMALL), "safetensors": st_save({k: v.contiguous() for k, v in SMALL.items()})}


@pytest.mark.parametrize("kind", ["zip", "safetensors"])
def test_every_truncation_is_refused(tmp_path, kind):
    data = _tiny_files()[kind]
    cuts = sorted(set(range(1, len(data), max(1, len(data) // 150))))
    for cut in cuts:
        path = _write(tmp_path, f"cut-{kind}", data[:cut])
        with pytest.raises(CheckpointError):
            read_checkpoint(path)
    assert len(cuts) >= 100


def test_random_bytes_are_refused(tmp_path):
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 9, 64, 4096):
        for prefix in (b"", b"PK\x03\x04", struct.pack("<Q", 10) + b"{"):
            data = prefix + bytes(torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8).tolist())
            with pytest.raises(CheckpointError):
                read_checkpoint(_write(tmp_path, "rand.bin", data))


def test_empty_and_missing_files(tmp_path):
    _refused(_write(tmp_path, "empty.pt", b""), "empty")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")


# ---------------------------------------------------------------- archive layout


def _variants(data: bytes) -> dict[str, bytes]:
    items = members(data)
    prefix = items[0][0].split("/")[0]
    storage = next(n for n, _ in items if "/data/" in n)
    return {
        "extra code member": build_zip(items + [(f"{prefix}/evil.py", b"import os")]),
        "member outside the folder": build_zip(items + [("../escape", b"x")]),
        "absolute member": build_zip(items + [("/etc/cron.d/x", b"x")]),
        "second top-level folder": build_zip(items + [("other/data.pkl", b"x")]),
        "deflated members": build_zip(items, zipfile.ZIP_DEFLATED),
        "duplicate data.pkl": build_zip(items + [(f"{prefix}/data.pkl", b"\x80\x02}.")]),
        "unreferenced storage": build_zip(items + [(f"{prefix}/data/99", b"\x00" * 8)]),
        "missing storage": build_zip([(n, b) for n, b in items if n != storage]),
        "no data.pkl": build_zip([(n, b) for n, b in items if not n.endswith("data.pkl")]),
        "junk before the archive": b"JUNK" * 10 + data,
        "oversized metadata member": build_zip(items + [(f"{prefix}/.data/version", b"1" * 10_000)]),
    }


@pytest.mark.parametrize("variant", sorted(_variants(torch_bytes(SMALL))))
def test_unexpected_archive_layouts_are_refused(tmp_path, variant, no_torch_load):
    data = _variants(torch_bytes(SMALL))[variant]
    _refused(_write(tmp_path, "layout.pt", data))


def test_encrypted_flag_is_refused(tmp_path, no_torch_load):
    data = bytearray(torch_bytes(SMALL))
    cd = data.rfind(b"PK\x01\x02")  # last central directory entry: set its encryption bit
    data[cd + 8] |= 0x1
    _refused(_write(tmp_path, "enc.pt", bytes(data)))


# ---------------------------------------------------------------- dtypes, layouts, numerics


NON_WEIGHTS = {
    "complex64": (lambda: torch.zeros(2, dtype=torch.complex64), "dtype"),
    "float8": (lambda: torch.zeros(2).to(torch.float8_e4m3fn), "dtype"),
    "qint8": (lambda: torch.quantize_per_tensor(torch.zeros(2), 0.1, 0, torch.qint8), "quantized"),
    "sparse": (lambda: torch.zeros(3, 3).to_sparse(), "sparse"),
    "meta": (lambda: torch.zeros(2, device="meta"), "meta"),
    "subclass": (lambda: torch.zeros(2).as_subclass(_Sub), "subclass"),
}


class _Sub(torch.Tensor):
    pass


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", sorted(NON_WEIGHTS))
def test_non_weight_tensors_are_refused(tmp_path, kind):
    make, word = NON_WEIGHTS[kind]
    _refused(_write(tmp_path, "dtype.pt", torch_bytes({"w": make(), "ok": torch.zeros(1)})), word)


def test_safetensors_wrong_dtype_is_refused(tmp_path):
    header = {"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}
    _refused(_write(tmp_path, "f8.safetensors", safetensors_bytes(header, b"\x00\x00")), "not a weight dtype")


@pytest.mark.parametrize(
    "header",
    [
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}},
        {"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 16]}},
        {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 16]}},
        {"w": "not an object"},
        {"__metadata__": {"k": 5}, "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
        b"{" * 50_000 + b"}" * 50_000,
        b'{"w": }',
        "\u00e9".encode("latin-1") + b"{}",
    ],
    ids=[
        "offsets-beyond-file",
        "absurd-shape",
        "negative-shape",
        "entry-not-object",
        "metadata-not-str",
        "deep-json",
        "bad-json",
        "not-utf8",
    ],
)
def test_lying_safetensors_headers_are_refused(tmp_path, header):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    if not raw.startswith(b"{"):
        raw = b"{" + raw
    _refused(_write(tmp_path, "lie.safetensors", safetensors_bytes(raw, b"\x00" * 16)))


def test_non_dict_and_non_string_keys_are_refused(tmp_path):
    _refused(_write(tmp_path, "list.pt", torch_bytes([torch.zeros(1)])), "not a dict")
    _refused(_write(tmp_path, "intkeys.pt", torch_bytes({"sd": {0: torch.zeros(1)}})), "non-string keys")


def test_nan_and_inf_weights_are_refused_naming_the_tensor(tmp_path, tiny_model, tiny_cfg_path):
    for key, value in (("visual.proj", float("nan")), ("text_projection", float("inf"))):
        sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
        sd[key].view(-1)[0] = value
        path = tmp_path / "bad.pt"
        torch.save(sd, path)
        with pytest.raises(CheckpointError, match=f"{key}.*NaN or infinite"):
            load_model(str(path), arch=str(tiny_cfg_path))


def test_integer_weights_for_float_parameters_are_refused(tmp_path, tiny_model, tiny_cfg_path):
    sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    sd["visual.proj"] = sd["visual.proj"].to(torch.int32)
    path = tmp_path / "int.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="dtype"):
        load_model(str(path), arch=str(tiny_cfg_path))


def test_real_checkpoint_shapes_still_load(tmp_path):
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(1, 3)).sum().backward()
    opt.step()
    obj = {
        "epoch": 3,
        "state_dict": m.state_dict(),
        "optimizer": opt.state_dict(),
        "best_acc1": torch.tensor(38.2),
        "p": torch.nn.Parameter(torch.ones(2)),
        "tied": [m.weight, m.weight],
        "dtype": torch.float16,
        "dev": torch.device("cpu"),
        "bytes": b"\x00\x01",
        "size": torch.Size([2, 3]),
    }
    got, meta = read_checkpoint(_write(tmp_path, "real.pt", torch_bytes(obj)))
    assert torch.equal(got["state_dict"]["weight"], m.weight.detach()) and meta == {}
    got, meta = read_checkpoint(_write(tmp_path, "st.safetensors", st_save(SMALL, metadata={"a": "b"})))
    assert torch.equal(got["a.weight"], SMALL["a.weight"]) and meta == {"a": "b"}


def test_refusals_are_zsbench_errors_with_hints(tmp_path):
    path = _write(
        tmp_path, "evil.pt", evil_archive(torch_bytes(SMALL), next(iter(evil_payloads("/x").values())))
    )
    with pytest.raises(ZSBenchError) as err:
        read_checkpoint(path)
    assert err.value.hint and "safetensors" in err.value.hint


# ---------------------------------------------------------------- what a checkpoint says about itself


def _native(tmp_path: Path, tiny_model, name: str = "native.safetensors", **info: object) -> Path:
    from zsrobust_bench.models.native import save_native

    kw: dict = {"arch": "tiny-clip", "arch_config": json.loads(json.dumps(TINY)), "kind": "full"}
    kw.update(info)
    return save_native(tmp_path / name, tiny_model.state_dict(), **kw)


TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def test_embedded_arch_name_cannot_write_outside(tmp_path, tiny_model, monkeypatch):
    import os
    import tempfile

    import zsrobust_bench.models.loader as loader

    rel = os.path.relpath(tmp_path, tempfile.gettempdir())
    name = f"../{rel}/escaped"
    path = _native(
        tmp_path, tiny_model, arch=name, arch_config={**TINY, "embed_dim": 64, "quick_gelu": False}
    )
    with pytest.raises(CheckpointError, match="not a plain name"):
        load_model(str(path))
    assert not (tmp_path / "escaped.json").exists()
    # second layer: without the checkpoint guard, register_config's name check still refuses it
    monkeypatch.setattr(loader, "check_embedded", lambda *a, **k: None)
    with pytest.raises(CheckpointError, match="architecture name .* is not a plain name"):
        load_model(str(path))
    assert not (tmp_path / "escaped.json").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"vision_cfg": {**TINY["vision_cfg"], "width": 65536, "layers": 64}},
        {"text_cfg": {**TINY["text_cfg"], "vocab_size": 10**6, "width": 8192}},
        {"vision_cfg": {**TINY["vision_cfg"], "layers": 10**6}},
        {"text_cfg": {**TINY["text_cfg"], "hf_model_name": "evil/model", "hf_tokenizer_name": "evil/tok"}},
        {
            "vision_cfg": {
                **TINY["vision_cfg"],
                "timm_model_name": "vit_base_patch16_224",
                "timm_model_pretrained": True,
            }
        },
        {"vision_cfg": {**TINY["vision_cfg"], "width": "64"}},
        {"multimodal_cfg": {"width": 64}},
        {"vision_cfg": [1, 2]},
    ],
    ids=[
        "huge-vision",
        "huge-text",
        "million-layers",
        "hf-download",
        "timm-download",
        "string-width",
        "unknown-key",
        "not-a-dict",
    ],
)
def test_embedded_arch_configs_that_would_allocate_or_download_are_refused(tmp_path, tiny_model, change):
    import resource

    path = _native(tmp_path, tiny_model, arch_config={**TINY, **change})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="embedded architecture"):
        load_model(str(path))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 512, f"refusal allocated {grown_mib:.0f} MiB"


def test_embedded_pretrained_must_be_a_tag_not_a_path(tmp_path, tiny_model):
    path = _native(tmp_path, tiny_model, kind="vision-only", pretrained="/etc/passwd")
    with pytest.raises(CheckpointError, match="pretrained tag"):
        load_model(str(path))


def test_compact_token_table_with_absurd_shape_is_refused(tmp_path):
    state = {
        "token_embedding.weight.__rows__": torch.tensor([0, 1]),
        "token_embedding.weight.__values__": torch.zeros(2, 4),
        "token_embedding.weight.__shape__": torch.tensor([10**9, 4]),
        "visual.proj": torch.zeros(2, 2),
    }
    meta = {"zsbench_format": "1", "zsbench_model": json.dumps({"arch": "ViT-B-32", "kind": "full"})}
    path = _write(tmp_path, "tok.safetensors", st_save(state, metadata=meta))
    with pytest.raises(CheckpointError, match="compact token table"):
        load_model(str(path))


def test_native_checkpoint_with_sane_embedded_arch_still_loads(tmp_path, tiny_model):
    lm = load_model(str(_native(tmp_path, tiny_model)))
    assert lm.info["format"] == "zsbench"

"""Fuzz the checkpoint loader with generated files: random bytes, damaged real files, generated
pickle programs (with code-execution and memory-bomb calls mixed in) and generated containers of
tensors. Every case must load as weight data or end in a ZSBenchError; nothing else may escape, no
marker file may appear, and nothing loaded may be larger than the file it came from."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from fuzzing import Tally, run_bounded
from hypothesis import given
from hypothesis import strategies as st
from reliability_craft import (
    build_zip,
    members,
    one_torch_thread,  # noqa: F401 - autouse fixture
    torch_bytes,
)
from safetensors.torch import save as st_save

from zsrobust_bench.errors import CheckpointError, ZSBenchError
from zsrobust_bench.models.formats import parse_checkpoint
from zsrobust_bench.models.safe_load import check_contents, read_checkpoint

SEED_STATE = {
    "visual.proj": torch.randn(8, 4),
    "visual.conv1.weight": torch.randn(2, 3, 2, 2).half(),
    "logit_scale": torch.tensor(4.6),
    "ids": torch.arange(5),
}


def _seed_files() -> dict[str, bytes]:
    nested = {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in SEED_STATE.items()}, "best": 3.5}
    return {
        "torch-zip": torch_bytes(SEED_STATE),
        "torch-zip-nested": torch_bytes(nested),
        "safetensors": st_save(
            {k: v.contiguous() for k, v in SEED_STATE.items()}, metadata={"zsbench_format": "1"}
        ),
    }


SEEDS = _seed_files()


def _tensors(obj: object) -> list[torch.Tensor]:
    out, todo, seen = [], [obj], set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, torch.Tensor):
            out.append(node)
        elif isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list | tuple | set | frozenset):
            todo.extend(node)
    return out


def _check_one(path: Path, data: bytes, tally: Tally, marker: Path | None = None) -> None:
    """The property: weight data bounded by the file, or a CheckpointError; never anything else."""
    path.write_bytes(data)
    try:
        obj, meta = read_checkpoint(path)
    except CheckpointError as exc:
        assert str(exc), "a refusal must say why"
        tally.add("refused")
    else:
        check_contents(obj, "again")
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in _tensors(obj)}
        assert sum(storages.values()) <= len(data), "loaded more bytes than the file holds"
        assert isinstance(meta, dict)
        with contextlib.suppress(ZSBenchError):
            parse_checkpoint(obj, meta, str(path))
        tally.add("loaded")
    if marker is not None:
        assert not marker.exists(), "a generated pickle executed code"


# ---------------------------------------------------------------- 1. raw bytes

PREFIXES = [
    b"",
    b"PK\x03\x04",
    struct.pack("<Q", 40) + b"{",
    b"\x80\x02",
    b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.",
]


def _bytes_target(tmp: Path, tally: Tally):
    @given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=2048))
    def fuzz(prefix: bytes, body: bytes) -> None:
        _check_one(tmp / "f.bin", prefix + body, tally)

    return fuzz


# ---------------------------------------------------------------- 2. damaged real files

_MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 64)),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("member"), st.integers(0, 20), st.binary(max_size=64)),
)


def _mutate(data: bytes, muts: list[tuple]) -> bytes:
    for m in muts:
        pos = int(m[1] * len(data)) if isinstance(m[1], float) else 0
        if m[0] == "truncate":
            data = data[:pos]
        elif m[0] == "flip" and data:
            pos = min(pos, len(data) - 1)
            data = data[:pos] + bytes([data[pos] ^ m[2]]) + data[pos + 1 :]
        elif m[0] == "insert":
            data = data[:pos] + m[2] + data[pos:]
        elif m[0] == "delete":
            data = data[:pos] + data[pos + m[2] :]
        elif m[0] == "overwrite":
            data = data[:pos] + m[2] + data[pos + len(m[2]) :]
        elif m[0] == "member" and data.startswith(b"PK\x03\x04"):
            try:
                items = members(data)
            except Exception:  # noqa: BLE001 - the test's own parse of already-mangled bytes
                continue
            if items:
                k = m[1] % len(items)
                items[k] = (items[k][0], m[2])  # rewrite one member's bytes, archive stays well formed
                data = build_zip(items)
    return data


def _mutation_target(tmp: Path, tally: Tally):
    @given(seed=st.sampled_from(sorted(SEEDS)), muts=st.lists(_MUTATION, min_size=1, max_size=4))
    def fuzz(seed: str, muts: list[tuple]) -> None:
        _check_one(tmp / "m.bin", _mutate(SEEDS[seed], muts), tally)

    return fuzz


# ---------------------------------------------------------------- 3. generated pickle programs

DANGEROUS = [
    ("posix", "system"),
    ("os", "system"),
    ("builtins", "exec"),
    ("builtins", "eval"),
    ("subprocess", "call"),
    ("builtins", "bytearray"),
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("torch", "load"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch", "Tensor"),
    ("collections", "Counter"),
]
ALLOWED = [("collections", "OrderedDict"), ("torch", "Size"), ("builtins", "set"), ("_codecs", "encode")]
STORAGES = [
    "FloatStorage",
    "HalfStorage",
    "LongStorage",
    "ByteStorage",
    "ComplexFloatStorage",
    "QInt8Storage",
]


def _u(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _lit(v: object) -> bytes:
    if v is None:
        return b"N"
    if isinstance(v, bool):
        return b"\x88" if v else b"\x89"
    if isinstance(v, int):
        return b"J" + struct.pack("<i", v) if -(2**31) <= v < 2**31 else b"\x8a\x08" + struct.pack("<q", v)
    if isinstance(v, float):
        return b"G" + struct.pack(">d", v)
    return _u(str(v))


def _global(mod: str, name: str) -> bytes:
    return b"c" + f"{mod}\n{name}\n".encode()


def _nodes(marker: str, n_storages: int, clean: bool):
    cmd = f"touch {marker}"
    literal = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=True),
        st.sampled_from(["storage", "cpu", cmd, "w", "visual.proj"]),
        st.text(max_size=8),
    )
    lit = literal.map(_lit)
    call = st.tuples(st.sampled_from(DANGEROUS + ALLOWED), st.lists(literal, max_size=3)).map(
        lambda t: _global(*t[0]) + b"(" + b"".join(_lit(a) for a in t[1]) + b"tR"
    )
    dims = st.lists(st.integers(0, 2**33), max_size=3)

    def tensor(args: tuple) -> bytes:
        stype, key, numel, offset, size, stride = args
        pid = b"(" + _u("storage") + _global("torch", stype) + _u(str(key)) + _u("cpu") + _lit(numel) + b"tQ"
        tup = lambda xs: b"(" + b"".join(_lit(x) for x in xs) + b"t"  # noqa: E731
        hooks = _global("collections", "OrderedDict") + b")R"
        return (
            _global("torch._utils", "_rebuild_tensor_v2")
            + b"("
            + pid
            + _lit(offset)
            + tup(size)
            + tup(stride)
            + b"\x89"
            + hooks
            + b"tR"
        )

    tensors = st.tuples(
        st.sampled_from(STORAGES),
        st.integers(0, n_storages),
        st.integers(0, 2**40),
        st.integers(0, 8),
        dims,
        dims,
    ).map(tensor)
    raw = st.sampled_from(
        [b"R", b"b", b"0", b"1", b"2", b"(", b"t", b"h\x00", b"q\x00", b"\x94", b"Q", b"s", b"e"]
    )

    def fitting(args: tuple) -> bytes:
        key, offset, dims = args
        stype, n = REAL_STORAGES[key]
        shape: list[int] = []
        for d in dims:  # keep offset + numel within the real storage
            if offset + max(1, _prod(shape)) * d <= n:
                shape.append(d)
        stride = [_prod(shape[i + 1 :]) for i in range(len(shape))]
        return tensor((stype, key, n, offset, shape, stride))

    good_tensor = st.tuples(
        st.sampled_from(sorted(REAL_STORAGES)), st.integers(0, 1), st.lists(st.integers(0, 3), max_size=3)
    ).map(fitting)
    good_key = st.sampled_from(["w", "visual.proj", "state_dict", "epoch"]).map(_lit)
    if clean:  # well-formed programs: these should mostly load
        leaf = st.one_of(lit, good_tensor, st.sampled_from(ALLOWED).map(lambda g: _global(*g) + b")R"))
        key = good_key
    else:
        leaf = st.one_of(lit, call, tensors, raw, good_tensor)
        key = st.one_of(lit, good_key)

    def extend(children):
        as_list = st.lists(children, max_size=4).map(lambda xs: b"](" + b"".join(xs) + b"e")
        as_tuple = st.lists(children, max_size=4).map(lambda xs: b"(" + b"".join(xs) + b"t")
        as_dict = st.lists(st.tuples(key, children), max_size=4).map(
            lambda kv: b"}(" + b"".join(k + v for k, v in kv) + b"u"
        )
        return st.one_of(as_list, as_tuple, as_dict)

    return st.recursive(leaf, extend, max_leaves=12)


REAL_STORAGES = {0: ("FloatStorage", 2), 1: ("HalfStorage", 3), 2: ("LongStorage", 4)}


def _whole_storage(key: int) -> bytes:
    """A 1-D tensor over all of real storage `key` (every archive member must be referenced)."""
    stype, n = REAL_STORAGES[key]
    pid = b"(" + _u("storage") + _global("torch", stype) + _u(str(key)) + _u("cpu") + _lit(n) + b"tQ"
    hooks = _global("collections", "OrderedDict") + b")R"
    args = pid + _lit(0) + b"(" + _lit(n) + b"t(" + _lit(1) + b"t\x89" + hooks
    return _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


USE_ALL_STORAGES = b"".join(_u(f"_s{k}") + _whole_storage(k) for k in sorted(REAL_STORAGES))


def _prod(xs: list[int]) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def _pickle_target(tmp: Path, tally: Tally, marker: Path):
    n_storages = 3
    base = members(torch_bytes({"a": torch.zeros(2), "b": torch.zeros(3).half(), "c": torch.zeros(4).long()}))
    prefix = base[0][0].split("/")[0]
    keep = [(n, b) for n, b in base if not n.endswith("data.pkl")]

    item = st.tuples(st.sampled_from(["w", "visual.proj", "state_dict"]), st.booleans()).flatmap(
        lambda t: st.tuples(st.just(t[0]), _nodes(str(marker), n_storages, clean=t[1]))
    )

    @given(items=st.lists(item, max_size=4))
    def fuzz(items: list[tuple[str, bytes]]) -> None:
        pkl = b"\x80\x02}(" + USE_ALL_STORAGES + b"".join(_u(k) + v for k, v in items) + b"u."
        _check_one(tmp / "p.pt", build_zip([(f"{prefix}/data.pkl", pkl)] + keep), tally, marker)

    return fuzz


# ---------------------------------------------------------------- 4. generated tensor containers

_DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
]


def _tensor_strategy():
    def make(args: tuple) -> torch.Tensor:
        dtype, shape, special, expand = args
        t = torch.zeros(shape, dtype=torch.float32)
        if t.numel() and special is not None:
            t.view(-1)[0] = special
        t = t.to(dtype)
        if expand and t.dim() and t.shape[0] == 1:
            t = t.expand(10**9, *t.shape[1:])
        return t

    shapes = st.lists(st.integers(0, 4), max_size=3)
    special = st.sampled_from([None, float("nan"), float("inf"), -float("inf"), 1e30])
    return st.tuples(st.sampled_from(_DTYPES), shapes, special, st.booleans()).map(make)


KEYS = st.sampled_from(
    [
        "visual.proj",
        "visual.conv1.weight",
        "token_embedding.weight",
        "text_projection",
        "state_dict",
        "model",
        "module.visual.proj",
        "vision_encoder_state_dict",
        "add_prompter",
        "prompt",
        "pad_up",
        "zsbench_format",
        "logit_scale",
        "epoch",
        0,
        1,
    ]
)


def _containers():
    leaf = st.one_of(_tensor_strategy(), st.integers(-5, 5), st.text(max_size=4), st.none(), st.floats())
    return st.recursive(
        leaf,
        lambda ch: st.one_of(st.lists(ch, max_size=3), st.dictionaries(KEYS, ch, max_size=4)),
        max_leaves=10,
    )


def _container_target(tmp: Path, tally: Tally):
    @given(obj=st.dictionaries(KEYS, _containers(), min_size=1, max_size=5), as_safetensors=st.booleans())
    def fuzz(obj: dict, as_safetensors: bool) -> None:
        flat = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if any(not v.is_contiguous() for v in flat.values()):
            as_safetensors = False  # .contiguous() of an expanded view would allocate it in full
        if as_safetensors and flat:
            try:
                data = st_save({k: v.contiguous() for k, v in flat.items()})
            except (ValueError, TypeError, RuntimeError):  # safetensors cannot write this dtype or view
                tally.add("not writable")
                return
        else:
            data = torch_bytes(obj)
        _check_one(tmp / "c.bin", data, tally)

    return fuzz


# ---------------------------------------------------------------- the tests

TARGETS = {
    "checkpoint bytes": lambda tmp, tally, marker: _bytes_target(tmp, tally),
    "checkpoint mutations": lambda tmp, tally, marker: _mutation_target(tmp, tally),
    "checkpoint pickle programs": _pickle_target,
    "checkpoint tensor containers": lambda tmp, tally, marker: _container_target(tmp, tally),
}


def _run(name: str, tmp_path: Path, say, slow: bool) -> Tally:
    marker = tmp_path / "PWNED"
    tally = Tally(name, markers=(marker,))
    run_bounded(lambda: TARGETS[name](tmp_path, tally, marker), tally, slow, say)
    assert not marker.exists()
    assert tally.cases > 0
    return tally


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_checkpoint(name, tmp_path, say):
    _run(name, tmp_path, say, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_checkpoint_slow(name, tmp_path, say):
    _run(name, tmp_path, say, slow=True)


# ---------------------------------------------------------------- 5. damaged state dicts through load_model

MODEL_EXAMPLES = int(os.environ.get("ZSBENCH_FUZZ_MODEL_EXAMPLES", "25"))
_SPECIAL = [float("nan"), float("inf"), -float("inf")]
_CAST = [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.bool, torch.uint8]


def _state_mutations(keys: list[str]):
    key = st.sampled_from(keys)
    return st.lists(
        st.one_of(
            st.tuples(st.just("special"), key, st.sampled_from(_SPECIAL)),
            st.tuples(st.just("cast"), key, st.sampled_from(_CAST)),
            st.tuples(
                st.just("reshape"), key, st.sampled_from(["flatten", "transpose", "narrow", "unsqueeze"])
            ),
            st.tuples(st.just("drop"), key, st.none()),
            st.tuples(st.just("add"), st.text(max_size=12), st.none()),
            st.tuples(st.just("expand"), key, st.none()),
        ),
        max_size=3,
    )


def _apply(state: dict[str, torch.Tensor], muts: list[tuple]) -> dict[str, torch.Tensor]:
    state = dict(state)
    for op, k, arg in muts:
        if op == "add":
            state[k or "extra"] = torch.zeros(2)
            continue
        if k not in state:
            continue
        t = state[k]
        if op == "special" and t.is_floating_point() and t.numel():
            t = t.clone()
            t.view(-1)[0] = arg
        elif op == "cast":
            t = t.to(arg)
        elif op == "reshape" and t.dim():
            t = {
                "flatten": t.flatten(),
                "transpose": t.t() if t.dim() == 2 else t.flatten(),
                "narrow": t.narrow(0, 0, max(0, t.shape[0] - 1)),
                "unsqueeze": t.unsqueeze(0),
            }[arg]
        elif op == "drop":
            del state[k]
            continue
        elif op == "expand" and t.dim():
            t = t[:1].expand(10**6, *t.shape[1:])
        state[k] = t
    return state


def _arch_mutation():
    return st.one_of(
        st.none(),
        st.tuples(
            st.sampled_from(["vision_cfg", "text_cfg"]),
            st.sampled_from(
                [
                    "width",
                    "layers",
                    "heads",
                    "vocab_size",
                    "patch_size",
                    "image_size",
                    "hf_model_name",
                    "timm_model_name",
                    "bogus",
                ]
            ),
            st.one_of(st.integers(-5, 10**8), st.text(max_size=6), st.none(), st.booleans()),
        ),
    )


def _model_target(tmp: Path, tally: Tally, sd: dict[str, torch.Tensor], cfg_path: Path):
    from zsrobust_bench.models import load_model
    from zsrobust_bench.models.native import save_native

    base_cfg = json.loads(cfg_path.read_text())

    @given(
        muts=_state_mutations(sorted(sd)),
        container=st.sampled_from(["torch", "safetensors", "nested", "native"]),
        arch_mut=_arch_mutation(),
    )
    def fuzz(muts: list[tuple], container: str, arch_mut: tuple | None) -> None:
        state = _apply(sd, muts)
        path = tmp / f"model-{container}.bin"
        arch: str | None = str(cfg_path)
        if container == "native":
            cfg = copy.deepcopy(base_cfg)
            if arch_mut is not None:
                cfg[arch_mut[0]][arch_mut[1]] = arch_mut[2]
            try:
                save_native(
                    path,
                    {k: v.contiguous() for k, v in state.items() if v.is_contiguous()},
                    arch="fuzz-arch",
                    arch_config=cfg,
                    kind="full",
                )
            except (ValueError, TypeError, RuntimeError):
                tally.add("not writable")
                return
            arch = None
        elif container == "safetensors":
            try:
                path.write_bytes(st_save({k: v.contiguous() for k, v in state.items() if v.is_contiguous()}))
            except (ValueError, TypeError, RuntimeError):
                tally.add("not writable")
                return
        else:
            torch.save({"epoch": 1, "state_dict": state} if container == "nested" else state, path)
        try:
            lm = load_model(str(path), arch=arch)
        except ZSBenchError:
            tally.add("refused")
            return
        loaded = lm.model.state_dict()
        for k, v in state.items():  # nothing half-loaded: every weight is exactly the file's
            if k in loaded and v.is_floating_point():
                assert torch.equal(loaded[k], v.to(loaded[k].dtype).reshape(loaded[k].shape)), k
        assert all(torch.isfinite(p).all() for p in lm.model.parameters())
        tally.add("loaded")

    return fuzz


def _run_model(tmp_path: Path, say, slow: bool, tiny_model, tiny_cfg_path) -> None:
    tally = Tally("checkpoint state dicts through load_model")
    sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    run_bounded(lambda: _model_target(tmp_path, tally, sd, tiny_cfg_path), tally, slow, say, MODEL_EXAMPLES)
    assert tally.cases > 0


def test_fuzz_checkpoint_through_load_model(tmp_path, say, tiny_model, tiny_cfg_path):
    _run_model(tmp_path, say, False, tiny_model, tiny_cfg_path)


@pytest.mark.slow
def test_fuzz_checkpoint_through_load_model_slow(tmp_path, say, tiny_model, tiny_cfg_path):
    _run_model(tmp_path, say, True, tiny_model, tiny_cfg_path)

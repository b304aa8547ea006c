"""Static analysis of a checkpoint's pickle stream: nothing is imported, called or allocated from it.

The opcodes are walked with `pickletools.genops` against a symbolic stack, so the scan learns
every global the pickle names and every tensor storage it declares (type, key, element count)
without running any of it. A global outside the allowlist, an opcode a state dict never needs, or
a storage reference that is not a plain literal tuple is refused before `torch.load` sees the file.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError

# Storage classes torch.save names in persistent ids, with the dtype each one holds. Complex,
# quantized and bit-packed storages are deliberately absent: no CLIP weight uses them.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "torch.FloatStorage": torch.float32,
    "torch.DoubleStorage": torch.float64,
    "torch.HalfStorage": torch.float16,
    "torch.BFloat16Storage": torch.bfloat16,
    "torch.LongStorage": torch.int64,
    "torch.IntStorage": torch.int32,
    "torch.ShortStorage": torch.int16,
    "torch.CharStorage": torch.int8,
    "torch.ByteStorage": torch.uint8,
    "torch.BoolStorage": torch.bool,
}

# Callables a weights-only state dict pickle may invoke. Stricter than torch's own allowlist:
# `bytearray` (allocates any size it is given), sparse, quantized, nested, meta and subclass
# rebuilds and the tensor constructors are left out.
CALLABLE_GLOBALS = frozenset(
    {
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "collections.OrderedDict",
        "builtins.set",
        "builtins.frozenset",
        "_codecs.encode",
        "torch.Size",
        "torch.device",
    }
)

_DTYPE_NAMES = [
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "half",
    "float",
    "double",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
    "short",
    "int",
    "long",
    "bool",
]
VALUE_GLOBALS = frozenset(STORAGE_DTYPES) | frozenset(f"torch.{n}" for n in _DTYPE_NAMES)
ALLOWED_GLOBALS = CALLABLE_GLOBALS | VALUE_GLOBALS

# Why a global torch itself would accept is refused here, for a clearer message.
_REASONS = {
    "torch._utils._rebuild_tensor_v3": "it holds tensors of a dtype no CLIP weight uses (e.g. float8)",
    "torch._utils._rebuild_qtensor": "it holds quantized tensors, which are not weights",
    "torch._utils._rebuild_sparse_tensor": "it holds sparse tensors, which are not weights",
    "torch._utils._rebuild_meta_tensor_no_storage": "it holds meta tensors, which carry no data",
    "torch._utils._rebuild_nested_tensor": "it holds nested tensors, which are not weights",
    "torch._utils._rebuild_wrapper_subclass": "it holds tensor subclasses, which are not weights",
    "torch._tensor._rebuild_from_type_v2": "it holds tensor subclasses, which are not weights",
    "builtins.bytearray": "it calls bytearray, which can allocate any amount of memory",
}

_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

# Opcodes whose effect is modelled generically from pickletools' stack description.
_GENERIC = frozenset(
    {
        "EMPTY_LIST",
        "APPEND",
        "APPENDS",
        "LIST",
        "EMPTY_DICT",
        "DICT",
        "SETITEM",
        "SETITEMS",
        "EMPTY_SET",
        "ADDITEMS",
        "FROZENSET",
        "POP",
        "POP_MARK",
        "BUILD",
    }
)
_LITERALS = frozenset(
    {
        "BININT",
        "BININT1",
        "BININT2",
        "LONG1",
        "LONG4",
        "BINFLOAT",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "SHORT_BINSTRING",
        "BINSTRING",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
    }
)
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_TUPLE_N = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


class _Mark:
    """The MARK sentinel on the symbolic stack."""


class _Opaque:
    """A value the scan does not track (a container or the result of an allowed call)."""


@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True)
class StorageRef:
    """One tensor storage a pickle declares: its archive key, dtype and element count."""

    key: str
    storage_type: str
    dtype: torch.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class PickleScan:
    """What a pickle stream would touch if it were loaded."""

    globals: set[str] = field(default_factory=set)
    storages: dict[str, StorageRef] = field(default_factory=dict)
    opcodes: int = 0


_MARK = _Mark()


RESAVE_HINT = "re-save it as a plain state dict (torch.save(model.state_dict())) or as .safetensors"


def _refuse(where: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{where} was refused before loading: {why}; nothing in it was executed", RESAVE_HINT
    )


def _needs_code(where: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"{where} needs code to unpickle and was refused ({what}); nothing in it was executed", RESAVE_HINT
    )


def _pop(stack: list[Any], where: str) -> Any:
    if not stack or stack[-1] is _MARK:
        raise _refuse(where, "malformed pickle (stack underflow)")
    return stack.pop()


def _pop_to_mark(stack: list[Any], where: str) -> list[Any]:
    items: list[Any] = []
    while stack and stack[-1] is not _MARK:
        items.append(stack.pop())
    if not stack:
        raise _refuse(where, "malformed pickle (missing MARK)")
    stack.pop()
    items.reverse()
    return items


def _global_name(module: Any, name: Any, where: str) -> str:
    if not isinstance(module, str) or not isinstance(name, str):
        raise _refuse(where, "pickle builds a global name from computed values")
    return f"{_MODULE_ALIASES.get(module, module)}.{name}"


def _storage_ref(pid: Any, where: str) -> StorageRef:
    """Validate a persistent id: ('storage', <storage type>, key, location, numel), all literals."""
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
        raise _refuse(where, "pickle holds a persistent reference that is not a tensor storage")
    _, stype, key, location, numel = pid
    if not isinstance(stype, _Global) or stype.name not in STORAGE_DTYPES:
        shown = stype.name if isinstance(stype, _Global) else type(stype).__name__
        raise _refuse(
            where,
            f"storage type {shown} is not a weight dtype (allowed: {', '.join(sorted(STORAGE_DTYPES))})",
        )
    if not isinstance(key, str) or not key.isdigit() or len(key) > 12:
        raise _refuse(where, f"storage key {key!r} is not a torch.save key")
    if not isinstance(location, str) or len(location) > 64:
        raise _refuse(where, "storage location is not a short string")
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise _refuse(where, f"storage {key} declares a non-integer or negative size {numel!r}")
    return StorageRef(key=key, storage_type=stype.name, dtype=STORAGE_DTYPES[stype.name], numel=numel)


def scan_pickle(data: bytes, where: str) -> PickleScan:
    """Walk a pickle stream symbolically; refuse what a weights-only state dict never contains."""
    scan = PickleScan()
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    stopped = False
    try:
        ops = pickletools.genops(io.BytesIO(data))
        for op, arg, _pos in ops:
            scan.opcodes += 1
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                _pop(stack, where)
                stopped = True
                break
            if name == "MARK":
                stack.append(_MARK)
            elif name in _LITERALS:
                stack.append(arg)
            elif name in _CONSTANTS:
                stack.append(_CONSTANTS[name])
            elif name in _TUPLE_N:
                n = _TUPLE_N[name]
                items = [_pop(stack, where) for _ in range(n)][::-1]
                stack.append(tuple(items))
            elif name == "TUPLE":
                stack.append(tuple(_pop_to_mark(stack, where)))
            elif name in ("BINPUT", "LONG_BINPUT"):
                if not stack or stack[-1] is _MARK:
                    raise _refuse(where, "malformed pickle (memoizing nothing)")
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                if not stack or stack[-1] is _MARK:
                    raise _refuse(where, "malformed pickle (memoizing nothing)")
                memo[len(memo)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET"):
                if int(arg) not in memo:
                    raise _refuse(where, f"malformed pickle (memo slot {arg} is empty)")
                stack.append(memo[int(arg)])
            elif name == "DUP":
                stack.append(stack[-1] if stack else _pop(stack, where))
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                g = _global_name(module, attr, where)
                _check_global(g, scan, where)
                stack.append(_Global(g))
            elif name == "STACK_GLOBAL":
                attr = _pop(stack, where)
                module = _pop(stack, where)
                g = _global_name(module, attr, where)
                _check_global(g, scan, where)
                stack.append(_Global(g))
            elif name in ("REDUCE", "NEWOBJ"):
                _pop(stack, where)  # arguments
                func = _pop(stack, where)
                if not isinstance(func, _Global):
                    raise _needs_code(where, "it calls a computed object")
                if func.name not in CALLABLE_GLOBALS:
                    raise _needs_code(
                        where, f"it calls {func.name}, which a weights-only state dict never needs"
                    )
                stack.append(_Opaque())
            elif name == "BINPERSID":
                ref = _storage_ref(_pop(stack, where), where)
                seen = scan.storages.get(ref.key)
                if seen is not None and seen != ref:
                    raise _refuse(where, f"storage {ref.key} is declared twice with different sizes or types")
                scan.storages[ref.key] = ref
                stack.append(_Opaque())
            elif name in _GENERIC:
                _apply_generic(op, stack, where)
            else:
                raise _refuse(where, f"pickle opcode {name} is not used by torch.save state dicts")
    except ValueError as exc:  # pickletools: truncated stream, unknown opcode byte, bad argument
        raise _refuse(where, f"damaged pickle ({exc})") from exc
    if not stopped:
        raise _refuse(where, "damaged pickle (no STOP opcode)")
    return scan


def _check_global(name: str, scan: PickleScan, where: str) -> None:
    scan.globals.add(name)
    if name in ALLOWED_GLOBALS:
        return
    if name in _REASONS:
        raise _refuse(where, f"{_REASONS[name]} ({name})")
    if name.startswith("torch.") and name.endswith("Storage"):
        raise _refuse(
            where, f"{name} holds a dtype no CLIP weight uses (allowed: {', '.join(sorted(STORAGE_DTYPES))})"
        )
    if name not in ALLOWED_GLOBALS:
        raise _needs_code(where, f"it references {name}, which is not on the weights-only allowlist")


def _apply_generic(op: pickletools.OpcodeInfo, stack: list[Any], where: str) -> None:
    """Pop what `op` consumes (to the MARK where it takes a stack slice) and push opaque results."""
    before = op.stack_before
    if pickletools.markobject in before:
        _pop_to_mark(stack, where)
        before = before[: before.index(pickletools.markobject)]
    for _ in before:
        _pop(stack, where)
    stack.extend(_Opaque() for _ in op.stack_after)

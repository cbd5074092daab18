"""Helpers shared by the shape, indexing and reduction kernel modules.

Many ops moved an argument from an attribute to an input between opset versions (Squeeze axes, Slice
starts, Pad pads, Reduce* axes). One kernel serves both forms: the input wins when present, else the
attribute. Infer functions need the same rule but must also tell "omitted" from "present but not known
at prepare time"; `resolve_ints` returns UNKNOWN for the latter so the caller can give up cleanly.
"""

from __future__ import annotations

import functools

import numpy as np

from .infer import const_ints
from .registry import Info

# TensorProto.DataType -> NumPy dtype, for attributes that name a dtype (EyeLike's `dtype`).
ONNX_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
    8: object, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
    14: np.complex64, 15: np.complex128,
}

UNKNOWN = object()


def ints(x) -> list[int]:
    """A run-time integer tensor (shape, axes, pads...) as Python ints, which never overflow."""
    return [int(v) for v in np.asarray(x).reshape(-1)]


def input_or_attr(x, attr) -> list[int] | None:
    """Kernel side of the attribute-to-input move: the input's values if given, else the attribute."""
    if x is not None:
        return ints(x)
    return None if attr is None else [int(v) for v in attr]


def resolve_ints(info: Info | None, attr):
    """Infer side: the input's constant values, the attribute when the input is omitted, or UNKNOWN."""
    if info is not None:
        vals = const_ints(info)
        return UNKNOWN if vals is None else vals
    return None if attr is None else [int(v) for v in attr]


def plannable(infer):
    """Wraps the infer function of an out=True kernel: string (object) tensors cannot live in the byte
    arena, so such outputs are reported as unknown and the kernel allocates them itself."""

    @functools.wraps(infer)
    def wrapped(ins, **attrs):
        if ins and ins[0] is not None and ins[0].dtype is None:
            return None  # a sequence or optional, not a tensor
        res = infer(ins, **attrs)
        if res is None or any(np.dtype(dt) == np.dtype(object) for dt, _ in res):
            return None
        return res

    return wrapped


def write(out, result):
    """Delivers a computed result: into `out` when the planner gave one, else as is."""
    if out is None:
        return result
    np.copyto(out, result)
    return out


def norm_axes(axes, rank: int) -> list[int]:
    return sorted({a + rank if a < 0 else a for a in axes})

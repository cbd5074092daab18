"""Comparison, boolean, bitwise and classification ops: Equal Greater GreaterOrEqual Less
LessOrEqual, And Or Xor Not, BitShift, BitwiseAnd/Or/Xor/Not, IsNaN and IsInf.

All are single ufuncs writing a bool (or the input's integer dtype) into the planned buffer.
Equal also compares string tensors, which arrive as object arrays; NumPy's object comparison loop
handles them.
"""

from __future__ import annotations

import numpy as np

from .infer import broadcast_bool, broadcast_like_first, same_as_first
from .registry import register_op
from .ufunc_kernels import binary, unary

_COMPARE = [
    ("Equal", np.equal, 7),
    ("Greater", np.greater, 7),
    ("Less", np.less, 7),
    ("GreaterOrEqual", np.greater_equal, 12),
    ("LessOrEqual", np.less_equal, 12),
]
for _name, _ufunc, _since in _COMPARE:
    register_op(_name, since=_since, infer=broadcast_bool, out=True)(binary(_ufunc))

# Boolean logic: inputs and output are bool, so the output may reuse the first input's buffer.
for _name, _ufunc in [("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor)]:
    register_op(_name, since=7, infer=broadcast_like_first, out=True, inplace={0: 0})(binary(_ufunc))
register_op("Not", since=1, infer=same_as_first, out=True, inplace={0: 0})(unary(np.logical_not))

for _name, _ufunc in [("BitwiseAnd", np.bitwise_and), ("BitwiseOr", np.bitwise_or), ("BitwiseXor", np.bitwise_xor)]:
    register_op(_name, since=18, infer=broadcast_like_first, out=True, inplace={0: 0})(binary(_ufunc))
register_op("BitwiseNot", since=18, infer=same_as_first, out=True, inplace={0: 0})(unary(np.invert))

_shift_left = binary(np.left_shift)
_shift_right = binary(np.right_shift)


@register_op("BitShift", since=11, infer=broadcast_like_first, out=True, inplace={0: 0})
def bit_shift(x, y, *, direction="", out=None):
    """Unsigned shifts; NumPy defines a shift by >= the bit width as 0, as the ONNX cases expect."""
    if direction == "LEFT":
        return _shift_left(x, y, out=out)
    if direction == "RIGHT":
        return _shift_right(x, y, out=out)
    raise ValueError(f"BitShift: direction must be 'LEFT' or 'RIGHT', got {direction!r}")


register_op("IsNaN", since=9, infer=broadcast_bool, out=True)(unary(np.isnan))


@register_op("IsInf", since=10, infer=broadcast_bool, out=True)
def is_inf(x, *, detect_negative=1, detect_positive=1, out=None):
    if out is None:
        out = np.empty(np.shape(x), bool)
    if detect_negative and detect_positive:
        return np.isinf(x, out=out)
    if detect_positive:
        return np.equal(x, np.inf, out=out)
    if detect_negative:
        return np.equal(x, -np.inf, out=out)
    out.fill(False)
    return out

"""Elementwise arithmetic, math and logic ops.

This module holds the binary arithmetic ops (Add Sub Mul Div Pow Mod), the variadic ones (Max Min
Sum Mean), Clip and Where. Unary math (Sqrt, Erf, trigonometry...) lives in elementwise_math.py,
comparisons, boolean and bitwise logic in elementwise_logic.py and the casts in elementwise_cast.py;
all are registered by importing them at the bottom of this module.

Every kernel writes into the planned ``out`` buffer with ufunc ``out=`` and, where its output may
share an input's buffer, declares it (``inplace={0: 0}``; Where: X). Kernels whose best implementation
depends on the input dtype or on a constant input (integer Div, Pow by a constant exponent) pick
it once per plan in their ``make`` instead of testing on every call.
"""

from __future__ import annotations

import numpy as np

from .infer import broadcast, broadcast_like_first, known, same_as_first
from .registry import Info, register_op
from .ufunc_kernels import alloc_like, binary, clip_ufunc, is_float, lower_bound, select_into, upper_bound

_F64 = np.dtype(np.float64)


@register_op("Add", since=7, infer=broadcast_like_first, out=True, inplace={0: 0})
def add(a, b, *, out=None):
    return np.add(a, b, out=out) if out is not None else np.asarray(np.add(a, b))


@register_op("Sub", since=7, infer=broadcast_like_first, out=True, inplace={0: 0})
def sub(a, b, *, out=None):
    return np.subtract(a, b, out=out) if out is not None else np.asarray(np.subtract(a, b))


@register_op("Mul", since=7, infer=broadcast_like_first, out=True, inplace={0: 0})
def mul(a, b, *, out=None):
    return np.multiply(a, b, out=out) if out is not None else np.asarray(np.multiply(a, b))


# ---- Div ---------------------------------------------------------------------------------------
# ONNX integer division truncates toward zero, NumPy's floor_divide rounds toward -inf. With
# r = fmod(a, b) (C remainder, the sign of a), a - r is an exact multiple of b, so floor_divide of
# it is the truncated quotient: three integer passes, no float round trip (exact for int64).
def _div_signed(a, b, *, out=None):
    with np.errstate(all="ignore"):  # division by zero gives 0, as NumPy defines it
        rem = np.fmod(a, b)
        out = np.subtract(a, rem, out=alloc_like(out, a, b))
        return np.floor_divide(out, b, out=out)


_div_unsigned = binary(np.floor_divide, quiet_fp=True)
_div_float = binary(np.divide)


def _div_any(a, b, *, out=None):
    kind = np.asarray(a).dtype.kind
    if kind == "i":
        return _div_signed(a, b, out=out)
    if kind in "ub":
        return _div_unsigned(a, b, out=out)
    return _div_float(a, b, out=out)


def _make_div(ins, **_attrs):
    a = ins[0]
    if a is None or a.dtype is None:
        return _div_any
    kind = np.dtype(a.dtype).kind
    return _div_signed if kind == "i" else _div_unsigned if kind in "ub" else _div_float


register_op("Div", since=7, infer=broadcast_like_first, out=True, inplace={0: 0}, make=_make_div)(_div_any)


# ---- Pow ---------------------------------------------------------------------------------------
# The output has the base's dtype whatever the exponent's. Integer bases with a negative or
# fractional exponent go through float64 and truncate, as C's pow followed by a cast does.
def pow_(x, y, *, out=None):
    x, y = np.asarray(x), np.asarray(y)
    out = alloc_like(out, x, y)
    if x.dtype.kind in "iu":
        if y.dtype.kind in "iub" and (y.size == 0 or y.min() >= 0):
            return np.power(x, y.astype(x.dtype, copy=False), out=out)
        with np.errstate(all="ignore"):
            np.copyto(out, np.power(x.astype(_F64), y.astype(_F64)), casting="unsafe")
        return out
    if y.dtype != x.dtype:
        y = y.astype(x.dtype)
    return np.power(x, y, out=out)


def _pow_square(x, y, *, out=None):
    return np.square(x, out=alloc_like(out, x, y))


def _pow_sqrt(x, y, *, out=None):
    return np.sqrt(x, out=alloc_like(out, x, y))


def _pow_one(x, y, *, out=None):
    out = alloc_like(out, x, y)
    np.copyto(out, x)
    return out


def _pow_cube(x, y, *, out=None):
    squared = np.square(x, out=np.empty(np.shape(x), np.result_type(x)))  # not in out: out may be x
    return np.multiply(squared, x, out=alloc_like(out, x, y))


_POW_SPECIAL = {1.0: _pow_one, 2.0: _pow_square, 3.0: _pow_cube, 0.5: _pow_sqrt}


def _make_pow(ins, **_attrs):
    """A constant scalar exponent of 2, 3, 0.5 or 1 on a float base (x**2 in decomposed norms, x**3
    in tanh-Gelu) becomes square/sqrt/copy, which are several times faster than power."""
    x, y = ins[0], ins[1]
    if x is None or y is None or not is_float(x.dtype) or y.value is None or np.size(y.value) != 1:
        return pow_
    special = _POW_SPECIAL.get(float(np.asarray(y.value).reshape(-1)[0]))
    return special or pow_


register_op("Pow", since=7, infer=broadcast_like_first, out=True, inplace={0: 0}, make=_make_pow)(pow_)


# ---- Mod ---------------------------------------------------------------------------------------
@register_op("Mod", since=10, infer=broadcast_like_first, out=True, inplace={0: 0})
def mod(a, b, *, fmod=0, out=None):
    """fmod=0: Python's %, the sign of the divisor (np.remainder); fmod=1: C's fmod, the sign of the
    dividend. Integer division by zero yields 0 (NumPy's definition), float gives nan."""
    out = alloc_like(out, a, b)
    with np.errstate(all="ignore"):
        return (np.fmod if fmod else np.remainder)(a, b, out=out)


# ---- Variadic: Max Min Sum Mean ------------------------------------------------------------------
def _fold(ufunc):
    """Kernel applying a binary ufunc across any number of broadcasting inputs, accumulating in
    out (which may be the first input's buffer)."""

    def kernel(*inputs, out=None):
        out = alloc_like(out, *inputs)
        if len(inputs) == 1:
            np.copyto(out, inputs[0])
            return out
        ufunc(inputs[0], inputs[1], out=out)
        for x in inputs[2:]:
            ufunc(out, x, out=out)
        return out

    kernel.__name__ = kernel.__qualname__ = f"variadic_{ufunc.__name__}"
    return kernel


register_op("Max", since=8, infer=broadcast_like_first, out=True, inplace={0: 0})(_fold(np.maximum))
register_op("Min", since=8, infer=broadcast_like_first, out=True, inplace={0: 0})(_fold(np.minimum))
register_op("Sum", since=8, infer=broadcast_like_first, out=True, inplace={0: 0})(_fold(np.add))
_sum_all = _fold(np.add)


@register_op("Mean", since=8, infer=broadcast_like_first, out=True, inplace={0: 0})
def mean(*inputs, out=None):
    out = _sum_all(*inputs, out=out)
    return np.divide(out, len(inputs), out=out, casting="unsafe")


# ---- Clip --------------------------------------------------------------------------------------
def _clip(x, lo, hi, out):
    x = np.asarray(x)
    out = alloc_like(out, x)
    if lo is None and hi is None:
        np.copyto(out, x)
        return out
    # min > max must give max everywhere (ONNX: Min(max, Max(x, min))); the clip loop does that.
    lo = lower_bound(x.dtype) if lo is None else np.asarray(lo, x.dtype).reshape(())
    hi = upper_bound(x.dtype) if hi is None else np.asarray(hi, x.dtype).reshape(())
    return clip_ufunc(x, lo, hi, out=out)


@register_op("Clip", since=6, infer=same_as_first, out=True, inplace={0: 0})
def clip_v6(x, *, min=-3.4028234663852886e38, max=3.4028234663852886e38, out=None):  # noqa: A002
    """Opset 6-10: the bounds are float attributes; the defaults (the float32 range) mean no bound,
    which also keeps them from overflowing a float16 input."""
    lo = None if min <= -3.4028234663852886e38 else min
    hi = None if max >= 3.4028234663852886e38 else max
    return _clip(x, lo, hi, out)


@register_op("Clip", since=11, infer=same_as_first, out=True, inplace={0: 0})
def clip(x, lo=None, hi=None, *, out=None):
    """Opset 11+: the bounds are optional scalar inputs."""
    return _clip(x, lo, hi, out)


# ---- Where -------------------------------------------------------------------------------------
def _infer_where(ins: list[Info | None], **_attrs):
    cond, x, y = ins
    if not known(cond, x, y) or x.dtype is None:
        return None
    return [(x.dtype, broadcast(cond.shape, x.shape, y.shape))]


@register_op("Where", since=9, infer=_infer_where, out=True, inplace={0: 1})
def where(cond, x, y, *, out=None):
    """A branch-free bit blend (see select_into); out may be X's buffer."""
    x, y = np.asarray(x), np.asarray(y)
    if out is None:
        out = np.empty(np.broadcast_shapes(np.shape(cond), x.shape, y.shape), x.dtype)
    return select_into(cond, x, y, out)


from . import elementwise_cast, elementwise_logic, elementwise_math  # noqa: E402,F401

"""Softmax, LogSoftmax and Hardmax.

Before opset 13 these ops coerce the input to 2-D at `axis` (default 1): the normalisation runs over
all of the dimensions from `axis` on together. From opset 13 it runs over the single dimension
`axis` (default -1). NumPy reductions accept a tuple of axes, so Softmax and LogSoftmax need no
reshape for the old form; Hardmax's argmax does, on a 2-D view.

Softmax subtracts the maximum before exp (no overflow), then divides by the sum: four passes over
the output buffer and only reduced-size temporaries. LogSoftmax keeps (x - max) - log(sum) in that
order, which stays exact for large logits (x - max is exact, max + log(sum) would not be); its
exp needs a full-size temporary, taken from the planner's scratch space when the plan provides it.
"""

from __future__ import annotations

import numpy as np

from .infer import norm_axis, same_as_first
from .registry import Info, register_op
from .ufunc_kernels import alloc_like, via_float32


def _axes(ndim: int, axis: int, coerce_2d: bool):
    axis = norm_axis(axis, max(ndim, 1))
    return tuple(range(axis, ndim)) if coerce_2d else axis


def _softmax(x, out, axis: int, coerce_2d: bool):
    x = np.asarray(x)
    out = alloc_like(out, x)
    if x.size == 0:
        return out
    axes = _axes(x.ndim, axis, coerce_2d)
    peak = np.maximum.reduce(x, axis=axes, keepdims=True)  # the ufunc method: less overhead than np.max
    np.subtract(x, peak, out=out)
    np.exp(out, out=out)
    total = np.add.reduce(out, axis=axes, keepdims=True)
    return np.divide(out, total, out=out)


def _log_softmax(x, out, axis: int, coerce_2d: bool, scratch=None):
    x = np.asarray(x)
    out = alloc_like(out, x)
    if x.size == 0:
        return out
    axes = _axes(x.ndim, axis, coerce_2d)
    np.subtract(x, np.maximum.reduce(x, axis=axes, keepdims=True), out=out)
    if scratch is not None and scratch.nbytes >= out.nbytes:
        tmp = np.exp(out, out=scratch[: out.nbytes].view(out.dtype).reshape(out.shape))
    else:
        tmp = np.exp(out)
    log_total = np.add.reduce(tmp, axis=axes, keepdims=True)
    np.log(log_total, out=log_total)
    return np.subtract(out, log_total, out=out)


def _scratch_log_softmax(ins: list[Info | None], **_attrs) -> int:
    x = ins[0]
    if x is None or x.shape is None or x.dtype is None:
        return 0
    return int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize


@register_op("Softmax", since=1, infer=same_as_first, out=True, inplace={0: 0})
@via_float32
def softmax_v1(x, *, axis=1, out=None):
    return _softmax(x, out, axis, True)


@register_op("Softmax", since=13, infer=same_as_first, out=True, inplace={0: 0})
@via_float32
def softmax(x, *, axis=-1, out=None):
    return _softmax(x, out, axis, False)


_LOG_SOFTMAX_CAPS = dict(infer=same_as_first, out=True, inplace={0: 0}, scratch=_scratch_log_softmax)


@register_op("LogSoftmax", since=1, **_LOG_SOFTMAX_CAPS)
@via_float32
def log_softmax_v1(x, *, axis=1, out=None, scratch=None):
    return _log_softmax(x, out, axis, True, scratch)


@register_op("LogSoftmax", since=13, **_LOG_SOFTMAX_CAPS)
@via_float32
def log_softmax(x, *, axis=-1, out=None, scratch=None):
    return _log_softmax(x, out, axis, False, scratch)


def _hardmax(x, out, axis: int, coerce_2d: bool):
    """1 at the first maximum along the axis (or the flattened trailing dims), 0 elsewhere."""
    x = np.asarray(x)
    out = alloc_like(out, x)
    out.fill(0)
    if x.size == 0:
        return out
    axis = norm_axis(axis, max(x.ndim, 1))
    if not coerce_2d:
        np.put_along_axis(out, np.argmax(x, axis=axis, keepdims=True), 1, axis=axis)
        return out
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    x2 = x.reshape(rows, -1)
    target = out if out.flags.c_contiguous else np.zeros(out.shape, out.dtype)
    target.reshape(rows, -1)[np.arange(rows), np.argmax(x2, axis=1)] = 1
    if target is not out:
        np.copyto(out, target)
    return out


@register_op("Hardmax", since=1, infer=same_as_first, out=True)
def hardmax_v1(x, *, axis=1, out=None):
    return _hardmax(x, out, axis, True)


@register_op("Hardmax", since=13, infer=same_as_first, out=True)
def hardmax(x, *, axis=-1, out=None):
    return _hardmax(x, out, axis, False)

"""Reductions (Reduce*), ArgMax/ArgMin and cumulative sums and products.

Axes are an attribute up to opset 12 (ReduceSum) or 17 (the others) and an optional input after;
each kernel takes both forms, so one registration serves every version. No axes (or an empty axes
input) means "all axes", unless noop_with_empty_axes is set: then the reduction runs over the empty
set of axes, which leaves each element alone but still applies the op's element-wise part (ReduceL1
gives |x|, ReduceSumSquare x^2), as a reduction over `axis=()` would.

Reductions over empty tensors give the identity of the reduction: 0 for sums, 1 for products,
-inf / +inf (or the dtype's extreme integers) for max / min, -inf for the log-sums.

Kernels write into the planned buffer with NumPy's own `out=` where possible (ReduceMean over the
last axis is on every transformer's hot path). float16 inputs accumulate in float32.
"""

from __future__ import annotations

import numpy as np

from .infer import norm_axis, same_as_first
from .registry import register_op
from .shape_util import UNKNOWN, input_or_attr, norm_axes, plannable, resolve_ints, write


def reduce_axes(rank: int, axes: list[int] | None, noop_with_empty_axes: int) -> tuple[int, ...] | None:
    """The axes to reduce, or None for the no-op reduction over an empty set of axes."""
    if not axes:
        return None if noop_with_empty_axes else tuple(range(rank))
    return tuple(norm_axes(axes, rank))


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...] | None, keepdims: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(shape)
    if keepdims:
        return tuple(1 if k in axes else d for k, d in enumerate(shape))
    return tuple(d for k, d in enumerate(shape) if k not in axes)


@plannable
def _reduce_infer(ins, axes=None, keepdims=1, noop_with_empty_axes=0, **_):
    x = ins[0]
    want = resolve_ints(ins[1] if len(ins) > 1 else None, axes)
    if x.shape is None or want is UNKNOWN:
        return None
    return [(x.dtype, reduced_shape(x.shape, reduce_axes(len(x.shape), want, noop_with_empty_axes), keepdims))]


def _accumulator(dtype: np.dtype) -> np.dtype:
    """float16 sums lose too much when accumulated in float16; integers must keep their own width
    (NumPy would widen int32 sums to int64)."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _reduction(elementwise=None, finish=None, combine="sum"):
    """Builds a Reduce* kernel: optional element-wise map, a sum/prod/max/min/mean over the axes, and an
    optional finishing map (sqrt, log)."""

    def kernel(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0, out=None):
        dtype = data.dtype
        ax = reduce_axes(data.ndim, input_or_attr(axes_input, axes), noop_with_empty_axes)
        work = _accumulator(dtype) if dtype.kind == "f" else dtype
        x = data if elementwise is None else elementwise(data.astype(work, copy=False))
        if ax is None:
            result = x if finish is None else finish(x)
            return write(out, result) if out is not None else np.array(result, dtype, copy=True)
        kd = bool(keepdims)
        # NumPy can reduce straight into `out` unless a finishing map or an integer mean (computed in
        # float64, then truncated) sits in between.
        direct = finish is None and (combine in ("sum", "prod") or (combine == "mean" and dtype.kind == "f"))
        target = out if direct else None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if combine == "sum":
                r = np.sum(x, axis=ax, dtype=work, keepdims=kd, out=target)
            elif combine == "mean":
                mean_dtype = work if dtype.kind == "f" else np.float64
                r = np.mean(x, axis=ax, dtype=mean_dtype, keepdims=kd, out=target)
            elif combine == "prod":
                r = np.prod(x, axis=ax, dtype=work, keepdims=kd, out=target)
            else:
                r = _extreme(x, ax, kd, combine == "max")
            if finish is not None:
                r = finish(r)
        if out is not None:
            if r is not out:
                np.copyto(out, r, casting="unsafe")
            return out
        return np.asarray(r).astype(dtype, copy=False)

    return kernel


def _extreme(x: np.ndarray, axes, keepdims: bool, largest: bool):
    fn = np.max if largest else np.min
    if x.size:
        return fn(x, axis=axes, keepdims=keepdims)
    # An empty reduction yields the identity of max/min: the lowest/highest value of the dtype.
    if x.dtype == np.bool_:
        initial = not largest
    elif x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        initial = info.min if largest else info.max
    else:
        initial = -np.inf if largest else np.inf
    return fn(x, axis=axes, keepdims=keepdims, initial=initial)


def _log_sum_exp(data, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0, out=None):
    """log(sum(exp(x))) computed as m + log(sum(exp(x - m))) with m the (finite) max, so that large
    inputs do not overflow."""
    dtype = data.dtype
    ax = reduce_axes(data.ndim, input_or_attr(axes_input, axes), noop_with_empty_axes)
    if ax is None:
        return write(out, data) if out is not None else data.copy()
    x = data.astype(_accumulator(dtype) if dtype.kind == "f" else np.float64, copy=False)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = _extreme(x, ax, True, True)
        m = np.where(np.isfinite(m), m, 0)
        r = np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True)) + m
    if not keepdims:
        r = r.reshape(reduced_shape(data.shape, ax, 0))
    return write(out, r.astype(dtype, copy=False)) if out is not None else r.astype(dtype, copy=False)


def _square(x):
    return x * x


_REDUCE_KERNELS = {
    "ReduceSum": _reduction(),
    "ReduceMean": _reduction(combine="mean"),
    "ReduceProd": _reduction(combine="prod"),
    "ReduceMax": _reduction(combine="max"),
    "ReduceMin": _reduction(combine="min"),
    "ReduceL1": _reduction(elementwise=np.abs),
    "ReduceL2": _reduction(elementwise=_square, finish=np.sqrt),
    "ReduceSumSquare": _reduction(elementwise=_square),
    "ReduceLogSum": _reduction(finish=np.log),
    "ReduceLogSumExp": _log_sum_exp,
}

for _name, _kernel in _REDUCE_KERNELS.items():
    _kernel.__name__ = _kernel.__qualname__ = _name.lower()
    register_op(_name, since=1, infer=_reduce_infer, out=True, shape_inputs=(1,))(_kernel)


# ---- ArgMax / ArgMin -----------------------------------------------------------------------------


def _arg_infer(ins, axis=0, keepdims=1, **_):
    x = ins[0]
    if x.shape is None:
        return None
    ax = (norm_axis(axis, len(x.shape)),)
    return [(np.dtype(np.int64), reduced_shape(x.shape, ax, keepdims))]


def _arg_reduce(fn, x, axis, keepdims, select_last_index, out):
    axis = norm_axis(axis, x.ndim)
    kd = bool(keepdims)
    if not select_last_index:
        if out is not None and out.dtype == np.intp:
            return fn(x, axis=axis, keepdims=kd, out=out)
        return write(out, fn(x, axis=axis, keepdims=kd).astype(np.int64, copy=False))
    # The last extreme is the first one of the reversed axis.
    last = (x.shape[axis] - 1) - fn(np.flip(x, axis), axis=axis, keepdims=kd)
    return write(out, last.astype(np.int64, copy=False))


@register_op("ArgMax", since=1, infer=_arg_infer, out=True)
def arg_max(data, *, axis=0, keepdims=1, select_last_index=0, out=None):
    return _arg_reduce(np.argmax, data, axis, keepdims, select_last_index, out)


@register_op("ArgMin", since=1, infer=_arg_infer, out=True)
def arg_min(data, *, axis=0, keepdims=1, select_last_index=0, out=None):
    return _arg_reduce(np.argmin, data, axis, keepdims, select_last_index, out)


# ---- CumSum / CumProd ----------------------------------------------------------------------------


def _cumulate(ufunc, x, axis, exclusive, reverse, out):
    """Inclusive or exclusive scan along axis, optionally from the end. Reversal runs the scan on
    flipped views of the input and of the output, and the exclusive form scans all but the last
    element into the output shifted by one, so the result is written in place with no copies."""
    axis = norm_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    src, dst = (np.flip(x, axis), np.flip(out, axis)) if reverse else (x, out)
    if not exclusive:
        ufunc.accumulate(src, axis=axis, dtype=x.dtype, out=dst)
        return out
    n = x.shape[axis]
    head = [slice(None)] * x.ndim
    head[axis] = slice(0, 1)
    dst[tuple(head)] = ufunc.identity
    if n > 1:
        body, shifted = list(head), list(head)
        body[axis], shifted[axis] = slice(0, n - 1), slice(1, n)
        ufunc.accumulate(src[tuple(body)], axis=axis, dtype=x.dtype, out=dst[tuple(shifted)])
    return out


@register_op("CumSum", since=11, infer=plannable(same_as_first), out=True)
def cum_sum(x, axis, *, exclusive=0, reverse=0, out=None):
    return _cumulate(np.add, x, axis, exclusive, reverse, out)


@register_op("CumProd", since=26, infer=plannable(same_as_first), out=True)
def cum_prod(x, axis, *, exclusive=0, reverse=0, out=None):
    return _cumulate(np.multiply, x, axis, exclusive, reverse, out)

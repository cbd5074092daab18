"""Normalization kernels: BatchNormalization, InstanceNormalization, LayerNormalization,
GroupNormalization, RMSNormalization, LRN, LpNormalization and MeanVarianceNormalization.

Statistics are computed in float32 (float64 for double inputs), which is what ``stash_type=1`` asks
for and keeps float16 inputs from overflowing. Every op folds its statistics and its scale/bias
into a per-row (or per-channel) factor and shift where it can, so the full-size work is two ufunc
passes written straight into ``out``; only the small statistics arrays are allocated per call.

Multi-output kernels (LayerNormalization, training-mode BatchNormalization) receive ``out`` as a
tuple when the planner gives every output a buffer; called without ``out`` they return the tuple
of all their outputs and the runtime keeps as many as the node has.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .infer import norm_axis
from .registry import register_op

# TensorProto element types that stash_type may name.
_STASH_DTYPES = {1: np.float32, 10: np.float16, 11: np.float64}


def _compute_dtype(dtype: np.dtype, stash_type: int = 1) -> np.dtype:
    """The precision statistics are computed in: double stays double, the rest use float32."""
    if stash_type in (10, 11):
        return np.dtype(_STASH_DTYPES[stash_type])
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _split_out(out) -> tuple[np.ndarray | None, tuple]:
    """Y's buffer and the buffers of the optional outputs (a tuple when several were asked for)."""
    if out is None:
        return None, ()
    if isinstance(out, (tuple, list)):
        return out[0], tuple(out[1:])
    return out, ()


def _finish(y_dst: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    """Writes a computed Y into its buffer (casting if needed) or returns it in the right dtype."""
    if y_dst is None:
        return y
    if y is not y_dst:
        np.copyto(y_dst, y, casting="unsafe")
    return y_dst


def _channel_shape(x_ndim: int, c: int) -> tuple[int, ...]:
    return (c,) + (1,) * max(x_ndim - 2, 0)


def _affine_into(x: np.ndarray, factor: np.ndarray, shift: np.ndarray, y_dst: np.ndarray | None) -> np.ndarray:
    """y = x * factor + shift in two in-place passes, in x's dtype unless x is float16."""
    if x.dtype == np.float16:  # float16 products lose too much; go through float32
        y = x.astype(np.float32)
        y *= factor
        y += shift
        return _finish(y_dst, y.astype(np.float16) if y_dst is None else y)
    y = np.multiply(x, factor.astype(x.dtype, copy=False), out=y_dst)
    return np.add(y, shift.astype(x.dtype, copy=False), out=y)


def _mean_var(x: np.ndarray, axes: tuple[int, ...], ct: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance over axes (keepdims), in the compute dtype."""
    xc = x.astype(ct, copy=False)
    mean = xc.mean(axis=axes, keepdims=True, dtype=ct)
    d = xc - mean
    np.multiply(d, d, out=d)
    return mean, d.mean(axis=axes, keepdims=True, dtype=ct)


# Training-mode BatchNormalization that writes Y over X squares the deviations a block of samples of about this
# many elements at a time, so the temporary stays a block
VAR_BLOCK_ELEMENTS = 1 << 20


def _var_by_blocks(x: np.ndarray, mean: np.ndarray, axes: tuple[int, ...], ct: np.dtype) -> np.ndarray:
    """Population variance over axes (axis 0 among them, keepdims) around `mean`, a block of samples at a time."""
    n = x.shape[0]
    step = max(1, VAR_BLOCK_ELEMENTS // max(1, x[0].size))
    buf = np.empty((min(step, n),) + x.shape[1:], ct)
    total = np.zeros(mean.shape, ct)
    for i in range(0, n, step):
        d = buf[: min(step, n - i)]
        np.subtract(x[i:i + step], mean, out=d)
        np.multiply(d, d, out=d)
        total += d.sum(axis=axes, keepdims=True, dtype=ct)
    return total / ct.type(math.prod(x.shape[a] for a in axes))


# ---- BatchNormalization -------------------------------------------------------------------------


def _bn_params(x_shape, scale, bias, mean, var, spatial: int):
    """Per-channel parameters shaped to broadcast against X ((C,1,..) or X.shape[1:] when not spatial)."""
    if spatial == 0 and len(x_shape) > 2 and np.size(scale) == int(np.prod(x_shape[1:])):
        shape = tuple(x_shape[1:])
    else:
        shape = _channel_shape(len(x_shape), np.size(scale))
    return [np.asarray(p).reshape(shape) for p in (scale, bias, mean, var)]


def _bn_factor_shift(x_shape, scale, bias, mean, var, epsilon, spatial, ct):
    s, b, m, v = (p.astype(ct) for p in _bn_params(x_shape, scale, bias, mean, var, spatial))
    factor = s / np.sqrt(v + ct.type(epsilon))
    return factor, b - m * factor


def _bn_infer(ins, **_attrs):
    x, mean = ins[0], ins[3]
    if x.shape is None or mean is None or mean.shape is None:
        return None
    stat = (mean.dtype, mean.shape)
    return [(x.dtype, x.shape), stat, stat, stat, stat]


def _bn_train(x, scale, bias, mean, var, epsilon, momentum, spatial, out, n_extra):
    """Training mode: normalise with the batch statistics, update the running ones."""
    ct = _compute_dtype(x.dtype)
    y_dst, extra = _split_out(out)
    axes = (0,) + tuple(range(2, x.ndim)) if spatial else (0,)
    if (isinstance(y_dst, np.ndarray) and y_dst.shape == x.shape and y_dst.dtype == ct == x.dtype
            and not np.may_share_memory(y_dst, x)):
        # the squared deviations go into Y's buffer, which the affine map overwrites after: no temporary
        bmean = x.mean(axis=axes, keepdims=True, dtype=ct)
        np.subtract(x, bmean, out=y_dst)
        np.multiply(y_dst, y_dst, out=y_dst)
        bvar = y_dst.mean(axis=axes, keepdims=True, dtype=ct)
    elif x.dtype == ct and x.ndim >= 2 and x.shape[0] > 1:  # Y overwrites X in place: deviations by blocks
        bmean = x.mean(axis=axes, keepdims=True, dtype=ct)
        bvar = _var_by_blocks(x, bmean, axes, ct)
    else:
        bmean, bvar = _mean_var(x, axes, ct)
    s, b, _, _ = (p.astype(ct) for p in _bn_params(x.shape, scale, bias, mean, var, spatial))
    factor = s / np.sqrt(bvar + ct.type(epsilon))
    y = _affine_into(x, factor.reshape(s.shape), (b - bmean * factor).reshape(s.shape), y_dst)
    stats_dtype = np.asarray(mean).dtype
    bmean, bvar = bmean.reshape(np.shape(mean)), bvar.reshape(np.shape(mean))
    running_mean = np.asarray(mean, ct) * momentum + bmean * (1 - momentum)
    running_var = np.asarray(var, ct) * momentum + bvar * (1 - momentum)
    results = [running_mean, running_var, bmean, bvar][:n_extra]
    if extra:
        for dst, r in zip(extra, results):
            if dst is not None:
                np.copyto(dst, r, casting="unsafe")
        return (y, *extra)
    return (y, *(r.astype(stats_dtype) for r in results))


def _bn_make(ins, general, attrs):
    """Inference with constant parameters: fold them into one factor and shift up front. A node
    that asks for training statistics goes to the general kernel."""
    x, params = ins[0], ins[1:5]
    epsilon, spatial = attrs.get("epsilon", 1e-5), attrs.get("spatial", 1)

    def call_general(*args, out=None):
        return general(*args, **attrs, out=out)

    constant = x is not None and x.shape is not None and all(p is not None and p.value is not None for p in params)
    if attrs.get("training_mode", 0) or not constant:
        return call_general
    ct = _compute_dtype(x.dtype)
    factor, shift = _bn_factor_shift(x.shape, *(p.value for p in params), epsilon, spatial, ct)
    if x.dtype != np.float16:
        factor, shift = factor.astype(x.dtype), shift.astype(x.dtype)

    def batch_norm_folded(*args, out=None):
        if isinstance(out, (tuple, list)) and len(out) > 1:
            return call_general(*args, out=out)
        return _affine_into(args[0], factor, shift, out)

    return batch_norm_folded


def _bn_make_legacy(ins, **attrs):
    return _bn_make(ins, batch_norm_legacy, attrs)


def _bn_make_14(ins, **attrs):
    return _bn_make(ins, batch_norm, attrs)


@register_op("BatchNormalization", since=1, infer=_bn_infer, out=True, inplace={0: 0}, make=_bn_make_legacy)
def batch_norm_legacy(X, scale, B, mean, var, *, epsilon=1e-5, momentum=0.9, spatial=1, is_test=0,
                      consumed_inputs=None, out=None):
    """Opsets 1-13: training statistics are produced when the node asks for more than Y."""
    _, extra = _split_out(out)
    if extra and not is_test:
        return _bn_train(X, scale, B, mean, var, epsilon, momentum, spatial, out, len(extra))
    ct = _compute_dtype(X.dtype)
    factor, shift = _bn_factor_shift(X.shape, scale, B, mean, var, epsilon, spatial, ct)
    y_dst, extra = _split_out(out)
    y = _affine_into(X, factor, shift, y_dst)
    if extra:  # test mode with extra outputs: pass the given statistics through
        for dst, src in zip(extra, (mean, var, mean, var)):
            np.copyto(dst, src, casting="unsafe")
        return (y, *extra)
    return y


@register_op("BatchNormalization", since=14, infer=_bn_infer, out=True, inplace={0: 0}, make=_bn_make_14)
def batch_norm(X, scale, B, input_mean, input_var, *, epsilon=1e-5, momentum=0.9, training_mode=0, out=None):
    if training_mode:
        return _bn_train(X, scale, B, input_mean, input_var, epsilon, momentum, 1, out, 2)
    ct = _compute_dtype(X.dtype)
    factor, shift = _bn_factor_shift(X.shape, scale, B, input_mean, input_var, epsilon, 1, ct)
    y_dst, extra = _split_out(out)
    y = _affine_into(X, factor, shift, y_dst)
    return (y, *extra) if extra else y


# ---- Instance and group normalization ----------------------------------------------------------


def _same_as_x(ins, **_attrs):
    x = ins[0]
    return None if x.shape is None else [(x.dtype, x.shape)]


@register_op("InstanceNormalization", since=1, infer=_same_as_x, out=True, inplace={0: 0})
def instance_norm(input, scale, B, *, epsilon=1e-5, out=None):
    x = input
    ct = _compute_dtype(x.dtype)
    mean, var = _mean_var(x, tuple(range(2, x.ndim)), ct)
    cshape = _channel_shape(x.ndim, x.shape[1])
    factor = np.asarray(scale, ct).reshape(cshape) / np.sqrt(var + ct.type(epsilon))
    shift = np.asarray(B, ct).reshape(cshape) - mean * factor
    return _affine_into(x, factor, shift, out)


@register_op("GroupNormalization", since=18, infer=_same_as_x, out=True, inplace={0: 0})
def group_norm(X, scale, bias, *, num_groups, epsilon=1e-5, stash_type=1, out=None):
    """Opset 18 gives scale/bias per group, opset 21 per channel; the size says which."""
    n, c = X.shape[0], X.shape[1]
    ct = _compute_dtype(X.dtype, stash_type)
    grouped = X.reshape(n, num_groups, -1)
    mean, var = _mean_var(grouped, (2,), ct)
    inv = 1.0 / np.sqrt(var + ct.type(epsilon))  # (N, G, 1)
    per_group = c // num_groups
    inv_c = np.repeat(inv.reshape(n, num_groups), per_group, axis=1)  # (N, C)
    mean_c = np.repeat(mean.reshape(n, num_groups), per_group, axis=1)
    scale, bias = np.asarray(scale, ct).reshape(-1), np.asarray(bias, ct).reshape(-1)
    if scale.size != c:
        scale, bias = np.repeat(scale, per_group), np.repeat(bias, per_group)
    factor = inv_c * scale
    shift = bias - mean_c * factor
    spatial = (1,) * (X.ndim - 2)
    return _affine_into(X, factor.reshape(n, c, *spatial), shift.reshape(n, c, *spatial), out)


# ---- Layer and RMS normalization ------------------------------------------------------------------


def _ln_infer(ins, *, axis=-1, stash_type=1, **_attrs):
    x = ins[0]
    if x.shape is None:
        return None
    a = norm_axis(axis, len(x.shape))
    stat = (_stat_dtype(x.dtype, stash_type), tuple(x.shape[:a]) + (1,) * (len(x.shape) - a))
    return [(x.dtype, x.shape), stat, stat]


def _stat_dtype(dtype, stash_type):
    """Mean/InvStdDev dtype: the stash type (float32 for the default 1, whatever X is)."""
    return np.dtype(_STASH_DTYPES.get(stash_type, np.float32))


def _rows(x: np.ndarray, axis: int, ct: np.dtype, y_dst: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, cols) view of X in the compute dtype, and the (rows, cols) array to work in: out
    itself when it has the compute dtype, else a temporary."""
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    x2 = x.reshape(rows, -1)
    if x.dtype != ct:
        x2 = x2.astype(ct)
        return x2, x2  # a private copy: work in it directly
    if y_dst is not None and y_dst.flags.c_contiguous:
        return x2, y_dst.reshape(rows, -1)
    return x2, np.empty(x2.shape, ct)


def _row_sq_mean(w2: np.ndarray) -> np.ndarray:
    """Mean of squares per row, as a row-wise dot product (no full-size temporary)."""
    if hasattr(np, "vecdot"):
        return np.vecdot(w2, w2) / max(w2.shape[1], 1)
    return np.einsum("ij,ij->i", w2, w2) / max(w2.shape[1], 1)


def _row_mean(x2: np.ndarray) -> np.ndarray:
    """Mean per row, (rows, 1), as a matrix-vector product, which BLAS does in one fast pass."""
    return np.matmul(x2, np.full((x2.shape[1], 1), 1.0 / max(x2.shape[1], 1), x2.dtype))


def _scale_shift_out(work: np.ndarray, x: np.ndarray, scale, bias, y_dst):
    """Second stage: work (already normalised, in the compute dtype) * Scale + B into Y."""
    w = work.reshape(x.shape)
    np.multiply(w, np.asarray(scale).astype(w.dtype, copy=False), out=w)
    if bias is not None:
        np.add(w, np.asarray(bias).astype(w.dtype, copy=False), out=w)
    if y_dst is None:
        return w.astype(x.dtype, copy=False)
    if np.may_share_memory(w, y_dst):
        return y_dst
    np.copyto(y_dst, w, casting="unsafe")
    return y_dst


def _make_layer_norm(ins, *, axis=-1, epsilon=1e-5, stash_type=1):
    """The transformer case, specialised once per plan: float32 over the last axis with constant
    Scale and B, Y alone. The row mean is one matrix-vector product, the variance one row-wise dot,
    and the normalisation, scale and shift run in place in Y: half the calls of the general path."""
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    general = functools.partial(layer_norm, axis=axis, epsilon=epsilon, stash_type=stash_type)
    if (x is None or x.shape is None or len(x.shape) < 1 or x.dtype != np.float32 or stash_type != 1
            or norm_axis(axis, len(x.shape)) != len(x.shape) - 1 or scale is None or scale.value is None
            or (bias is not None and bias.value is None)):
        return general
    cols = x.shape[-1]
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    if cols == 0:
        return general
    g = np.broadcast_to(scale.value.astype(np.float32), (cols,)).copy()
    b = None if bias is None else np.broadcast_to(bias.value.astype(np.float32), (cols,)).copy()
    mean_vec = np.full((cols, 1), 1.0 / cols, np.float32)
    eps = np.float32(epsilon)

    def layer_norm_rows(X, Scale=None, B=None, *, out=None):
        if out is None or isinstance(out, (tuple, list)) or not out.flags.c_contiguous:
            return general(X, Scale, B, out=out)
        x2, y = X.reshape(rows, cols), out.reshape(rows, cols)
        mean = np.matmul(x2, mean_vec)
        np.subtract(x2, mean, out=y)
        inv = np.vecdot(y, y) if hasattr(np, "vecdot") else np.einsum("ij,ij->i", y, y)
        np.multiply(inv, np.float32(1.0 / cols), out=inv)
        np.add(inv, eps, out=inv)
        np.sqrt(inv, out=inv)
        np.divide(np.float32(1.0), inv, out=inv)
        np.multiply(y, inv[:, None], out=y)
        np.multiply(y, g, out=y)
        if b is not None:
            np.add(y, b, out=y)
        return out

    return layer_norm_rows


@register_op("LayerNormalization", since=17, infer=_ln_infer, out=True, inplace={0: 0}, make=_make_layer_norm)
def layer_norm(X, Scale, B=None, *, axis=-1, epsilon=1e-5, stash_type=1, out=None):
    a = norm_axis(axis, X.ndim)
    ct = _compute_dtype(X.dtype, stash_type)
    y_dst, extra = _split_out(out)
    x2, work = _rows(X, a, ct, y_dst)
    mean = _row_mean(x2)
    np.subtract(x2, mean, out=work)
    inv = 1.0 / np.sqrt(_row_sq_mean(work) + ct.type(epsilon))
    np.multiply(work, inv[:, None], out=work)
    y = _scale_shift_out(work, X, Scale, B, y_dst)
    if y_dst is not None and not extra:
        return y
    stat_shape = X.shape[:a] + (1,) * (X.ndim - a)
    stats = [v.reshape(stat_shape).astype(_stat_dtype(X.dtype, stash_type), copy=False) for v in (mean, inv)]
    if y_dst is None:  # the runtime keeps as many of these as the node has outputs
        return (y, *stats)
    for dst, value in zip(extra, stats):
        if dst is not None:
            np.copyto(dst, value)
    return (y, *extra)


@register_op("RMSNormalization", since=23, infer=_same_as_x, out=True, inplace={0: 0})
def rms_norm(X, scale, *, axis=-1, epsilon=1e-5, stash_type=1, out=None):
    a = norm_axis(axis, X.ndim)
    ct = _compute_dtype(X.dtype, stash_type)
    x2, work = _rows(X, a, ct, out)
    inv = 1.0 / np.sqrt(_row_sq_mean(x2) + ct.type(epsilon))
    np.multiply(x2, inv[:, None], out=work)
    return _scale_shift_out(work, X, scale, None, out)


# ---- LRN, Lp and mean-variance normalization -----------------------------------------------------


@register_op("LRN", since=1, infer=_same_as_x, out=True, inplace={0: 0})
def lrn(X, *, size, alpha=1e-4, beta=0.75, bias=1.0, out=None):
    """Sums of squares over a window of channels, built from `size` shifted slice additions."""
    ct = _compute_dtype(X.dtype)
    sq = np.square(X, dtype=ct)
    acc = np.zeros_like(sq)
    c = X.shape[1]
    below = (size - 1) // 2
    for d in range(-below, size - below):  # channel offsets of the window
        if abs(d) >= c:
            continue
        if d >= 0:
            acc[:, : c - d] += sq[:, d:]
        else:
            acc[:, -d:] += sq[:, : c + d]
    np.multiply(acc, ct.type(alpha / size), out=acc)
    np.add(acc, ct.type(bias), out=acc)
    np.power(acc, ct.type(-beta), out=acc)
    if X.dtype == ct:
        return np.multiply(X, acc, out=out)
    return _finish(out, (X * acc).astype(X.dtype))


@register_op("LpNormalization", since=1, infer=_same_as_x, out=True, inplace={0: 0})
def lp_norm(input, *, axis=-1, p=2, out=None):
    x = input
    ct = _compute_dtype(x.dtype)
    if p == 1:
        norm = np.abs(x).sum(axis=axis, keepdims=True, dtype=ct)
    else:
        norm = np.sqrt(np.square(x, dtype=ct).sum(axis=axis, keepdims=True))
    norm[norm == 0] = 1  # an all-zero slice stays zero
    if x.dtype == ct:
        return np.divide(x, norm, out=out)
    return _finish(out, (x / norm).astype(x.dtype))


@register_op("MeanVarianceNormalization", since=9, infer=_same_as_x, out=True, inplace={0: 0})
def mean_variance_norm(X, *, axes=(0, 2, 3), out=None):
    axes = tuple(norm_axis(a, X.ndim) for a in axes)
    ct = _compute_dtype(X.dtype)
    mean, var = _mean_var(X, axes, ct)
    std = np.sqrt(var) + ct.type(1e-9)
    if X.dtype == ct:
        y = np.subtract(X, mean, out=out)
        return np.divide(y, std, out=y)
    return _finish(out, ((X - mean) / std).astype(X.dtype))


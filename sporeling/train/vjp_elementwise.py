"""Backward rules for the elementwise ops, the activations, the shape ops, Gather, two reductions and Dropout.

Each rule turns the gradient of a node's output into the gradients of its inputs, following ONNX semantics
(attributes arrive without their ONNX defaults, so every read names the default). Where the forward output
already holds a factor of the derivative (Sigmoid, Tanh, Exp, Sqrt, Div) the rule reuses it instead of
recomputing; shape ops only move the gradient back to the input's layout. Shape, index and axes inputs get
None. Importing the module registers the rules in sporeling.train.vjp's table; they are checked against
torch.autograd in tests/train/test_vjp_elementwise.py.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SporelingError
from ..ops.elementwise_math import erfc_into
from .vjp import VJPContext, as_gradient, register_vjp, unbroadcast, wanted


def _grad(ctx: VJPContext, i: int = 0) -> np.ndarray:
    """The gradient of output i, zeros when that output does not reach the loss (a rule is only run when
    some output does)."""
    g = ctx.grads[i] if i < len(ctx.grads) else None
    return np.zeros_like(ctx.outputs[i]) if g is None else g


# In-place rules compute their local derivative (ReLU's mask, Sigmoid's y(1 - y)) for blocks of samples of
# about this many elements, so its temporaries stay a block instead of the whole tensor
BLOCK_ELEMENTS = 1 << 20


def _sample_blocks(shape: tuple) -> list:
    """Slices along the first axis, each about BLOCK_ELEMENTS elements (one slice for a small tensor)."""
    if not shape or math.prod(shape) <= BLOCK_ELEMENTS:
        return [slice(None)]
    step = max(1, BLOCK_ELEMENTS // max(1, math.prod(shape[1:])))
    return [slice(i, i + step) for i in range(0, shape[0], step)]


def _unary(ctx: VJPContext, dydx) -> list:
    """Rules of one-input ops: g * dy/dx, with dydx(x, y) the local derivative, multiplied into g itself
    when it has the result's dtype and shape (it is the rule's to write, see vjp.py): no new array, and the
    derivative taken a block of samples at a time."""
    if not wanted(ctx, 0):
        return [None]
    x, y = ctx.inputs[0], ctx.outputs[0]
    g = ctx.grads[0] if ctx.grads else None
    if (g is not None and g.flags.writeable and g.dtype == x.dtype and g.shape == x.shape == y.shape and g.ndim
            and np.result_type(g, dydx(x[:0], y[:0])) == g.dtype):
        ctx.grads[0] = None
        for blk in _sample_blocks(g.shape):
            np.multiply(g[blk], dydx(x[blk], y[blk]), out=g[blk])
        return [g]
    return [as_gradient(_grad(ctx) * dydx(x, y), x)]


def _binary(ctx: VJPContext, ga, gb) -> list:
    """Rules of broadcasting two-input ops: ga(g), gb(g) before summing back to each input's shape."""
    g = _grad(ctx)
    out = [None, None]
    for i, f in enumerate((ga, gb)):
        if wanted(ctx, i):
            out[i] = as_gradient(unbroadcast(f(g), ctx.inputs[i].shape), ctx.inputs[i])
    return out


# ---- arithmetic ---------------------------------------------------------------------------------------------


@register_vjp("Add")
def _add(ctx):
    return _binary(ctx, lambda g: g, lambda g: g)


@register_vjp("Sub")
def _sub(ctx):
    return _binary(ctx, lambda g: g, lambda g: -g)


@register_vjp("Mul")
def _mul(ctx):
    a, b = ctx.inputs[:2]
    return _binary(ctx, lambda g: g * b, lambda g: g * a)


@register_vjp("Div")
def _div(ctx):
    b, y = ctx.inputs[1], ctx.outputs[0]
    if not np.issubdtype(y.dtype, np.floating):
        return [None, None]
    # d(a/b)/db = -a/b^2 = -y/b
    return _binary(ctx, lambda g: g / b, lambda g: -g * y / b)


@register_vjp("Neg")
def _neg(ctx):
    return _unary(ctx, lambda x, y: -1)


@register_vjp("Pow")
def _pow(ctx):
    a, b = ctx.inputs[:2]
    y = ctx.outputs[0]
    out = [None, None]
    g = _grad(ctx)
    if wanted(ctx, 0):
        bb = b.astype(a.dtype, copy=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            # b * a^(b-1) without dividing y by a, which fails at a = 0
            da = bb * np.power(a, bb - 1)
        out[0] = as_gradient(unbroadcast(g * da, a.shape), a)
    if wanted(ctx, 1) and np.issubdtype(b.dtype, np.floating):
        with np.errstate(divide="ignore", invalid="ignore"):
            db = y * np.log(a)
        # as torch: no contribution where the power is 0 (a = 0 with b > 0), though log(0) = -inf
        db = np.where(y == 0, 0, db)
        out[1] = as_gradient(unbroadcast(g * db, b.shape), b)
    return out


@register_vjp("Exp")
def _exp(ctx):
    return _unary(ctx, lambda x, y: y)


@register_vjp("Log")
def _log(ctx):
    return _unary(ctx, lambda x, y: 1 / x)


@register_vjp("Sqrt")
def _sqrt(ctx):
    return _unary(ctx, lambda x, y: 0.5 / y)


@register_vjp("Clip")
def _clip(ctx):
    """From the output alone, so training keeps one tensor for Conv -> Clip -> Conv (ReLU6) instead of two:
    y is strictly inside the bounds exactly where x is. At x exactly on a bound the gradient is 0, as torch's
    hardtanh (ReLU6) gives it; clamp would pass it."""
    y = ctx.outputs[0]
    if ctx.opset < 11:
        lo, hi = ctx.attrs.get("min", -np.inf), ctx.attrs.get("max", np.inf)
    else:
        lo = ctx.inputs[1] if len(ctx.inputs) > 1 and ctx.inputs[1] is not None else -np.inf
        hi = ctx.inputs[2] if len(ctx.inputs) > 2 and ctx.inputs[2] is not None else np.inf
    g = _grad(ctx)
    bounds = wanted(ctx, 1) or wanted(ctx, 2)
    if wanted(ctx, 0) and not bounds and g is ctx.grads[0] and g.flags.writeable and g.dtype == y.dtype:
        # the usual case (ReLU6): the gradient is the rule's own (vjp.py), masked in place one bound at a time
        # and a block of samples at a time, so the only temporary is a block's boolean mask
        for blk in _sample_blocks(g.shape):
            np.multiply(g[blk], y[blk] > lo, out=g[blk])
            np.multiply(g[blk], y[blk] < hi, out=g[blk])
        return [g] + [None] * (len(ctx.inputs) - 1)
    inside = (y > lo) & (y < hi)
    res = [as_gradient(g * inside, ctx.inputs[0]) if wanted(ctx, 0) else None]
    if ctx.opset >= 11:
        # ONNX clip is min(max(x, lo), hi): below lo (and lo < hi) the output is lo; at or above hi it is hi
        at_lo = (y <= lo) & (np.asarray(lo) < hi) if bounds else None
        at_hi = ~inside & ~at_lo if bounds else None
        for i, mask in ((1, at_lo), (2, at_hi)):
            res.append(as_gradient(np.sum(g * mask).reshape(ctx.inputs[i].shape), ctx.inputs[i])
                       if wanted(ctx, i) else None)
    return res[: len(ctx.inputs)]


# ---- activations --------------------------------------------------------------------------------------------


@register_vjp("Relu")
def _relu(ctx):
    # from the output (y > 0 exactly where x > 0), so training need not keep the input alive
    return _unary(ctx, lambda x, y: y > 0)


@register_vjp("LeakyRelu")
def _leaky_relu(ctx):
    alpha = ctx.attrs.get("alpha", 0.01)
    return _unary(ctx, lambda x, y: np.where(x > 0, 1.0, alpha))


@register_vjp("Sigmoid")
def _sigmoid(ctx):
    return _unary(ctx, lambda x, y: y * (1 - y))


@register_vjp("Tanh")
def _tanh(ctx):
    return _unary(ctx, lambda x, y: 1 - y * y)


@register_vjp("HardSigmoid")
def _hard_sigmoid(ctx):
    alpha, beta = ctx.attrs.get("alpha", 0.2), ctx.attrs.get("beta", 0.5)

    def d(x, y):
        z = alpha * x + beta
        return alpha * ((z > 0) & (z < 1))

    return _unary(ctx, d)


@register_vjp("HardSwish")
def _hard_swish(ctx):
    # x * clip(x/6 + 1/2, 0, 1): 0 below -3, 1 above 3, x/3 + 1/2 between
    return _unary(ctx, lambda x, y: np.where(x < -3, 0, np.where(x > 3, 1, x / 3 + 0.5)))


@register_vjp("Gelu")
def _gelu(ctx):
    approximate = ctx.attrs.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()

    def exact(x, y):
        # Phi(x) + x phi(x), Phi from erfc so the far negative tail keeps its relative accuracy
        cdf = 0.5 * erfc_into(x * -math.sqrt(0.5))
        return cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def tanh(x, y):
        c = math.sqrt(2 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x**3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)

    return _unary(ctx, tanh if approximate == "tanh" else exact)


@register_vjp("Identity")
def _identity(ctx):
    return _unary(ctx, lambda x, y: 1)


# ---- shape ops ----------------------------------------------------------------------------------------------


def _only_first(ctx: VJPContext, g) -> list:
    """Ops whose one differentiable input is the first; the others are shapes, axes or indices."""
    return [as_gradient(g, ctx.inputs[0]) if wanted(ctx, 0) else None] + [None] * (len(ctx.inputs) - 1)


@register_vjp("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(ctx):
    return _only_first(ctx, _grad(ctx).reshape(ctx.inputs[0].shape))


@register_vjp("Transpose")
def _transpose(ctx):
    x = ctx.inputs[0]
    perm = ctx.attrs.get("perm")
    perm = list(range(x.ndim))[::-1] if perm is None else list(perm)
    return _only_first(ctx, _grad(ctx).transpose(np.argsort(perm)))


@register_vjp("Concat")
def _concat(ctx):
    g = _grad(ctx)
    axis = ctx.attrs.get("axis", 0) % g.ndim
    bounds = np.cumsum([x.shape[axis] for x in ctx.inputs])[:-1]
    return [as_gradient(p, x) if ctx.needs[i] else None
            for i, (x, p) in enumerate(zip(ctx.inputs, np.split(g, bounds, axis=axis)))]


@register_vjp("Split")
def _split(ctx):
    x = ctx.inputs[0]
    axis = ctx.attrs.get("axis", 0) % x.ndim
    parts = [_grad(ctx, i) for i in range(len(ctx.outputs))]
    return _only_first(ctx, np.concatenate(parts, axis=axis))


def _slice_params(ctx: VJPContext) -> tuple[list, list, list, list]:
    """starts, ends, axes, steps from attributes (opset < 10) or inputs 1-4."""
    if ctx.opset < 10:
        a = ctx.attrs
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        return starts, ends, axes, [1] * len(starts)
    ins = list(ctx.inputs) + [None] * (5 - len(ctx.inputs))
    starts, ends = (np.asarray(v).reshape(-1).tolist() for v in ins[1:3])
    axes = list(range(len(starts))) if ins[3] is None else np.asarray(ins[3]).reshape(-1).tolist()
    steps = [1] * len(starts) if ins[4] is None else np.asarray(ins[4]).reshape(-1).tolist()
    return starts, ends, axes, steps


@register_vjp("Slice")
def _slice(ctx):
    x = ctx.inputs[0]
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(*_slice_params(ctx)):
        axis %= x.ndim
        dim = x.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            # ONNX clamps a backward slice's end to -1, meaning "past element 0", which Python spells None
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            end = None if end < 0 else end
        index[axis] = slice(start, end, step)
    gx = np.zeros_like(x) if wanted(ctx, 0) else None
    if gx is not None:
        gx[tuple(index)] = _grad(ctx)
    return _only_first(ctx, gx) if gx is not None else [None] * len(ctx.inputs)


@register_vjp("Gather")
def _gather(ctx):
    x, idx = ctx.inputs[:2]
    if not wanted(ctx, 0):
        return [None, None]
    axis = ctx.attrs.get("axis", 0) % x.ndim
    dim = x.shape[axis]
    flat = np.asarray(idx, dtype=np.int64).reshape(-1)
    flat = np.where(flat < 0, flat + dim, flat)
    pre, post = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
    g = _grad(ctx).reshape(pre, flat.size, post).transpose(1, 0, 2)
    acc = np.zeros((dim, pre, post), dtype=x.dtype)
    # repeated indices add up, which plain fancy-index assignment would not do
    np.add.at(acc, flat, g)
    return [acc.transpose(1, 0, 2).reshape(x.shape), None]


# ---- reductions and dropout ---------------------------------------------------------------------------------


def _reduce_grad(ctx: VJPContext, attr_axes_until: int, mean: bool) -> list:
    """Sum and mean: the gradient broadcast back over the reduced axes (divided by their size for the mean).
    Axes are an attribute before opset attr_axes_until and the optional second input from it on."""
    x = ctx.inputs[0]
    if not wanted(ctx, 0):
        return [None] * len(ctx.inputs)
    if ctx.opset < attr_axes_until:
        axes = ctx.attrs.get("axes")
    else:
        axes = ctx.inputs[1] if len(ctx.inputs) > 1 else None
    axes = None if axes is None else [int(a) % max(x.ndim, 1) for a in np.asarray(axes).reshape(-1)]
    g = _grad(ctx)
    if not axes:
        if ctx.opset >= attr_axes_until and ctx.attrs.get("noop_with_empty_axes", 0):
            return _only_first(ctx, g)
        axes = list(range(x.ndim))
    kept = [1 if i in axes else d for i, d in enumerate(x.shape)]
    g = np.broadcast_to(g.reshape(kept), x.shape)
    if mean:
        g = g / math.prod(x.shape[i] for i in axes)
    return _only_first(ctx, np.array(g))


@register_vjp("ReduceSum")
def _reduce_sum(ctx):
    return _reduce_grad(ctx, 13, mean=False)


@register_vjp("ReduceMean")
def _reduce_mean(ctx):
    return _reduce_grad(ctx, 18, mean=True)


@register_vjp("Dropout")
def _dropout(ctx):
    x = ctx.inputs[0]
    if not wanted(ctx, 0):
        return [None] * len(ctx.inputs)
    ins = list(ctx.inputs) + [None] * (3 - len(ctx.inputs))
    # before opset 12 there is no training mode: sporeling's forward is the identity, and so is the gradient
    training = ctx.opset >= 12 and ins[2] is not None and bool(np.asarray(ins[2]).reshape(-1)[0])
    ratio = 0.5 if ins[1] is None else float(np.asarray(ins[1]).reshape(-1)[0])
    if not training or ratio == 0:
        return _only_first(ctx, _grad(ctx))
    if len(ctx.outputs) < 2 or ctx.outputs[1] is None:
        raise SporelingError("Dropout in training mode can only be differentiated with its mask output, "
                             "which this node does not produce")
    return _only_first(ctx, _grad(ctx) * ctx.outputs[1] * x.dtype.type(1.0 / (1.0 - ratio)))

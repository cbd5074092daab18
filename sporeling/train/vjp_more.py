"""More backward rules: the unary math and activation ops, the variadic and broadcasting ops, the reductions
beyond sum and mean, the layout and index ops models use around their core (Expand, Tile, Pad, Resize, Einsum,
DepthToSpace, SpaceToDepth, GatherND, ScatterND), InstanceNormalization and GlobalMaxPool.

The unary ops are one table of local derivatives d(x, y), from the input x or the output y, whichever gives
the derivative cheaply. Max/Min (variadic and ReduceMax/ReduceMin) split a gradient evenly between tied
elements, as torch.maximum and torch.amax do. Cast passes the gradient back in the input's float type and
gives none to a non-float input. Expand, Tile, Sum and Mean sum the gradient back over what they repeated;
Pad crops it (reflect, edge and wrap add up every copy of an element, found by padding an index array the
same way); Resize is linear in its input and separable, so its adjoint applies the transpose of each axis's
tap table, built by the forward kernel's own geometry code. Einsum's operand gradients are einsums of the
output gradient with the other operands. InstanceNormalization differentiates through each (sample, channel)'s
statistics; GlobalMaxPool gives each channel's gradient to its first maximum, as MaxPool's rule does;
DepthToSpace (DCR and CRD) and SpaceToDepth permute the gradient back; GatherND adds it back into the gathered
slices; ScatterND (reduction none or add) gathers it for the updates and, without reduction, zeroes the
overwritten elements of data's (of repeated index tuples, only the update the forward kept gets one). Rules
that read only shapes (or a condition, or shape inputs) are listed in vjp.SAVES, so training does not keep
their values alive. Checked against torch.autograd in tests/train/test_vjp_more.py.
"""

from __future__ import annotations

import math
import string

import numpy as np

from ..errors import SporelingError
from ..ops import resize as _resize
from ..ops.shape_slice import _pad_args
from .vjp import SAVES, VJPContext, as_gradient, register_vjp, unbroadcast, wanted

_SQRT_PI = math.sqrt(math.pi)


def _grad(ctx: VJPContext, i: int = 0) -> np.ndarray:
    g = ctx.grads[i] if i < len(ctx.grads) else None
    return np.zeros_like(ctx.outputs[i]) if g is None else g


def _first_only(ctx: VJPContext, gx) -> list:
    """The gradient of input 0; the others (shapes, axes, pads, repeats) get none."""
    return [None if gx is None or not wanted(ctx, 0) else as_gradient(gx, ctx.inputs[0])] + \
        [None] * (len(ctx.inputs) - 1)


# ---- unary ops: the local derivative d(x, y) -------------------------------------------------------------------

def _attr(ctx, name, default):
    return float(ctx.attrs.get(name, default))


_UNARY = {
    "Abs": lambda c, x, y: np.sign(x),
    "Reciprocal": lambda c, x, y: -y * y,
    "Erf": lambda c, x, y: (2 / _SQRT_PI) * np.exp(-x * x),
    "Sin": lambda c, x, y: np.cos(x),
    "Cos": lambda c, x, y: -np.sin(x),
    "Tan": lambda c, x, y: 1 + y * y,
    "Asin": lambda c, x, y: 1 / np.sqrt(1 - x * x),
    "Acos": lambda c, x, y: -1 / np.sqrt(1 - x * x),
    "Atan": lambda c, x, y: 1 / (1 + x * x),
    "Sinh": lambda c, x, y: np.cosh(x),
    "Cosh": lambda c, x, y: np.sinh(x),
    "Asinh": lambda c, x, y: 1 / np.sqrt(x * x + 1),
    "Acosh": lambda c, x, y: 1 / np.sqrt(x * x - 1),
    "Atanh": lambda c, x, y: 1 / (1 - x * x),
    # sigmoid(x), computed without overflow for large |x|
    "Softplus": lambda c, x, y: 0.5 * (1 + np.tanh(0.5 * x)),
    "Softsign": lambda c, x, y: 1 / (1 + np.abs(x)) ** 2,
    # below zero y = alpha (e^x - 1), so the derivative alpha e^x is y + alpha (gamma scales Selu's both sides)
    "Elu": lambda c, x, y: np.where(x > 0, 1, y + _attr(c, "alpha", 1.0)),
    "Selu": lambda c, x, y: np.where(x > 0, _attr(c, "gamma", 1.05070102214813232421875),
                                     y + _attr(c, "gamma", 1.05070102214813232421875)
                                     * _attr(c, "alpha", 1.67326319217681884765625)),
    "Celu": lambda c, x, y: np.where(x > 0, 1, y / _attr(c, "alpha", 1.0) + 1),
    "ThresholdedRelu": lambda c, x, y: x > _attr(c, "alpha", 1.0),
    # piecewise constant: zero almost everywhere, as torch gives
    **dict.fromkeys(("Floor", "Ceil", "Round", "Sign"), lambda c, x, y: np.zeros((), x.dtype)),
}


def _unary_rule(op: str):
    dydx = _UNARY[op]

    def rule(ctx: VJPContext) -> list:
        if not wanted(ctx, 0):
            return [None]
        x = ctx.inputs[0]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [as_gradient(_grad(ctx) * dydx(ctx, x, ctx.outputs[0]), x)]

    rule.__name__ = f"{op.lower()}_vjp"
    return rule


for _op in _UNARY:
    register_vjp(_op)(_unary_rule(_op))


@register_vjp("PRelu")
def prelu_vjp(ctx: VJPContext) -> list:
    x, slope = ctx.inputs[:2]
    g = _grad(ctx)
    pos = x > 0
    res: list = [None, None]
    if wanted(ctx, 0):
        res[0] = as_gradient(np.where(pos, g, g * slope), x)
    if wanted(ctx, 1):
        res[1] = as_gradient(unbroadcast(np.where(pos, 0, g * x), slope.shape), slope)
    return res


@register_vjp("Cast", "CastLike")
def cast_vjp(ctx: VJPContext) -> list:
    x = ctx.inputs[0]
    floats = np.issubdtype(x.dtype, np.floating) and np.issubdtype(ctx.outputs[0].dtype, np.floating)
    return _first_only(ctx, _grad(ctx).astype(x.dtype) if floats else None)


# ---- variadic and broadcasting ops ----------------------------------------------------------------------------

@register_vjp("Sum", "Mean")
def sum_mean_vjp(ctx: VJPContext) -> list:
    g = _grad(ctx)
    if ctx.op_type == "Mean":
        g = g / len(ctx.inputs)
    return [as_gradient(unbroadcast(g, x.shape), x) if wanted(ctx, i) else None for i, x in enumerate(ctx.inputs)]


@register_vjp("Max", "Min")
def max_min_vjp(ctx: VJPContext) -> list:
    y, g = ctx.outputs[0], _grad(ctx)
    hits = [np.broadcast_to(x == y, y.shape) for x in ctx.inputs]
    share = g / np.maximum(sum(h.astype(g.dtype) for h in hits), 1)  # tied inputs split the gradient
    return [as_gradient(unbroadcast(np.where(h, share, 0), x.shape), x) if wanted(ctx, i) else None
            for i, (x, h) in enumerate(zip(ctx.inputs, hits))]


@register_vjp("Where")
def where_vjp(ctx: VJPContext) -> list:
    cond = ctx.inputs[0]
    g = _grad(ctx)
    res: list = [None, None, None]
    for i, pick in ((1, True), (2, False)):
        if wanted(ctx, i):
            x = ctx.inputs[i]
            res[i] = as_gradient(unbroadcast(np.where(cond == pick, g, 0), x.shape), x)
    return res


@register_vjp("Expand")
def expand_vjp(ctx: VJPContext) -> list:
    return _first_only(ctx, unbroadcast(_grad(ctx), ctx.inputs[0].shape))


@register_vjp("Tile")
def tile_vjp(ctx: VJPContext) -> list:
    x, g = ctx.inputs[0], _grad(ctx)
    # the output axis of length r*d holds r copies of the input axis: split it into (r, d) and sum the copies
    split: list[int] = []
    for k, d in enumerate(x.shape):
        split += [g.shape[k] // d if d else 0, d]
    gx = g.reshape(split).sum(axis=tuple(range(0, 2 * x.ndim, 2))) if x.size else np.zeros_like(x)
    return _first_only(ctx, gx)


@register_vjp("Pad")
def pad_vjp(ctx: VJPContext) -> list:
    x, g = ctx.inputs[0], _grad(ctx)
    ins = list(ctx.inputs) + [None] * (4 - len(ctx.inputs))
    a = ctx.attrs
    amounts = _pad_args(x.ndim, ins[1], ins[3], a.get("pads"), a.get("paddings"))
    mode = a.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    # negative pads crop the input first; only the kept part of x gets a gradient
    kept = tuple(slice(max(-b, 0), d - max(-e, 0)) for d, (b, e) in zip(x.shape, amounts))
    grow = [(max(b, 0), max(e, 0)) for b, e in amounts]
    inner = tuple(slice(b, g.shape[k] - e) for k, (b, e) in enumerate(grow))
    res: list = [None] * len(ctx.inputs)
    if wanted(ctx, 0):
        gx = np.zeros(x.shape, g.dtype)
        if mode == "constant":
            gx[kept] = g[inner]
        else:  # every output element is a copy of one kept element: pad their indices alike and add up
            shape = gx[kept].shape
            src = np.pad(np.arange(math.prod(shape)).reshape(shape), grow, mode=mode)
            acc = np.bincount(src.reshape(-1), weights=g.reshape(-1), minlength=math.prod(shape))
            gx[kept] = acc.reshape(shape)
        res[0] = as_gradient(gx, x)
    if mode == "constant" and wanted(ctx, 2):  # the fill value: every padded position
        res[2] = as_gradient(np.sum(g, dtype=np.float64) - np.sum(g[inner], dtype=np.float64), ins[2])
    return res


# ---- reductions ---------------------------------------------------------------------------------------------

def _reduced(ctx: VJPContext):
    """(kept shape, reduced axes) of a Reduce* node, or None when it reduces nothing (noop_with_empty_axes).
    Axes are an attribute before opset 18 and the optional second input from it on."""
    x = ctx.inputs[0]
    if ctx.opset < 18:
        axes = ctx.attrs.get("axes")
    else:
        axes = ctx.inputs[1] if len(ctx.inputs) > 1 else None
    axes = None if axes is None else [int(v) % max(x.ndim, 1) for v in np.asarray(axes).reshape(-1)]
    if not axes:
        if ctx.opset >= 18 and ctx.attrs.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(x.ndim))
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape)), tuple(axes)


def _reduce_rule(local):
    """Rule of y = reduce(x): gx = g * local(x, y) with g and y reshaped to keep the reduced axes."""
    def rule(ctx: VJPContext) -> list:
        x = ctx.inputs[0]
        if not wanted(ctx, 0):
            return [None] * len(ctx.inputs)
        shape = _reduced(ctx)
        g, y = _grad(ctx), ctx.outputs[0]
        if shape is None:  # the identity
            return _first_only(ctx, g)
        kept, axes = shape
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return _first_only(ctx, g.reshape(kept) * local(x, y.reshape(kept), axes))
    return rule


def _extreme(x, y, axes):
    hit = (x == y).astype(x.dtype)
    return hit / hit.sum(axis=axes, keepdims=True)  # ties share, as torch.amax/amin


register_vjp("ReduceMax", "ReduceMin")(_reduce_rule(_extreme))
register_vjp("ReduceL2")(_reduce_rule(lambda x, y, axes: np.where(y == 0, 0, x / y)))
register_vjp("ReduceL1")(_reduce_rule(lambda x, y, axes: np.sign(x)))
register_vjp("ReduceSumSquare")(_reduce_rule(lambda x, y, axes: 2 * x))
register_vjp("ReduceLogSumExp")(_reduce_rule(lambda x, y, axes: np.exp(x - y)))


# ---- index and scan ops -------------------------------------------------------------------------------------

@register_vjp("GatherElements")
def gather_elements_vjp(ctx: VJPContext) -> list:
    x, idx = ctx.inputs[:2]
    if not wanted(ctx, 0):
        return [None, None]
    axis = int(ctx.attrs.get("axis", 0)) % x.ndim
    idx = np.asarray(idx, np.int64)
    where = list(np.indices(idx.shape, sparse=True))
    where[axis] = np.where(idx < 0, idx + x.shape[axis], idx)
    gx = np.zeros(x.shape, _grad(ctx).dtype)
    np.add.at(gx, tuple(where), _grad(ctx))  # repeated indices add up
    return [as_gradient(gx, x), None]


def _cumsum(a: np.ndarray, axis: int, exclusive: bool, reverse: bool) -> np.ndarray:
    if reverse:
        a = np.flip(a, axis)
    s = np.cumsum(a, axis=axis)
    if exclusive:
        s = np.concatenate([np.zeros_like(np.take(s, [0], axis=axis)), np.delete(s, -1, axis=axis)], axis=axis)
    return np.flip(s, axis) if reverse else s


@register_vjp("CumSum")
def cumsum_vjp(ctx: VJPContext) -> list:
    x = ctx.inputs[0]
    if not wanted(ctx, 0) or x.ndim == 0:
        return _first_only(ctx, _grad(ctx) if x.ndim == 0 else None)
    axis = int(np.asarray(ctx.inputs[1]).reshape(-1)[0]) % x.ndim
    # each input element reaches every later prefix sum: the gradient is the cumulative sum the other way
    gx = _cumsum(_grad(ctx), axis, bool(ctx.attrs.get("exclusive", 0)), not ctx.attrs.get("reverse", 0))
    return _first_only(ctx, gx)


# ---- Resize and Upsample -------------------------------------------------------------------------------------

def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def _resize_matrices(ctx: VJPContext, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(axis, matrix (out, in)) of each resampled axis: the forward kernel's tap table as a dense map."""
    ins = list(ctx.inputs) + [None] * 4
    a = {k: _text(v) for k, v in ctx.attrs.items()}
    if ctx.op_type == "Resize" and ctx.opset >= 11:
        attrs = _resize._resize_attrs(**a)
        roi, scales, sizes = ins[1:4]
        if sizes is not None and np.size(sizes) > 0:
            scales = None
    else:  # Resize-10, Upsample: asymmetric coordinates, the scales an input (9, 10) or attributes (1-7)
        attrs = _resize._legacy_attrs(a.get("mode", "nearest"))
        if ctx.op_type == "Resize" or ctx.opset >= 9:
            scales = np.asarray(ins[1], np.float64)
        else:
            scales = _resize._legacy_scales(x, a.get("scales"), a.get("height_scale"), a.get("width_scale"), None)
        roi = sizes = None
    out_shape, scale, rois = _resize._geometry(x.shape, roi, scales, sizes, attrs["axes"],
                                               attrs["keep_aspect_ratio_policy"])
    mats = []
    for d, (n_in, n_out) in enumerate(zip(x.shape, out_shape)):
        cropped = attrs["coordinate_transformation_mode"] == "tf_crop_and_resize" and rois[d] != (0.0, 1.0)
        if (n_in == n_out and scale[d] == 1.0 and not cropped) or n_in == 0 or n_out == 0:
            continue
        idx, w, outside = _resize._axis_taps(n_in, n_out, scale[d], rois[d], attrs)
        m = np.zeros((n_out, n_in))
        rows = np.broadcast_to(np.arange(n_out)[:, None], idx.shape)
        # the kernel clips tap indices into the axis (edge replication), so clipped taps add onto the edge
        np.add.at(m, (rows, np.clip(idx, 0, n_in - 1)), 1.0 if w is None else w)
        if outside is not None:
            m[outside] = 0  # extrapolated outputs are a constant
        mats.append((d, m))
    return mats


@register_vjp("Resize", "Upsample")
def resize_vjp(ctx: VJPContext) -> list:
    x = ctx.inputs[0]
    if not wanted(ctx, 0):
        return [None] * len(ctx.inputs)
    gx = _grad(ctx)
    ct = np.promote_types(gx.dtype, np.float32)
    for d, m in _resize_matrices(ctx, x):
        # the adjoint of y = M x along axis d: gx = M^T g along that axis
        gx = np.moveaxis(np.tensordot(m.T.astype(ct), gx, axes=([1], [d])), 0, d)
    return _first_only(ctx, gx)


# ---- Einsum -------------------------------------------------------------------------------------------------

def _einsum_terms(equation: str, shapes: list[tuple[int, ...]]) -> tuple[list[str], str]:
    """The equation's operand and result terms with every '...' spelled out in letters the equation does not use
    (the result made explicit in implicit mode: the ellipsis, then the letters used once, sorted)."""
    eq = _text(equation).replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if not arrow:
        once = sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1)
        rhs = ("..." if "..." in lhs else "") + "".join(once)
    free = [c for c in string.ascii_letters if c not in eq]
    n_ell = max([len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t] or [0])
    ell = "".join(free[:n_ell])
    terms = [t.replace("...", ell[n_ell - (len(s) - (len(t) - 3)):]) if "..." in t else t
             for t, s in zip(terms, shapes)]
    return terms, rhs.replace("...", ell)


@register_vjp("Einsum")
def einsum_vjp(ctx: VJPContext) -> list:
    xs, g = ctx.inputs, _grad(ctx)
    terms, rhs = _einsum_terms(ctx.attrs["equation"], [x.shape for x in xs])
    sizes: dict[str, int] = dict(zip(rhs, g.shape))
    for t, x in zip(terms, xs):
        for c, n in zip(t, x.shape):
            sizes[c] = max(sizes.get(c, 1), n)
    # operands broadcast to the full size of each letter, so every einsum below sees consistent shapes
    full = [np.broadcast_to(x, tuple(sizes[c] for c in t)) for t, x in zip(terms, xs)]
    res: list = [None] * len(xs)
    for i, (t, x) in enumerate(zip(terms, xs)):
        if not wanted(ctx, i):
            continue
        if len(set(t)) != len(t):
            raise SporelingError(f"Einsum '{ctx.attrs['equation']}': no gradient for an operand with a repeated "
                                 f"index (a diagonal)")
        others = [(terms[j], full[j]) for j in range(len(xs)) if j != i]
        # letters of this operand found nowhere else were summed out: their gradient is g broadcast over them
        reach = set(rhs).union(*[set(o) for o, _ in others])
        kept = "".join(c for c in t if c in reach)
        spec = ",".join([rhs] + [o for o, _ in others]) + "->" + kept
        gk = np.einsum(spec, g, *[v for _, v in others], optimize=len(others) > 1)
        gk = np.broadcast_to(gk.reshape(tuple(sizes[c] if c in reach else 1 for c in t)),
                             tuple(sizes[c] for c in t))
        res[i] = as_gradient(unbroadcast(gk, x.shape), x)
    return res


# ---- InstanceNormalization, GlobalMaxPool, DepthToSpace/SpaceToDepth, GatherND, ScatterND ----------------------

@register_vjp("InstanceNormalization")
def instance_norm_vjp(ctx: VJPContext) -> list:
    x, scale, bias = ctx.inputs[:3]
    ct = np.promote_types(x.dtype, np.float32)
    axes = tuple(range(2, x.ndim))
    g = _grad(ctx).astype(ct, copy=False)
    xhat = x.astype(ct)
    xhat -= xhat.mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt((xhat * xhat).mean(axis=axes, keepdims=True) + ct.type(ctx.attrs.get("epsilon", 1e-5)))
    xhat *= inv
    res: list = [None, None, None]
    if wanted(ctx, 1):
        res[1] = as_gradient((g * xhat).sum(axis=(0,) + axes), scale)
    if wanted(ctx, 2):
        res[2] = as_gradient(g.sum(axis=(0,) + axes), bias)
    if wanted(ctx, 0):
        gs = g * scale.astype(ct).reshape((1, -1) + (1,) * len(axes))
        # xhat's Jacobian, per (sample, channel): remove the mean and the component along xhat, scale by inv
        gs -= gs.mean(axis=axes, keepdims=True) + xhat * (gs * xhat).mean(axis=axes, keepdims=True)
        res[0] = as_gradient(gs * inv, x)
    return res


@register_vjp("GlobalMaxPool")
def global_maxpool_vjp(ctx: VJPContext) -> list:
    """Each channel's gradient goes to its first maximum (row-major), as MaxPool's rule and torch pick it."""
    x = ctx.inputs[0]
    if not wanted(ctx, 0):
        return [None]
    rows = x.reshape(x.shape[0] * x.shape[1], -1)
    g = _grad(ctx)
    gx = np.zeros(rows.shape, g.dtype)
    gx[np.arange(rows.shape[0]), np.argmax(rows, axis=1)] = g.reshape(-1)
    return [as_gradient(gx, x)]


def _unpermute(ctx: VJPContext, split: tuple[int, ...], perm: tuple[int, ...]) -> list:
    """Rule of y = x.reshape(split).transpose(perm).reshape(...): the inverse permutation of the gradient."""
    g = _grad(ctx).reshape(tuple(split[p] for p in perm))
    return _first_only(ctx, g.transpose(np.argsort(perm)))


@register_vjp("DepthToSpace")
def depth_to_space_vjp(ctx: VJPContext) -> list:
    n, c, h, w = ctx.inputs[0].shape
    b = int(ctx.attrs["blocksize"])
    if _text(ctx.attrs.get("mode", "DCR")) == "DCR":  # channels as (block_row, block_col, depth)
        return _unpermute(ctx, (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2))
    return _unpermute(ctx, (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3))


@register_vjp("SpaceToDepth")
def space_to_depth_vjp(ctx: VJPContext) -> list:
    n, c, h, w = ctx.inputs[0].shape
    b = int(ctx.attrs["blocksize"])
    return _unpermute(ctx, (n, c, h // b, b, w // b, b), (0, 3, 5, 1, 2, 4))


@register_vjp("GatherND")
def gather_nd_vjp(ctx: VJPContext) -> list:
    x, idx = ctx.inputs[:2]
    if not wanted(ctx, 0):
        return [None, None]
    bd = int(ctx.attrs.get("batch_dims", 0))
    k = idx.shape[-1]
    batch = math.prod(x.shape[:bd])
    flat_idx = np.asarray(idx, np.int64).reshape(batch, -1, k)
    g = _grad(ctx)
    gx = np.zeros((batch,) + x.shape[bd:], g.dtype)
    where = (np.arange(batch)[:, None],) + tuple(flat_idx[..., j] for j in range(k))
    np.add.at(gx, where, g.reshape(flat_idx.shape[:2] + x.shape[bd + k:]))  # repeated index tuples add up
    return [as_gradient(gx, x), None]


@register_vjp("ScatterND")
def scatter_nd_vjp(ctx: VJPContext) -> list:
    data, idx, upd = ctx.inputs[:3]
    reduction = _text(ctx.attrs.get("reduction", "none"))
    if reduction not in ("none", "add"):
        raise SporelingError(f"ScatterND with reduction '{reduction}': no backward rule (only 'none' and 'add')")
    g = _grad(ctx)
    where = tuple(np.moveaxis(np.asarray(idx), -1, 0))
    res: list = [None, None, None]
    if wanted(ctx, 2):
        gu = g[where]
        if reduction == "none":
            # with repeated index tuples only the update the forward wrote last is kept: replay the forward's
            # assignment on update numbers to find, for each slot, whether its update survived
            ids = np.arange(math.prod(idx.shape[:-1])).reshape(idx.shape[:-1])
            owner = np.full(data.shape[:idx.shape[-1]], -1, np.int64)
            owner[where] = ids
            gu[owner[where] != ids] = 0
        res[2] = as_gradient(gu, upd)
    if wanted(ctx, 0):
        if reduction == "none":
            g[where] = 0  # overwritten elements do not reach the output (g is this rule's to write into)
        res[0] = as_gradient(g, data)
    return res


# ---- what the rules read: only these forward values are kept for them (see vjp.SAVES) ------------------------
_SHAPES_ONLY = ((), ())
for _op, _saved in {
    **dict.fromkeys(("Cast", "CastLike", "Expand", "Tile", "Sum", "Mean", "Floor", "Ceil", "Round", "Sign"),
                    _SHAPES_ONLY),
    **dict.fromkeys(("Reciprocal", "Tan"), ((), (0,))),
    **dict.fromkeys(("Abs", "Erf", "Sin", "Cos", "Softplus", "Softsign", "ThresholdedRelu"), ((0,), ())),
    "Where": ((0,), ()),
    "Pad": ((1, 2, 3), ()),
    "Resize": ((1, 2, 3), ()),
    "Upsample": ((1,), ()),
    "GatherElements": ((1,), ()),
    "CumSum": ((1,), ()),
    **dict.fromkeys(("DepthToSpace", "SpaceToDepth"), _SHAPES_ONLY),
    "InstanceNormalization": ((0, 1), ()),
    "GlobalMaxPool": ((0,), ()),
    **dict.fromkeys(("GatherND", "ScatterND"), ((1,), ())),
}.items():
    if _op in SAVES:
        raise ValueError(f"vjp.SAVES already lists {_op}")
    SAVES[_op] = _saved

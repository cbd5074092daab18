"""Backward rules for the neural-network ops: MatMul, Gemm, Softmax, the normalisations (the windowed ops are in
vjp_conv.py, Conv, and vjp_pool.py, the pools).

Each rule turns the gradients of a node's outputs into the gradients of its inputs, with ONNX semantics
(attributes read with their ONNX defaults, as the forward kernels in sporeling/ops read them).

Conventions for outputs other than the main one: BatchNormalization
in training mode normalises with the batch statistics (biased variance, as the forward kernel), so X's
gradient flows through the batch mean and variance; the running-statistic outputs
(running = input * momentum + batch * (1 - momentum)) pass gradient to the input mean/var (times
momentum) and to X through the batch statistics. In inference mode the input mean and var are
constants of the affine map and get their own gradients. LayerNormalization's Mean and InvStdDev
outputs pass gradient to X as well.
"""

from __future__ import annotations

import math

import numpy as np

from .vjp import VJPContext, as_gradient, out_buffer, register_vjp, unbroadcast, wanted


def _compute_dtype(dtype) -> np.dtype:
    return np.promote_types(dtype, np.float32)


# ---- MatMul and Gemm ----------------------------------------------------------------------------
@register_vjp("MatMul")
def matmul_vjp(ctx: VJPContext) -> list:
    a, b = ctx.inputs[:2]
    g = ctx.grads[0]
    # 1-D operands are promoted to matrices and the promoted axis removed from the result (numpy rules)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g[..., None] if b.ndim == 1 else g
    g2 = g2[..., None, :] if a.ndim == 1 else g2
    ga = gb = None
    if wanted(ctx, 0):
        buf = out_buffer(ctx, 0, a) if a.ndim >= 2 and np.result_type(g, b) == a.dtype else None
        if buf is not None and np.broadcast_shapes(g2.shape[:-2], b2.shape[:-2]) == a.shape[:-2]:
            ga = np.matmul(g2, np.swapaxes(b2, -1, -2), out=buf)  # no broadcast to undo: into the arena buffer
        else:
            ga = as_gradient(unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape), a)
    if wanted(ctx, 1):
        gb = as_gradient(unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape), b)
    return [ga, gb]


@register_vjp("Gemm")
def gemm_vjp(ctx: VJPContext) -> list:
    a, b = ctx.inputs[:2]
    c = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    g = ctx.grads[0]
    alpha, beta = ctx.attrs.get("alpha", 1.0), ctx.attrs.get("beta", 1.0)
    ta, tb = ctx.attrs.get("transA", 0), ctx.attrs.get("transB", 0)
    a_op = a.T if ta else a
    b_op = b.T if tb else b
    res: list = [None, None, None][: len(ctx.inputs)]
    # each product in the orientation its input is stored in, so no transposed copy follows
    if wanted(ctx, 0):
        buf = out_buffer(ctx, 0, a) if not ta and alpha == 1 and np.result_type(g, b) == a.dtype else None
        if buf is not None:
            res[0] = np.matmul(g, b_op.T, out=buf)
        else:
            ga = b_op @ g.T if ta else g @ b_op.T  # the gradient of A (of op(A) = A.T transposed when transA)
            res[0] = as_gradient(ga if alpha == 1 else alpha * ga, a)
    if wanted(ctx, 1):
        gb = g.T @ a_op if tb else a_op.T @ g
        res[1] = as_gradient(gb if alpha == 1 else alpha * gb, b)
    if c is not None and wanted(ctx, 2):
        res[2] = as_gradient(unbroadcast(beta * g, c.shape), c)
    return res


# ---- Softmax and LogSoftmax -----------------------------------------------------------------------
@register_vjp("Softmax", "LogSoftmax")
def softmax_vjp(ctx: VJPContext) -> list:
    x = ctx.inputs[0]
    y, g = ctx.outputs[0], ctx.grads[0]
    if g is None or not wanted(ctx, 0):
        return [None]
    axis = ctx.attrs.get("axis", -1 if ctx.opset >= 13 else 1)
    if ctx.opset < 13:  # before 13 the input is flattened to 2-D at axis and normalised over the rows
        axis = axis % x.ndim
        y = y.reshape(math.prod(x.shape[:axis]), -1)
        g = g.reshape(y.shape)
        axis = -1
    ct = _compute_dtype(x.dtype)
    y, g = y.astype(ct, copy=False), g.astype(ct, copy=False)
    if ctx.op_type == "Softmax":
        gx = y * (g - (g * y).sum(axis=axis, keepdims=True))
    else:
        gx = g - np.exp(y) * g.sum(axis=axis, keepdims=True)
    return [as_gradient(gx, x)]


# ---- normalisations -------------------------------------------------------------------------------
def _norm_backward(gy, xhat, inv, axes, count):
    """Gradient to x of y = xhat * s + b with xhat normalised by the statistics of x over `axes`,
    given gy already multiplied by the scale."""
    return inv * (gy - gy.sum(axis=axes, keepdims=True) / count
                  - xhat * (gy * xhat).sum(axis=axes, keepdims=True) / count)


@register_vjp("BatchNormalization")
def batchnorm_vjp(ctx: VJPContext) -> list:
    x, scale, bias, mean, var = ctx.inputs[:5]
    eps = ctx.attrs.get("epsilon", 1e-5)
    momentum = ctx.attrs.get("momentum", 0.9)
    if ctx.opset >= 14:
        training = bool(ctx.attrs.get("training_mode", 0))
    else:  # the legacy forms train when they are asked for the running statistics
        training = len(ctx.outputs) > 1 and not ctx.attrs.get("is_test", 0)
    ct = _compute_dtype(x.dtype)
    no_running_grads = all(gr is None for gr in ctx.grads[1:])
    if training and no_running_grads and ctx.grads[0] is not None and x.ndim >= 2 and x.size:
        return _bn_train_backward(ctx, x.astype(ct, copy=False), ctx.grads[0].astype(ct, copy=False),
                                  scale.astype(ct).reshape(-1), eps)
    xc = x.astype(ct, copy=False)
    axes = (0,) + tuple(range(2, x.ndim))
    cshape = (1, -1) + (1,) * (x.ndim - 2)
    count = x.size // x.shape[1]
    g = ctx.grads[0].astype(ct, copy=False) if ctx.grads[0] is not None else np.zeros(x.shape, ct)
    s = scale.astype(ct).reshape(cshape)
    if training:
        mu = xc.mean(axis=axes, keepdims=True)
        vr = ((xc - mu) ** 2).mean(axis=axes, keepdims=True)
    else:
        mu, vr = mean.astype(ct).reshape(cshape), var.astype(ct).reshape(cshape)
    inv = 1.0 / np.sqrt(vr + eps)
    xhat = (xc - mu) * inv
    res: list = [None] * len(ctx.inputs)
    if wanted(ctx, 1):
        res[1] = as_gradient((g * xhat).sum(axis=axes), scale)
    if wanted(ctx, 2):
        res[2] = as_gradient(g.sum(axis=axes), bias)
    if not training:
        if wanted(ctx, 0):
            res[0] = as_gradient(g * s * inv, x)
        if wanted(ctx, 3):
            res[3] = as_gradient(-(g * s * inv).sum(axis=axes), mean)
        if wanted(ctx, 4):
            res[4] = as_gradient((g * s * xhat).sum(axis=axes) * (-0.5) * inv.reshape(-1) ** 2, var)
        return res
    # training: running = input * momentum + batch * (1 - momentum) for the mean and the variance
    g_rm = ctx.grads[1] if len(ctx.grads) > 1 else None
    g_rv = ctx.grads[2] if len(ctx.grads) > 2 else None
    if wanted(ctx, 0):
        gx = _norm_backward(g * s, xhat, inv, axes, count)
        if g_rm is not None:
            gx = gx + (1 - momentum) * g_rm.astype(ct).reshape(cshape) / count
        if g_rv is not None:
            gx = gx + (1 - momentum) * g_rv.astype(ct).reshape(cshape) * 2 * (xc - mu) / count
        res[0] = as_gradient(gx, x)
    if wanted(ctx, 3) and g_rm is not None:
        res[3] = as_gradient(momentum * g_rm, mean)
    if wanted(ctx, 4) and g_rv is not None:
        res[4] = as_gradient(momentum * g_rv, var)
    return res


# BatchNormalization's backward walks the batch in blocks of about this many elements, so its one
# temporary, x - mean, stays a block instead of a copy of the whole input
BN_BLOCK_ELEMENTS = 1 << 20


def _bn_train_backward(ctx: VJPContext, x, g, scale, eps) -> list:
    """Training-mode BatchNormalization when only Y's gradient flows (the running statistics feed nothing):
    per-channel sums by einsum, the variance in two passes (as the forward kernel: no cancellation), and
    gx = a*g + b*(x - mean) + c with per-channel a, b, c, written into g itself when it is the rule's own
    array (vjp.py). The passes go over blocks of samples, so x - mean is never a full-size temporary."""
    n, c = x.shape[:2]
    x3, g3 = x.reshape(n, c, -1), g.reshape(n, c, -1)
    count = x3.shape[0] * x3.shape[2]
    step = max(1, BN_BLOCK_ELEMENTS // max(1, c * x3.shape[2]))
    blocks = [slice(i, i + step) for i in range(0, n, step)]
    mu = x3.sum(axis=2).sum(axis=0) / count
    d = np.empty((min(step, n),) + x3.shape[1:], dtype=x3.dtype)
    var = np.zeros(c, dtype=x3.dtype)
    gdot = np.zeros(c, dtype=x3.dtype)  # sum(g * xhat) = inv * gdot
    for blk in blocks:
        db = d[: min(blk.stop, n) - blk.start]
        np.subtract(x3[blk], mu[None, :, None], out=db)
        var += np.einsum("ncp,ncp->c", db, db)
        gdot += np.einsum("ncp,ncp->c", g3[blk], db)
    var /= count
    inv = 1.0 / np.sqrt(var + eps)
    gsum = g3.sum(axis=2).sum(axis=0)
    res: list = [None] * len(ctx.inputs)
    if wanted(ctx, 1):
        res[1] = as_gradient(gdot * inv, ctx.inputs[1])
    if wanted(ctx, 2):
        res[2] = as_gradient(gsum, ctx.inputs[2])
    if wanted(ctx, 0):
        # gx = scale * inv * (g - gsum / count - xhat * sum(g * xhat) / count)
        a = (scale * inv)[None, :, None]
        b = (-scale * inv * inv * inv * gdot / count)[None, :, None]
        shift = (-scale * inv * gsum / count)[None, :, None]
        own = g is ctx.grads[0] and g.flags.writeable and g.flags.c_contiguous and g.dtype == x.dtype
        if own:
            ctx.grads[0] = None
        gx = g3 if own else np.empty_like(g3)
        for blk in blocks:
            db = d[: min(blk.stop, n) - blk.start]
            np.subtract(x3[blk], mu[None, :, None], out=db)
            db *= b
            np.multiply(g3[blk], a, out=gx[blk])
            gx[blk] += db
            gx[blk] += shift
        res[0] = as_gradient(gx, x)
    return res


@register_vjp("LayerNormalization")
def layernorm_vjp(ctx: VJPContext) -> list:
    x, scale = ctx.inputs[:2]
    bias = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    axis = ctx.attrs.get("axis", -1) % x.ndim
    eps = ctx.attrs.get("epsilon", 1e-5)
    ct = _compute_dtype(x.dtype)
    xc = x.astype(ct, copy=False)
    axes = tuple(range(axis, x.ndim))
    count = math.prod(x.shape[axis:])
    mu = xc.mean(axis=axes, keepdims=True)
    d = xc - mu
    inv = 1.0 / np.sqrt((d * d).mean(axis=axes, keepdims=True) + eps)
    xhat = d * inv
    g = ctx.grads[0].astype(ct, copy=False) if ctx.grads[0] is not None else np.zeros(x.shape, ct)
    res: list = [None] * len(ctx.inputs)
    if wanted(ctx, 1):
        res[1] = as_gradient(unbroadcast(g * xhat, scale.shape), scale)
    if bias is not None and wanted(ctx, 2):
        res[2] = as_gradient(unbroadcast(g, bias.shape), bias)
    if wanted(ctx, 0):
        gx = _norm_backward(np.broadcast_to(scale.astype(ct), x.shape[axis:]) * g, xhat, inv, axes, count)
        g_mean = ctx.grads[1] if len(ctx.grads) > 1 else None
        g_inv = ctx.grads[2] if len(ctx.grads) > 2 else None
        if g_mean is not None:
            gx = gx + g_mean.astype(ct).reshape(mu.shape) / count
        if g_inv is not None:  # d inv / dx = -inv^3 (x - mean) / count
            gx = gx - g_inv.astype(ct).reshape(mu.shape) * inv ** 3 * d / count
        res[0] = as_gradient(gx, x)
    return res

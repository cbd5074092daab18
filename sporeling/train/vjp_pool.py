"""Backward rules for the pools: MaxPool, AveragePool, GlobalAveragePool, on the window geometry of vjp_conv.py.

MaxPool's Indices output carries no gradient; each window's gradient goes to its first maximum.
"""

from __future__ import annotations

import math

import numpy as np

from .vjp import VJPContext, as_gradient, out_buffer, register_vjp, wanted
from .vjp_conv import _col2im, _geometry, _padded_extent, _patches, _tap_view


# ---- pools ----------------------------------------------------------------------------------------
def _input_and_gradient(ctx: VJPContext) -> tuple:
    """A pool's input and its output's gradient; the gradient is None when X's is not wanted."""
    g = ctx.grads[0] if wanted(ctx, 0) else None
    return ctx.inputs[0], g


@register_vjp("MaxPool")
def maxpool_vjp(ctx: VJPContext) -> list:
    """Each window's gradient goes to its first maximum (row-major tap order), as torch and onnxruntime pick
    it: the taps are visited in that order, and a tap takes the gradient where it equals the window's output
    and no earlier tap did. One pass over a strided view per tap; no window matrix is built."""
    x, g = _input_and_gradient(ctx)
    if g is None:
        return [None]
    y = ctx.outputs[0]
    kernel = tuple(ctx.attrs["kernel_shape"])
    out_sp = g.shape[2:]
    strides, dil, begin, _ = _geometry(ctx.attrs, x.shape, out_sp, kernel)
    full = _padded_extent(x.shape, begin, out_sp, kernel, strides, dil)
    lead = (slice(None), slice(None))
    inner = lead + tuple(slice(b, b + sz) for b, sz in zip(begin, x.shape[2:]))
    if any(begin) or list(full) != list(x.shape[2:]):
        xp = np.full(x.shape[:2] + tuple(full), -np.inf, dtype=x.dtype)
        xp[inner] = x
    else:
        xp = x
    # windows that tile the input exactly (2x2 stride 2 on an even map) write each element once: no zeroing,
    # no adding
    tiled = xp is x and list(kernel) == list(strides) and all(d == 1 for d in dil) \
        and all(o * k == sz for o, k, sz in zip(out_sp, kernel, x.shape[2:]))
    gxp = out_buffer(ctx, 0, x) if xp is x and g.dtype == x.dtype else None  # the arena's buffer, if offered
    if gxp is None:
        gxp = (np.empty if tiled else np.zeros)(x.shape[:2] + tuple(full), dtype=g.dtype)
    elif not tiled:
        gxp.fill(0)
    found = np.zeros(g.shape, dtype=bool)
    hit = np.empty(g.shape, dtype=bool)
    part = None if tiled else np.empty(g.shape, dtype=g.dtype)
    for tap in np.ndindex(*kernel):
        view = lead + _tap_view(tap, dil, strides, out_sp)
        np.equal(xp[view], y, out=hit)
        np.greater(hit, found, out=hit)  # equal here and not taken by an earlier tap
        np.logical_or(found, hit, out=found)
        if tiled:
            np.multiply(g, hit, out=gxp[view])
        else:
            np.multiply(g, hit, out=part)
            gxp[view] += part
    return [as_gradient(gxp[inner], x)]


@register_vjp("AveragePool")
def avgpool_vjp(ctx: VJPContext) -> list:
    x, g = _input_and_gradient(ctx)
    if g is None:
        return [None]
    kernel = tuple(ctx.attrs["kernel_shape"])
    nd = len(kernel)
    out_sp = g.shape[2:]
    strides, dil, begin, end = _geometry(ctx.attrs, x.shape, out_sp, kernel)
    # the divisor of each window: its taps on the input, plus those on the declared pads when
    # count_include_pad, never those on the ceil_mode overhang
    if ctx.attrs.get("count_include_pad", 0):
        mask = np.ones([b + sz + e for b, sz, e in zip(begin, x.shape[2:], end)], dtype=g.dtype)
        mbegin = [0] * nd
    else:
        mask, mbegin = np.ones(x.shape[2:], dtype=g.dtype), begin
    mcols = _patches(mask, mbegin, out_sp, kernel, strides, dil)
    div = mcols.sum(axis=tuple(range(nd, 2 * nd)))
    share = (g / div)[(Ellipsis,) + (None,) * nd]
    gcols = share * _patches(np.ones(x.shape[2:], dtype=g.dtype), begin, out_sp, kernel, strides, dil)
    gx = _col2im(np.broadcast_to(gcols, g.shape + kernel), x.shape, begin, kernel, strides, dil)
    return [as_gradient(gx, x)]


@register_vjp("GlobalAveragePool")
def global_avgpool_vjp(ctx: VJPContext) -> list:
    x, g = _input_and_gradient(ctx)
    if g is None:
        return [None]
    return [as_gradient(np.broadcast_to(g / math.prod(x.shape[2:]), x.shape), x)]

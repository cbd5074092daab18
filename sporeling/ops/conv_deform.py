"""DeformConv: convolution whose kernel taps sample the input at learned, fractional offsets.

For every output position and kernel tap the sampling point is the regular tap position
(out * stride - pad_begin + tap * dilation) plus the offset input; the value there is the N-linear
interpolation of the 2^nd surrounding input cells (cells outside the image count as zero), times the
optional mask. Those samples form the unrolled cols (C, kprod, P) of an ordinary im2col conv, which
one grouped matmul finishes. Sampling is a gather per corner per offset group, vectorised over
all taps and output positions.
"""

from __future__ import annotations

import itertools

import numpy as np

from .registry import register_op


def _ints(value, n, default):
    return [default] * n if value is None or len(value) == 0 else [int(v) for v in value]


def _infer_deform(ins, **_attrs):
    x, w, off = ins[0], ins[1], ins[2]
    if x is None or w is None or off is None or None in (x.shape, w.shape, off.shape):
        return None
    return [(x.dtype, (x.shape[0], w.shape[0], *off.shape[2:]))]


def _sample_cols(img, pos, sizes):
    """Bilinear (N-linear) samples of img (Cg, *sizes) at fractional positions pos (nd, M): (Cg, M)."""
    nd = len(sizes)
    flat = img.reshape(img.shape[0], -1)
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64)
    strides = np.cumprod([1, *sizes[::-1][:-1]])[::-1]
    acc = np.zeros((img.shape[0], pos.shape[1]), img.dtype)
    for corner in itertools.product((0, 1), repeat=nd):
        weight = np.ones(pos.shape[1], img.dtype)
        index = np.zeros(pos.shape[1], np.int64)
        valid = np.ones(pos.shape[1], bool)
        for a in range(nd):
            idx = lo[a] + corner[a]
            weight *= frac[a] if corner[a] else 1 - frac[a]
            valid &= (idx >= 0) & (idx < sizes[a])
            index += np.clip(idx, 0, sizes[a] - 1) * strides[a]
        weight = np.where(valid, weight, 0).astype(img.dtype)
        acc += flat[:, index] * weight
    return acc


@register_op("DeformConv", since=19, infer=_infer_deform, out=True)
def deform_conv(x, w, offset, b=None, mask=None, *, dilations=None, group=1, kernel_shape=None, offset_group=1,
                pads=None, strides=None, out=None):
    n, c = x.shape[:2]
    sizes = tuple(int(s) for s in x.shape[2:])
    nd = len(sizes)
    kernel = [int(k) for k in (kernel_shape or w.shape[2:])]
    strides, dilations, pads = _ints(strides, nd, 1), _ints(dilations, nd, 1), _ints(pads, 2 * nd, 0)
    out_sizes = tuple(int(s) for s in offset.shape[2:])
    kprod = int(np.prod(kernel, dtype=np.int64))
    p_out = int(np.prod(out_sizes, dtype=np.int64))
    og = int(offset_group)
    g = int(group)
    k_out = w.shape[0]
    dt = np.dtype(np.float32) if x.dtype == np.float16 else x.dtype
    if out is None:
        out = np.empty((n, k_out, *out_sizes), x.dtype)
    # regular sampling grid per axis: (kprod, P) positions of tap i at output o
    taps = np.array(list(np.ndindex(*kernel)), np.int64).reshape(kprod, nd)
    grid = np.stack(np.meshgrid(*[np.arange(o) for o in out_sizes], indexing="ij")).reshape(nd, p_out)
    base = np.stack([taps[:, a, None] * dilations[a] + grid[a][None, :] * strides[a] - pads[a]
                     for a in range(nd)]).astype(dt)  # (nd, kprod, P)
    offs = np.asarray(offset, dt).reshape(n, og, kprod, nd, p_out)
    masks = None if mask is None else np.asarray(mask, dt).reshape(n, og, kprod, p_out)
    cog = c // og
    wg = np.asarray(w, dt).reshape(g, k_out // g, (c // g) * kprod)
    for i in range(n):
        cols = np.empty((c, kprod, p_out), dt)
        xi = np.asarray(x[i], dt)
        for grp in range(og):
            pos = base + offs[i, grp].transpose(1, 0, 2)  # (nd, kprod, P)
            samples = _sample_cols(xi[grp * cog : (grp + 1) * cog], pos.reshape(nd, -1), sizes)
            samples = samples.reshape(cog, kprod, p_out)
            if masks is not None:
                samples *= masks[i, grp][None]
            cols[grp * cog : (grp + 1) * cog] = samples
        res = np.matmul(wg, cols.reshape(g, (c // g) * kprod, p_out)).reshape(k_out, p_out)
        if b is not None:
            res += np.asarray(b, dt).reshape(-1, 1)
        np.copyto(out[i].reshape(k_out, p_out), res, casting="unsafe")
    return out

"""ConvTranspose and Col2Im: the scatter-add direction of convolution.

ConvTranspose is one matmul and a col2im: per group, cols (Cout/G * kprod x P_in) = W^T @ X, then
each kernel tap's slab of cols is added into the output at positions stride * y + dilation * i -
pad_begin (one strided whole-array add per tap, only over the input positions that land inside the
output). Col2Im is exactly that second half, with the blocks given as input.

Output size and padding follow the ONNX rules: explicit pads, or `output_shape` (pads derived
from it, the larger half at the start unless SAME_UPPER), or SAME_UPPER/SAME_LOWER (output =
input * stride); output_padding only lengthens the end.
"""

from __future__ import annotations

import numpy as np

from .conv_geometry import tap_range
from .infer import const_ints
from .registry import register_op


def _ints(value, n, default):
    return [default] * n if value is None or len(value) == 0 else [int(v) for v in value]


def transpose_geometry(in_sizes, kernel, strides=None, dilations=None, pads=None, output_padding=None,
                       output_shape=None, auto_pad="NOTSET"):
    """(pad_begin, out_sizes) per spatial axis: output o is full-result position o + pad_begin."""
    nd = len(kernel)
    strides, dilations = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    out_pad = _ints(output_padding, nd, 0)
    mode = (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad or "NOTSET").upper()
    if output_shape is not None and len(output_shape):
        output_shape = [int(v) for v in output_shape][-nd:]
    begin, out = [], []
    for a in range(nd):
        n, k, s, d = int(in_sizes[a]), int(kernel[a]), strides[a], dilations[a]
        full = s * (n - 1) + out_pad[a] + (k - 1) * d + 1
        if output_shape is not None and len(output_shape):
            o = output_shape[a]
            total = full - o
            pb = total // 2 if mode == "SAME_UPPER" else total - total // 2
        elif mode in ("SAME_UPPER", "SAME_LOWER"):
            o = n * s
            total = full - o
            pb = total // 2 if mode == "SAME_UPPER" else total - total // 2
        else:
            p = _ints(pads, 2 * nd, 0)
            pb, o = p[a], full - p[a] - p[a + nd]
        begin.append(pb)
        out.append(max(o, 0))
    return begin, out, strides, dilations


def scatter_taps(cols, out, kernel, strides, dilations, pad_begin) -> None:
    """out[..., s*y + d*i - pad] += cols[..., i, y] for every tap i (cols: (lead, kprod, *in_sizes),
    out: (lead, *out_sizes), lead axes broadcast as-is)."""
    nd = len(kernel)
    in_sizes = cols.shape[-nd:]
    out_sizes = out.shape[-nd:]
    lead = (slice(None),) * (out.ndim - nd)
    for t, tap in enumerate(np.ndindex(*kernel)):
        src, dst = [], []
        for a in range(nd):
            off = tap[a] * dilations[a] - pad_begin[a]
            lo, hi = tap_range(in_sizes[a], out_sizes[a], off, strides[a])
            if hi <= lo:
                break
            src.append(slice(lo, hi))
            start = lo * strides[a] + off
            dst.append(slice(start, start + (hi - lo - 1) * strides[a] + 1, strides[a]))
        else:
            d = out[lead + tuple(dst)]
            np.add(d, cols[lead + (t,) + tuple(src)], out=d)


def _work_dtype(dtype):
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _infer_conv_transpose(ins, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, output_padding=None,
                          output_shape=None, pads=None, strides=None):
    x, w = ins[0], ins[1]
    if x is None or w is None or x.shape is None or w.shape is None:
        return None
    kernel = kernel_shape or w.shape[2:]
    _, out, _, _ = transpose_geometry(x.shape[2:], kernel, strides, dilations, pads, output_padding, output_shape,
                                      auto_pad)
    return [(x.dtype, (x.shape[0], w.shape[1] * group, *out))]


@register_op("ConvTranspose", since=1, infer=_infer_conv_transpose, out=True)
def conv_transpose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None, out=None):
    kernel = list(kernel_shape or w.shape[2:])
    begin, out_sizes, strides, dilations = transpose_geometry(x.shape[2:], kernel, strides, dilations, pads,
                                                              output_padding, output_shape, auto_pad)
    n, c = x.shape[:2]
    g = int(group)
    cog = w.shape[1]
    kprod = int(np.prod(kernel, dtype=np.int64))
    p_in = int(np.prod(x.shape[2:], dtype=np.int64))
    dt = _work_dtype(x.dtype)
    if out is None:
        out = np.empty((n, cog * g, *out_sizes), x.dtype)
    y = out if dt == out.dtype else np.empty(out.shape, dt)
    # W (C, Cout/G, k..) -> per group (Cout/G * kprod, C/G), the transposed filter matrix
    wt = np.asarray(w, dt).reshape(g, c // g, cog * kprod).transpose(0, 2, 1)
    xg = np.asarray(x, dt).reshape(n, g, c // g, p_in)
    cols = np.matmul(wt, xg)  # (N, G, Cout/G * kprod, P_in)
    cols = cols.reshape(n, g * cog, kprod, *x.shape[2:])
    if b is None:
        y.fill(0)
    else:
        np.copyto(y, np.asarray(b, dt).reshape(1, -1, *([1] * len(kernel))))
    scatter_taps(cols, y, kernel, strides, dilations, begin)
    if y is not out:
        np.copyto(out, y, casting="unsafe")
    return out


# ---- Col2Im -------------------------------------------------------------------------------------
def _block_counts(image, block, strides, dilations, pads):
    nd = len(image)
    strides, dilations, pads = _ints(strides, nd, 1), _ints(dilations, nd, 1), _ints(pads, 2 * nd, 0)
    counts = [(image[a] + pads[a] + pads[a + nd] - (block[a] - 1) * dilations[a] - 1) // strides[a] + 1
              for a in range(nd)]
    return counts, strides, dilations, pads[:nd]


def _infer_col2im(ins, *, dilations=None, pads=None, strides=None):
    x = ins[0]
    image = const_ints(ins[1])
    block = const_ints(ins[2])
    if x is None or x.shape is None or image is None or block is None:
        return None
    kprod = int(np.prod(block, dtype=np.int64))
    return [(x.dtype, (x.shape[0], x.shape[1] // kprod, *image))]


@register_op("Col2Im", since=18, infer=_infer_col2im, out=True, shape_inputs=(1, 2))
def col2im(x, image_shape, block_shape, *, dilations=None, pads=None, strides=None, out=None):
    image = [int(v) for v in np.asarray(image_shape).reshape(-1)]
    block = [int(v) for v in np.asarray(block_shape).reshape(-1)]
    counts, strides, dilations, begin = _block_counts(image, block, strides, dilations, pads)
    n, ck, nblocks = x.shape
    kprod = int(np.prod(block, dtype=np.int64))
    if nblocks != int(np.prod(counts, dtype=np.int64)) or ck % kprod:
        raise ValueError(f"Col2Im: input {list(x.shape)} does not match {counts} blocks of {block}")
    if out is None:
        out = np.empty((n, ck // kprod, *image), x.dtype)
    out.fill(0)
    cols = x.reshape(n, ck // kprod, kprod, *counts)
    scatter_taps(cols, out, block, strides, dilations, begin)
    return out

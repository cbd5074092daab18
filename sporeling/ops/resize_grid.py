"""Sampling at arbitrary locations: GridSample, AffineGrid (the grids it consumes) and RoiAlign.

Unlike Resize these are not separable, so each output point carries its own taps: per spatial
axis, the input indices it reads and their weights, with the padding mode already applied; the
tap combinations are then gathered and summed over whole arrays at once.
"""

from __future__ import annotations

import numpy as np

from .infer import const_ints
from .registry import register_op
from .resize import _keys_cubic

# ---- GridSample ---------------------------------------------------------------------------------
# Every output point reads its own arbitrary location, so nothing is separable: each spatial axis
# gets per-point taps (indices and weights, padding applied), and the K^r tap combinations are
# gathered from the flattened spatial plane and summed.


def _reflect(x, lo, hi):
    """Folds coordinates into [lo, hi] by reflecting at both borders as often as needed."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    t = np.mod(x - lo, 2 * span)
    return lo + np.where(t > span, 2 * span - t, t)


def _grid_axis_taps(x, size, mode, padding, align):
    """Indices (n, P, K) and weights (n, P, K) (None: nearest without zero padding) for one axis."""
    lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    if mode == "nearest":
        x = np.rint(x)
    outside = (x < lo) | (x > hi)
    # Cubic border padding clamps each tap, not the location (as PyTorch and onnxruntime do; the
    # spec's reference clamps the location too, which changes the weights). For linear and nearest
    # the two agree.
    if padding == "border" and mode != "cubic":
        x = np.where(outside, np.clip(x, 0, size - 1), x)
    elif padding == "reflection":
        x = np.where(outside, _reflect(x, lo, hi), x)
    if mode == "nearest":
        idx, w = np.trunc(x)[..., None], None
    else:
        base = np.floor(x)
        frac = (x - base)[..., None]
        if mode == "linear":
            offsets, w = np.arange(2), np.concatenate([1 - frac, frac], axis=-1)
        else:
            offsets = np.arange(-1, 3)
            w = _keys_cubic(offsets - frac, -0.75)
        idx = base[..., None] + offsets
    if padding == "zeros":
        inside = (idx >= 0) & (idx <= size - 1)
        w = inside.astype(x.dtype) if w is None else w * inside
    elif padding == "reflection":
        idx = np.trunc(_reflect(idx, lo, hi))
    return np.clip(idx, 0, size - 1).astype(np.intp), w


def _grid_infer(ins, **_attrs):
    x, grid = ins[0], ins[1]
    if x.shape is None or grid.shape is None:
        return None
    return [(x.dtype, tuple(x.shape[:2]) + tuple(grid.shape[1:-1]))]


@register_op("GridSample", since=16, infer=_grid_infer, out=True)
def grid_sample(X, grid, *, align_corners=0, mode="linear", padding_mode="zeros", out=None):
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    n, c, dims = X.shape[0], X.shape[1], X.shape[2:]
    rank = len(dims)
    ct = np.float64 if np.float64 in (X.dtype, grid.dtype) else np.float32
    g = grid.reshape(n, -1, rank).astype(ct, copy=False)
    taps = []
    for i, size in enumerate(dims):  # grid's last axis lists x (innermost) first
        coord = g[..., rank - 1 - i]
        coord = (coord + 1) / 2 * (size - 1) if align_corners else ((coord + 1) * size - 1) / 2
        taps.append(_grid_axis_taps(coord, size, mode, padding_mode, align_corners))
    strides = np.cumprod((1,) + tuple(dims[::-1]))[:-1][::-1]
    flat_x = X.reshape(n, c, -1)
    acc = None
    for combo in np.ndindex(*(idx.shape[-1] for idx, _ in taps)):
        flat = sum(taps[i][0][..., k] * strides[i] for i, k in enumerate(combo))
        vals = np.take_along_axis(flat_x, flat[:, None, :], axis=2)
        weight = None
        for i, k in enumerate(combo):
            if taps[i][1] is not None:
                weight = taps[i][1][..., k] if weight is None else weight * taps[i][1][..., k]
        if weight is not None:
            vals = vals * weight[:, None, :]
        acc = vals if acc is None else acc + vals
    result = acc.reshape((n, c) + grid.shape[1:-1])
    if out is None:
        return result.astype(X.dtype, copy=False)
    np.copyto(out, result, casting="unsafe")
    return out


# ---- AffineGrid ---------------------------------------------------------------------------------


def _affine_infer(ins, **_attrs):
    theta, size = ins
    dims = const_ints(size)
    if dims is None:
        return None
    return [(theta.dtype, (dims[0], *dims[2:], len(dims) - 2))]


@register_op("AffineGrid", since=20, infer=_affine_infer, out=True, shape_inputs=(1,))
def affine_grid(theta, size, *, align_corners=0, out=None):
    dims = [int(v) for v in np.reshape(size, -1)]
    spatial = dims[2:]
    lines = []
    for length in spatial:  # normalised pixel centres (or corners); a unit axis is -1 with align_corners
        line = np.linspace(-1.0, 1.0, length)
        lines.append(line if align_corners else line * (length - 1) / max(length, 1))
    mesh = np.meshgrid(*lines, indexing="ij")
    base = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(mesh[0].size)], axis=-1)
    grid = np.matmul(base.astype(theta.dtype), np.swapaxes(theta, 1, 2))  # (N, points, r)
    grid = grid.reshape(dims[0], *spatial, len(spatial))
    if out is None:
        return grid
    np.copyto(out, grid)
    return out


# ---- RoiAlign -----------------------------------------------------------------------------------
# Each bin of a RoI averages (or maxes) a grid of bilinear samples. Samples of one RoI form a
# product of a row set and a column set, so all four neighbours of all samples come out of one
# gather per chunk of RoIs (grouped by their sample-grid size), in channels-last layout.


def _roi_bilinear(v, size):
    """Caffe2-style 1-D bilinear taps: indices and weights (..., 2); zero weight past -1 or size."""
    valid = (v >= -1.0) & (v <= size)
    v = np.maximum(v, 0.0)
    low = np.floor(v)
    edge = low >= size - 1
    low = np.where(edge, size - 1, low)
    v = np.where(edge, low, v)
    high = np.where(edge, low, low + 1)
    frac = v - low
    w = np.stack([1 - frac, frac], axis=-1) * valid[..., None]
    return np.stack([low, high], axis=-1).astype(np.intp), w


def _roi_infer(ins, *, output_height=1, output_width=1, **_attrs):
    x, rois = ins[0], ins[1]
    if x.shape is None or rois.shape is None:
        return None
    return [(x.dtype, (rois.shape[0], x.shape[1], output_height, output_width))]


def _roi_align(X, rois, batch_indices, half_pixel, mode, oh, ow, sampling_ratio, spatial_scale, out):
    n_rois, c, height, width = rois.shape[0], X.shape[1], X.shape[2], X.shape[3]
    ct = np.float64 if X.dtype == np.float64 else np.float32
    boxes = rois.astype(np.float64) * spatial_scale - (0.5 if half_pixel else 0.0)
    x1, y1 = boxes[:, 0], boxes[:, 1]
    roi_w, roi_h = boxes[:, 2] - x1, boxes[:, 3] - y1
    if not half_pixel:
        roi_w, roi_h = np.maximum(roi_w, 1.0), np.maximum(roi_h, 1.0)
    bin_h, bin_w = roi_h / oh, roi_w / ow
    if sampling_ratio > 0:
        grid_h = grid_w = np.full(n_rois, sampling_ratio, np.int64)
    else:
        grid_h, grid_w = np.ceil(roi_h / oh).astype(np.int64), np.ceil(roi_w / ow).astype(np.int64)
    channels_last = np.ascontiguousarray(X.transpose(0, 2, 3, 1), dtype=ct)
    result = np.zeros((n_rois, oh, ow, c), ct)
    batch = np.asarray(batch_indices).reshape(-1).astype(np.intp)
    for gh, gw in set(zip(grid_h.tolist(), grid_w.tolist())):
        if gh <= 0 or gw <= 0:
            continue  # no samples: the bins stay 0
        members = np.flatnonzero((grid_h == gh) & (grid_w == gw))
        chunk = max(1, (1 << 22) // (oh * gh * ow * gw * 4 * c))
        for s in range(0, members.size, chunk):
            r = members[s : s + chunk]
            ys = y1[r, None, None] + np.arange(oh)[:, None] * bin_h[r, None, None] + \
                (np.arange(gh) + 0.5) * (bin_h[r] / gh)[:, None, None]
            xs = x1[r, None, None] + np.arange(ow)[:, None] * bin_w[r, None, None] + \
                (np.arange(gw) + 0.5) * (bin_w[r] / gw)[:, None, None]
            yi, wy = _roi_bilinear(ys, height)  # (G, oh, gh, 2)
            xi, wx = _roi_bilinear(xs, width)  # (G, ow, gw, 2)
            g = r.size
            vals = channels_last[batch[r, None, None], yi.reshape(g, -1)[:, :, None], xi.reshape(g, -1)[:, None, :]]
            vals = vals.reshape(g, oh, gh * 2, ow, gw * 2, c)
            wy, wx = wy.reshape(g, oh, gh * 2).astype(ct), wx.reshape(g, ow, gw * 2).astype(ct)
            if mode == "max":  # max over samples of the largest weighted neighbour (as onnxruntime)
                weighted = vals * wy[:, :, :, None, None, None] * wx[:, None, None, :, :, None]
                weighted = weighted.reshape(g, oh, gh, 2, ow, gw, 2, c).max(axis=(3, 6))
                result[r] = weighted.max(axis=(2, 4))
            else:
                rows = np.einsum("gpk,gpkqmc->gpqmc", wy, vals)
                result[r] = np.einsum("gqm,gpqmc->gpqc", wx, rows) / (gh * gw)
    y = result.transpose(0, 3, 1, 2)
    if out is None:
        return y.astype(X.dtype)
    np.copyto(out, y, casting="unsafe")
    return out


@register_op("RoiAlign", since=10, infer=_roi_infer, out=True)
def roi_align10(X, rois, batch_indices, *, mode="avg", output_height=1, output_width=1, sampling_ratio=0,
                spatial_scale=1.0, out=None):
    """RoiAlign-10 has no coordinate_transformation_mode; it behaves as output_half_pixel."""
    return _roi_align(X, rois, batch_indices, False, mode, output_height, output_width, sampling_ratio,
                      spatial_scale, out)


@register_op("RoiAlign", since=16, infer=_roi_infer, out=True)
def roi_align(X, rois, batch_indices, *, coordinate_transformation_mode="half_pixel", mode="avg",
              output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0, out=None):
    half_pixel = coordinate_transformation_mode == "half_pixel"
    return _roi_align(X, rois, batch_indices, half_pixel, mode, output_height, output_width, sampling_ratio,
                      spatial_scale, out)

"""Pooling: MaxPool (with Indices), AveragePool, LpPool, their Global forms, and MaxUnpool.

Max, sum and Lp pooling over a box window are separable: pooling axis by axis gives the same
result as pooling the whole window at once, with sum(k_i) passes instead of prod(k_i). The outer
axes go first (their taps are whole contiguous rows), the innermost last, on the already reduced
data, since its taps are strided within rows and NumPy buffers strided operands. Along one axis, each kernel tap is one
whole-array operation between the output and a strided slice of the input; the output positions
whose tap falls into the padding are simply left out of that tap's slice (tap_range), so no padded
copy is made and max pooling needs no -inf fill. Average pooling divides by a separable count of
the window's cells (inside the image, or inside image + explicit pads with count_include_pad),
precomputed once per plan. Only MaxPool's Indices output walks the full window tap by tap.
"""

from __future__ import annotations

import numpy as np

from .conv_geometry import Window, carve, pool_window, tap_range, workspace_bytes
from .infer import const_ints
from .registry import register_op


def _window(x_shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode) -> Window:
    if not kernel_shape:
        raise ValueError("pooling needs kernel_shape")
    return pool_window(tuple(x_shape[2:]), kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)


def _axis_taps(win: Window, a: int):
    """Per kernel tap along axis a: (lo, hi, input slice) of the outputs it reaches inside the image."""
    taps = []
    for t in range(win.kernel[a]):
        off = t * win.dilations[a] - win.pad_begin[a]
        lo, hi = tap_range(win.out_sizes[a], win.in_sizes[a], off, win.strides[a])
        if hi > lo:
            start = lo * win.strides[a] + off
            taps.append((lo, hi, slice(start, start + (hi - lo - 1) * win.strides[a] + 1, win.strides[a])))
    return taps


def _stage_shapes(lead, win: Window):
    """Shapes after pooling each axis, in axis order (the innermost axis, whose taps are strided
    within rows and so cost the most per element, goes last, on the smallest data)."""
    sizes = list(win.in_sizes)
    shapes = []
    for a in range(win.nd):
        sizes[a] = win.out_sizes[a]
        shapes.append((*lead, *sizes))
    return shapes


class SeparablePool:
    """Max or sum pooling of a fixed-shape input, one axis at a time into stage buffers.

    When the last axis maps whole rows (in = out * stride, the usual "same" pooling), its taps are
    1-D strided views of the flat input, one long operation each instead of one per row; the few
    output columns whose tap would wrap into the neighbouring row are saved before and restored
    after (they are padding for that tap)."""

    def __init__(self, x_shape, dtype, win: Window, reduce: str):
        self.win = win
        self.reduce = reduce  # "max" or "sum"
        self.dtype = np.dtype(dtype)
        self.shapes = _stage_shapes(tuple(x_shape[:2]), win)
        self.taps = {a: _axis_taps(win, a) for a in range(win.nd)}
        last = win.nd - 1
        self.flat_last = win.in_sizes[last] == win.out_sizes[last] * win.strides[last] and win.out_sizes[last] > 0
        self.edge_cols = max((t[0] + win.out_sizes[last] - t[1] for t in self.taps[last]), default=0)
        self.rows = int(np.prod(self.shapes[-1][:-1], dtype=np.int64))

    def workspace(self):
        specs = [(s, self.dtype) for s in self.shapes[:-1]]
        if self.flat_last:
            specs.append(((max(self.edge_cols, 1), self.rows), self.dtype))
        return specs

    def run(self, x, out, stages):
        nd = self.win.nd
        src = x
        for a in range(nd):
            dst = out if a == nd - 1 else stages[a]
            if a == nd - 1 and self.flat_last and src.flags.c_contiguous and dst.flags.c_contiguous:
                self._pool_last_flat(src, dst, self.taps[a], self.win.strides[a], stages[-1])
            else:
                self._pool_axis(src, dst, 2 + a, self.taps[a])
            src = dst
        return out

    def _start(self, dst, taps, n_out, src_of):
        """Initialises dst from the taps that reach every output (two of them combined in one
        operation when possible); returns the taps still to apply."""
        op = np.maximum if self.reduce == "max" else np.add
        full = [t for t in taps if t[0] == 0 and t[1] == n_out]
        if len(full) >= 2:
            op(src_of(full[0]), src_of(full[1]), out=dst)
            done = full[:2]
        elif full:
            np.copyto(dst, src_of(full[0]))
            done = full[:1]
        else:
            dst.fill(0 if self.reduce != "max" else -np.inf if dst.dtype.kind == "f" else np.iinfo(dst.dtype).min)
            done = []
        return [t for t in taps if not any(t is d for d in done)], op

    def _pool_axis(self, src, dst, axis, taps):
        lead = (slice(None),) * axis
        rest, op = self._start(dst, taps, dst.shape[axis], lambda t: src[lead + (t[2],)])
        for lo, hi, sl in rest:
            d = dst[lead + (slice(lo, hi),)]
            op(d, src[lead + (sl,)], out=d)

    def _pool_last_flat(self, src, dst, taps, stride, saved):
        n_out = dst.shape[-1]
        sflat, dflat = src.reshape(-1), dst.reshape(-1)
        total = dflat.size
        rest, op = self._start(dflat, taps, n_out, lambda t: sflat[t[2].start :: stride][:total])
        for tap in rest:
            lo, hi, sl = tap
            off = sl.start - lo * stride  # input offset of output column 0 (may be negative)
            g0 = -(off // stride) if off < 0 else 0
            g1 = min(total, (sflat.size - 1 - off) // stride + 1)
            edges = [*range(lo), *range(hi, n_out)]
            for k, col in enumerate(edges):
                np.copyto(saved[k], dflat[col::n_out])
            d = dflat[g0:g1]
            op(d, sflat[off + g0 * stride : off + (g1 - 1) * stride + 1 : stride], out=d)
            for k, col in enumerate(edges):
                np.copyto(dflat[col::n_out], saved[k])


def _valid_counts(win: Window, include_pad: bool) -> np.ndarray:
    """Number of window cells counted by the average, as an array broadcastable to the output."""
    counts = np.ones((), np.float64)
    for a in range(win.nd):
        o = np.arange(win.out_sizes[a])[:, None]
        pos = o * win.strides[a] + np.arange(win.kernel[a])[None, :] * win.dilations[a] - win.pad_begin[a]
        hi = win.in_sizes[a] + (win.pad_end[a] if include_pad else 0)
        lo = -win.pad_begin[a] if include_pad else 0
        c = ((pos >= lo) & (pos < hi)).sum(axis=1).astype(np.float64)
        counts = counts[..., None] * c if counts.ndim else c
    return counts


def _infer_pool(ins, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None, strides=None,
                **_unused):
    x = ins[0]
    if x is None or x.shape is None:
        return None
    win = _window(x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    shape = (*x.shape[:2], *win.out_sizes)
    return [(x.dtype, shape), (np.dtype(np.int64), shape)]


def _infer_pool_values(ins, **attrs):
    """AveragePool / LpPool: only the pooled values (no Indices output)."""
    res = _infer_pool(ins, **attrs)
    return None if res is None else res[:1]


def _scratch_nbytes(specs) -> int:
    return workspace_bytes(specs) if specs else 0


# ---- MaxPool ------------------------------------------------------------------------------------
def _argmax_pool(x, win: Window, y, idx, storage_order: int) -> None:
    """Max with the flat input index of the first maximum in window order (row-major scan)."""
    n, c = x.shape[:2]
    sizes = win.in_sizes
    nd = win.nd
    y.fill(0)
    idx.fill(-1)
    best = np.full(y.shape, np.nan, x.dtype) if x.dtype.kind == "f" else np.full(y.shape, np.iinfo(x.dtype).min)
    seen = np.zeros(y.shape, bool)
    base = (np.arange(n * c, dtype=np.int64) * int(np.prod(sizes, dtype=np.int64))).reshape(n, c, *([1] * nd))
    if storage_order:  # column-major spatial index: axis 0 varies fastest
        mult = np.cumprod([1, *sizes[:-1]]).astype(np.int64)
    else:
        mult = np.cumprod([1, *sizes[::-1][:-1]])[::-1].astype(np.int64)
    for tap in np.ndindex(*win.kernel):
        sl_out, sl_in, pos = [], [], []
        for a in range(nd):
            off = tap[a] * win.dilations[a] - win.pad_begin[a]
            lo, hi = tap_range(win.out_sizes[a], sizes[a], off, win.strides[a])
            if hi <= lo:
                break
            start = lo * win.strides[a] + off
            sl_out.append(slice(lo, hi))
            sl_in.append(slice(start, start + (hi - lo - 1) * win.strides[a] + 1, win.strides[a]))
            shape = [1] * nd
            shape[a] = hi - lo
            pos.append((np.arange(lo, hi) * win.strides[a] + off).reshape(shape) * mult[a])
        else:
            o = (slice(None), slice(None), *sl_out)
            v = x[(slice(None), slice(None), *sl_in)]
            better = (v > best[o]) | ~seen[o]
            if x.dtype.kind == "f":
                better &= ~np.isnan(v)
            np.copyto(best[o], v, where=better)
            np.copyto(idx[o], base + sum(pos), where=better)
            seen[o] |= better
    np.copyto(y, best, where=seen)


def make_maxpool(ins, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
                 storage_order=0, strides=None):
    x = ins[0]
    plan = None
    if x is not None and x.shape is not None:
        try:
            win = _window(x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
            plan = SeparablePool(x.shape, x.dtype, win, "max")
        except ValueError:
            plan = None  # bad attributes: the kernel call rebuilds and reports them, naming the node

    def run(x, *, out=None, scratch=None):
        p = plan
        if p is None or p.win.in_sizes != x.shape[2:] or p.shapes[-1][:2] != x.shape[:2]:
            p = SeparablePool(x.shape, x.dtype, _window(x.shape, kernel_shape, strides, dilations, pads, auto_pad,
                                                        ceil_mode), "max")
            scratch = None
        shape = p.shapes[-1]
        if isinstance(out, tuple):
            y, idx = out
            y = np.empty(shape, x.dtype) if y is None else y
            if idx is not None:
                _argmax_pool(x, p.win, y, idx, storage_order)
                return y, idx
            out = y
        if out is None:
            out = np.empty(shape, x.dtype)
        return p.run(x, out, carve(scratch, p.workspace()))

    return run


def scratch_maxpool(ins, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
                    storage_order=0, strides=None):
    x = ins[0]
    if x is None or x.shape is None:
        return 0
    try:
        win = _window(x.shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    except ValueError:
        return 0
    return _scratch_nbytes(SeparablePool(x.shape, x.dtype, win, "max").workspace())


@register_op("MaxPool", since=1, infer=_infer_pool, out=True, make=make_maxpool, scratch=scratch_maxpool)
def maxpool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None, storage_order=0,
            strides=None, out=None, scratch=None):
    fn = make_maxpool([None], auto_pad=auto_pad, ceil_mode=ceil_mode, dilations=dilations, kernel_shape=kernel_shape,
                      pads=pads, storage_order=storage_order, strides=strides)
    return fn(x, out=out, scratch=scratch)


# ---- AveragePool and LpPool ---------------------------------------------------------------------
def _tiles(x_shape, win: Window) -> tuple[int, ...] | None:
    """The shape that splits x into the pool's windows, when they tile it exactly (stride = kernel, no
    padding or dilation, nothing left over): then a window's sum is a plain reduction over a reshape,
    one pass instead of the separable sliding sums (the squeeze-and-excite pools of mobile nets)."""
    if (win.strides != win.kernel or any(win.pad_begin) or any(win.pad_end) or any(d != 1 for d in win.dilations)
            or any(o * k != i for o, k, i in zip(win.out_sizes, win.kernel, win.in_sizes))):
        return None
    return (*x_shape[:2], *[d for o, k in zip(win.out_sizes, win.kernel) for d in (o, k)])


class AveragePlan:
    def __init__(self, x_shape, dtype, win: Window, include_pad: bool, p=None):
        self.win = win
        self.p = p
        self.pool = SeparablePool(x_shape, dtype, win, "sum")
        self.scale = None if p is not None else (1.0 / _valid_counts(win, include_pad)).astype(dtype)
        self.specs = self.pool.workspace() + ([(tuple(x_shape), dtype)] if p is not None else [])
        self.tiles = _tiles(x_shape, win) if p is None else None
        if self.tiles is not None:
            self.specs = []
            self.tile_axes = tuple(range(3, len(self.tiles), 2))

    def __call__(self, x, out, scratch):
        if self.tiles is not None:
            np.sum(x.reshape(self.tiles), axis=self.tile_axes, out=out)
            np.multiply(out, self.scale, out=out)
            return out
        ws = carve(scratch, self.specs)
        if self.p is None:
            self.pool.run(x, out, ws)
            np.multiply(out, self.scale, out=out)
            return out
        powered = ws[-1]  # Lp: (sum |x|^p over the window) ^ (1/p)
        np.abs(x, out=powered)
        if self.p != 1:
            np.power(powered, self.p, out=powered)
        self.pool.run(powered, out, ws[:-1])
        if self.p != 1:
            np.power(out, 1.0 / self.p, out=out)
        return out


def _make_average(kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, include_pad, p=None):
    def build(x_shape, dtype):
        win = _window(x_shape, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
        return AveragePlan(x_shape, dtype, win, include_pad, p)

    def build_or_none(x):
        try:
            return build(x.shape, x.dtype) if x is not None and x.shape is not None else None
        except ValueError:
            return None  # bad attributes: the kernel call rebuilds and reports them, naming the node

    def make(ins):
        plan = build_or_none(ins[0])

        def run(x, *, out=None, scratch=None):
            pl = plan
            if pl is None or pl.win.in_sizes != x.shape[2:] or pl.pool.shapes[-1][:2] != x.shape[:2]:
                pl, scratch = build(x.shape, x.dtype), None
            if out is None:
                out = np.empty(pl.pool.shapes[-1], x.dtype)
            return pl(x, out, scratch)

        return run

    def scratch(ins):
        plan = build_or_none(ins[0])
        return 0 if plan is None else _scratch_nbytes(plan.specs)

    return make, scratch


def make_avgpool(ins, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape=None,
                 pads=None, strides=None):
    return _make_average(kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, bool(count_include_pad))[0](ins)


def scratch_avgpool(ins, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape=None,
                    pads=None, strides=None):
    return _make_average(kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, bool(count_include_pad))[1](ins)


@register_op("AveragePool", since=1, infer=_infer_pool_values, out=True,
             make=make_avgpool, scratch=scratch_avgpool)
def avgpool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape=None, pads=None,
            strides=None, out=None, scratch=None):
    fn = make_avgpool([None], auto_pad=auto_pad, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                      dilations=dilations, kernel_shape=kernel_shape, pads=pads, strides=strides)
    return fn(x, out=out, scratch=scratch)


def _lp_order(p) -> float:
    p = float(p)
    return int(p) if p.is_integer() else p


def make_lppool(ins, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
                strides=None):
    return _make_average(kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, False, _lp_order(p))[0](ins)


def scratch_lppool(ins, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
                   strides=None):
    return _make_average(kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, False, _lp_order(p))[1](ins)


@register_op("LpPool", since=1, infer=_infer_pool_values, out=True,
             make=make_lppool, scratch=scratch_lppool)
def lppool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None, strides=None,
           out=None, scratch=None):
    fn = make_lppool([None], auto_pad=auto_pad, ceil_mode=ceil_mode, dilations=dilations, kernel_shape=kernel_shape,
                     p=p, pads=pads, strides=strides)
    return fn(x, out=out, scratch=scratch)


# ---- global pools -------------------------------------------------------------------------------
def _infer_global(ins, **_attrs):
    x = ins[0]
    if x is None or x.shape is None:
        return None
    return [(x.dtype, (*x.shape[:2], *([1] * (len(x.shape) - 2))))]


def _global_shape(x):
    return (*x.shape[:2], *([1] * (x.ndim - 2)))


@register_op("GlobalAveragePool", since=1, infer=_infer_global, out=True)
def global_avgpool(x, *, out=None):
    if out is None:
        out = np.empty(_global_shape(x), x.dtype)
    rows = x.reshape(x.shape[0] * x.shape[1], -1)
    if x.dtype.kind == "f" and x.dtype.itemsize >= 4 and rows.shape[1] > 0:
        # one BLAS matrix-vector product; then scale, so the sum itself is exact as in a mean
        np.matmul(rows, np.ones(rows.shape[1], x.dtype), out=out.reshape(-1))
        np.multiply(out, x.dtype.type(1.0 / rows.shape[1]), out=out)
        return out
    np.mean(rows, axis=1, out=out.reshape(-1))
    return out


@register_op("GlobalMaxPool", since=1, infer=_infer_global, out=True)
def global_maxpool(x, *, out=None):
    if out is None:
        out = np.empty(_global_shape(x), x.dtype)
    np.max(x.reshape(x.shape[0] * x.shape[1], -1), axis=1, out=out.reshape(-1))
    return out


@register_op("GlobalLpPool", since=1, infer=_infer_global, out=True)
def global_lppool(x, *, p=2, out=None):
    p = _lp_order(p)
    if out is None:
        out = np.empty(_global_shape(x), x.dtype)
    rows = np.abs(x.reshape(x.shape[0] * x.shape[1], -1))
    flat = out.reshape(-1)
    if p == 2:
        np.sqrt(np.einsum("ij,ij->i", rows, rows), out=flat)
    else:
        np.power(np.sum(rows**p, axis=1), 1.0 / p, out=flat)
    return out


# ---- MaxUnpool ----------------------------------------------------------------------------------
def _unpool_shape(x_shape, kernel_shape, pads, strides):
    nd = len(kernel_shape)
    strides = strides or [1] * nd
    pads = pads or [0] * (2 * nd)
    return tuple(x_shape[:2]) + tuple(
        (x_shape[2 + a] - 1) * strides[a] - pads[a] - pads[a + nd] + kernel_shape[a] for a in range(nd))


def _infer_unpool(ins, *, kernel_shape=None, pads=None, strides=None):
    x = ins[0]
    if x is None or x.shape is None:
        return None
    if len(ins) > 2 and ins[2] is not None:
        shape = const_ints(ins[2])
        return None if shape is None else [(x.dtype, tuple(shape))]
    return [(x.dtype, _unpool_shape(x.shape, kernel_shape, pads, strides))]


@register_op("MaxUnpool", since=9, infer=_infer_unpool, out=True, shape_inputs=(2,))
def maxunpool(x, indices, output_shape=None, *, kernel_shape=None, pads=None, strides=None, out=None):
    """Scatters x to the flat indices of the unpooled shape the attributes imply (indices refer to
    that shape); an explicit output_shape then places that block at the origin of a larger output."""
    inferred = _unpool_shape(x.shape, kernel_shape, pads, strides)
    shape = inferred if output_shape is None else tuple(int(v) for v in np.asarray(output_shape).reshape(-1))
    if out is None:
        out = np.empty(shape, x.dtype)
    out.fill(0)
    flat = np.zeros(int(np.prod(inferred)), x.dtype) if shape != inferred else out.reshape(-1)
    flat[indices.reshape(-1)] = x.reshape(-1)
    if shape != inferred:
        block = tuple(slice(0, min(a, b)) for a, b in zip(inferred, shape))
        out[block] = flat.reshape(inferred)[block]
    return out

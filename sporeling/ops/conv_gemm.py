"""Convolution as matrix multiplication: pointwise, 2-D "wide" im2col, and N-D im2col.

A convolution is a matmul once the input windows are unrolled: for each group g,
out[g] (Cout/G x P) = W[g] (Cout/G x Cin/G*kprod) @ cols[g] (Cin/G*kprod x P), P the number of
output positions. The N-D path (Im2colGemm) pads the input into a workspace (zero borders
re-written every call, since the planner shares the workspace with other steps), copies the windows
out of an as_strided view of it in one call, and runs one batched matmul straight into `out`. That
copy moves one output row at a time, which NumPy does slowly; WideIm2col (2-D) instead arranges the
unrolling as a few long contiguous copies at the price of some extra matmul columns.

A 1x1 stride-1 unpadded conv needs no unrolling: the NCHW input already is cols. For "expand"
convs (many more output than input channels) the bias is folded into the matmul as an extra input
row of ones, which costs a copy of the small input instead of a pass over the large output.

Every algorithm class has the same small interface: `workspace()` lists the scratch arrays it
needs as (shape, dtype), `prepare(w, b)` re-lays out the weights (once per plan when they are
constant), and `run(x, prepared, out, ws)` writes conv + bias into out.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .conv_geometry import Window, tap_range


class ConvShape:
    """Everything an algorithm needs to know about one conv: input/output/weight shapes, groups, window."""

    def __init__(self, x_shape, w_shape, group: int, window: Window, dtype):
        self.n, self.c = int(x_shape[0]), int(x_shape[1])
        self.k = int(w_shape[0])
        self.group = int(group)
        self.window = window
        self.dtype = np.dtype(dtype)
        self.in_sizes = tuple(int(s) for s in x_shape[2:])
        self.out_sizes = window.out_sizes
        self.out_shape = (self.n, self.k, *self.out_sizes)
        self.kprod = int(np.prod(window.kernel, dtype=np.int64))
        self.cg = self.c // self.group
        self.kg = self.k // self.group
        self.p = int(np.prod(self.out_sizes, dtype=np.int64))

    @property
    def padded(self) -> bool:
        return any(self.window.pad_begin) or any(self.window.pad_end)

    @property
    def pointwise(self) -> bool:
        w = self.window
        return self.kprod == 1 and not self.padded and all(s == 1 for s in w.strides) and self.group == 1


def padded_sizes(shape: ConvShape) -> tuple[int, ...]:
    """Input extent the windows read: the padded input, clipped or grown to what the outputs need."""
    w = shape.window
    sizes = []
    for a in range(w.nd):
        need = (w.out_sizes[a] - 1) * w.strides[a] + (w.kernel[a] - 1) * w.dilations[a] + 1
        sizes.append(max(need, w.pad_begin[a] + w.in_sizes[a]))
    return tuple(sizes)


def fill_padded(xp: np.ndarray, x: np.ndarray, pad_begin, value=0) -> None:
    """Writes x into xp at offset pad_begin (per spatial axis) and `value` everywhere else. Only the
    border slabs are written besides the interior copy, one slab per side and axis."""
    nd = len(pad_begin)
    lead = xp.ndim - nd
    interior = [slice(None)] * lead
    for a in range(nd):
        b = pad_begin[a]
        e = b + x.shape[lead + a]
        before = interior + [slice(0, b)] + [slice(None)] * (nd - a - 1)
        after = interior + [slice(e, None)] + [slice(None)] * (nd - a - 1)
        if b > 0:
            xp[tuple(before)] = value
        if e < xp.shape[lead + a]:
            xp[tuple(after)] = value
        interior = interior + [slice(b, e)]
    np.copyto(xp[tuple(interior)], x)


def window_view(xp: np.ndarray, window: Window) -> np.ndarray:
    """View (C, k1..kn, o1..on) of a padded (C, *sizes) array: element [c, i.., o..] is the input at
    o * stride + i * dilation."""
    s = xp.strides
    nd = window.nd
    shape = (xp.shape[0], *window.kernel, *window.out_sizes)
    strides = (s[0], *(s[1 + a] * window.dilations[a] for a in range(nd)),
               *(s[1 + a] * window.strides[a] for a in range(nd)))
    return as_strided(xp, shape, strides, writeable=False)


class Im2colGemm:
    """General N-D grouped convolution: pad, unroll windows, one (batched) matmul per image."""

    def __init__(self, shape: ConvShape):
        self.s = shape
        self.psizes = padded_sizes(shape)
        self.needs_pad = shape.padded or self.psizes != shape.in_sizes

    def workspace(self):
        s = self.s
        specs = [((s.group, s.cg * s.kprod, s.p), s.dtype)]
        if self.needs_pad:
            specs.append(((s.c, *self.psizes), s.dtype))
        return specs

    def prepare(self, w, b):
        s = self.s
        w2 = np.ascontiguousarray(w.reshape(s.group, s.kg, s.cg * s.kprod), dtype=s.dtype)
        bias = None if b is None else np.asarray(b, s.dtype).reshape(s.k, 1)
        return w2, bias

    def run(self, x, prepared, out, ws):
        s = self.s
        w2, bias = prepared
        cols = ws[0]
        cols_view = cols.reshape(s.c, *s.window.kernel, *s.out_sizes)
        for n in range(s.n):
            src = x[n]
            if self.needs_pad:
                xp = ws[1]
                fill_padded(xp, src, s.window.pad_begin)
                src = xp
            np.copyto(cols_view, window_view(src, s.window))
            res = out[n].reshape(s.group, s.kg, s.p)
            np.matmul(w2, cols, out=res)
            if bias is not None:
                flat = out[n].reshape(s.k, s.p)
                np.add(flat, bias, out=flat)


class BatchedIm2col:
    """A batch of images (training, batched inference), groups = 1: the windows of all N images unrolled at
    once into one (C*kprod, N*P) matrix -- one strided copy per call instead of one per image -- and one GEMM
    (K x C*kprod) @ (C*kprod x N*P), whose (K, N, P) result is moved into the (N, K, P) output with the bias.
    Per-image loops spend more on Python and small GEMMs than on arithmetic for small images (LeNet-5 at
    batch 64: 64 GEMMs of 6 x 25 x 784 per call). Chosen when the unrolled batch fits BATCH_COLS_BYTES."""

    BATCH_COLS_BYTES = 32 << 20

    def __init__(self, shape: ConvShape):
        self.s = shape
        self.psizes = padded_sizes(shape)
        self.needs_pad = shape.padded or self.psizes != shape.in_sizes

    @classmethod
    def fits(cls, shape: ConvShape) -> bool:
        return shape.n > 1 and shape.group == 1 and shape.c * shape.kprod * shape.n * shape.p * shape.dtype.itemsize \
            <= cls.BATCH_COLS_BYTES

    def workspace(self):
        s = self.s
        specs = [((s.c * s.kprod, s.n * s.p), s.dtype), ((s.k, s.n * s.p), s.dtype)]
        if self.needs_pad:
            specs.append(((s.n, s.c, *self.psizes), s.dtype))
        return specs

    def prepare(self, w, b):
        s = self.s
        w2 = np.ascontiguousarray(w.reshape(s.k, s.c * s.kprod), dtype=s.dtype)
        bias = None if b is None else np.asarray(b, s.dtype).reshape(1, s.k, 1)
        return w2, bias

    def run(self, x, prepared, out, ws):
        s = self.s
        w2, bias = prepared
        cols, res = ws[0], ws[1]
        src = x
        if self.needs_pad:
            src = ws[2]
            fill_padded(src, x, s.window.pad_begin)
        win = s.window
        st = src.strides
        nd = win.nd
        # (C, k1..kn, N, o1..on) over the padded batch: element [c, i.., n, o..] is src[n, c, o*stride + i*dil]
        view = as_strided(src, (s.c, *win.kernel, s.n, *win.out_sizes),
                          (st[1], *(st[2 + a] * win.dilations[a] for a in range(nd)), st[0],
                           *(st[2 + a] * win.strides[a] for a in range(nd))), writeable=False)
        np.copyto(cols.reshape(view.shape), view)
        np.matmul(w2, cols, out=res)
        dst = out.reshape(s.n, s.k, s.p)
        np.copyto(dst, res.reshape(s.k, s.n, s.p).transpose(1, 0, 2))
        if bias is not None:
            np.add(dst, bias, out=dst)


class Pointwise:
    """1x1 stride-1 unpadded conv: out[n] (K x P) = W (K x C) @ x[n] (C x P).

    "Reduce" convs (fewer output than input channels, e.g. MobileNet's projections) run the same
    product transposed, out[n].T (P x K) = x[n].T (P x C) @ W.T (C x K), through views (no copies):
    OpenBLAS is 5-15% faster in that orientation on those shapes (benchmarks/conv_ops.py, MobileNetV2
    projections, 1 thread), while expand convs are faster as written."""

    # fold the bias into the matmul when the output is this many times larger than the input
    FOLD_RATIO = 3

    def __init__(self, shape: ConvShape, has_bias: bool):
        self.s = shape
        self.fold = has_bias and shape.n == 1 and shape.k >= self.FOLD_RATIO * shape.c
        self.transposed = not self.fold and shape.k < shape.c

    def workspace(self):
        s = self.s
        return [((s.c + 1, s.p), s.dtype)] if self.fold else []

    def prepare(self, w, b):
        s = self.s
        w2 = np.asarray(w, s.dtype).reshape(s.k, s.c)
        if self.fold:
            return np.ascontiguousarray(np.concatenate([w2, np.asarray(b, s.dtype).reshape(s.k, 1)], axis=1)), None
        bias = None if b is None else np.asarray(b, s.dtype).reshape(s.k, 1)
        return np.ascontiguousarray(w2.T if self.transposed else w2), bias

    def run(self, x, prepared, out, ws):
        s = self.s
        w2, bias = prepared
        if self.fold:
            cols = ws[0]
            np.copyto(cols[: s.c], x.reshape(s.c, s.p))
            cols[s.c] = 1
            np.matmul(w2, cols, out=out.reshape(s.k, s.p))
            return
        if self.transposed:
            res = out.reshape(s.n, s.k, s.p)
            for n in range(s.n):
                np.matmul(x[n].reshape(s.c, s.p).T, w2, out=res[n].T)
        elif s.n == 1:
            res = out.reshape(s.k, s.p)
            np.matmul(w2, x.reshape(s.c, s.p), out=res)
        else:
            res = out.reshape(s.n, s.k, s.p)
            np.matmul(w2, x.reshape(s.n, s.c, s.p), out=res)
        if bias is not None:
            np.add(res, bias, out=res)


class WideIm2col:
    """2-D conv (any stride, dilation, groups) as im2col with long copies.

    The padded input is split into stride phase planes P[a][b] = xpad[a::sh, b::sw] (one plane, the
    padded image itself, for stride 1). In plane coordinates every kernel tap is then a plain shift
    (e, f), so with outputs laid out "wide" (OH rows of the plane pitch WQ instead of OW) the tap's
    unrolled row is one contiguous run of the plane: plane_flat[e * WQ + f : + OH * WQ]. The taps
    that read the same plane are evenly spaced there, so each plane's share of cols is a single copy
    from an as_strided view. One (batched over groups) matmul gives the wide output; its first OW
    columns of each row are the result (the rest read across a row end and are dropped). A last
    row of ones in cols, against a bias column in the weights, adds the bias inside the matmul.
    """

    def __init__(self, shape: ConvShape, has_bias: bool = True):
        self.s = shape
        win = shape.window
        (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.strides, win.dilations
        self.oh, self.ow = win.out_sizes
        hp = (self.oh - 1) * sh + (kh - 1) * dh + 1
        wp = (self.ow - 1) * sw + (kw - 1) * dw + 1
        self.hq = -(-hp // sh) + 1  # one slack row: the wide runs of the last row spill into it
        self.wq = -(-wp // sw)
        self.span = self.oh * self.wq  # columns of cols: OH wide rows
        self.phases = []  # (a, b, rows i, cols j, row offset e0, col offset f0, e step, f step)
        for a in range(sh):
            ii = [i for i in range(kh) if (i * dh) % sh == a]
            for b in range(sw):
                jj = [j for j in range(kw) if (j * dw) % sw == b]
                if ii and jj:
                    es = (ii[1] * dh - ii[0] * dh) // sh if len(ii) > 1 else 0
                    fs = (jj[1] * dw - jj[0] * dw) // sw if len(jj) > 1 else 0
                    self.phases.append((a, b, ii, jj, ii[0] * dh // sh, jj[0] * dw // sw, es, fs))
        self.plane_ids = sorted({(p[0], p[1]) for p in self.phases})
        self.bias_row = has_bias
        self.rows = shape.cg * kh * kw + int(has_bias)
        self.direct = self.wq == self.ow  # kernel width 1: the wide output is the output

    def workspace(self):
        s = self.s
        specs = [((len(self.plane_ids), s.c, self.hq, self.wq), s.dtype), ((s.group, self.rows, self.span), s.dtype)]
        if not self.direct:
            specs.append(((s.k, self.span), s.dtype))
        return specs

    def prepare(self, w, b):
        s = self.s
        kh, kw = s.window.kernel
        w5 = np.asarray(w, s.dtype).reshape(s.group, s.kg, s.cg, kh, kw)
        blocks = [w5[:, :, :, ii][:, :, :, :, jj].reshape(s.group, s.kg, -1) for _, _, ii, jj, *_ in self.phases]
        if self.bias_row:
            bias = np.zeros(s.k, s.dtype) if b is None else np.asarray(b, s.dtype)
            blocks.append(bias.reshape(s.group, s.kg, 1))
        return np.ascontiguousarray(np.concatenate(blocks, axis=2)), None

    def _planes(self, x, planes):
        s = self.s
        win = s.window
        (sh, sw), (pt, pl) = win.strides, win.pad_begin
        h, w = s.in_sizes
        for idx, (a, b) in enumerate(self.plane_ids):
            plane = planes[idx]
            r0, r1 = tap_range(self.hq, h, a - pt, sh)
            c0, c1 = tap_range(self.wq, w, b - pl, sw)
            if r0 or c0 or r1 < self.hq or c1 < self.wq:
                plane.fill(0)
            if r1 > r0 and c1 > c0:
                ys = r0 * sh + a - pt
                xs = c0 * sw + b - pl
                np.copyto(plane[:, r0:r1, c0:c1],
                          x[:, ys : ys + (r1 - r0 - 1) * sh + 1 : sh, xs : xs + (c1 - c0 - 1) * sw + 1 : sw])

    def run(self, x, prepared, out, ws):
        s = self.s
        w2, bias = prepared
        planes, cols = ws[0], ws[1]
        wq, span, cg = self.wq, self.span, s.cg
        pstride = planes.strides
        if self.bias_row:
            cols[:, -1] = 1
        for n in range(s.n):
            self._planes(x[n], planes)
            row = 0
            for a, b, ii, jj, e0, f0, es, fs in self.phases:
                plane = planes[self.plane_ids.index((a, b))]
                start = plane.reshape(-1)[e0 * wq + f0 :]
                view = np.lib.stride_tricks.as_strided(
                    start, (s.group, cg, len(ii), len(jj), span),
                    (cg * pstride[1], pstride[1], es * wq * pstride[3], fs * pstride[3], pstride[3]), writeable=False)
                nrows = cg * len(ii) * len(jj)
                np.copyto(cols[:, row : row + nrows].reshape(s.group, cg, len(ii), len(jj), span), view)
                row += nrows
            if self.direct:
                res = out[n].reshape(s.group, s.kg, span)
                np.matmul(w2, cols, out=res)
                flat = out[n].reshape(s.k, span)
            else:
                wide = ws[2]
                np.matmul(w2, cols, out=wide.reshape(s.group, s.kg, span))
                np.copyto(out[n], wide.reshape(s.k, self.oh, wq)[:, :, : self.ow])
                flat = out[n].reshape(s.k, self.oh * self.ow)
            if bias is not None:
                np.add(flat, bias, out=flat)


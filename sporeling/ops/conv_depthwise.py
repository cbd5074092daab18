"""2-D depthwise convolution (one filter per channel) as shifted multiply-adds on flat images.

NumPy has no fused kernel for this, so the work is a handful of whole-array passes, and the
trick is to keep every pass a long contiguous run instead of one short row at a time. Treat each
channel's image as one flat vector of P = OH * OW values. With stride 1 and "same" padding the
output has the input's shape, and the kernel tap at offset (e, f) is just the flat input shifted by
e * OW + f: out[:, lo:hi] += w_tap * x[:, lo + shift : hi + shift]. The range [lo, hi) drops rows
that fall off the top or bottom (padding); the few positions whose shift wrapped around a row end
(|f| columns at the left or right edge) are zeroed in the product before it is added, with one
strided fill per edge column. No padded copy of the input is made.

Stride s is reduced to stride 1 by splitting the input into s*s phase planes P[a][b] = x[a::s, b::s]
(copied once, each (OH, OW) and zero-filled past the image): tap (i, j) then reads plane
(i*d - pad) mod s shifted by floor((i*d - pad) / s), the same flat-shift scheme as above.

Two ways to do the multiply-adds. Depthwise2D does them as whole-array passes: 2 per tap, over
the (C, P) image, which is the cheaper way on large images. DepthwiseCols copies the shifted
images into cols (one contiguous copy per tap plus the edge zeroing) and lets BLAS do one
vector-matrix product per channel; on small images, where NumPy's per-row costs dominate the
passes, that is 2-4x faster (conv.py picks by P).
"""

from __future__ import annotations

import numpy as np

from .conv_gemm import ConvShape


def depthwise_applicable(shape: ConvShape) -> bool:
    w = shape.window
    if w.nd != 2 or not (shape.group == shape.c == shape.k) or shape.p == 0:
        return False
    # the flat-shift scheme needs the output pitch to equal the phase-plane pitch
    return all(w.out_sizes[a] == -(-w.in_sizes[a] // w.strides[a]) for a in range(2))


class Depthwise2D:
    """Depthwise conv as shifted multiply-adds: out[c] = sum over taps of w[c, tap] * shifted x[c]."""

    def __init__(self, shape: ConvShape):
        self.s = shape
        win = shape.window
        self.sh, self.sw = win.strides
        self.oh, self.ow = win.out_sizes
        p = self.oh * self.ow
        taps = []
        for i in range(win.kernel[0]):
            for j in range(win.kernel[1]):
                eps = i * win.dilations[0] - win.pad_begin[0]
                dlt = j * win.dilations[1] - win.pad_begin[1]
                a, e = eps % self.sh, eps // self.sh
                b, f = dlt % self.sw, dlt // self.sw
                shift = e * self.ow + f
                lo, hi = max(0, -shift), min(p, p - shift)
                if hi <= lo or abs(f) >= self.ow or abs(e) >= self.oh:
                    continue  # the tap only ever reads padding
                wrap = list(range(0, -f)) if f < 0 else list(range(self.ow - f, self.ow))
                taps.append((i * win.kernel[1] + j, a * self.sw + b, shift, lo, hi, wrap))
        # a tap that covers every output without wrapping initialises the accumulator
        full = [t for t in taps if t[2] == 0]
        self.first = full[0] if full else None
        self.rest = [t for t in taps if t is not self.first]
        self.phased = self.sh > 1 or self.sw > 1
        self.planes = sorted({t[1] for t in taps})  # the phase planes some tap reads

    def _accumulator_shape(self) -> tuple[int, ...]:
        return (self.s.c, self.oh * self.ow)

    def workspace(self):
        """The accumulator, and for strided convs the phase planes the input is split into."""
        s = self.s
        specs = [(self._accumulator_shape(), s.dtype)]
        if self.phased:
            specs.append(((self.sh * self.sw, s.c, self.oh, self.ow), s.dtype))
        return specs

    def prepare(self, w, b):
        s = self.s
        kk = int(np.prod(w.shape[2:]))
        wt = np.ascontiguousarray(np.asarray(w, s.dtype).reshape(s.c, kk).T).reshape(kk, s.c, 1)
        bias = None if b is None else np.asarray(b, s.dtype).reshape(s.c, 1)
        return wt, bias

    def _split(self, x, planes):
        """Phase planes of one image: planes[a*sw + b] = x[:, a::sh, b::sw], zero past the edge."""
        h, w = self.s.in_sizes
        if h == self.oh * self.sh and w == self.ow * self.sw and len(self.planes) == self.sh * self.sw:
            # every plane is full: all of them in one copy from a (sh, sw, C, OH, OW) view
            st = x.strides
            view = np.lib.stride_tricks.as_strided(
                x, (self.sh, self.sw, x.shape[0], self.oh, self.ow),
                (st[1], st[2], st[0], st[1] * self.sh, st[2] * self.sw), writeable=False)
            np.copyto(planes.reshape(view.shape), view)
            return
        for idx in self.planes:
            a, b = divmod(idx, self.sw)
            rows, cols = -(-(h - a) // self.sh), -(-(w - b) // self.sw)
            plane = planes[idx]
            np.copyto(plane[:, :rows, :cols], x[:, a :: self.sh, b :: self.sw])
            if rows < self.oh:
                plane[:, rows:, :] = 0
            if cols < self.ow:
                plane[:, :rows, cols:] = 0

    def run(self, x, prepared, out, ws):
        s = self.s
        wt, bias = prepared
        p = self.oh * self.ow
        tmp = ws[0]
        tmp_flat = tmp.reshape(-1)
        for n in range(s.n):
            if self.phased:
                planes = ws[1]
                self._split(x[n], planes)
                sources = planes.reshape(self.sh * self.sw, s.c, p)
            else:
                sources = x[n].reshape(1, s.c, p)
            acc = out[n].reshape(s.c, p)
            if self.first is not None:
                np.multiply(sources[self.first[1]], wt[self.first[0]], out=acc)
            else:
                acc.fill(0)
            for tap, plane, shift, lo, hi, wrap in self.rest:
                src = sources[plane]
                np.multiply(src[:, lo + shift : hi + shift], wt[tap], out=tmp[:, lo:hi])
                for col in wrap:  # products that wrapped around a row end read the wrong row
                    tmp_flat[col :: self.ow] = 0
                np.add(acc[:, lo:hi], tmp[:, lo:hi], out=acc[:, lo:hi])
            if bias is not None:
                np.add(acc, bias, out=acc)


class DepthwiseCols(Depthwise2D):
    """Same taps, but the multiply-adds are done by BLAS: the shifted images are copied into
    cols[t] (contiguous, with the wrapped and out-of-image cells zeroed), a row of ones carries the
    bias, and one vector-matrix product per channel sums them: out[c] = wv[c] @ cols[:, c, :]."""

    def __init__(self, shape: ConvShape):
        super().__init__(shape)
        self.taps = ([self.first] if self.first is not None else []) + self.rest
        self.kk = len(self.taps) + 1

    def _accumulator_shape(self) -> tuple[int, ...]:
        return (self.kk, self.s.c, self.oh * self.ow)  # one shifted copy per tap, plus the bias row

    def prepare(self, w, b):
        s = self.s
        kk = int(np.prod(w.shape[2:]))
        flat = np.asarray(w, s.dtype).reshape(s.c, kk)
        wv = np.empty((s.c, self.kk), s.dtype)
        for k, tap in enumerate(self.taps):
            wv[:, k] = flat[:, tap[0]]
        wv[:, -1] = 0 if b is None else np.asarray(b, s.dtype)
        return wv

    def run(self, x, wv, out, ws):
        s = self.s
        c, p, ow = s.c, self.oh * self.ow, self.ow
        total = c * p
        cols = ws[0]
        cols[-1] = 1
        stride = cols.strides
        for n in range(s.n):
            if self.phased:
                planes = ws[1]
                self._split(x[n], planes)
                sources = planes.reshape(self.sh * self.sw, total)
            else:
                sources = x[n].reshape(1, total)
            for k, (tap, plane, shift, lo, hi, wrap) in enumerate(self.taps):
                dst = cols[k]
                flat = dst.reshape(-1)
                g_lo, g_hi = max(0, -shift), total - max(0, shift)
                np.copyto(flat[g_lo:g_hi], sources[plane][g_lo + shift : g_hi + shift])
                if lo > 0:  # rows above the image, and what the global shift pulled in from the channel before
                    dst[:, :lo] = 0
                if hi < p:
                    dst[:, hi:] = 0
                for col in wrap:
                    flat[col::ow] = 0
            view = np.lib.stride_tricks.as_strided(cols, (c, self.kk, p), (stride[1], stride[0], stride[2]))
            np.vecmat(wv, view, out=out[n].reshape(c, p))

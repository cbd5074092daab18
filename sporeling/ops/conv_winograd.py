"""Winograd minimal filtering F(m x m, 3 x 3) for dense 3x3 stride-1 convolutions.

Each m x m output tile needs an n x n input tile (n = m + 2). Transforming input tiles (V = Bt d B)
and filters (U = G g Gt) turns the 9*C multiply-adds per output into (n/m)^2 * C: per transformed
position (a, b) one matmul M[b, a] (K x T) = U[b, a] (K x C) @ V[b, a] (C x T) over the T tiles,
then the output tile is At M A. F(4x4) needs 2.25 MACs per 9 (4x fewer), F(2x2) 4 per 9.

The transform matrices come from Toom-Cook interpolation at the points 0, +-1, +-2, .. and
infinity, computed exactly with fractions and scaled so that Bt has small integer entries (the
input transform is then exact in float32; the fractions sit in the filter transform, done once in
float64). Every transform is a small matmul (n x n times a long matrix), so BLAS does them at memory speed.
NumPy ufuncs on strided views are buffered and several times slower than on contiguous arrays, so
the strided work is left to copies: tile row i of all tiles is gathered as whole padded image rows
(the vertical transform is then one matmul), and tile column j is gathered as a stride-m 1-D view of
the result, which works because the padded row pitch is exactly m * (tiles per row + 1) (one spare
tile per row, computed and ignored). On the way out the inverse transforms are arranged so that the
output column index ends up innermost, so the result lands in `out` as whole image rows.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import gcd, lcm

import numpy as np

from .conv_gemm import ConvShape

# points of the Toom-Cook interpolation for each output tile size m (infinity is added)
_POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2)}


def winograd_tile(shape: ConvShape) -> int:
    """The output tile size to use for this conv, or 0 when Winograd does not apply or would not pay."""
    w = shape.window
    if (w.nd != 2 or w.kernel != (3, 3) or w.strides != (1, 1) or w.dilations != (1, 1) or shape.group != 1
            or shape.dtype not in (np.float32, np.float64)):
        return 0
    if shape.c < 16 or shape.k < 16:
        return 0
    oh, ow = w.out_sizes
    if min(oh, ow) < 8:
        return 0  # too few tiles: the per-position matmuls get too narrow (measured at 7x7)
    # the 4x4 tile wins while there are enough tiles to keep the matmuls long; small maps use 2x2
    return 4 if oh * ow > 14 * 14 else 2


@lru_cache(maxsize=None)
def toom_cook(m: int, r: int = 3):
    """(At, G, Bt) for F(m, r): y = At @ ((G @ g) * (Bt @ d)), y_k = sum_j g_j d_(k+j)."""
    n = m + r - 1
    pts = [Fraction(p) for p in _POINTS[m]]

    def evaluation(cols: int):  # n x cols, rows evaluate a polynomial at each point, last row at infinity
        rows = [[p**e for e in range(cols)] for p in pts]
        rows.append([Fraction(0)] * (cols - 1) + [Fraction(1)])
        return rows

    vand = evaluation(n)
    inv = _inverse(vand)
    bt = [[inv[j][i] for j in range(n)] for i in range(n)]  # Bt = (V^-1)^T
    g = evaluation(r)
    at = [[row[k] for row in evaluation(m)] for k in range(m)]
    for i in range(n):  # scale Bt rows to small integers, compensate in G
        den = lcm(*(v.denominator for v in bt[i]))
        num = gcd(*(int(v * den) for v in bt[i]))
        scale = Fraction(den, num)
        bt[i] = [v * scale for v in bt[i]]
        g[i] = [v / scale for v in g[i]]
    as_float = lambda mat: np.array([[float(v) for v in row] for row in mat])  # noqa: E731
    return as_float(at), as_float(g), as_float(bt)


def _inverse(mat):
    n = len(mat)
    aug = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(mat)]
    for col in range(n):
        piv = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[piv] = aug[piv], aug[col]
        p = aug[col][col]
        aug[col] = [v / p for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [a - f * b for a, b in zip(aug[r], aug[col])]
    return [row[n:] for row in aug]


class Winograd:
    def __init__(self, shape: ConvShape, m: int):
        self.s = shape
        self.m = m
        self.n = n = m + 2
        at, g, bt = toom_cook(m)
        self.g = g
        dt = shape.dtype
        self.bt = np.ascontiguousarray(bt, dt)
        self.at = np.ascontiguousarray(at, dt)
        self.at_t = np.ascontiguousarray(at.T, dt)
        oh, ow = shape.out_sizes
        c, k = shape.c, shape.k
        self.ty, tx = -(-oh // m), -(-ow // m)
        self.txp = tx + 1  # one spare tile per row: the row pitch is then exactly m * tiles
        self.wq = self.txp * m
        self.hq = self.ty * m + 2
        self.t = self.ty * self.txp
        self.n_rows = c * self.ty * self.wq  # elements of one gathered row-slab (C, ty, wq)
        self.r_in = n * c * self.t  # tiles x transformed rows, per gathered column
        self.r_out = n * k * self.t
        x_size = c * self.hq * self.wq
        # three buffers, reused along the pipeline: A: xq -> G -> Y1, B: Xs -> V -> Y2, C: E -> M
        self.sizes = (max(x_size, n * self.r_in, self.r_out * m),
                      max(n * self.n_rows, n * self.r_in, m * k * self.ty * self.wq),
                      max(n * self.n_rows + 2 * n, n * n * k * self.t))

    def workspace(self):
        return [((size,), self.s.dtype) for size in self.sizes]

    def prepare(self, w, b):
        s = self.s
        g = self.g
        u = np.einsum("ai,kcij,bj->bakc", g, np.asarray(w, np.float64), g)
        u = np.ascontiguousarray(u, dtype=s.dtype)
        bias = None if b is None else np.asarray(b, s.dtype).reshape(s.k, 1)
        return u, bias

    def run(self, x, prepared, out, ws):
        s, m, n = self.s, self.m, self.n
        u, bias = prepared
        c, k = s.c, s.k
        ty, wq, hq, t = self.ty, self.wq, self.hq, self.t
        buf_a, buf_b, buf_c = ws
        oh, ow = s.out_sizes
        pt, pl = s.window.pad_begin
        h, w = s.in_sizes
        for b_idx in range(s.n):
            # padded input, zero outside the image
            xq = buf_a[: c * hq * wq].reshape(c, hq, wq)
            xq.fill(0)
            np.copyto(xq[:, pt : pt + h, pl : pl + w], x[b_idx])
            # vertical input transform: gather tile row i of every tile (whole padded rows), one GEMM
            xs = buf_b[: n * self.n_rows].reshape(n, c, ty, wq)
            for i in range(n):
                np.copyto(xs[i], xq[:, i : i + m * ty : m, :])
            e = buf_c[: n * self.n_rows + 2 * n]
            np.matmul(self.bt, xs.reshape(n, self.n_rows), out=e[: n * self.n_rows].reshape(n, self.n_rows))
            # horizontal input transform: gather tile column j (a stride-m 1-D view of E), one GEMM
            gcols = buf_a[: n * self.r_in].reshape(n, self.r_in)
            for j in range(n):
                np.copyto(gcols[j], e[j : j + m * self.r_in : m])
            v = buf_b[: n * self.r_in].reshape(n, self.r_in)
            np.matmul(self.bt, gcols, out=v)
            # one matmul per transformed position (b, a): M (K x T) = U (K x C) @ V (C x T)
            mm = buf_c[: n * n * k * t].reshape(n, n, k, t)
            np.matmul(u, v.reshape(n, n, c, t), out=mm)
            # horizontal inverse with the output column q innermost: Y1[(a, k, ty, tx), q]
            y1 = buf_a[: self.r_out * m].reshape(self.r_out, m)
            np.matmul(mm.reshape(n, self.r_out).T, self.at_t, out=y1)
            # vertical inverse: Y2[p, (k, ty, x)] = sum_a At[p, a] Y1[a, (k, ty, x)]
            y2 = buf_b[: m * k * ty * wq].reshape(m, k, ty, wq)
            np.matmul(self.at, y1.reshape(n, k * ty * wq), out=y2.reshape(m, k * ty * wq))
            dst = out[b_idx]
            if oh == ty * m:
                np.copyto(dst.reshape(k, ty, m, ow), y2[:, :, :, :ow].transpose(1, 2, 0, 3))
            else:
                for p in range(m):
                    rows = len(range(p, oh, m))
                    np.copyto(dst[:, p::m, :], y2[p, :, :rows, :ow])
            if bias is not None:
                flat = dst.reshape(k, oh * ow)
                np.add(flat, bias, out=flat)

"""Backward rules for the convolutions: Conv (dense, 1x1, depthwise, grouped; 1-D to N-D) and ConvTranspose, and
the window geometry the pools' rules (vjp_pool.py) share with them.

They share one geometry: the output's spatial shape is taken from the gradient itself, so ceil_mode and
auto_pad need no separate shape arithmetic; only the leading pads are derived from the attributes, and the
input is padded so every window lies in range. The general path takes the patches (N, C, *out, *kernel) as a
strided sliding_window_view, forms the products as (batched) GEMMs or einsums over them, and puts the input
gradient back ("col2im") by adding one strided view of the padded gradient per kernel tap. The common cases
have faster paths, each described where it is: dense Conv as GEMMs per chunk of taps on a channels-first
layout, 1x1 Conv as batched GEMMs on NCHW, depthwise Conv sample by sample in stride phases, and a stride-1
Conv's input gradient through the forward Conv kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ..ops.conv_transpose import transpose_geometry
from .vjp import WORKSPACE, VJPContext, Workspace, array_bytes, as_gradient, out_buffer, register_vjp, wanted, workspace


# ---- window geometry shared by Conv and the pools -----------------------------------------------
def _auto_pad(attrs) -> str:
    ap = attrs.get("auto_pad", "NOTSET")
    return ap.decode() if isinstance(ap, bytes) else ap


def _pads(attrs, in_sp, out_sp, kernel, strides, dil) -> tuple[list[int], list[int]]:
    """Leading and trailing pads per spatial axis, as the forward kernels resolve them."""
    nd = len(in_sp)
    ap = _auto_pad(attrs)
    if ap in ("SAME_UPPER", "SAME_LOWER"):
        total = [max((o - 1) * s + (k - 1) * d + 1 - i, 0)
                 for i, o, k, s, d in zip(in_sp, out_sp, kernel, strides, dil)]
        begin = [t // 2 if ap == "SAME_UPPER" else t - t // 2 for t in total]
        return begin, [t - b for t, b in zip(total, begin)]
    if ap == "VALID":
        return [0] * nd, [0] * nd
    pads = list(attrs.get("pads") or [0] * (2 * nd))
    return pads[:nd], pads[nd:]


def _geometry(attrs, x_shape, out_sp, kernel):
    nd = len(kernel)
    strides = list(attrs.get("strides") or [1] * nd)
    dil = list(attrs.get("dilations") or [1] * nd)
    begin, end = _pads(attrs, x_shape[2:], out_sp, kernel, strides, dil)
    return strides, dil, begin, end


def _patches(x, begin, out_sp, kernel, strides, dil, fill=0.0) -> np.ndarray:
    """View (N, C, *out, *kernel) of the windows over x padded with `fill` at the front by `begin`
    and at the back as far as the last window reaches (ceil_mode overhang included)."""
    nd = len(kernel)
    ext = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    need = [(o - 1) * s + e for o, s, e in zip(out_sp, strides, ext)]
    after = [max(n - b - sz, 0) for n, b, sz in zip(need, begin, x.shape[x.ndim - nd:])]
    # a negative leading pad (ConvTranspose with a long output_shape) crops instead
    xp = np.pad(x, [(0, 0)] * (x.ndim - nd) + [(max(b, 0), a) for b, a in zip(begin, after)], constant_values=fill)
    xp = xp[(Ellipsis,) + tuple(slice(max(-b, 0), max(-b, 0) + n) for b, n in zip(begin, need))]
    v = sliding_window_view(xp, ext, axis=tuple(range(x.ndim - nd, x.ndim)))
    return v[(Ellipsis,) + tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dil)]


def _col2im(gcols, x_shape, begin, kernel, strides, dil) -> np.ndarray:
    """Adjoint of _patches: sums each tap's gradient into a strided view of the padded input."""
    nd = len(kernel)
    lead = len(x_shape) - nd
    out_sp = gcols.shape[lead:lead + nd]
    need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_sp, strides, kernel, dil)]
    full = [max(n, b + sz) for n, b, sz in zip(need, begin, x_shape[lead:])]
    gxp = np.zeros(tuple(x_shape[:lead]) + tuple(full), dtype=gcols.dtype)
    for tap in np.ndindex(*kernel):
        view = tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dil, strides, out_sp))
        gxp[(Ellipsis,) + view] += gcols[(Ellipsis,) + tap]
    return gxp[(Ellipsis,) + tuple(slice(b, b + sz) for b, sz in zip(begin, x_shape[lead:]))]


# ---- Conv -----------------------------------------------------------------------------------------
def _tap_view(tap, dil, strides, out_sp) -> tuple:
    """The slices of a padded input that kernel tap `tap` reads, one element per output position."""
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dil, strides, out_sp))


def _padded_extent(x_shape, begin, out_sp, kernel, strides, dil) -> list[int]:
    need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_sp, strides, kernel, dil)]
    return [max(n, b + sz) for n, b, sz in zip(need, begin, x_shape[2:])]


# a Conv backward's tap-major patch matrix is built this many bytes at a time at most (whole taps, at least
# one): small layers get one GEMM; for big ones, tens of MB of fresh buffers cost more in page faults and
# cache misses than the extra GEMM calls do (measured: 3x3, 32->64 channels, 64x26x26: 93 ms per tap, 235 whole)
WHOLE_PATCHES_BYTES = 1 << 23


def _dense_geometry(x_shape, w_shape, out_sp, strides, dil, begin, itemsize: int):
    """What _conv_dense's buffers follow: the padded extent, whether x needs no padding, whether x is its own patch
    matrix (1x1, stride 1), the taps per chunk, and N*P."""
    c, kernel = x_shape[1], tuple(w_shape[2:])
    np_ = x_shape[0] * math.prod(out_sp)
    kk = math.prod(kernel)
    full = _padded_extent(x_shape, begin, out_sp, kernel, strides, dil)
    unpadded = not any(begin) and list(full) == list(x_shape[2:])
    whole = unpadded and kk == 1 and all(st == 1 for st in strides)
    tap_bytes = c * np_ * itemsize
    chunk = next(t for t in range(kk, 0, -1) if kk % t == 0 and (t == 1 or t * tap_bytes <= WHOLE_PATCHES_BYTES))
    return full, unpadded, whole, chunk, np_


def _dense_bytes(x_shape, x_dtype, w_shape, out_sp, strides, dil, begin, ct, want_x, want_w) -> int:
    """The scratch _conv_dense takes from its workspace: the transposed output gradient, then the larger of X's
    phase (the padded gradient and one chunk's GEMM result) and W's (its gradient, the padded input, the patches),
    as it takes and gives them back."""
    n, c = x_shape[:2]
    m, kk = w_shape[0], math.prod(w_shape[2:])
    full, unpadded, whole, chunk, np_ = _dense_geometry(x_shape, w_shape, out_sp, strides, dil, begin,
                                                        np.dtype(ct).itemsize)
    x_phase = array_bytes((c, n, *full), ct) + array_bytes((chunk * c, np_), ct) if want_x else 0
    w_phase = 0
    if want_w:
        w_phase = array_bytes((m, kk, c), ct)
        if not (unpadded and not whole and np.dtype(x_dtype) == ct):
            w_phase += array_bytes((c, n, *full), ct)
        if not whole:
            w_phase += array_bytes((chunk, c, n, *out_sp), ct)
    return array_bytes((m, n, *out_sp), ct) + max(x_phase, w_phase)


def _conv_dense(x, w, ctx: VJPContext, ct, strides, dil, begin, want_x, want_w, gx_out=None, ws=None):
    """groups = 1. Channels lead and batch x positions is one long axis (NP). The patches are tap-major
    (k, c, NP), so W's gradient is one GEMM (m x NP by NP x kc) and X's one GEMM (kc x m by m x NP) followed
    by k strided adds, in chunks of taps of at most WHOLE_PATCHES_BYTES (one tap at the least).
    Memory: the output gradient is taken out of ctx and dropped once transposed, X's gradient is finished
    (and its buffers freed) before W's patches are built, so the peak is about three input-sized arrays. The
    buffers come from `ws`, the step's planned scratch, in the order and sizes _dense_bytes counts."""
    ws = ws or Workspace()
    n, c = x.shape[:2]
    m, kernel = w.shape[0], tuple(w.shape[2:])
    g = ctx.grads[0]
    ctx.grads[0] = None
    out_sp = g.shape[2:]
    kk = math.prod(kernel)
    lead = (slice(None), slice(None))
    inner = tuple(slice(b, b + sz) for b, sz in zip(begin, x.shape[2:]))
    full, unpadded, whole, chunk, np_ = _dense_geometry(x.shape, w.shape, out_sp, strides, dil, begin,
                                                        np.dtype(ct).itemsize)
    gm = ws.empty((m, n) + tuple(out_sp), ct)  # (m, N*P)
    np.copyto(gm, np.moveaxis(g, 1, 0), casting="unsafe")
    gm = gm.reshape(m, np_)
    del g
    taps = [lead + _tap_view(tap, dil, strides, out_sp) for tap in np.ndindex(*kernel)]
    gw = gx = None
    phase = ws.mark()
    if want_x:
        gxp = ws.zeros((c, n) + tuple(full), ct)
        wt = np.ascontiguousarray(np.moveaxis(w.reshape(m, c, kk), 2, 0), dtype=ct)  # (k, m, c)
        part = ws.empty((chunk * c, np_), ct)
        for t0 in range(0, kk, chunk):
            np.matmul(wt[t0:t0 + chunk].transpose(0, 2, 1).reshape(chunk * c, m), gm, out=part)
            for j in range(chunk):
                gxp[taps[t0 + j]] += part[j * c:(j + 1) * c].reshape((c, n) + tuple(out_sp))
        del part
        if gx_out is not None:
            np.copyto(gx_out, np.moveaxis(gxp[lead + inner], 0, 1))
            gx = gx_out
        else:  # a copy even where the moved axes are already contiguous (one image): gxp's space is reused below
            gx = np.array(np.moveaxis(gxp[lead + inner], 0, 1), order="C")
        del gxp
        ws.release(phase)
    if want_w:
        gw = ws.empty((m, kk, c), ct)
        if unpadded and not whole and x.dtype == ct:
            xp = np.moveaxis(x, 1, 0)  # a view: the taps are gathered from x itself, no transposed copy
        elif unpadded:
            xp = ws.empty((c, n) + tuple(full), ct)
            np.copyto(xp, np.moveaxis(x, 1, 0), casting="unsafe")
        else:
            xp = ws.zeros((c, n) + tuple(full), ct)
            xp[lead + inner] = np.moveaxis(x, 1, 0)
        cols = None if whole else ws.empty((chunk, c, n) + tuple(out_sp), ct)
        for t0 in range(0, kk, chunk):
            if whole:
                block = xp.reshape(c, np_)
            else:
                for j in range(chunk):
                    np.copyto(cols[j], xp[taps[t0 + j]])
                block = cols.reshape(chunk * c, np_)
            gw[:, t0:t0 + chunk] = (gm @ block.T).reshape(m, chunk, c)
        gw = np.ascontiguousarray(gw.transpose(0, 2, 1)).reshape(w.shape)
    return gx, gw


def _phases(strides, dil, kernel, out_sp):
    """Strided, undilated windows read the padded input in stride-by-stride phases: tap t of an axis reads
    phase t % stride from offset t // stride on, with step 1. Per tap: (phase index, slices into the phase)."""
    return [(tuple(t % st for t, st in zip(tap, strides)),
             tuple(slice(t // st, t // st + o) for t, st, o in zip(tap, strides, out_sp)))
            for tap in np.ndindex(*kernel)]


def _depthwise_layout(x_shape, w_shape, out_sp, strides, dil, begin):
    """_conv_depthwise's per-sample geometry: the padded sample's shape, whether it splits into stride phases, the
    phases' starts and shapes, and whether a sample is its own padded copy."""
    c, nd = x_shape[1], len(w_shape) - 2
    full = (c,) + tuple(_padded_extent(x_shape, begin, out_sp, tuple(w_shape[2:]), strides, dil))
    phased = any(st > 1 for st in strides) and all(d == 1 for d in dil)
    starts = list(np.ndindex(*strides)) if phased else [(0,) * nd]
    shapes = {ph: (c,) + tuple(-(-(f - p) // st) for p, st, f in zip(ph, strides, full[1:])) for ph in starts}
    plain = not phased and not any(begin) and full[1:] == tuple(x_shape[2:])
    return full, phased, starts, shapes, plain


def _depthwise_bytes(x_shape, w_shape, out_sp, strides, dil, begin, ct, want_x, want_w) -> int:
    """The scratch _conv_depthwise takes from its workspace: one sample's padded copy and its phases for W's
    gradient, and for X's a padded gradient, one tap's product and the phases."""
    full, phased, starts, shapes, plain = _depthwise_layout(x_shape, w_shape, out_sp, strides, dil, begin)
    phases = sum(array_bytes(shapes[ph], ct) for ph in starts) if phased else 0
    total = array_bytes(full, ct) + phases if want_w and not plain else 0
    if want_x:
        total += array_bytes(full, ct) + array_bytes((x_shape[1], *out_sp), ct) + phases
    return total


def _conv_depthwise(x, w, g, strides, dil, begin, want_x, want_w, gx_out=None, ws=None):
    """groups = channels, one filter each, sample by sample: what a tap touches stays in cache, and the padded
    copies are one sample's, not the batch's. Per tap, W's gradient is an einsum over a window of the padded
    input (no product tensor written) and X's gradient a scaled add. With a stride (and no dilation) the padded
    sample is split into its stride x stride phases, so every tap reads and writes with step 1. The per-sample
    buffers come from `ws`, the step's planned scratch, as _depthwise_bytes counts them."""
    ws = ws or Workspace()
    n, c = x.shape[:2]
    kernel, out_sp = tuple(w.shape[2:]), g.shape[2:]
    nd = len(kernel)
    whole = (slice(None),)
    inner = whole + tuple(slice(b, b + sz) for b, sz in zip(begin, x.shape[2:]))
    full, phased, starts, shapes, plain = _depthwise_layout(x.shape, w.shape, out_sp, strides, dil, begin)
    if phased:
        taps = _phases(strides, dil, kernel, out_sp)
    else:
        taps = [((0,) * nd, _tap_view(tap, dil, strides, out_sp)) for tap in np.ndindex(*kernel)]
    tap_ids = list(np.ndindex(*kernel))
    cut = {ph: whole + tuple(slice(p, None, st) for p, st in zip(ph, strides)) for ph in starts}
    spec = "c{0},c{0}->c".format("".join(chr(ord("h") + i) for i in range(nd)))
    gw = np.zeros((c,) + kernel, dtype=g.dtype) if want_w else None
    gx = (np.empty(x.shape, dtype=g.dtype) if gx_out is None else gx_out) if want_x else None
    if want_w and not plain:  # (a plain sample is its own padded copy)
        xp = ws.zeros(full, x.dtype)  # borders stay zero: only the interior is rewritten per sample
        xs = {ph: ws.empty(shapes[ph], x.dtype) for ph in starts} if phased else {starts[0]: xp}
    if want_x:
        gxp = ws.empty(full, g.dtype)
        part = ws.empty(g.shape[1:], g.dtype)
        wc = [w[(slice(None), 0) + tap].reshape((c,) + (1,) * nd) for tap in tap_ids]
        acc = {ph: ws.empty(shapes[ph], g.dtype) for ph in starts} if phased else None
        crops = {ph: _phase_crop(ph, strides, begin, x.shape[2:], acc[ph].shape[1:]) for ph in starts} \
            if phased else None
    for i in range(n):
        gi = g[i]
        if want_w:
            if plain:
                xs = {starts[0]: x[i]}
            else:
                xp[inner] = x[i]
                for ph in starts if phased else ():
                    np.copyto(xs[ph], xp[cut[ph]])
            for tap, (ph, view) in zip(tap_ids, taps):
                gw[(slice(None),) + tap] += np.einsum(spec, gi, xs[ph][whole + view])
        if want_x:
            dsts = acc if phased else {starts[0]: gxp}
            for buf in dsts.values():
                buf.fill(0)
            for (ph, view), wt in zip(taps, wc):
                np.multiply(gi, wt, out=part)
                dsts[ph][whole + view] += part
            if phased:  # each phase straight into its elements of the sample's gradient, the padding cut off
                for ph, buf in acc.items():
                    src, dst = crops[ph]
                    if src is not None:
                        gx[i][dst] = buf[src]
            else:
                gx[i] = gxp[inner]
    return gx, (None if gw is None else gw.reshape(w.shape))


def _phase_crop(ph, strides, begin, sizes, lengths):
    """Where phase `ph` of a padded sample (its elements a, a + s, ... per axis) lands in the unpadded sample:
    (slices into the phase buffer, slices into the sample), or (None, None) if it lies all in the padding."""
    src, dst = [slice(None)], [slice(None)]
    for a, st, b, size, length in zip(ph, strides, begin, sizes, lengths):
        k0 = max(0, -(-(b - a) // st))
        k1 = min(length, (size - 1 + b - a) // st + 1)
        if k1 <= k0:
            return None, None
        u0 = a + st * k0 - b
        src.append(slice(k0, k1))
        dst.append(slice(u0, u0 + st * (k1 - k0 - 1) + 1, st))
    return tuple(src), tuple(dst)


# W's gradient goes image by image (patches of one image, in cache) when each image's GEMM is at least this
# many multiply-adds; below, per-image calls cost more than they save, and the tap-major path batches them
PER_IMAGE_MIN_MACS = 1 << 22


def _per_image_weight_grad(c, m, kernel, out_sp) -> bool:
    return m * c * math.prod(kernel) * math.prod(out_sp) >= PER_IMAGE_MIN_MACS


def _weight_grad_per_image(x, w, g, ct, strides, dil, begin, out_sp):
    """gW = sum over images of G[n] (m x P) @ patches[n].T (P x c*k): g stays in its NCHW layout (no transposed
    copy) and one image's patches (c*k x P) are the only buffer, small enough to stay in cache for its GEMM.
    (3x3, 32 -> 64 channels on 26x26, batch 64: 32 ms against 43 for the tap-major GEMMs.)"""
    n, c = x.shape[:2]
    m, kernel = w.shape[0], tuple(w.shape[2:])
    nd = len(kernel)
    p = math.prod(out_sp)
    full = _padded_extent(x.shape, begin, out_sp, kernel, strides, dil)
    padded = any(begin) or list(full) != list(x.shape[2:])
    xp = np.zeros((c,) + tuple(full), dtype=ct) if padded else None
    inner = (slice(None),) + tuple(slice(b, b + sz) for b, sz in zip(begin, x.shape[2:]))
    cols = np.empty((c,) + kernel + tuple(out_sp), dtype=ct)
    part = np.empty((m, c * math.prod(kernel)), dtype=ct)
    gw = np.zeros_like(part)
    for i in range(n):
        if padded:
            xp[inner] = x[i]  # the borders stay zero
            src = xp
        else:
            src = x[i] if x.dtype == ct else x[i].astype(ct)
        st = src.strides
        view = as_strided(src, cols.shape, (st[0], *(st[1 + a] * dil[a] for a in range(nd)),
                                            *(st[1 + a] * strides[a] for a in range(nd))), writeable=False)
        np.copyto(cols, view)
        gi = g[i].reshape(m, p)
        np.matmul(gi if gi.dtype == ct else gi.astype(ct), cols.reshape(-1, p).T, out=part)
        gw += part
    return gw.reshape(w.shape)


def _by_forward_conv(w_shape, c, m, strides, dil, begin, end) -> bool:
    """Whether X's gradient goes through the forward Conv kernel: 3x3, stride 1, undilated, at least 16 channels
    each way -- where that kernel's Winograd path beats the tap GEMMs (measured: 64x64 channels at 24x24,
    batch 64: 34 vs 48 ms, 7 vs 20 MB of temporaries; with a few channels or 5x5 the GEMMs win)."""
    return (tuple(w_shape[2:]) == (3, 3) and c >= 16 and m >= 16 and all(st == 1 for st in strides)
            and all(d == 1 for d in dil) and all(0 <= p <= 2 for p in list(begin) + list(end)))


def _flipped_conv_args(w_shape, begin, end, groups: int):
    """The flipped filter's shape and the pads of the forward Conv that gives a stride-1 Conv's X gradient."""
    k = tuple(w_shape[2:])
    wf_shape = (w_shape[0], 1, *k) if groups > 1 else (w_shape[1], w_shape[0], *k)
    return wf_shape, [kk - 1 - b for kk, b in zip(k, begin)] + [kk - 1 - e for kk, e in zip(k, end)]


def _forward_conv_bytes(g_shape, w_shape, begin, end, ct, groups: int = 1) -> int:
    """The forward Conv kernel's own workspace for _input_grad_by_forward_conv."""
    from ..ops.conv import scratch_conv
    from ..ops.registry import Info

    wf_shape, pads = _flipped_conv_args(w_shape, begin, end, groups)
    return scratch_conv([Info(np.dtype(ct), tuple(g_shape), None), Info(np.dtype(ct), wf_shape, None)], pads=pads,
                        group=groups)


def _input_grad_by_forward_conv(g, w, begin, end, ct, groups: int = 1, out=None, ws=None):
    """For stride 1, X's gradient is the full convolution of g with W flipped and its channel axes swapped
    (depthwise: just flipped): a plain forward Conv with pads k - 1 - pad on each side. Its kernel's workspace
    comes from `ws` (given back after), as _forward_conv_bytes counts it."""
    from ..ops.conv import conv

    ws = ws or Workspace()
    wf_shape, pads = _flipped_conv_args(w.shape, begin, end, groups)
    wf = np.flip(w, axis=(2, 3))
    wf = np.ascontiguousarray(wf if groups > 1 else wf.transpose(1, 0, 2, 3), dtype=ct)
    nbytes = _forward_conv_bytes(g.shape, w.shape, begin, end, ct, groups)
    mark = ws.mark()
    scratch = ws.empty((nbytes,), np.uint8) if nbytes else None
    res = conv(np.ascontiguousarray(g, dtype=ct), wf, pads=pads, group=groups, out=out, scratch=scratch)
    ws.release(mark)
    return res


def _depthwise_by_forward(kernel, strides, dil, begin, end) -> bool:
    """Whether a depthwise Conv's X gradient goes through the forward depthwise kernel (2-D, stride 1)."""
    return len(kernel) == 2 and all(st == 1 for st in strides) and all(d == 1 for d in dil) \
        and all(0 <= p < k for p, k in zip(list(begin) + list(end), tuple(kernel) * 2))


def _is_pointwise(kernel, strides, begin, out_sp, x_shape) -> bool:
    return all(k == 1 for k in kernel) and all(st == 1 for st in strides) and not any(begin) \
        and tuple(out_sp) == tuple(x_shape[2:])


def _dense_parts(x_shape, w_shape, out_sp, strides, dil, begin, end, want_x, want_w) -> tuple[bool, bool]:
    """groups = 1, not pointwise: which of X's and W's gradients the tap GEMMs (_conv_dense) compute. X's goes
    through the forward Conv where _by_forward_conv says; then W's goes image by image where that pays."""
    c, m = x_shape[1], w_shape[0]
    dense_x = want_x and not _by_forward_conv(w_shape, c, m, strides, dil, begin, end)
    per_image = want_w and not dense_x and _per_image_weight_grad(c, m, tuple(w_shape[2:]), out_sp)
    return dense_x, want_w and not per_image


def conv_workspace(ins: list, outs: list, attrs: dict, needs: tuple) -> int:
    """The scratch Conv's rule takes from ctx.work for these shapes: _conv_dense's, where it goes that way."""
    if len(ins) < 2 or ins[0] is None or ins[1] is None or not outs or outs[0] is None:
        return 0
    (x_dtype, x_shape), (w_dtype, w_shape), (g_dtype, g_shape) = ins[0], ins[1], outs[0]
    kernel, out_sp = tuple(w_shape[2:]), tuple(g_shape[2:])
    strides, dil, begin, end = _geometry(attrs, x_shape, out_sp, kernel)
    groups, c, m = attrs.get("group", 1), x_shape[1], w_shape[0]
    depthwise = groups == c == m and w_shape[1] == 1
    if min(begin) < 0 or not (groups == 1 or depthwise) or (groups == 1 and _is_pointwise(kernel, strides, begin,
                                                                                         out_sp, x_shape)):
        return 0
    want_x, want_w = (k < len(needs) and bool(needs[k]) for k in (0, 1))
    ct = np.promote_types(np.result_type(x_dtype, w_dtype, g_dtype), np.float32)
    if groups == 1:
        dense_x, dense_w = _dense_parts(x_shape, w_shape, out_sp, strides, dil, begin, end, want_x, want_w)
        dense = _dense_bytes(x_shape, x_dtype, w_shape, out_sp, strides, dil, begin, ct, dense_x, dense_w) \
            if dense_x or dense_w else 0
        by_forward = want_x and not dense_x
        return max(dense, _forward_conv_bytes(g_shape, w_shape, begin, end, ct) if by_forward else 0)
    by_forward = want_x and _depthwise_by_forward(kernel, strides, dil, begin, end)
    return max(_forward_conv_bytes(g_shape, w_shape, begin, end, ct, groups=c) if by_forward else 0,
               _depthwise_bytes(x_shape, w_shape, out_sp, strides, dil, begin, ct, want_x and not by_forward, want_w))


WORKSPACE["Conv"] = conv_workspace


@register_vjp("Conv")
def conv_vjp(ctx: VJPContext) -> list:
    x, w = ctx.inputs[:2]
    b = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    g = ctx.grads[0]
    kernel = tuple(w.shape[2:])
    out_sp = g.shape[2:]
    strides, dil, begin, end = _geometry(ctx.attrs, x.shape, out_sp, kernel)
    groups = ctx.attrs.get("group", 1)
    n, c = x.shape[:2]
    m, nd = w.shape[0], len(kernel)
    res: list = [None] * len(ctx.inputs)
    if b is not None and wanted(ctx, 2):
        res[2] = as_gradient(g.sum(axis=(0,) + tuple(range(2, g.ndim))), b)
    if min(begin) >= 0 and (groups == 1 or (groups == c == m and w.shape[1] == 1)):
        ct = np.promote_types(np.result_type(x, w, g), np.float32)
        # X's gradient goes straight into the arena buffer the runtime offers, when it computes in x's dtype
        gx_out = out_buffer(ctx, 0, x) if ct == x.dtype else None
        if groups == 1 and _is_pointwise(kernel, strides, begin, out_sp, x.shape):
            # 1x1, stride 1: per sample, gW += G (m x P) X^T and gX = W^T G, batched GEMMs straight on NCHW
            g3 = g.reshape(n, m, -1).astype(ct, copy=False)
            if wanted(ctx, 1):  # summed image by image: no (n, m, c) stack of per-image products
                x3 = x.reshape(n, c, -1).astype(ct, copy=False)
                gw, part = np.matmul(g3[0], x3[0].T), np.empty((m, c), ct)
                for i in range(1, n):
                    gw += np.matmul(g3[i], x3[i].T, out=part)
                res[1] = as_gradient(gw, w)
            if wanted(ctx, 0):
                w_t = w.reshape(m, c).T.astype(ct, copy=False)
                res[0] = as_gradient(np.matmul(w_t, g3) if gx_out is None
                                     else np.matmul(w_t, g3, out=gx_out.reshape(n, c, -1)).reshape(x.shape), x)
            return res
        if groups == 1:
            dense_x, dense_w = _dense_parts(x.shape, w.shape, out_sp, strides, dil, begin, end, wanted(ctx, 0),
                                            wanted(ctx, 1))
            gx = gw = None
            if wanted(ctx, 0) and not dense_x:
                gx = _input_grad_by_forward_conv(g, w, begin, end, ct, out=gx_out, ws=workspace(ctx))
            if wanted(ctx, 1) and not dense_w:
                gw = _weight_grad_per_image(x, w, g, ct, strides, dil, begin, out_sp)
            if dense_x or dense_w:
                del g  # _conv_dense takes the gradient out of ctx, to free it early
                gx2, gw2 = _conv_dense(x, w, ctx, ct, strides, dil, begin, dense_x, dense_w, gx_out, workspace(ctx))
                gx, gw = (gx2 if dense_x else gx), (gw2 if dense_w else gw)
        else:
            gx = None
            if wanted(ctx, 0) and _depthwise_by_forward(kernel, strides, dil, begin, end):
                # stride 1: X's gradient is the depthwise conv of g with each filter flipped, which the forward
                # kernel does 2-4x faster than the tap loop (MobileNetV2's shapes at batch 8)
                gx = _input_grad_by_forward_conv(g, w, begin, end, ct, groups=c, out=gx_out, ws=workspace(ctx))
            gx2, gw = _conv_depthwise(x.astype(ct, copy=False), w.astype(ct, copy=False), g.astype(ct, copy=False),
                                      strides, dil, begin, wanted(ctx, 0) and gx is None, wanted(ctx, 1), gx_out,
                                      workspace(ctx))
            gx = gx2 if gx is None else gx
        res[0] = as_gradient(gx, x) if wanted(ctx, 0) else None
        res[1] = as_gradient(gw, w) if wanted(ctx, 1) else None
        return res
    p, k = math.prod(out_sp), math.prod(kernel)
    mg, cg = m // groups, c // groups
    # both products are batched GEMMs over the groups, so BLAS does the work (einsum would not)
    g_ = g.reshape(n, groups, mg, p)
    if wanted(ctx, 1):
        cols = _patches(x, begin, out_sp, kernel, strides, dil).reshape(n, groups, cg, p, k)
        cols = cols.transpose(1, 0, 3, 2, 4).reshape(groups, n * p, cg * k)  # im2col: the patches copied, group-major
        gw = g_.transpose(1, 2, 0, 3).reshape(groups, mg, n * p) @ cols
        res[1] = as_gradient(gw, w)
    if wanted(ctx, 0):
        w_ = w.reshape(groups, mg, cg * k)
        gcols = np.swapaxes(w_, -1, -2) @ g_  # (n, groups, cg * k, p): taps ahead of positions
        gcols = np.moveaxis(gcols.reshape((n, c) + kernel + tuple(out_sp)), range(2, 2 + nd),
                            range(2 + nd, 2 + 2 * nd))
        res[0] = as_gradient(_col2im(gcols, x.shape, begin, kernel, strides, dil), x)
    return res


@register_vjp("ConvTranspose")
def conv_transpose_vjp(ctx: VJPContext) -> list:
    """The forward scatters x (N, C, *in) times W (C, M/group, *kernel) into the full output, then crops
    pad_begin; the adjoint gathers the output gradient's windows at the same taps, which is _patches of
    g with pad_begin as its leading pad."""
    x, w = ctx.inputs[:2]
    b = ctx.inputs[2] if len(ctx.inputs) > 2 else None
    g = ctx.grads[0]
    a = ctx.attrs
    kernel = tuple(a.get("kernel_shape") or w.shape[2:])
    begin, _, strides, dil = transpose_geometry(x.shape[2:], kernel, a.get("strides"), a.get("dilations"),
                                                a.get("pads"), a.get("output_padding"), a.get("output_shape"),
                                                a.get("auto_pad", "NOTSET"))
    groups = a.get("group", 1)
    n, c = x.shape[:2]
    m = g.shape[1]
    p, k = math.prod(x.shape[2:]), math.prod(kernel)
    gcols = _patches(g, begin, x.shape[2:], kernel, strides, dil).reshape(n, groups, m // groups, p, k)
    res: list = [None] * len(ctx.inputs)
    if wanted(ctx, 0):
        w_ = w.reshape(groups, c // groups, m // groups, k)
        res[0] = as_gradient(np.einsum("ngmpk,gcmk->ngcp", gcols, w_, optimize=True), x)
    if wanted(ctx, 1):
        x_ = x.reshape(n, groups, c // groups, p)
        res[1] = as_gradient(np.einsum("ngcp,ngmpk->gcmk", x_, gcols, optimize=True), w)
    if b is not None and wanted(ctx, 2):
        res[2] = as_gradient(g.sum(axis=(0,) + tuple(range(2, g.ndim))), b)
    return res

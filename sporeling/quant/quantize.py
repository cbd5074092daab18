"""Uniform weight quantizers, 1 to 16 bits, and the rule for which tensors are worth quantizing.

A quantized tensor is unsigned integer codes in [0, 2**bits) plus QuantParams, and reads back as
real = (code - zero_point) * scale, then gain * real + shift when bias correction was applied; scale,
zero point, gain and shift are per tensor (axis None, shape ()) or per slice along `axis` (shape (C,),
one per output channel). Codes are rounded to nearest with ties to even (np.rint of w / scale) and
clipped to the code range.

Symmetric (the default): zero_point = 2**(bits-1) and, for bits >= 2, codes use [1, 2**bits - 1], so
reals are k * scale for k in [-(2**(bits-1) - 1), 2**(bits-1) - 1], as TFLite's int8 weights; code 0 is
never produced. Keeping the grid symmetric means +max and -max are both exact, and the one code given
up costs nothing once the entropy coder sees it never occurs. Scale = max|w| / (2**(bits-1) - 1).
bits=1 is a sign quantizer: code 1 is +scale, code 0 is -scale (zero goes to +scale), read back as
(2 * code - 1) * scale, and scale is mean|w| (the L2-optimal magnitude for fixed signs; max|w| would
be a poor choice), for both methods.

Asymmetric: the range [min(w, 0), max(w, 0)] (zero is kept exactly representable, as MindSpore Lite
and TFLite do) spans the full code range: scale = (max - min) / (2**bits - 1), zero_point =
rint(-min / scale) clipped to [0, 2**bits - 1].

method="maxabs" takes the range as it is; method="mse" shrinks it by a clip ratio r from a grid
(MSE_RATIOS: 0.50, 0.51, ..., 1.00) and keeps, per channel, the ratio whose dequantized weights have
the least squared error. The grid holds r = 1, the maxabs choice, so mse is never worse than maxabs
per channel. Channels that are all zero get scale 1 (every code is the zero point, so they read back
as exact zeros), or at 1 bit the smallest normal float32; scale is never 0, NaN or inf.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace

import numpy as np

from .bitpack import code_dtype

MSE_RATIOS = np.linspace(0.5, 1.0, 51)

# MindSpore Lite's weight quantizer ([common_quant_param]) quantizes a weight only when its element
# count is above min_quant_weight_size (default 0) and, for convolutions, its output channel count
# above min_quant_weight_channel (default 16). We keep both rules with our own defaults, measured at
# fixed 8 bits (benchmarks/compression.py's models): 256 elements and 4 channels. The small depthwise and
# narrow convolutions of mobile models are a fifth of their bytes (PP-OCR cls: 2.69x -> 3.18x, output
# cosine 0.99997 -> 0.99994); below 256 elements the float16 scales and the header eat the saving.
MIN_QUANT_WEIGHT_SIZE = 256
MIN_QUANT_WEIGHT_CHANNEL = 4


@dataclass(frozen=True, eq=False)
class QuantParams:
    bits: int
    symmetric: bool
    axis: int | None  # None: per tensor; else per slice along this axis (the output channel)
    scale: np.ndarray  # float32, shape () or (C,)
    zero_point: np.ndarray  # int32, shape () or (C,): real = (code - zero_point) * scale
    gain: np.ndarray | None = None  # bias correction (float32, like scale): real -> gain * real + shift
    shift: np.ndarray | None = None

    def effective(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(zero point, scale, shift) as float64 such that real = (code - zp) * scale + shift, with the
        1-bit sign case and the bias correction folded in."""
        zp, scale = self.zero_point.astype(np.float64), self.scale.astype(np.float64)
        if self.symmetric and self.bits == 1:
            zp, scale = np.full_like(zp, 0.5), 2.0 * scale  # (2c - 1) * s == (c - 0.5) * 2s
        if self.gain is not None:
            scale = scale * self.gain.astype(np.float64)
        return zp, scale, (None if self.shift is None else self.shift.astype(np.float64))

    def without_correction(self) -> QuantParams:
        return replace(self, gain=None, shift=None)


def _rows(w: np.ndarray, axis: int | None) -> np.ndarray:
    """w as (C, n): one row per channel (C = 1 per tensor)."""
    if axis is None:
        return w.reshape(1, -1)
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], int(np.prod(np.delete(w.shape, axis))))


def _unrows(rows: np.ndarray, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    """The inverse of _rows: (C, n) back to `shape`, channels along `axis`."""
    if axis is None:
        return rows.reshape(shape)
    return np.moveaxis(rows.reshape((shape[axis],) + tuple(np.delete(shape, axis))), 0, axis)


def _broadcast(v: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """A per-channel vector shaped to broadcast against the tensor."""
    if axis is None:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _check_axis(w: np.ndarray, axis: int | None) -> int | None:
    if axis is None:
        return None
    if not isinstance(axis, (int, np.integer)) or not -w.ndim <= axis < w.ndim:
        raise ValueError(f"axis {axis!r} is out of range for a weight of shape {list(w.shape)}")
    return int(axis) % w.ndim


def _grid(lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scale float32, zero_point int32) per row for the range [lo, hi] (float64, lo <= 0 <= hi)."""
    if symmetric:
        scale = np.maximum(-lo, hi) / ((1 << (bits - 1)) - 1)
    else:
        scale = (hi - lo) / ((1 << bits) - 1)
    scale = scale.astype(np.float32)
    # An all-zero row (or one so small its scale underflows) gets scale 1: every code is the zero point.
    scale[~(scale >= np.finfo(np.float32).tiny) | ~np.isfinite(scale)] = 1.0
    if symmetric:
        zp = np.full(scale.shape, 1 << (bits - 1), np.int32)
    else:
        zp = np.clip(np.rint(-lo / scale.astype(np.float64)), 0, (1 << bits) - 1).astype(np.int32)
    return scale, zp


def _codes(rows: np.ndarray, scale: np.ndarray, zp: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Rounded, clipped codes of rows (C, n) in the work dtype."""
    if symmetric and bits == 1:
        return (rows >= 0).astype(rows.dtype)
    q = np.rint(rows / scale[:, None].astype(rows.dtype))
    q += zp[:, None].astype(rows.dtype)
    return np.clip(q, 1 if symmetric else 0, (1 << bits) - 1, out=q)


def _row_errors(rows, scale, zp, bits, symmetric) -> np.ndarray:
    """Per-row sum of squared error of quantizing and dequantizing rows (as dequantize computes it)."""
    q = _codes(rows, scale, zp, bits, symmetric)
    params = QuantParams(bits, symmetric, 0, scale, zp)
    zp_e, scale_e, _ = params.effective()
    deq = (q - zp_e[:, None].astype(rows.dtype)) * scale_e[:, None].astype(rows.dtype)
    diff = np.subtract(deq, rows, dtype=np.float64)  # in float64, so the choice is not made on rounding noise
    return np.einsum("ij,ij->i", diff, diff)


def quantize(w: np.ndarray, bits: int, *, symmetric: bool = True, axis: int | None = 0,
             method: str = "maxabs") -> tuple[np.ndarray, QuantParams]:
    """Quantizes float weights to codes in [0, 2**bits) (uint8 up to 8 bits, else uint16) of w's shape,
    per slice along `axis` or per tensor (axis None). See the module docstring for the grids."""
    w = np.asarray(w)
    if w.dtype.kind != "f":
        raise ValueError(f"quantize takes float weights, got dtype {w.dtype}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an int from 1 to 16, got {bits!r}")
    if method not in ("maxabs", "mse"):
        raise ValueError(f"method must be 'maxabs' or 'mse', got {method!r}")
    axis = _check_axis(w, axis)
    if not np.isfinite(w).all():
        raise ValueError("weights contain NaN or inf; they cannot be quantized")
    bits = int(bits)
    # float16 weights are computed in float32; float64 stay float64 so their rounding is exact.
    rows = _rows(w, axis).astype(np.result_type(w.dtype, np.float32), copy=False)
    if symmetric and bits == 1:
        mean_abs = np.abs(rows).mean(axis=1, dtype=np.float64) if rows.shape[1] else np.zeros(len(rows))
        # A zero channel gets the smallest normal scale, not 1: a sign quantizer cannot give back 0.
        scale = np.maximum(mean_abs, np.finfo(np.float32).tiny).astype(np.float32)
        zp = np.ones(len(rows), np.int32)
    else:
        lo = np.minimum(rows.min(axis=1, initial=0).astype(np.float64), 0.0)
        hi = np.maximum(rows.max(axis=1, initial=0).astype(np.float64), 0.0)
        scale, zp = _grid(lo, hi, bits, symmetric)
        if method == "mse":
            best = _row_errors(rows, scale, zp, bits, symmetric)
            for r in MSE_RATIOS[:-1]:  # the last ratio, 1.0, is the maxabs grid just measured
                s_r, z_r = _grid(lo * r, hi * r, bits, symmetric)
                err = _row_errors(rows, s_r, z_r, bits, symmetric)
                better = err < best
                best[better], scale[better], zp[better] = err[better], s_r[better], z_r[better]
    codes = _codes(rows, scale, zp, bits, symmetric).astype(code_dtype(bits))
    codes = _unrows(codes, w.shape, axis)
    if axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    return np.ascontiguousarray(codes), QuantParams(bits, bool(symmetric), axis, scale, zp)


def dequantize(codes: np.ndarray, params: QuantParams, dtype=np.float32, out: np.ndarray | None = None) -> np.ndarray:
    """The real values of codes: (code - zero_point) * scale, then gain * x + shift when params carry a
    bias correction; written into `out` when given (shape of codes, dtype `dtype`)."""
    codes = np.asarray(codes)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dequantize produces floats, not {dtype}")
    if params.axis is not None and (codes.ndim <= params.axis or codes.shape[params.axis] != params.scale.size):
        raise ValueError(f"codes of shape {list(codes.shape)} do not have {params.scale.size} channels "
                         f"along axis {params.axis}")
    if out is None:
        out = np.empty(codes.shape, dtype)
    elif out.shape != codes.shape or out.dtype != dtype:
        raise ValueError(f"out must be a {dtype} array of shape {list(codes.shape)}, got {out.dtype}{list(out.shape)}")
    # float16 would not hold codes up to 65535 exactly: compute in float32 and round once at the end.
    work = dtype if dtype.itemsize >= 4 else np.dtype(np.float32)
    zp, scale, shift = (None if v is None else _broadcast(v.astype(work), codes.ndim, params.axis)
                        for v in params.effective())
    target = out if work == dtype else np.empty(codes.shape, work)
    np.subtract(codes, zp, out=target, dtype=work)
    target *= scale
    if shift is not None:
        target += shift
    if target is not out:
        out[...] = target
    return out


def should_quantize(name: str, array: np.ndarray, min_size: int = MIN_QUANT_WEIGHT_SIZE,
                    min_channels: int = MIN_QUANT_WEIGHT_CHANNEL, axis: int = 0,
                    skip: tuple[str, ...] = ()) -> bool:
    """Whether a weight is worth quantizing: a float tensor of 2 or more dimensions with more than
    `min_size` elements, and, for convolution kernels (3 or more dimensions), more than `min_channels`
    output channels along `axis` (MindSpore Lite's rules; see MIN_QUANT_WEIGHT_*). Biases and
    normalization parameters are 1-D and stay float; so does any name matching a glob in `skip`."""
    array = np.asarray(array)
    if array.dtype.kind != "f" or array.ndim < 2 or array.size <= min_size:
        return False
    if array.ndim >= 3 and array.shape[axis] <= min_channels:
        return False
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in skip)

"""Bias correction of quantized weights, and the relative RMS error that measures quantization.

Rounding adds noise to each output channel's weights, which shifts the channel's mean and inflates
its spread; the layer's outputs then drift by a systematic bias and gain. Bias correction undoes both
without data: per channel c, with deq the dequantized weights before correction,

    gain_c  = std(w_c) / std(deq_c)          (1 when either std is 0: nothing to rescale)
    shift_c = mean(w_c) - gain_c * mean(deq_c)

so that gain_c * deq_c + shift_c has exactly the mean and standard deviation of w_c. The pair is stored
in QuantParams (float32, one per channel, or one per tensor when the params are per tensor) and
dequantize() applies it, folded into the scale: (code - zp) * (scale * gain) + shift.

relative_rms_error is MindSpore Lite's measure for its mixed-bit search: per channel,
||w_c - deq_c|| / ||w_c||, and its mean over the channels. A channel whose weights are all zero has
error 0 when it is reproduced exactly and 1 (all of it wrong) otherwise, never a division by zero; so
does a channel whose norm is below DEAD_CHANNEL times the strongest channel's, judged to that floor.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .quantize import QuantParams, _rows, dequantize

TINY = float(np.finfo(np.float32).tiny)  # below this a channel's norm is no signal
DEAD_CHANNEL = 1e-9  # nor below this fraction of the strongest channel's norm


def bias_correct(w: np.ndarray, codes: np.ndarray, params: QuantParams) -> QuantParams:
    """params with gain and shift set so that each channel of dequantize(codes, result) keeps the mean
    and standard deviation of the same channel of w. Any correction params already carry is replaced."""
    w = np.asarray(w)
    if w.shape != np.shape(codes):
        raise ValueError(f"weights of shape {list(w.shape)} and codes of shape {list(np.shape(codes))} differ")
    deq = _rows(dequantize(codes, params.without_correction(), dtype=np.float64), params.axis)
    ref = _rows(w.astype(np.float64, copy=False), params.axis)
    if ref.shape[1] == 0:
        ones = np.ones(len(ref), np.float32)
        gain, shift = ones, np.zeros_like(ones)
    else:
        std_w, std_d = ref.std(axis=1), deq.std(axis=1)
        ok = (std_w > 0) & (std_d > 0)
        gain = np.where(ok, std_w / np.where(ok, std_d, 1.0), 1.0)
        # Rounding gain to float32 first makes the shift absorb that rounding in the mean.
        gain = gain.astype(np.float32)
        shift = (ref.mean(axis=1) - gain.astype(np.float64) * deq.mean(axis=1)).astype(np.float32)
    if params.axis is None:
        gain, shift = gain.reshape(()), shift.reshape(())
    return replace(params, gain=gain, shift=shift)


def relative_rms_error(w: np.ndarray, deq: np.ndarray, axis: int | None = 0) -> np.ndarray:
    """Per slice along axis (one value when axis is None): ||w - deq|| / ||w||, in float64."""
    w, deq = np.asarray(w), np.asarray(deq)
    if w.shape != deq.shape:
        raise ValueError(f"weights of shape {list(w.shape)} and dequantized of shape {list(deq.shape)} differ")
    if axis is not None:
        axis = int(axis) % w.ndim
    ref = _rows(w.astype(np.float64, copy=False), axis)
    diff = _rows(np.subtract(deq, w, dtype=np.float64), axis)
    norm = np.sqrt(np.einsum("ij,ij->i", ref, ref))
    err = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    # A channel of float32 denormals (exporters leave pruned channels at ~1e-40), or one a billion times
    # weaker than the tensor's strongest (PP-OCR keeps channels at 1e-36), is a zero channel: its scale
    # underflows and it comes back as zeros, which is no error worth a bit.
    floor = max(TINY, DEAD_CHANNEL * float(norm.max(initial=0.0)))
    live = norm > floor
    return np.where(live, err / np.where(live, norm, 1.0), np.where(err > floor, 1.0, 0.0))


def mean_relative_rms_error(w: np.ndarray, deq: np.ndarray, axis: int | None = 0) -> float:
    """The mean over channels of relative_rms_error: the figure the mixed-bit search holds to a target."""
    err = relative_rms_error(w, deq, axis)
    return float(err.mean()) if err.size else 0.0

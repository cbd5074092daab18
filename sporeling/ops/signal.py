"""Signal-processing kernels: DFT, STFT, the Blackman/Hamming/Hann windows and MelWeightMatrix.

ONNX carries complex numbers as a trailing dimension of 2 (real, imaginary), or 1 for real
signals. The kernels view that as a NumPy complex array, transform with ``np.fft`` and split the
result back into the trailing pair. Output shapes depend on constant scalar inputs (dft_length,
axis, frame_step, window size), so the infer functions read them through ``Info.value``.
"""

from __future__ import annotations

import numpy as np

from .infer import const_ints, norm_axis
from .registry import register_op

# TensorProto element types -> NumPy, for the output_datatype attributes.
_TENSOR_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
    10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


def _scalar(v) -> int | None:
    return None if v is None else int(np.asarray(v).reshape(-1)[0])


def _const_scalar(info) -> int | None:
    values = const_ints(info)
    return None if not values else values[0]


def _as_complex(x: np.ndarray) -> np.ndarray:
    """(..., 1) real or (..., 2) real/imaginary pairs -> a real or complex array without the pair axis."""
    if x.shape[-1] == 1:
        return x[..., 0].astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    ct = np.complex128 if x.dtype == np.float64 else np.complex64
    z = np.empty(x.shape[:-1], ct)
    z.real, z.imag = x[..., 0], x[..., 1]
    return z


def _to_pairs(z: np.ndarray, dtype, out) -> np.ndarray:
    """A complex (or real) result -> (..., 2) (or (..., 1)) in the input dtype, into out."""
    if out is None:
        out = np.empty(z.shape + ((2,) if np.iscomplexobj(z) else (1,)), dtype)
    if np.iscomplexobj(z):
        np.copyto(out[..., 0], z.real, casting="unsafe")
        np.copyto(out[..., 1], z.imag, casting="unsafe")
    else:
        np.copyto(out[..., 0], z, casting="unsafe")
    return out


# ---- DFT ----------------------------------------------------------------------------------------


def _dft_length(length, axis_len, inverse, onesided) -> int:
    if length is not None:
        return length
    return 2 * (axis_len - 1) if inverse and onesided else axis_len


def _dft_shape(shape, length, axis, inverse, onesided):
    a = norm_axis(axis, len(shape))
    n = _dft_length(length, shape[a], inverse, onesided)
    out = list(shape)
    if inverse and onesided:
        out[a], out[-1] = n, 1
    else:
        out[a], out[-1] = (n // 2 + 1 if onesided else n), 2
    return tuple(out)


def _dft(x, length, axis, inverse, onesided, out):
    a = norm_axis(axis, x.ndim)
    sig = _as_complex(x)
    n = _dft_length(length, x.shape[a], inverse, onesided)
    if inverse and onesided:  # one-sided spectrum -> real signal
        result = np.fft.irfft(sig, n=n, axis=a)
    elif inverse:
        result = np.fft.ifft(sig, n=n, axis=a)
    elif onesided and not np.iscomplexobj(sig):
        result = np.fft.rfft(sig, n=n, axis=a)
    else:
        result = np.fft.fft(sig, n=n, axis=a)
        if onesided:
            result = np.take(result, np.arange(n // 2 + 1), axis=a)
    return _to_pairs(result, x.dtype, out)


def _dft17_infer(ins, *, axis=1, inverse=0, onesided=0, **_attrs):
    x = ins[0]
    length_info = ins[1] if len(ins) > 1 else None
    length = _const_scalar(length_info)
    if x.shape is None or (length_info is not None and length is None):
        return None
    return [(x.dtype, _dft_shape(x.shape, length, axis, inverse, onesided))]


def _dft20_infer(ins, *, inverse=0, onesided=0, **_attrs):
    x = ins[0]
    length_info, axis_info = (list(ins) + [None, None])[1:3]
    length, axis = _const_scalar(length_info), _const_scalar(axis_info)
    if x.shape is None or (length_info is not None and length is None) or (axis_info is not None and axis is None):
        return None
    return [(x.dtype, _dft_shape(x.shape, length, -2 if axis is None else axis, inverse, onesided))]


@register_op("DFT", since=17, infer=_dft17_infer, out=True, shape_inputs=(1,))
def dft17(input, dft_length=None, *, axis=1, inverse=0, onesided=0, out=None):
    return _dft(input, _scalar(dft_length), axis, inverse, onesided, out)


@register_op("DFT", since=20, infer=_dft20_infer, out=True, shape_inputs=(1, 2))
def dft20(input, dft_length=None, axis=None, *, inverse=0, onesided=0, out=None):
    ax = -2 if axis is None else _scalar(axis)
    return _dft(input, _scalar(dft_length), ax, inverse, onesided, out)


# ---- STFT ---------------------------------------------------------------------------------------


def _stft_geometry(signal_len, step, window_len, frame_length):
    """(frame size, fft length, number of frames)."""
    n_fft = frame_length if frame_length is not None else (window_len if window_len is not None else signal_len)
    size = window_len if window_len is not None else n_fft
    return size, n_fft, 1 + (signal_len - size) // step


def _stft_infer(ins, *, onesided=1, **_attrs):
    sig, step_info, window, length_info = (list(ins) + [None] * 4)[:4]
    step, length = _const_scalar(step_info), _const_scalar(length_info)
    if sig.shape is None or step is None or (length_info is not None and length is None):
        return None
    if window is not None and window.shape is None:
        return None
    window_len = None if window is None else window.shape[0]
    _, n_fft, frames = _stft_geometry(sig.shape[1], step, window_len, length)
    return [(sig.dtype, (sig.shape[0], frames, n_fft // 2 + 1 if onesided else n_fft, 2))]


@register_op("STFT", since=17, infer=_stft_infer, out=True, shape_inputs=(1, 3))
def stft(signal, frame_step, window=None, frame_length=None, *, onesided=1, out=None):
    sig = _as_complex(signal)  # (batch, length)
    window_len = None if window is None else window.shape[0]
    size, n_fft, _ = _stft_geometry(sig.shape[1], _scalar(frame_step), window_len, _scalar(frame_length))
    frames = np.lib.stride_tricks.sliding_window_view(sig, size, axis=1)[:, :: _scalar(frame_step)]
    if window is not None:
        frames = frames * window.astype(sig.real.dtype, copy=False)
    if onesided and not np.iscomplexobj(frames):
        spectrum = np.fft.rfft(frames, n=n_fft, axis=-1)
    else:
        spectrum = np.fft.fft(frames, n=n_fft, axis=-1)
        if onesided:
            spectrum = spectrum[..., : n_fft // 2 + 1]
    return _to_pairs(spectrum, signal.dtype, out)


# ---- Windows and the mel filterbank -------------------------------------------------------------


def _window_infer(ins, *, output_datatype=1, **_attrs):
    n = _const_scalar(ins[0])
    return None if n is None else [(np.dtype(_TENSOR_DTYPES[output_datatype]), (max(n, 0),))]


def _window(size, periodic, output_datatype, cosine_terms, out):
    """sum_k c_k cos(k * 2 pi n / N), N = size (periodic) or size - 1 (symmetric)."""
    n = max(_scalar(size), 0)
    denom = n if periodic else n - 1
    phase = 2 * np.pi * np.arange(n, dtype=np.float64) / max(denom, 1)
    w = sum(c * np.cos(k * phase) for k, c in enumerate(cosine_terms))
    if denom == 0:  # a one-point symmetric window
        w = np.ones(n)
    dtype = np.dtype(_TENSOR_DTYPES[output_datatype])
    if out is None:
        return w.astype(dtype)
    np.copyto(out, w, casting="unsafe")
    return out


@register_op("HannWindow", since=17, infer=_window_infer, out=True, shape_inputs=(0,))
def hann_window(size, *, periodic=1, output_datatype=1, out=None):
    return _window(size, periodic, output_datatype, (0.5, -0.5), out)


@register_op("HammingWindow", since=17, infer=_window_infer, out=True, shape_inputs=(0,))
def hamming_window(size, *, periodic=1, output_datatype=1, out=None):
    alpha = 25.0 / 46.0
    return _window(size, periodic, output_datatype, (alpha, alpha - 1.0), out)


@register_op("BlackmanWindow", since=17, infer=_window_infer, out=True, shape_inputs=(0,))
def blackman_window(size, *, periodic=1, output_datatype=1, out=None):
    return _window(size, periodic, output_datatype, (0.42, -0.5, 0.08), out)


def _mel_infer(ins, *, output_datatype=1, **_attrs):
    bins, length = _const_scalar(ins[0]), _const_scalar(ins[1])
    if bins is None or length is None:
        return None
    return [(np.dtype(_TENSOR_DTYPES[output_datatype]), (length // 2 + 1, bins))]


def _hz_to_mel(hz):
    return 2595 * np.log10(1 + hz / 700)


@register_op("MelWeightMatrix", since=17, infer=_mel_infer, out=True, shape_inputs=(0, 1))
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *,
                      output_datatype=1, out=None):
    """Triangular filters between mel-spaced points that are snapped to DFT bins: filter i rises
    from point i to point i+1 and falls to point i+2 (the spec's reference construction)."""
    n_mel, n_dft, rate = _scalar(num_mel_bins), _scalar(dft_length), _scalar(sample_rate)
    low = _hz_to_mel(np.asarray(lower_edge_hertz).reshape(()))
    high = _hz_to_mel(np.asarray(upper_edge_hertz).reshape(()))
    step = (high - low) / (n_mel + 2)
    mel_points = np.arange(n_mel + 2) * step + low
    hz_points = 700 * (np.power(10, mel_points / 2595) - 1)
    points = (((n_dft + 1) * hz_points) // rate).astype(np.int64)
    left, center, right = points[:-2], points[1:-1], points[2:]
    j = np.arange(n_dft // 2 + 1)[:, None]
    rising = (j - left) / np.maximum(center - left, 1)
    falling = (right - j) / np.maximum(right - center, 1)
    weights = np.where((j >= left) & (j <= center), np.where(center > left, rising, j == center), 0.0)
    weights = np.where((j >= center) & (j < right), falling, weights)
    dtype = np.dtype(_TENSOR_DTYPES[output_datatype])
    if out is None:
        return weights.astype(dtype)
    np.copyto(out, weights, casting="unsafe")
    return out

"""Random ops and Dropout.

Random numbers come from NumPy. With a ``seed`` attribute an op draws from a fresh legacy
``RandomState(seed)`` (Mersenne Twister) on every call, so a seeded op is deterministic and gives
the same values on every run. That stream is also the one the ONNX suite used to make its training
Dropout references, so those match exactly. ONNX leaves the generator to the runtime, so seeded values
are not comparable across engines (onnxruntime has its own generator): tests can check shapes,
dtypes, ranges, moments and determinism, not values. Without a seed each call draws from a fresh
OS-seeded generator, as the spec's "auto generated" seed asks; no state is kept between calls.

Uniform draws are in [0, 1); a sample of a distribution is produced in float64 and cast to the
requested dtype on the way into the output buffer.
"""

from __future__ import annotations

import numpy as np

from .registry import register_op

ONNX_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64, 8: object,
    9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


def onnx_dtype(code: int | None, fallback=None) -> np.dtype:
    """NumPy dtype of an ONNX TensorProto element type (0 or None -> fallback)."""
    if not code:
        return np.dtype(fallback)
    if code not in ONNX_DTYPES:
        raise ValueError(f"unsupported ONNX element type {code}")
    return np.dtype(ONNX_DTYPES[code])


def generator(seed):
    """A generator with .random(shape) and .standard_normal(shape)."""
    if seed is None or (isinstance(seed, float) and np.isnan(seed)):
        return np.random.default_rng()
    return np.random.RandomState(int(seed) & 0xFFFFFFFF)


def _emit(values: np.ndarray, dtype: np.dtype, out):
    if out is None:
        return values.astype(dtype, copy=False)
    np.copyto(out, values, casting="unsafe")
    return out


# ---- RandomUniform / RandomNormal and their Like forms ----------------------------------------------


def _shape_attr_info(ins, *, shape, dtype: int = 1, **_attrs):
    return [(onnx_dtype(dtype), tuple(int(d) for d in shape))]


def _like_info(ins, *, dtype=None, **_attrs):
    x = ins[0]
    if x is None or x.shape is None:
        return None
    return [(onnx_dtype(dtype, x.dtype), x.shape)]


@register_op("RandomUniform", since=1, infer=_shape_attr_info, out=True, pure=False)
def random_uniform(*, shape, dtype: int = 1, high: float = 1.0, low: float = 0.0, seed=None, out=None):
    values = low + (high - low) * generator(seed).random(tuple(shape))
    return _emit(values, onnx_dtype(dtype), out)


@register_op("RandomNormal", since=1, infer=_shape_attr_info, out=True, pure=False)
def random_normal(*, shape, dtype: int = 1, mean: float = 0.0, scale: float = 1.0, seed=None, out=None):
    values = mean + scale * generator(seed).standard_normal(tuple(shape))
    return _emit(values, onnx_dtype(dtype), out)


@register_op("RandomUniformLike", since=1, infer=_like_info, out=True, pure=False)
def random_uniform_like(input, *, dtype=None, high: float = 1.0, low: float = 0.0, seed=None, out=None):
    values = low + (high - low) * generator(seed).random(input.shape)
    return _emit(values, onnx_dtype(dtype, input.dtype), out)


@register_op("RandomNormalLike", since=1, infer=_like_info, out=True, pure=False)
def random_normal_like(input, *, dtype=None, mean: float = 0.0, scale: float = 1.0, seed=None, out=None):
    values = mean + scale * generator(seed).standard_normal(input.shape)
    return _emit(values, onnx_dtype(dtype, input.dtype), out)


@register_op("Bernoulli", since=15, infer=_like_info, out=True, pure=False)
def bernoulli(input, *, dtype=None, seed=None, out=None):
    """1 with probability input[i], else 0."""
    draws = generator(seed).random(input.shape) < input
    return _emit(draws, onnx_dtype(dtype, input.dtype), out)


def _multinomial_info(ins, *, dtype: int = 6, sample_size: int = 1, **_attrs):
    x = ins[0]
    if x is None or x.shape is None:
        return None
    return [(onnx_dtype(dtype), (x.shape[0], sample_size))]


@register_op("Multinomial", since=7, infer=_multinomial_info, out=True, pure=False)
def multinomial(input, *, dtype: int = 6, sample_size: int = 1, seed=None, out=None):
    """input [batch, classes] holds unnormalised log-probabilities; draws sample_size class indices
    per row by inverting each row's CDF. Rows are laid end to end (row r's CDF shifted by r) so one
    searchsorted serves the whole batch."""
    batch, classes = input.shape
    logits = input.astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    offsets = np.arange(batch, dtype=np.float64)[:, None]
    u = generator(seed).random((batch, sample_size))
    flat = np.searchsorted((cdf + offsets).ravel(), (u + offsets).ravel(), side="right")
    idx = np.minimum(flat.reshape(batch, sample_size) - np.arange(batch)[:, None] * classes, classes - 1)
    return _emit(idx, onnx_dtype(dtype), out)


# ---- Dropout -------------------------------------------------------------------------------------


def _dropout_info(mask_dtype):
    def info(ins, **_attrs):
        x = ins[0]
        if x is None or x.shape is None:
            return None
        return [(x.dtype, x.shape), (np.dtype(mask_dtype or x.dtype), x.shape)]

    return info


def _dropout(data, ratio: float, training: bool, seed, mask_dtype, out):
    y, mask = (out, None) if not isinstance(out, tuple) else out
    if not training or ratio == 0:
        if out is None:
            return data.copy(), np.ones(data.shape, mask_dtype or data.dtype)
        np.copyto(y, data)
        if mask is not None:
            mask[...] = 1
        return out
    keep = generator(seed).random(data.shape) >= ratio
    scale = data.dtype.type(1.0 / (1.0 - ratio))
    if y is None:
        y = np.empty_like(data)
    np.multiply(data, keep, out=y)
    np.multiply(y, scale, out=y)
    if out is None:
        return y, keep.astype(mask_dtype or data.dtype)
    if mask is not None:
        np.copyto(mask, keep)
    return out


@register_op("Dropout", since=1, infer=_dropout_info(None), out=True)
def dropout_v1(data, *, ratio: float = 0.5, is_test: int = 0, consumed_inputs=None, out=None):
    """Opsets 1-9: an inference engine runs Dropout as identity; the mask has data's dtype."""
    return _dropout(data, ratio, False, None, None, out)


@register_op("Dropout", since=10, infer=_dropout_info(np.bool_), out=True)
def dropout_v10(data, *, ratio: float = 0.5, out=None):
    return _dropout(data, ratio, False, None, np.bool_, out)


@register_op("Dropout", since=12, infer=_dropout_info(np.bool_), out=True, pure=False)
def dropout_v12(data, ratio=None, training_mode=None, *, seed=None, out=None):
    """Identity unless training_mode is true; then elements are zeroed with probability ratio and
    the survivors scaled by 1 / (1 - ratio)."""
    training = training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0])
    r = 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0])
    return _dropout(data, r, training, seed, np.bool_, out)

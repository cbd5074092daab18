"""ai.onnx.ml ops: ArrayFeatureExtractor, Binarizer, LabelEncoder.

LabelEncoder builds its lookup table once per plan (``make``): the keys are sorted, with the last of
repeated keys winning as the spec asks, and every input element is found with one sorted search.
Float keys may include NaN, which matches any NaN input, so NaN is kept out of the sorted table and
handled on its own.
"""

from __future__ import annotations

import numpy as np

from .registry import Info, register_op

ML = "ai.onnx.ml"


# ---- ArrayFeatureExtractor -------------------------------------------------------------------------


def _extract_info(ins, **_attrs):
    x, y = ins[0], ins[1]
    if x is None or y is None or x.shape is None or y.shape is None:
        return None
    n = int(np.prod(y.shape, dtype=np.int64))
    return [(x.dtype, (1, n) if len(x.shape) == 1 else (*x.shape[:-1], n))]


@register_op("ArrayFeatureExtractor", since=1, domain=ML, infer=_extract_info, out=True)
def array_feature_extractor(x, y, *, out=None):
    """Selects the features y (flattened) from the last axis of x; a 1-D x gives [1, len(y)]."""
    idx = np.asarray(y, np.int64).reshape(-1)
    width = x.shape[-1]
    if idx.size and (idx.min() < 0 or idx.max() >= width):
        raise IndexError(f"ArrayFeatureExtractor: indices must be in [0, {width})")
    data = x.reshape(1, -1) if x.ndim == 1 else x
    if out is None:
        return np.take(data, idx, axis=-1)
    return np.take(data, idx, axis=-1, out=out)


# ---- Binarizer -----------------------------------------------------------------------------------


def _same_info(ins, **_attrs):
    x = ins[0]
    return None if x is None or x.shape is None else [(x.dtype, x.shape)]


@register_op("Binarizer", since=1, domain=ML, infer=_same_info, out=True, inplace={0: 0})
def binarizer(x, *, threshold: float = 0.0, out=None):
    above = x > threshold
    if out is None:
        return above.astype(x.dtype)
    np.copyto(out, above)
    return out


# ---- LabelEncoder --------------------------------------------------------------------------------


def _as_strings(values) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], object)


def _table(attrs: dict, input_is_string: bool):
    """(keys, values, default, output dtype) from whichever attribute form the node uses."""
    classes = attrs.get("classes_strings")
    if classes is not None:  # opset 1: strings <-> their position in classes_strings
        strings = _as_strings(classes)
        positions = np.arange(len(strings), dtype=np.int64)
        if input_is_string:
            return strings, positions, attrs.get("default_int64", -1), np.dtype(np.int64)
        return positions, strings, attrs.get("default_string", "_Unused"), np.dtype(object)
    if attrs.get("keys_tensor") is not None:
        keys = np.asarray(attrs["keys_tensor"]).reshape(-1)
        keys = _as_strings(keys) if keys.dtype.kind in "OSU" else keys
    elif attrs.get("keys_strings") is not None:
        keys = _as_strings(attrs["keys_strings"])
    elif attrs.get("keys_int64s") is not None:
        keys = np.array(attrs["keys_int64s"], np.int64)
    else:
        keys = np.array(attrs.get("keys_floats") or [], np.float32)
    if attrs.get("values_tensor") is not None:
        values = np.asarray(attrs["values_tensor"]).reshape(-1)
        values = _as_strings(values) if values.dtype.kind in "OSU" else values
        kind = "s" if values.dtype == object else ("f" if values.dtype.kind == "f" else "i")
        fallback = {"s": "_Unused", "f": -0.0, "i": -1}[kind]
    elif attrs.get("values_strings") is not None:
        values, fallback = _as_strings(attrs["values_strings"]), attrs.get("default_string", "_Unused")
    elif attrs.get("values_int64s") is not None:
        values, fallback = np.array(attrs["values_int64s"], np.int64), attrs.get("default_int64", -1)
    else:
        values, fallback = np.array(attrs.get("values_floats") or [], np.float32), attrs.get("default_float", -0.0)
    if attrs.get("default_tensor") is not None:
        fallback = np.asarray(attrs["default_tensor"]).reshape(-1)[0]
        fallback = fallback.decode() if isinstance(fallback, bytes) else fallback
    if len(keys) != len(values):
        raise ValueError(f"LabelEncoder: {len(keys)} keys but {len(values)} values")
    return keys, values, fallback, values.dtype


def _label_encoder_info(ins, **attrs):
    x = ins[0]
    if x is None or x.shape is None or x.dtype is None:
        return None
    return [(_table(attrs, x.dtype == object)[3], x.shape)]


def _make_label_encoder(ins, **attrs):
    x = ins[0]
    input_is_string = x is None or x.dtype is None or x.dtype == object
    keys, values, fallback, dtype = _table(attrs, input_is_string)
    default = np.array(str(fallback), object) if dtype.kind == "O" else np.array(fallback, dtype)
    nan_value = None
    if keys.dtype.kind == "f":
        is_nan = np.isnan(keys)
        if is_nan.any():
            nan_value = values[np.flatnonzero(is_nan)[-1]]
            keys, values = keys[~is_nan], values[~is_nan]
    # np.unique keeps the first of equal keys; run it on the reversed keys so the last one wins
    sorted_keys, first = np.unique(keys[::-1], return_index=True)
    sorted_values = values[::-1][first]

    def encode(x):
        flat = x.reshape(-1)
        if len(sorted_keys):
            pos = np.minimum(np.searchsorted(sorted_keys, flat), len(sorted_keys) - 1)
            hit = sorted_keys[pos] == flat
            result = np.where(hit, sorted_values[pos], default)
        else:
            result = np.full(flat.shape, default, dtype)
        if nan_value is not None:
            result = np.where(np.isnan(flat), nan_value, result)
        return result.astype(dtype, copy=False).reshape(x.shape)

    return encode


# One kernel serves every version: it reads whichever attribute form (opset 1, 2 or 4) is present.
# Outputs may be strings, which cannot live in the arena, so the kernel always allocates.
@register_op("LabelEncoder", since=1, domain=ML, infer=_label_encoder_info, make=_make_label_encoder)
def label_encoder(x, **attrs):
    return _make_label_encoder([Info(x.dtype, x.shape)], **attrs)(x)

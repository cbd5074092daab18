"""Type conversions: Cast, CastLike and BitCast.

Numeric to numeric casts are one ``np.copyto(out, x, casting="unsafe")``, which converts while
copying, straight into the planned buffer. That already has ONNX's semantics: integers wrap
(two's complement), floats overflow to inf, anything non-zero becomes True. Float to integer out of
range is undefined in ONNX, so NumPy's warnings for it are silenced.

Strings travel as object arrays of Python str. Parsing accepts plain and scientific notation and
"INF"/"-INF"/"NaN" in any case (Python's float() does); a string holding a fraction cast to an
integer type keeps the integer part, as C's strtoll would. Numbers are printed as ONNX Runtime
prints them: "%.8g" for floats with "INF", "-INF" and "NaN", plain digits for integers, 1/0 for
bools. The float8/4/2-bit targets have no NumPy dtype and are refused with a clear error.
"""

from __future__ import annotations

import numpy as np

from .registry import Info, register_op

# TensorProto.DataType -> NumPy dtype
_ONNX_DTYPES = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
    8: object, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
    14: np.complex64, 15: np.complex128,
}
_ONNX_NAMES = {  # Cast-1 names the target type with a string
    "FLOAT": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7, "STRING": 8,
    "BOOL": 9, "FLOAT16": 10, "DOUBLE": 11, "UINT32": 12, "UINT64": 13, "COMPLEX64": 14, "COMPLEX128": 15,
}
_OBJECT = np.dtype(object)


def onnx_dtype(to) -> np.dtype:
    """The NumPy dtype of an ONNX type given as its TensorProto number or name."""
    code = _ONNX_NAMES.get(to.upper(), -1) if isinstance(to, str) else int(to)
    if code not in _ONNX_DTYPES:
        raise ValueError(f"Cast: target type {to!r} has no NumPy dtype (bfloat16, float8 and 4/2-bit types)")
    return np.dtype(_ONNX_DTYPES[code])


def _is_text(dtype: np.dtype) -> bool:
    return dtype == _OBJECT or dtype.kind in "US"


# ---- strings -----------------------------------------------------------------------------------
def _format(x: np.ndarray) -> np.ndarray:
    """Numbers -> object array of str, formatted like ONNX Runtime."""
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if x.dtype.kind in "iu":
        return np.char.mod("%d", x).astype(object)
    if x.dtype.kind == "c":
        return x.astype(str).astype(object)
    xf = x.astype(np.float64)
    text = np.char.mod("%.8g", xf).astype(object)
    text[np.isnan(xf)] = "NaN"
    text[xf == np.inf] = "INF"
    text[xf == -np.inf] = "-INF"
    return text


def _parse(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Object/str array -> numbers of dtype."""
    x = x.astype(object) if x.dtype != _OBJECT else x
    if dtype.kind == "f" or dtype.kind == "c":
        return x.astype(dtype)
    if dtype == np.bool_:
        return x.astype(np.float64) != 0
    try:
        return x.astype(dtype)  # exact for every integer the type can hold (uint64 included)
    except (ValueError, OverflowError):
        pass
    # Out of range or fractional: parse to Python ints (truncating fractions), wrap modulo 2**bits
    # as integer casts do, and reinterpret the unsigned bits in the target type.
    bits = 8 * dtype.itemsize
    ints = _PARSE_INT(x.reshape(-1))  # 1-D: on a 0-d input frompyfunc would return a bare int
    wrapped = np.mod(ints, 1 << bits).astype(np.dtype(f"u{dtype.itemsize}"))
    return wrapped.view(dtype).reshape(x.shape)


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return int(float(text))


_PARSE_INT = np.frompyfunc(_parse_int, 1, 1)


# ---- Cast --------------------------------------------------------------------------------------
def convert(x, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """x converted to dtype with ONNX Cast semantics, into out when given."""
    x = np.asarray(x)
    src_text, dst_text = _is_text(x.dtype), _is_text(dtype)
    if src_text or dst_text:
        if src_text and dst_text:
            res = x.astype(object)
        elif dst_text:
            res = _format(x)
        else:
            res = _parse(x, dtype)
        if out is None:
            return res
        np.copyto(out, res, casting="unsafe")
        return out
    if out is None:
        out = np.empty(x.shape, dtype)
    if x.dtype.kind in "fc" and (dtype.kind in "iub" or dtype.itemsize < x.dtype.itemsize):
        with np.errstate(all="ignore"):  # NaN/inf to int is undefined; float overflow gives inf
            np.copyto(out, x, casting="unsafe")
    else:
        np.copyto(out, x, casting="unsafe")
    return out


def _infer_cast(ins: list[Info | None], *, to, **_attrs):
    x = ins[0]
    return None if x.shape is None else [(onnx_dtype(to), x.shape)]


@register_op("Cast", since=6, infer=_infer_cast, out=True)
def cast(x, *, to, saturate=1, round_mode="up", out=None):
    """`saturate` and `round_mode` only concern float8/float4 targets, which NumPy lacks."""
    return convert(x, onnx_dtype(to), out)


def _infer_cast_like(ins: list[Info | None], **_attrs):
    x, like = ins[0], ins[1]
    if x.shape is None or like is None or like.dtype is None:
        return None
    return [(like.dtype, x.shape)]


@register_op("CastLike", since=15, infer=_infer_cast_like, out=True)
def cast_like(x, target_type, *, saturate=1, round_mode="up", out=None):
    return convert(x, np.asarray(target_type).dtype, out)


# ---- BitCast -----------------------------------------------------------------------------------
def _infer_bitcast(ins: list[Info | None], *, to, **_attrs):
    x = ins[0]
    return None if x.shape is None else [(onnx_dtype(to), x.shape)]


@register_op("BitCast", since=26, infer=_infer_bitcast, out=True)
def bit_cast(x, *, to, out=None):
    """Reinterprets the bytes (little endian, like every platform NumPy runs ONNX models on)."""
    dtype = onnx_dtype(to)
    x = np.asarray(x)
    if dtype.itemsize != x.dtype.itemsize or dtype == _OBJECT or x.dtype == _OBJECT:
        raise ValueError(f"BitCast: cannot reinterpret {x.dtype} as {dtype} (sizes differ or strings)")
    view = (x if x.flags.c_contiguous else x.copy()).view(dtype)
    if out is None:
        return view.copy()
    np.copyto(out, view)
    return out

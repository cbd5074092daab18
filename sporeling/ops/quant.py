"""Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the integer
products MatMulInteger and QLinearMatMul.

Scales and zero points come in three granularities (per tensor, per axis, blocked); `_along` turns
any of them into an array that broadcasts against the data. Rounding is half-to-even (np.rint) and
results saturate to the target integer range, as ONNX specifies.

Integer products are computed with float64 BLAS: every product of two 8- or 16-bit values and
every partial sum stays far below 2**53, so the result is exact and much faster than NumPy's
integer matmul, which has no BLAS path.
"""

from __future__ import annotations

import numpy as np

from .infer import known, norm_axis
from .matmul import matmul_shape
from .registry import register_op

# TensorProto.DataType values of the types a NumPy kernel can produce.
ONNX_DTYPES = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16),
    5: np.dtype(np.int16), 6: np.dtype(np.int32), 7: np.dtype(np.int64), 9: np.dtype(np.bool_),
    10: np.dtype(np.float16), 11: np.dtype(np.float64), 12: np.dtype(np.uint32), 13: np.dtype(np.uint64),
}


def onnx_dtype(code: int) -> np.dtype:
    """The NumPy dtype of a TensorProto.DataType code (output_dtype, precision attributes)."""
    try:
        return ONNX_DTYPES[int(code)]
    except KeyError:
        raise NotImplementedError(f"tensor data type {code} has no NumPy equivalent") from None


def _along(param: np.ndarray, x_shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """A scale or zero point reshaped (and, when blocked, repeated) to broadcast against x."""
    param = np.asarray(param)
    if param.ndim == 0 or param.size == 1 and len(x_shape) <= 1:
        return param.reshape(())
    axis = norm_axis(axis, len(x_shape))
    if block_size > 0:
        return np.repeat(param, block_size, axis=axis)[(slice(None),) * axis + (slice(0, x_shape[axis]),)]
    if param.ndim == 1:
        shape = [1] * len(x_shape)
        shape[axis] = param.shape[0]
        return param.reshape(shape)
    return param


# ---- QuantizeLinear ----------------------------------------------------------------------------
def _quant_target(zp_dtype, output_dtype: int) -> np.dtype:
    if zp_dtype is not None:
        return np.dtype(zp_dtype)
    return onnx_dtype(output_dtype) if output_dtype else np.dtype(np.uint8)


def _infer_quantize(ins, *, output_dtype=0, **_attrs):
    x = ins[0]
    zp = ins[2] if len(ins) > 2 else None
    if x.shape is None:
        return None
    return [(_quant_target(zp.dtype if zp is not None else None, output_dtype), x.shape)]


def saturate_cast(values: np.ndarray, dtype: np.dtype, out: np.ndarray | None) -> np.ndarray:
    """Rounded values clipped to dtype's range and cast, into out when given."""
    info = np.iinfo(dtype)
    np.clip(values, info.min, info.max, out=values)
    if out is None:
        return values.astype(dtype)
    np.copyto(out, values, casting="unsafe")
    return out


@register_op("QuantizeLinear", since=10, infer=_infer_quantize, out=True)
def quantize_linear(x, y_scale, y_zero_point=None, *, axis=1, saturate=1, block_size=0, output_dtype=0, precision=0,
                    out=None):
    target = _quant_target(y_zero_point.dtype if y_zero_point is not None else None, output_dtype)
    if target.kind not in "iu":
        raise NotImplementedError(f"QuantizeLinear to {target} is not supported")
    # The division runs in the scale's precision unless `precision` names another (bfloat16, which
    # NumPy lacks, runs as float32); the rounded quotient is then held in float32, or float64 for
    # 32-bit targets so that large quantized values and zero points stay exact.
    scale = _along(y_scale, x.shape, axis, block_size)
    division = np.result_type(x.dtype, scale.dtype)
    if precision:
        division = ONNX_DTYPES.get(int(precision), np.dtype(np.float32))
    held = np.dtype(np.float64) if target.itemsize >= 4 else np.result_type(division, np.float32)
    q = np.divide(x, scale, dtype=division).astype(held, copy=False)
    np.rint(q, out=q)
    if y_zero_point is not None:
        q += _along(y_zero_point, x.shape, axis, block_size)
    return saturate_cast(q, target, out)


# ---- DequantizeLinear --------------------------------------------------------------------------
def _infer_dequantize(ins, *, output_dtype=0, **_attrs):
    x, scale = ins[0], ins[1]
    if x.shape is None:
        return None
    return [(onnx_dtype(output_dtype) if output_dtype else scale.dtype, x.shape)]


@register_op("DequantizeLinear", since=10, infer=_infer_dequantize, out=True)
def dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0, out=None):
    target = onnx_dtype(output_dtype) if output_dtype else x_scale.dtype
    wide = np.int64 if x.dtype.itemsize >= 4 else np.int32
    shifted = x.astype(wide)
    if x_zero_point is not None:
        shifted -= _along(x_zero_point, x.shape, axis, block_size).astype(wide)
    calc = np.float64 if x.dtype.itemsize >= 4 else np.float32
    res = shifted.astype(calc) * _along(x_scale, x.shape, axis, block_size).astype(calc)
    if out is None:
        return res.astype(target)
    np.copyto(out, res, casting="unsafe")
    return out


# ---- DynamicQuantizeLinear ---------------------------------------------------------------------
def _infer_dynamic_quantize(ins, **_attrs):
    x = ins[0]
    if x.shape is None:
        return None
    return [(np.dtype(np.uint8), x.shape), (x.dtype, ()), (np.dtype(np.uint8), ())]


@register_op("DynamicQuantizeLinear", since=11, infer=_infer_dynamic_quantize, out=True)
def dynamic_quantize_linear(x, *, out=None):
    hi = np.float32(max(0.0, float(x.max()))) if x.size else np.float32(0)
    lo = np.float32(min(0.0, float(x.min()))) if x.size else np.float32(0)
    # an all-zero input would give a zero scale; onnxruntime uses 1.0 then
    scale = np.float32(1.0) if hi == lo else np.float32(hi - lo) / np.float32(255)
    zero_point = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
    q = np.rint(x.astype(np.float32) / scale)
    q += zero_point
    y_out, s_out, zp_out = out if out is not None else (None, None, None)
    y = saturate_cast(q, np.dtype(np.uint8), y_out)
    s = np.asarray(scale, x.dtype)
    zp = np.asarray(zero_point, np.uint8)
    if out is not None:
        np.copyto(s_out, s)
        np.copyto(zp_out, zp)
        return out
    return y, s, zp


# ---- integer products --------------------------------------------------------------------------
def _rows(param: np.ndarray, a_ndim: int) -> np.ndarray:
    """A 1-D zero point or scale of A is per row: it broadcasts along A's second-to-last axis."""
    param = np.asarray(param)
    if param.ndim == 1 and param.size > 1 and a_ndim >= 2:
        return param.reshape(-1, 1)
    return param


def _centered(b, b_zero_point) -> np.ndarray:
    """b - b_zp as float64 (B's zero point is per tensor or per column)."""
    b64 = b.astype(np.float64)
    if b_zero_point is not None:
        b64 -= np.asarray(b_zero_point, np.float64)
    return b64


def _centered_product(a, a_zero_point, b64: np.ndarray) -> np.ndarray:
    """(a - a_zp) @ b64 exactly, as float64."""
    a64 = a.astype(np.float64)
    if a_zero_point is not None:
        a64 -= _rows(a_zero_point, a.ndim).astype(np.float64)
    return np.matmul(a64, b64)


def _fixed_b(ins, b_index: int, zp_index: int):
    """B - b_zp, computed once when a plan has both as constants (the weights of a quantized layer)."""
    a = ins[0]
    b = ins[b_index] if len(ins) > b_index else None
    zp = ins[zp_index] if len(ins) > zp_index else None
    if a is None or a.value is not None or b is None or b.value is None or (zp is not None and zp.value is None):
        return None
    return _centered(b.value, None if zp is None else zp.value)


def _infer_matmul_integer(ins, **_attrs):
    a, b = ins[0], ins[1]
    if not known(a, b):
        return None
    return [(np.dtype(np.int32), matmul_shape(a.shape, b.shape))]


def _make_matmul_integer(ins):
    b_fixed = _fixed_b(ins, 1, 3)

    def matmul_integer_bound(a, b, a_zero_point=None, b_zero_point=None, *, out=None):
        res = _centered_product(a, a_zero_point, b_fixed if b_fixed is not None else _centered(b, b_zero_point))
        if out is None:
            return res.astype(np.int32)
        np.copyto(out, res, casting="unsafe")
        return out

    return matmul_integer_bound


@register_op("MatMulInteger", since=10, infer=_infer_matmul_integer, out=True, make=_make_matmul_integer)
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None, *, out=None):
    return _make_matmul_integer([None])(a, b, a_zero_point, b_zero_point, out=out)


def _infer_qlinear_matmul(ins, **_attrs):
    a, b = ins[0], ins[3]
    if not known(a, b):
        return None
    zp = ins[7] if len(ins) > 7 else None
    return [(a.dtype if zp is None else zp.dtype, matmul_shape(a.shape, b.shape))]


def _make_qlinear_matmul(ins):
    b_fixed = _fixed_b(ins, 3, 5)

    def qlinear_matmul_bound(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None, *,
                             out=None):
        acc = _centered_product(a, a_zero_point, b_fixed if b_fixed is not None else _centered(b, b_zero_point))
        # one combined multiplier, computed in the scales' own precision as ONNX's reference does
        multiplier = _rows(a_scale, a.ndim) * np.asarray(b_scale) / np.asarray(y_scale)
        acc *= np.asarray(multiplier, np.float64)
        np.rint(acc, out=acc)
        target = a.dtype
        if y_zero_point is not None:
            acc += np.asarray(y_zero_point, np.float64)
            target = y_zero_point.dtype
        return saturate_cast(acc, target, out)

    return qlinear_matmul_bound


@register_op("QLinearMatMul", since=10, infer=_infer_qlinear_matmul, out=True, make=_make_qlinear_matmul)
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None, *, out=None):
    return _make_qlinear_matmul([None])(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                                        out=out)

"""Quantizers: hand-worked codes (ties to even, zero points), the error bound of round-to-nearest, the
MSE clipping search never worse than max-abs, per-tensor against per-channel, asymmetric, 1 and 16
bits, zero channels, input dtypes, determinism, dequantize into a buffer, and which tensors stay float."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sporeling.quant import QuantParams, dequantize, quantize, should_quantize

F32_EPS = float(np.finfo(np.float32).eps)


def weights(seed: int, shape=(8, 4, 3, 3), heavy: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_t(3, size=shape) if heavy else rng.standard_normal(shape)
    return (w * rng.uniform(0.01, 1.0, size=(shape[0],) + (1,) * (len(shape) - 1))).astype(np.float32)


def per_channel(x: np.ndarray, axis: int | None) -> np.ndarray:
    return x.reshape(1, -1) if axis is None else np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def squared_error(w, codes, params) -> np.ndarray:
    deq = dequantize(codes, params, dtype=w.dtype)
    return (per_channel(deq.astype(np.float64) - w.astype(np.float64), params.axis) ** 2).sum(axis=1)


def test_hand_worked_symmetric():
    # 2 bits: qmax 1, zero point 2; row scales 1 and 0.25; rint(0.5) = 0 (ties to even) -> code 2
    codes, p = quantize(np.array([[-1.0, 0.5], [0.25, 0.0]], np.float32), 2)
    assert codes.tolist() == [[1, 2], [3, 2]] and codes.dtype == np.uint8
    assert p.scale.tolist() == [1.0, 0.25] and p.zero_point.tolist() == [2, 2]
    assert dequantize(codes, p).tolist() == [[-1.0, 0.0], [0.25, 0.0]]


def test_hand_worked_asymmetric():
    # range [-1, 2] over 3 steps: scale 1, zero point rint(1) = 1; 0.5 ties to even -> 0 + 1
    codes, p = quantize(np.array([-1.0, 0.5, 2.0], np.float32), 2, symmetric=False, axis=None)
    assert codes.tolist() == [0, 1, 3] and float(p.scale) == 1.0 and int(p.zero_point) == 1
    assert p.scale.shape == () and p.zero_point.shape == ()
    # all positive: range [0, 1.75] over 7 steps, scale 0.25, zero point 0; 2.5 ties to even -> 2
    codes, p = quantize(np.array([0.0, 0.625, 1.75], np.float32), 3, symmetric=False, axis=None)
    assert codes.tolist() == [0, 2, 7] and float(p.scale) == 0.25 and int(p.zero_point) == 0


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 16), symmetric=st.booleans(), axis=st.sampled_from([None, 0, 1, -1]),
       seed=st.integers(0, 2**16))
def test_maxabs_codes_in_range_and_error_within_half_a_step(bits, symmetric, axis, seed):
    w = weights(seed, (5, 7, 3))
    codes, p = quantize(w, bits, symmetric=symmetric, axis=axis)
    assert codes.shape == w.shape and codes.dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert codes.min() >= (1 if symmetric else 0) and int(codes.max()) <= (1 << bits) - 1
    assert p.scale.dtype == np.float32 and p.zero_point.dtype == np.int32
    assert p.scale.shape == (() if axis is None else (w.shape[axis],))
    deq = dequantize(codes, p, dtype=np.float64)
    step = np.broadcast_to(p.scale if axis is None else np.expand_dims(
        p.scale, tuple(d for d in range(w.ndim) if d != axis % w.ndim)), w.shape)
    # Round to nearest: within half a step, give or take the float32 rounding of w / scale.
    assert (np.abs(deq - w) <= step / 2 + 2 * F32_EPS * np.abs(w)).all()


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_never_worse_than_maxabs_and_better_with_outliers(bits, symmetric):
    w = weights(bits, (16, 64), heavy=True)
    c_max, p_max = quantize(w, bits, symmetric=symmetric, method="maxabs")
    c_mse, p_mse = quantize(w, bits, symmetric=symmetric, method="mse")
    e_max, e_mse = squared_error(w, c_max, p_max), squared_error(w, c_mse, p_mse)
    assert (e_mse <= e_max * (1 + 1e-12)).all()  # only summation-order rounding may differ
    if bits <= 4:  # heavy tails, coarse grid: clipping the outliers must pay somewhere
        assert e_mse.sum() < e_max.sum()
    assert (p_mse.scale <= p_max.scale).all()  # clip ratios are at most 1


def test_per_tensor_and_per_channel():
    w = weights(3)
    _, per_tensor = quantize(w, 4, axis=None)
    _, per_chan = quantize(w, 4, axis=0)
    maxabs = np.abs(w).reshape(8, -1).max(axis=1).astype(np.float64)
    np.testing.assert_array_equal(per_chan.scale, (maxabs / 7).astype(np.float32))
    assert float(per_tensor.scale) == np.float32(maxabs.max() / 7)
    e_tensor = squared_error(w, *quantize(w, 4, axis=None)).sum()
    e_chan = squared_error(w, *quantize(w, 4, axis=0)).sum()
    assert e_chan < e_tensor  # channels of very different ranges (weights() scales them 0.01..1)


def test_asymmetric_beats_symmetric_on_positive_data():
    w = np.random.default_rng(4).uniform(0.5, 1.0, size=(4, 256)).astype(np.float32)
    c_a, p_a = quantize(w, 4, symmetric=False)
    c_s, p_s = quantize(w, 4, symmetric=True)
    assert (p_a.zero_point == 0).all() and c_a.max() == 15
    assert (squared_error(w, c_a, p_a) < squared_error(w, c_s, p_s)).all()


def test_one_bit_is_sign_times_mean_magnitude():
    w = weights(5, (6, 50))
    w[2, 3] = 0.0
    for method in ("maxabs", "mse"):
        codes, p = quantize(w, 1, method=method)
        assert set(np.unique(codes)) <= {0, 1}
        np.testing.assert_array_equal(codes, (w >= 0).astype(np.uint8))
        np.testing.assert_allclose(p.scale, np.abs(w).mean(axis=1), rtol=1e-6)
        deq = dequantize(codes, p)
        np.testing.assert_array_equal(deq, np.where(w >= 0, 1, -1) * p.scale[:, None])
    codes, p = quantize(w, 1, symmetric=False)
    assert set(np.unique(codes)) <= {0, 1} and np.isfinite(dequantize(codes, p)).all()


def test_sixteen_bits():
    w = weights(6, (4, 1000))
    codes, p = quantize(w, 16)
    assert codes.dtype == np.uint16 and codes.min() >= 1 and codes.max() == 65535
    err = np.abs(dequantize(codes, p) - w).max(axis=1)
    assert (err <= np.abs(w).max(axis=1) / 32767).all()


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("method", ["maxabs", "mse"])
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_all_zero_channel(symmetric, method, bits):
    w = weights(7, (3, 20))
    w[1] = 0.0
    codes, p = quantize(w, bits, symmetric=symmetric, method=method)
    assert np.isfinite(p.scale).all() and (p.scale > 0).all()
    deq = dequantize(codes, p)
    assert np.isfinite(deq).all()
    # a sign quantizer has no zero: its zero channel reads back as +-(smallest normal float32)
    assert np.abs(deq[1]).max() <= (np.finfo(np.float32).tiny if symmetric and bits == 1 else 0.0)
    scale = quantize(np.zeros((2, 3), np.float32), bits, symmetric=symmetric, method=method)[1].scale
    assert np.isfinite(scale).all() and (scale > 0).all()


def test_input_dtypes():
    w = weights(8)
    c32, p32 = quantize(w, 5)
    c16, p16 = quantize(w.astype(np.float16), 5)
    w16 = w.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(c16, quantize(w16, 5)[0])  # float16 is quantized as its float32 value
    w64 = w.astype(np.float64) * (1 + 1e-9)
    c64, p64 = quantize(w64, 5)
    deq = dequantize(c64, p64, dtype=np.float64)
    assert np.abs(deq - w64).max() <= p64.scale.max() / 2 * (1 + 1e-12)
    assert dequantize(c64, p64, dtype=np.float16).dtype == np.float16
    assert c16.dtype == c32.dtype == c64.dtype == np.uint8


def test_deterministic():
    w = weights(9, heavy=True)
    for method in ("maxabs", "mse"):
        a, pa = quantize(w, 3, method=method)
        b, pb = quantize(w.copy(), 3, method=method)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(pa.scale, pb.scale)


def test_empty_and_other_axes():
    codes, p = quantize(np.zeros((0, 4), np.float32), 4)
    assert codes.shape == (0, 4) and p.scale.shape == (0,)
    codes, p = quantize(np.ones((3, 0), np.float32), 4)
    assert codes.shape == (3, 0) and p.scale.tolist() == [1.0, 1.0, 1.0]
    w = weights(10, (3, 5, 2))
    c1, p1 = quantize(w, 6, axis=1)
    c1t, p1t = quantize(np.moveaxis(w, 1, 0).copy(), 6, axis=0)
    np.testing.assert_array_equal(np.moveaxis(c1, 1, 0), c1t)
    np.testing.assert_array_equal(p1.scale, p1t.scale)


def test_dequantize_into_a_buffer():
    w = weights(11)
    codes, p = quantize(w, 4)
    out = np.empty(w.shape, np.float32)
    assert dequantize(codes, p, out=out) is out
    np.testing.assert_array_equal(out, dequantize(codes, p))
    with pytest.raises(ValueError, match="out must be"):
        dequantize(codes, p, out=np.empty((2, 2), np.float32))
    with pytest.raises(ValueError, match="channels"):
        dequantize(codes[:3], p)


def test_bad_input():
    with pytest.raises(ValueError, match="float weights"):
        quantize(np.arange(4).reshape(2, 2), 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize(np.array([[1.0, np.nan]], np.float32), 4)
    with pytest.raises(ValueError, match="bits"):
        quantize(np.ones((2, 2), np.float32), 17)
    with pytest.raises(ValueError, match="method"):
        quantize(np.ones((2, 2), np.float32), 4, method="l1")
    with pytest.raises(ValueError, match="axis 2"):
        quantize(np.ones((2, 2), np.float32), 4, axis=2)
    assert isinstance(quantize(np.ones((2, 2), np.float32), 4)[1], QuantParams)


def test_should_quantize():
    conv = np.zeros((32, 16, 3, 3), np.float32)  # 4608 elements, 32 channels
    assert should_quantize("conv.weight", conv)
    assert not should_quantize("conv.bias", np.zeros(5000, np.float32))  # 1-D: bias or norm
    assert not should_quantize("small", np.zeros((16, 16), np.float32))  # 256 <= 256 elements
    assert should_quantize("small", np.zeros((16, 17), np.float32))
    assert not should_quantize("few_channels", np.zeros((4, 64, 3, 3), np.float32))  # 4 channels
    assert should_quantize("few_channels", np.zeros((16, 64, 3, 3), np.float32))
    assert not should_quantize("few_channels", np.zeros((16, 64, 3, 3), np.float32), min_channels=16)
    assert should_quantize("dense", np.zeros((10, 1280), np.float32))  # channel rule is for conv kernels
    assert not should_quantize("shape", np.zeros((64, 64), np.int64))
    assert should_quantize("small", np.zeros((16, 16), np.float32), min_size=0)
    assert not should_quantize("head.weight", conv, skip=("head.*",))
    assert should_quantize("half", conv.astype(np.float16))

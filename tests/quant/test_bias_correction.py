"""Bias correction: each channel's mean and standard deviation come back after dequantization, the
correction survives as params that dequantize applies, degenerate channels stay finite; the relative
RMS error on hand-worked cases; and the effect on the conv weights of the MobileNetV2 benchmark model."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sporeling
from sporeling.quant import bias_correct, dequantize, mean_relative_rms_error, quantize, relative_rms_error


def rows(x: np.ndarray, axis: int | None) -> np.ndarray:
    x = x.astype(np.float64)
    return x.reshape(1, -1) if axis is None else np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def assert_moments_kept(w: np.ndarray, deq: np.ndarray, axis: int | None) -> None:
    a, b = rows(w, axis), rows(deq, axis)
    std = a.std(axis=1)
    np.testing.assert_allclose(b.std(axis=1), std, rtol=1e-5)
    # means sit near 0, so they are compared on the scale of the channel's spread
    assert (np.abs(b.mean(axis=1) - a.mean(axis=1)) <= 1e-5 * std).all()


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), symmetric=st.booleans(), method=st.sampled_from(["maxabs", "mse"]),
       axis=st.sampled_from([None, 0, 1]), seed=st.integers(0, 2**16))
def test_mean_and_std_are_kept(bits, symmetric, method, axis, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((6, 40)) * rng.uniform(0.01, 2, (6, 1)) + rng.normal(0, 0.05, (6, 1)))
    w = w.astype(np.float32)
    codes, params = quantize(w, bits, symmetric=symmetric, axis=axis, method=method)
    corrected = bias_correct(w, codes, params)
    assert corrected.gain.shape == corrected.shift.shape == params.scale.shape
    assert corrected.gain.dtype == corrected.shift.dtype == np.float32
    assert_moments_kept(w, dequantize(codes, corrected), axis)
    # the uncorrected read-back did not already have them (else this test would prove nothing)
    plain = rows(dequantize(codes, params), axis).std(axis=1)
    assert not np.allclose(plain, rows(w, axis).std(axis=1), rtol=1e-5)


def test_one_bit_and_degenerate_channels():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 30)).astype(np.float32)
    w[1] = 0.0  # all zero
    w[2] = 0.75  # constant
    for bits in (1, 4):
        codes, params = quantize(w, bits)
        corrected = bias_correct(w, codes, params)
        deq = dequantize(codes, corrected)
        assert np.isfinite(deq).all() and np.isfinite(corrected.gain).all()
        assert corrected.gain[1] == corrected.gain[2] == 1.0
        assert np.abs(deq[1]).max() <= 1e-30
        np.testing.assert_allclose(deq[2], 0.75, rtol=1e-6)
        assert_moments_kept(w[[0, 3]], deq[[0, 3]], 0)


def test_correction_replaces_an_earlier_one():
    w = np.random.default_rng(2).standard_normal((3, 50)).astype(np.float32)
    codes, params = quantize(w, 3)
    once = bias_correct(w, codes, params)
    twice = bias_correct(w, codes, once)
    np.testing.assert_array_equal(once.gain, twice.gain)
    np.testing.assert_array_equal(once.shift, twice.shift)
    with pytest.raises(ValueError, match="differ"):
        bias_correct(w[:2], codes, params)


def test_relative_rms_error_by_hand():
    w = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    deq = np.array([[3.0, 5.0], [0.0, 0.0], [0.0, 1.0]])
    # row 0: ||(0, 1)|| / ||(3, 4)|| = 1/5; row 1 zero and exact: 0; row 2 zero but not exact: 1
    np.testing.assert_allclose(relative_rms_error(w, deq, axis=0), [0.2, 0.0, 1.0])
    np.testing.assert_allclose(relative_rms_error(w, deq, axis=None), [np.sqrt(2) / 5])
    np.testing.assert_allclose(relative_rms_error(w.T, deq.T, axis=-1), [0.2, 0.0, 1.0])
    assert mean_relative_rms_error(w, deq) == pytest.approx(0.4)
    assert mean_relative_rms_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def mobilenet_conv_weights() -> dict[str, np.ndarray]:
    from sporeling.assets import cache_dir

    found = sorted(glob.glob(os.path.join(cache_dir(), "bench", "mobilenetv2-*.onnx")))
    if not found:
        pytest.skip(f"no bench/mobilenetv2-*.onnx in {cache_dir()} (built by benchmarks/models.py)")
    graph = sporeling.load(found[-1], optimize=False).graph
    return {k: v for k, v in graph.initializers.items() if v.ndim == 4 and v.dtype == np.float32}


@pytest.mark.assets
def test_effect_on_mobilenetv2_conv_weights():
    convs = mobilenet_conv_weights()
    assert len(convs) > 40
    means = {}
    for bits in (4, 6, 8):
        before, after = [], []
        for w in convs.values():
            codes, params = quantize(w, bits)
            corrected = bias_correct(w, codes, params)
            deq = dequantize(codes, corrected)
            assert_moments_kept(w, deq, 0)
            before.append(mean_relative_rms_error(w, dequantize(codes, params)))
            after.append(mean_relative_rms_error(w, deq))
        means[bits] = (float(np.mean(before)), float(np.mean(after)))
        print(f"mobilenetv2 {len(convs)} conv weights, {bits} bits maxabs per channel: mean relative RMS error "
              f"{means[bits][0]:.4f} -> {means[bits][1]:.4f} with bias correction")
    # each 2 more bits shrink the step 4x, so the error must fall steeply either way
    assert means[4][1] > 3 * means[6][1] > 9 * means[8][1]

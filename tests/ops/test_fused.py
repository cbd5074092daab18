"""Kernels of the ai.sporeling domain, against float64 references computed with math.erf."""

import math

import numpy as np
import pytest

from sporeling.ops.fused import fused_matmul, gelu


def gelu_reference(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return 0.5 * x64 * (1 + np.vectorize(math.erf)(x64 / math.sqrt(2)))


def test_gelu_float32_absolute_error_on_a_dense_grid_and_random_values():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-30, 30, 300001), rng.standard_normal(50000) * 3,
                        [0.0, -0.0, 4 * math.sqrt(2), -4 * math.sqrt(2), 1e-30, -1e-30]]).astype(np.float32)
    got = gelu(x, out=np.empty_like(x))
    err = np.abs(got - gelu_reference(x)) / np.maximum(1.0, np.abs(x))
    assert err.max() <= 5e-7  # measured 2.8e-7; float32 spacing at 1 is 1.2e-7
    assert got.dtype == np.float32


def test_gelu_limits_and_specials():
    x = np.array([np.inf, -np.inf, np.nan, 50, -50, 0], np.float32)
    with np.errstate(invalid="ignore"):  # as Session.run does: -inf * 0 is nan, quietly
        got = gelu(x, out=np.empty_like(x))
    assert got[0] == np.inf and np.isnan(got[2]) and got[3] == 50 and got[5] == 0
    assert got[4] == 0 or abs(got[4]) < 1e-30
    assert np.isnan(got[1]) or got[1] == 0  # -inf * 0: the formula's own answer


@pytest.mark.parametrize("n", [1, 7, 255, 256, 257, 100003])  # around the small-input path of Erf
def test_gelu_into_out_and_allocating_agree(n):
    x = (np.random.default_rng(n).standard_normal(n) * 4).astype(np.float32)
    want = gelu(x)
    out = np.empty_like(x)
    assert gelu(x, out=out) is out
    np.testing.assert_array_equal(out, want)
    np.testing.assert_allclose(want, gelu_reference(x), rtol=0, atol=5e-7 * max(1.0, float(np.abs(x).max())))


def test_gelu_non_contiguous_and_float64():
    x = (np.random.default_rng(3).standard_normal((40, 30)) * 3).astype(np.float32)
    np.testing.assert_allclose(gelu(x.T), gelu_reference(x.T), atol=2e-6)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(gelu(x64), gelu_reference(x64), rtol=1e-12, atol=1e-14)


def test_fused_matmul_adds_the_bias_in_the_output():
    rng = np.random.default_rng(4)
    a, b, bias = rng.standard_normal((2, 5, 8)), rng.standard_normal((8, 3)), rng.standard_normal(3)
    a, b, bias = (v.astype(np.float32) for v in (a, b, bias))
    out = np.empty((2, 5, 3), np.float32)
    assert fused_matmul(a, b, bias, out=out) is out
    np.testing.assert_allclose(out, a @ b + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused_matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)

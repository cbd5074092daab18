"""Pooling kernels against onnxruntime: MaxPool (with Indices), AveragePool, LpPool, the global
pools and MaxUnpool."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sporeling.ops import Info, lookup
from tests.ops.oracle import check_op, make_model, run_sporeling

SETTINGS = settings(max_examples=25, deadline=None)


def _window_attrs(data, nd, allow_dilation=True, allow_ceil=True):
    kernel = [data.draw(st.integers(1, 3)) for _ in range(nd)]
    attrs = {"kernel_shape": kernel, "strides": [data.draw(st.integers(1, 3)) for _ in range(nd)]}
    if allow_dilation and data.draw(st.booleans()):
        attrs["dilations"] = [data.draw(st.integers(1, 2)) for _ in range(nd)]
    mode = data.draw(st.sampled_from(["pads", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if mode == "pads":
        attrs["pads"] = [data.draw(st.integers(0, k - 1)) for k in kernel] * 2  # pads smaller than the kernel
        if allow_ceil:
            attrs["ceil_mode"] = data.draw(st.integers(0, 1))
    else:
        attrs["auto_pad"] = mode
        attrs.pop("dilations", None)
        if mode != "VALID":  # onnxruntime computes a negative SAME pad when the stride exceeds the kernel
            attrs["strides"] = [min(s, k) for s, k in zip(attrs["strides"], kernel)]
    return attrs


def _input(data, nd, rng, min_size=3):
    shape = [data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))]
    shape += [data.draw(st.integers(min_size, 9 if nd < 3 else 6)) for _ in range(nd)]
    return rng.standard_normal(shape).astype(np.float32)


@SETTINGS
@given(st.data())
def test_maxpool_random(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    nd = data.draw(st.sampled_from([1, 2, 2, 3]))
    attrs = _window_attrs(data, nd)
    x = _input(data, nd, rng, min_size=5)
    check_op("MaxPool", {"x": x}, attrs, opset=12, rtol=0, atol=0)


@SETTINGS
@given(st.data())
def test_averagepool_random(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    nd = data.draw(st.sampled_from([1, 2, 2, 3]))
    attrs = _window_attrs(data, nd)
    attrs["count_include_pad"] = data.draw(st.integers(0, 1))
    x = _input(data, nd, rng, min_size=5)
    check_op("AveragePool", {"x": x}, attrs, opset=19, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size,kernel", [((8, 8), (4, 4)), ((16, 16), (16, 16)), ((6, 9), (3, 3)), ((4, 6, 8), (2, 3, 4)),
                                         ((12,), (12,))])
def test_averagepool_tiling_windows(size, kernel):
    """Windows that tile the input exactly (stride = kernel, no padding): the reshape-and-sum path."""
    from sporeling.ops.pool import AveragePlan, _window

    x = np.random.default_rng(3).standard_normal((2, 5, *size)).astype(np.float32)
    win = _window(x.shape, list(kernel), list(kernel), None, None, "NOTSET", 0)
    assert AveragePlan(x.shape, x.dtype, win, False).tiles is not None
    check_op("AveragePool", {"x": x}, {"kernel_shape": list(kernel), "strides": list(kernel)}, opset=19,
             rtol=1e-5, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_lppool_random(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    nd = data.draw(st.sampled_from([1, 2]))
    attrs = _window_attrs(data, nd, allow_ceil=False)
    attrs["p"] = data.draw(st.sampled_from([1, 2, 3]))
    x = _input(data, nd, rng, min_size=5)
    check_op("LpPool", {"x": x}, attrs, opset=18, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("attrs", [{"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
                                   {"kernel_shape": [2, 3], "strides": [1, 2]},
                                   {"kernel_shape": [3, 2], "dilations": [2, 1], "pads": [1, 0, 1, 1]}])
def test_maxpool_indices(storage_order, attrs):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 8, 7)).astype(np.float32)
    x[0, 0, 2, 2] = x[0, 0, 2, 3]  # a tie: the first in window order must win
    out = check_op("MaxPool", {"x": x}, {**attrs, "storage_order": storage_order}, n_outputs=2, opset=12,
                   rtol=0, atol=0)
    assert out[1].dtype == np.int64


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_maxpool_8bit(dtype):
    rng = np.random.default_rng(12)
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (1, 2, 9, 9)).astype(dtype)
    out = check_op("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, opset=12,
                   rtol=0, atol=0)
    assert out[0].dtype == dtype


def test_pools_network_shapes():
    """The shapes the benchmarks time: ResNet's 3x3/2 max pool (row-flat fast path) and 2x2/2 average."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 8, 28, 28)).astype(np.float32)
    check_op("MaxPool", {"x": x}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, rtol=0, atol=0)
    check_op("AveragePool", {"x": x}, {"kernel_shape": [2, 2], "strides": [2, 2]}, rtol=1e-6, atol=1e-6)
    check_op("AveragePool", {"x": x}, {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1],
                                       "count_include_pad": 1}, rtol=1e-6, atol=1e-6)


def test_maxpool_planned_call_writes_out():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    op = lookup("MaxPool", 12)
    infos = [Info(x.dtype, x.shape, None)]
    (dt, shape), _ = op.infer(infos, **attrs)
    out = np.full(shape, np.nan, dt)
    res = op.make(infos, **attrs)(x, out=out, scratch=np.empty(op.scratch(infos, **attrs), np.uint8))
    assert res is out and not np.isnan(out).any()
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    want = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(-1, -2))
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(1, 16, 7, 7), (2, 3, 5), (1, 2, 3, 4, 5)])
def test_global_pools(op, shape):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    check_op(op, {"x": x}, {}, rtol=1e-5, atol=1e-6)
    if op == "GlobalLpPool":
        for p in (1, 3):
            check_op(op, {"x": x}, {"p": p}, rtol=1e-5, atol=1e-6)


def test_global_average_pool_float64():
    x = np.random.default_rng(15).standard_normal((2, 5, 4, 4))
    got = run_sporeling(make_model("GlobalAveragePool", {"x": x}), {"x": x})[0]
    np.testing.assert_allclose(got, x.mean(axis=(2, 3), keepdims=True), rtol=1e-12)


def test_maxunpool_roundtrip_with_maxpool_indices():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    pooled, idx = check_op("MaxPool", {"x": x}, attrs, n_outputs=2, opset=12, rtol=0, atol=0)
    up = check_op("MaxUnpool", {"x": pooled, "i": idx}, attrs, opset=11, rtol=0, atol=0)[0]
    assert up.shape == x.shape
    np.testing.assert_array_equal(up.reshape(-1)[idx.reshape(-1)], pooled.reshape(-1))
    assert np.count_nonzero(up) == pooled.size


def test_maxunpool_output_shape_pads_the_inferred_block():
    """The indices address the shape the attributes imply; output_shape pads that block at the end
    (the ONNX reference semantics, which the backend test expects)."""
    x = np.array([[[[5.0, 6.0], [7.0, 8.0]]]], np.float32)
    idx = np.array([[[[5, 7], [13, 15]]]], np.int64)
    ins = {"x": x, "i": idx, "shape": np.array([1, 1, 5, 5], np.int64)}
    for consts in ((), ("shape",)):
        model = make_model("MaxUnpool", ins, 1, {"kernel_shape": [2, 2], "strides": [2, 2]}, 11,
                           {k: ins[k] for k in consts})
        got = run_sporeling(model, {k: v for k, v in ins.items() if k not in consts})[0]
        want = np.zeros((1, 1, 5, 5), np.float32)
        want[0, 0, 1, 1], want[0, 0, 1, 3], want[0, 0, 3, 1], want[0, 0, 3, 3] = 5, 6, 7, 8
        np.testing.assert_array_equal(got, want)

"""Reduction kernels against onnxruntime: Reduce*, ArgMax/ArgMin, CumSum/CumProd.

Axes are passed as an attribute (old opsets), as a constant input (planned path: infer + out=) and
as a fed input (the kernel allocates). Reductions over empty sets are checked against their spec
identities, since that is where engines most often disagree.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ops.oracle import check_op, make_model, run_sporeling

import sporeling  # noqa: E402  (after the oracle, which skips the module without onnx)
from sporeling.frontends.onnx import from_model_proto
from sporeling.ops import lookup

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]
WRITES = 1


def axes_as_input_since(op: str) -> int:
    return 13 if op == "ReduceSum" else 18


def positive_data(shape, seed=0, dtype=np.float32):
    """Away from zero, so that log/prod-based reductions stay well conditioned."""
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape).astype(dtype)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@settings(max_examples=25, deadline=None)
@given(op=st.sampled_from(REDUCE_OPS), shape=shapes, data=st.data(), keepdims=st.sampled_from([0, 1]),
       const=st.booleans())
def test_reduce_axes_as_input(op, shape, data, keepdims, const):
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                              unique_by=lambda a: a % len(shape)))
    x = positive_data(shape, len(axes))
    if op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL1") and data.draw(st.booleans()):
        x = (x * 7 - 7).astype(np.float32)  # signed values where the op allows them
    inputs = {"x": x, "axes": np.array(axes, np.int64)}
    check_op(op, inputs, {"keepdims": keepdims}, opset=axes_as_input_since(op), constants=("axes",) if const else (),
             rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(op=st.sampled_from(REDUCE_OPS), shape=shapes, data=st.data(), keepdims=st.sampled_from([0, 1]))
def test_reduce_axes_as_attribute_and_default(op, shape, data, keepdims):
    x = positive_data(shape)
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), max_size=len(shape), unique=True))
    attrs = {"keepdims": keepdims} | ({"axes": axes} if axes else {})
    check_op(op, {"x": x}, attrs, opset=11, rtol=1e-4, atol=1e-5)
    check_op(op, {"x": x}, {"keepdims": keepdims}, opset=axes_as_input_since(op), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.float64])
def test_reduce_dtypes(dtype):
    x = (np.arange(24).reshape(2, 3, 4) % 7 - 3).astype(dtype)
    for op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd"):
        check_op(op, {"x": x}, {"axes": [1], "keepdims": 0}, opset=11, rtol=2e-3, atol=1e-3)


def test_reduce_mean_hot_path_is_planned_and_writes_out():
    x = positive_data((2, 5, 8))
    model = make_model("ReduceMean", {"x": x, "axes": np.array([-1], np.int64)}, 1, {}, 18,
                       {"axes": np.array([-1], np.int64)})
    m = sporeling.Model(from_model_proto(model), "t")
    plan = m.session.prepare(m.session.check_feeds({"x": x}))
    assert [s.mode for s in plan.steps] == [WRITES]
    kernel = lookup("ReduceMean", 18).kernel
    out = np.empty((2, 5, 1), np.float32)
    assert kernel(x, np.array([-1]), out=out) is out
    np.testing.assert_allclose(out, x.mean(axis=-1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_noop_with_empty_axes(op):
    x = positive_data((2, 3))
    axes = np.zeros((0,), np.int64)
    model = make_model(op, {"x": x, "axes": axes}, 1, {"noop_with_empty_axes": 1}, axes_as_input_since(op))
    (y,) = run_sporeling(model, {"x": x, "axes": axes})
    elementwise = {"ReduceL1": np.abs, "ReduceL2": np.abs, "ReduceSumSquare": np.square, "ReduceLogSum": np.log}
    np.testing.assert_allclose(y, elementwise.get(op, lambda v: v)(x), rtol=1e-6)
    # without the flag, empty axes mean every axis
    check_op(op, {"x": x, "axes": axes}, opset=axes_as_input_since(op), constants=("axes",), rtol=1e-5)


@pytest.mark.parametrize("op,identity", [("ReduceSum", 0.0), ("ReduceProd", 1.0), ("ReduceMax", -np.inf),
                                         ("ReduceMin", np.inf), ("ReduceL1", 0.0), ("ReduceL2", 0.0),
                                         ("ReduceSumSquare", 0.0), ("ReduceLogSum", -np.inf),
                                         ("ReduceLogSumExp", -np.inf)])
def test_reduction_over_empty_set(op, identity):
    x = np.zeros((2, 0, 4), np.float32)
    model = make_model(op, {"x": x, "axes": np.array([1], np.int64)}, 1, {"keepdims": 1}, 18)
    (y,) = run_sporeling(model, {"x": x, "axes": np.array([1], np.int64)})
    assert y.shape == (2, 1, 4) and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.full((2, 1, 4), identity, np.float32))
    ints = np.zeros((3, 0), np.int32)
    kernel = lookup("ReduceMax", 20).kernel
    np.testing.assert_array_equal(kernel(ints, np.array([1]), keepdims=0), np.full(3, np.iinfo(np.int32).min))


def test_reduce_max_min_bool_and_large_logsumexp():
    b = np.array([[True, False], [False, False]])
    assert lookup("ReduceMax", 20).kernel(b, np.array([1]), keepdims=0).tolist() == [True, False]
    assert lookup("ReduceMin", 20).kernel(b, np.array([1]), keepdims=0).tolist() == [False, False]
    big = np.array([[1000.0, 1000.0], [-np.inf, -np.inf]], np.float32)
    got = lookup("ReduceLogSumExp", 18).kernel(big, np.array([1]), keepdims=0)
    np.testing.assert_allclose(got, [1000.0 + np.log(2.0), -np.inf])


# ---- ArgMax / ArgMin --------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(op=st.sampled_from(["ArgMax", "ArgMin"]), shape=shapes, data=st.data(), keepdims=st.sampled_from([0, 1]),
       last=st.sampled_from([0, 1]), dtype=st.sampled_from([np.float32, np.int32]))
def test_arg_reductions_with_ties(op, shape, data, keepdims, last, dtype):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(len(shape)).integers(0, 3, shape).astype(dtype)  # plenty of ties
    check_op(op, {"x": x}, {"axis": axis, "keepdims": keepdims, "select_last_index": last}, opset=13)


# ---- CumSum / CumProd -------------------------------------------------------------------------------


def reference_scan(x, axis, exclusive, reverse, product):
    """The scan spelled out with NumPy, for CumProd which onnxruntime does not run."""
    src = np.flip(x, axis) if reverse else x
    scan = np.cumprod(src, axis=axis, dtype=x.dtype) if product else np.cumsum(src, axis=axis, dtype=x.dtype)
    if exclusive:
        scan = np.concatenate([np.full_like(np.take(scan, [0], axis=axis), 1 if product else 0),
                               np.take(scan, np.arange(x.shape[axis] - 1), axis=axis)], axis=axis)
    return np.flip(scan, axis) if reverse else scan


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), exclusive=st.sampled_from([0, 1]), reverse=st.sampled_from([0, 1]),
       dtype=st.sampled_from([np.float32, np.int32, np.int64]))
def test_cumsum_and_cumprod(shape, data, exclusive, reverse, dtype):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(axis + 5).integers(-3, 4, shape).astype(dtype)
    attrs = {"exclusive": exclusive, "reverse": reverse}
    check_op("CumSum", {"x": x, "axis": np.array(axis, np.int64)}, attrs, opset=14, constants=("axis",))
    model = make_model("CumProd", {"x": x, "axis": np.array(axis, np.int32)}, 1, attrs, 26)
    (y,) = run_sporeling(model, {"x": x, "axis": np.array(axis, np.int32)})
    want = reference_scan(x, axis, exclusive, reverse, product=True)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, want)


def test_cumsum_hand_example():
    kernel = lookup("CumSum", 14).kernel
    x = np.array([1, 2, 3], np.int32)
    assert kernel(x, np.array(0), exclusive=1, reverse=1).tolist() == [5, 3, 0]
    assert kernel(x, np.array(0)).dtype == np.int32

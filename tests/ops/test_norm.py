"""Normalization kernels against onnxruntime, with shapes and attributes drawn by hypothesis.

Parameters (scale, bias, statistics) are passed both as initializers (the planned path: infer,
make with folded constants, out=) and as feeds. A few chains check the arena paths: in-place
writes over a dying input, and the multi-output LayerNormalization."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

import sporeling
from sporeling.frontends.onnx import from_model_proto
from sporeling.ops import lookup
from sporeling.runtime.session import WRITES
from tests.ops.oracle import check_op, make_model, run_ort, run_sporeling


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _shape(draw, min_rank=2, max_rank=5, max_dim=5, min_dim=1):
    return tuple(draw(st.lists(st.integers(min_dim, max_dim), min_size=min_rank, max_size=max_rank)))


def _plan_modes(model, feeds):
    m = sporeling.Model(from_model_proto(model), "t")
    m.run(feeds)
    plan = next(iter(m.session._plans.values()))
    return [(s.node.op_type, s.mode) for s in plan.steps]


# ---- BatchNormalization ------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(data=st.data(), const=st.booleans(), opset=st.sampled_from([9, 15]), eps=st.sampled_from([1e-5, 1e-2]),
       seed=st.integers(0, 2**16))
def test_batchnorm_inference(data, const, opset, eps, seed):
    rng = np.random.default_rng(seed)
    shape = _shape(data.draw, 2, 5)
    c = shape[1]
    inputs = {"x": _rand(rng, shape), "s": _rand(rng, c), "b": _rand(rng, c), "m": _rand(rng, c),
              "v": rng.uniform(0.1, 2.0, c).astype(np.float32)}
    check_op("BatchNormalization", inputs, {"epsilon": eps}, opset=opset,
             constants=("s", "b", "m", "v") if const else (), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.9, 0.3])
def test_batchnorm_training_mode(momentum):
    rng = np.random.default_rng(3)
    x = _rand(rng, (4, 3, 5, 2))
    inputs = {"x": x, "s": _rand(rng, 3), "b": _rand(rng, 3), "m": _rand(rng, 3), "v": rng.uniform(0.5, 1, 3)}
    inputs["v"] = inputs["v"].astype(np.float32)
    y, rm, rv = check_op("BatchNormalization", inputs, {"training_mode": 1, "momentum": momentum}, n_outputs=3,
                         opset=15, rtol=1e-4, atol=1e-5)
    batch_mean = x.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(rm, inputs["m"] * momentum + batch_mean * (1 - momentum), rtol=1e-5, atol=1e-6)
    assert y.shape == x.shape and rv.shape == (3,)


@pytest.mark.parametrize("block", [None, 1])
def test_batchnorm_training_into_its_own_input_or_another_buffer(block, monkeypatch):
    """Training-mode BN computes its variance in Y's buffer, or, when Y overwrites X (in place), over blocks of
    samples (of VAR_BLOCK_ELEMENTS, here also one element: one sample per block): the same statistics and Y,
    against float64."""
    import sporeling.ops.norm as norm

    if block is not None:
        monkeypatch.setattr(norm, "VAR_BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 4, 5, 3)) * 3 + 2).astype(np.float32)
    s, b, m = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    v = rng.uniform(0.5, 1, 4).astype(np.float32)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    want = (x64 - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * s[:, None, None] + b[:, None, None]
    kernel = lookup("BatchNormalization", 15).kernel
    for inplace in (False, True):
        y = x.copy() if inplace else np.empty_like(x)
        src = y if inplace else x.copy()
        stats = (np.empty(4, np.float32), np.empty(4, np.float32))
        kernel(src, s, b, m, v, training_mode=1, momentum=0.9, out=(y, *stats))
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats[1], v * 0.9 + var * 0.1, rtol=1e-5)


def test_batchnorm_float16_legacy_and_folded_constants():
    rng = np.random.default_rng(4)
    x = _rand(rng, (2, 4, 3, 3))
    p = {"s": _rand(rng, 4), "b": _rand(rng, 4), "m": _rand(rng, 4), "v": rng.uniform(0.5, 1, 4).astype(np.float32)}
    half = {k: v.astype(np.float16) for k, v in {"x": x, **p}.items()}
    ours = check_op("BatchNormalization", half, opset=15, constants=("s", "b", "m", "v"), rtol=1e-2, atol=1e-2)
    assert ours[0].dtype == np.float16
    check_op("BatchNormalization", {"x": x[:, :, 0, 0], **p}, opset=7, constants=("s", "b", "m", "v"))
    # opset 6 (is_test, which onnxruntime no longer runs) against the formula
    model = make_model("BatchNormalization", {"x": x, **p}, 1, {"is_test": 1, "epsilon": 1e-3}, 6, p)
    want = (x - p["m"][:, None, None]) / np.sqrt(p["v"][:, None, None] + 1e-3) * p["s"][:, None, None] + \
        p["b"][:, None, None]
    np.testing.assert_allclose(run_sporeling(model, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
    # the folded (constant-parameter) kernel writes into the arena and in place over a dying input
    nodes = [helper.make_node("Add", ["x", "x"], ["t"]),
             helper.make_node("BatchNormalization", ["t", "s", "b", "m", "v"], ["u"]),
             helper.make_node("Add", ["u", "u"], ["y"])]
    model = _graph(nodes, {"x": x}, ["y"], p, opset=15)
    np.testing.assert_allclose(run_sporeling(model, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    assert ("BatchNormalization", WRITES) in _plan_modes(model, {"x": x})


def _graph(nodes, feeds, outputs, inits, opset):
    g = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


# ---- Instance / group / layer / RMS normalization ---------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(data=st.data(), eps=st.sampled_from([1e-5, 1e-3]), half=st.booleans(), seed=st.integers(0, 2**16))
def test_instance_norm(data, eps, half, seed):
    rng = np.random.default_rng(seed)
    shape = _shape(data.draw, 3, 5)
    dt = np.float16 if half else np.float32
    inputs = {"x": _rand(rng, shape, dt) * 3 + 1, "s": _rand(rng, shape[1], dt), "b": _rand(rng, shape[1], dt)}
    tol = 1e-2 if half else 1e-4
    check_op("InstanceNormalization", inputs, {"epsilon": eps}, opset=6, constants=("s", "b"), rtol=tol, atol=tol)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), with_bias=st.booleans(), n_outputs=st.sampled_from([1, 3]), const=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float16, np.float64]), seed=st.integers(0, 2**16))
def test_layer_norm(data, with_bias, n_outputs, const, dtype, seed):
    rng = np.random.default_rng(seed)
    shape = _shape(data.draw, 1, 4, 6)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    norm_shape = shape[axis:]
    # Scale may be unidirectionally broadcast: drop some of its leading dims
    w_shape = norm_shape[data.draw(st.integers(0, len(norm_shape) - 1)):]
    inputs = {"x": _rand(rng, shape, dtype) * 2 + 0.5, "w": _rand(rng, w_shape, dtype)}
    if with_bias:
        inputs["b"] = _rand(rng, w_shape, dtype)
    tol = 1e-2 if dtype == np.float16 else 1e-4
    ours = check_op("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-3}, n_outputs=n_outputs, opset=17,
                    constants=tuple(k for k in ("w", "b") if k in inputs and const), rtol=tol, atol=tol)
    assert ours[0].dtype == dtype
    if n_outputs == 3:
        assert ours[1].dtype == ours[2].dtype == np.float32


def test_layer_norm_arena_inplace_and_returned_tuple():
    rng = np.random.default_rng(5)
    x, w, b = _rand(rng, (2, 5, 8)), _rand(rng, 8), _rand(rng, 8)
    nodes = [helper.make_node("Add", ["x", "x"], ["t"]),
             helper.make_node("LayerNormalization", ["t", "w", "b"], ["u", "mean", "inv"]),
             helper.make_node("Mul", ["u", "u"], ["y"])]
    model = _graph(nodes, {"x": x}, ["y", "mean", "inv"], {"w": w, "b": b}, opset=17)
    for ours, theirs in zip(run_sporeling(model, {"x": x}), run_ort(model, {"x": x})):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert ("LayerNormalization", WRITES) in _plan_modes(model, {"x": x})
    # called without out (unknown shapes, subgraphs, folding) the kernel returns every output
    kernel = lookup("LayerNormalization", 17).kernel
    y, mean, inv = kernel(x, w, b, axis=-1)
    np.testing.assert_allclose(mean[..., 0], x.mean(-1), rtol=1e-5, atol=1e-6)
    assert inv.shape == (2, 5, 1) and y.shape == x.shape


@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm_specialised_last_axis_path_in_place(with_bias):
    """Constant Scale/B, float32, last axis, Y alone: the make()-specialised kernel, writing over its
    input's buffer (Add's output dies at the LayerNormalization)."""
    rng = np.random.default_rng(11)
    x, w, b = _rand(rng, (2, 7, 312)) * 3 + 1, _rand(rng, 312), _rand(rng, 312)
    inits = {"w": w, "b": b} if with_bias else {"w": w}
    nodes = [helper.make_node("Add", ["x", "x"], ["t"]),
             helper.make_node("LayerNormalization", ["t", "w"] + (["b"] if with_bias else []), ["u"], epsilon=1e-5),
             helper.make_node("Mul", ["u", "u"], ["y"])]
    model = _graph(nodes, {"x": x}, ["y"], inits, opset=17)
    for ours, theirs in zip(run_sporeling(model, {"x": x}), run_ort(model, {"x": x})):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    m = sporeling.Model(from_model_proto(model), "ln")
    plan = m.session.plan_for(m.session.check_feeds({"x": x}))
    ln = next(st for st in plan.steps if st.node.op_type == "LayerNormalization")
    assert ln.mode == WRITES and ln.fn.__name__ == "layer_norm_rows"
    assert np.shares_memory(plan.template[ln.ins[0]], plan.template[ln.outs[0]])


@settings(max_examples=25, deadline=None)
@given(data=st.data(), opset=st.sampled_from([18, 21]), seed=st.integers(0, 2**16))
def test_group_norm(data, opset, seed):
    rng = np.random.default_rng(seed)
    groups, per_group = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    shape = (data.draw(st.integers(1, 3)), groups * per_group) + _shape(data.draw, 0, 2)
    n_params = groups if opset == 18 else shape[1]  # opset 18: per group, 21: per channel
    inputs = {"x": _rand(rng, shape), "s": _rand(rng, n_params), "b": _rand(rng, n_params)}
    check_op("GroupNormalization", inputs, {"num_groups": groups, "epsilon": 1e-3}, opset=opset,
             constants=("s", "b"), rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_rms_norm(data, seed):
    rng = np.random.default_rng(seed)
    shape = _shape(data.draw, 1, 4, 6)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    inputs = {"x": _rand(rng, shape), "w": _rand(rng, shape[axis:])}
    check_op("RMSNormalization", inputs, {"axis": axis}, opset=23, constants=("w",), rtol=1e-4, atol=1e-5)


# ---- LRN, Lp and mean-variance normalization ---------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(data=st.data(), size=st.sampled_from([1, 3, 5, 7]), seed=st.integers(0, 2**16))
def test_lrn(data, size, seed):
    rng = np.random.default_rng(seed)
    shape = _shape(data.draw, 4, 4, 6)
    attrs = {"size": size, "alpha": data.draw(st.sampled_from([1e-4, 0.05])), "beta": 0.75, "bias": 1.5}
    check_op("LRN", {"x": _rand(rng, shape)}, attrs, opset=13, rtol=1e-4, atol=1e-6)


def test_lrn_even_size_window():
    """An even window reaches one channel further up than down (floor/ceil of (size-1)/2)."""
    rng = np.random.default_rng(6)
    x = _rand(rng, (1, 5, 2, 2))
    y = run_sporeling(make_model("LRN", {"x": x}, 1, {"size": 4, "alpha": 0.4, "beta": 1.0, "bias": 1.0}, 13),
                      {"x": x})[0]
    sq = np.pad(x ** 2, ((0, 0), (1, 2), (0, 0), (0, 0)))
    window = sum(sq[:, k : k + 5] for k in range(4))
    np.testing.assert_allclose(y, x / (1.0 + 0.1 * window), rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), p=st.sampled_from([1, 2]), opset=st.sampled_from([1, 22]), seed=st.integers(0, 2**16))
def test_lp_norm(data, p, opset, seed):
    rng = np.random.default_rng(seed)
    shape = _shape(data.draw, 1, 4)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = _rand(rng, shape)
    ours = check_op("LpNormalization", {"x": x}, {"p": p, "axis": axis}, opset=opset, rtol=1e-5, atol=1e-6)
    norm = np.linalg.norm(ours[0].astype(np.float64), ord=p, axis=axis)
    np.testing.assert_allclose(norm, 1.0, rtol=1e-4)


def test_lp_norm_zero_slice_stays_zero():
    x = np.zeros((2, 3), np.float32)
    x[1] = [3, 4, 0]
    y = run_sporeling(make_model("LpNormalization", {"x": x}, 1, {"p": 2, "axis": 1}, 22), {"x": x})[0]
    np.testing.assert_allclose(y, [[0, 0, 0], [0.6, 0.8, 0]], rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_mean_variance_norm(data, seed):
    rng = np.random.default_rng(seed)
    shape = _shape(data.draw, 4, 4, 5, min_dim=2)  # one-element sets: onnxruntime's E[x²]-E[x]² gives NaN
    axes = data.draw(st.sampled_from([None, [0, 2, 3], [1], [2, 3], [0, 1, 2, 3], [-1]]))
    x = _rand(rng, shape) * 2 + 1
    attrs = {} if axes is None else {"axes": axes}
    check_op("MeanVarianceNormalization", {"x": x}, attrs, opset=13, rtol=1e-3, atol=1e-4)

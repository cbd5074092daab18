"""If, Loop and Scan against onnxruntime.

The models are small multi-node graphs whose bodies read outer-scope values: graph inputs, outer
initializers, and values computed in the enclosing graph before the control-flow node (which live in
the session's planned arena, so their lifetimes must cover the body's reads).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import sporeling
from sporeling.errors import SporelingError
from sporeling.frontends.onnx import from_model_proto
from tests.ops.oracle import run_ort, run_sporeling

F, I64, BOOL = TP.FLOAT, TP.INT64, TP.BOOL


def vi(name, elem=F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def build(nodes, inputs, outputs, inits=None, opset=17):
    inits = [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()]
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def same_as_ort(model, feeds, rtol=1e-5, atol=1e-6):
    ours, theirs = run_sporeling(model, feeds), run_ort(model, feeds)
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if isinstance(b, list):
            assert isinstance(a, list) and len(a) == len(b), f"output {k}"
            pairs = list(zip(a, b))
        else:
            pairs = [(a, b)]
        for x, y in pairs:
            assert x.dtype == y.dtype and x.shape == y.shape, f"output {k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
    return ours


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


# ---- If --------------------------------------------------------------------------------------------


def if_reading_outer_scope():
    """z = x + x is computed before the If (a planned buffer); the branches read x, y, z and the
    outer initializer c; the result is used again after the If."""
    then_g = helper.make_graph(
        [helper.make_node("Add", ["y", "z"], ["t"])], "then", [], [vi("t")]
    )
    else_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "c"], ["e0"]), helper.make_node("Add", ["e0", "z"], ["e"])],
        "else", [], [vi("e")],
    )
    nodes = [
        helper.make_node("Add", ["x", "x"], ["z"]),
        helper.make_node("If", ["cond"], ["r"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Add", ["r", "z"], ["out"]),
    ]
    return build(nodes, [vi("cond", BOOL, []), vi("x"), vi("y")], [vi("out"), vi("r")],
                 {"c": np.array(3.0, np.float32)})


@settings(max_examples=25, deadline=None)
@given(shape=shapes, cond=st.booleans())
def test_if_branches_read_outer_scope(shape, cond):
    model = if_reading_outer_scope()
    x, y = rand(shape, 1), rand(shape, 2)
    out, r = same_as_ort(model, {"cond": np.array(cond), "x": x, "y": y})
    expect = (y + 2 * x) if cond else (3 * x + 2 * x)
    np.testing.assert_allclose(r, expect, rtol=1e-6)
    np.testing.assert_allclose(out, expect + 2 * x, rtol=1e-6)


def test_if_with_constant_cond_still_reads_feeds():
    """cond is an initializer but the branch reads a feed, so the node must not be folded."""
    then_g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t"])], "then", [], [vi("t")])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e")])
    model = build([helper.make_node("If", ["cond"], ["r"], then_branch=then_g, else_branch=else_g)],
                  [vi("x", F, [3])], [vi("r")], {"cond": np.array(True)})
    m = sporeling.Model(from_model_proto(model), "t")
    for seed in range(3):
        x = rand(3, seed)
        np.testing.assert_allclose(m.run({"x": x})["r"], 2 * x)
        same_as_ort(model, {"x": x})


def test_if_folds_when_everything_is_constant():
    then_g = helper.make_graph([helper.make_node("Add", ["a", "a"], ["t"])], "then", [], [vi("t")])
    else_g = helper.make_graph([helper.make_node("Identity", ["a"], ["e"])], "else", [], [vi("e")])
    nodes = [helper.make_node("If", ["cond"], ["r"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Add", ["r", "x"], ["out"])]
    a = np.arange(3, dtype=np.float32)
    model = build(nodes, [vi("x", F, [3])], [vi("out")], {"cond": np.array(False), "a": a})
    m = sporeling.Model(from_model_proto(model), "t")
    x = rand(3)
    np.testing.assert_allclose(m.run({"x": x})["out"], a + x)
    (plan,) = m.session._plans.values()
    assert plan.folded == 1
    same_as_ort(model, {"x": x})


def test_if_returns_sequences_and_does_not_leak_constants():
    then_g = helper.make_graph([helper.make_node("SequenceConstruct", ["x", "k"], ["s"])], "then", [],
                               [helper.make_tensor_sequence_value_info("s", F, None)])
    else_g = helper.make_graph([helper.make_node("SequenceConstruct", ["k"], ["s2"])], "else", [],
                               [helper.make_tensor_sequence_value_info("s2", F, None)])
    model = build([helper.make_node("If", ["cond"], ["s"], then_branch=then_g, else_branch=else_g)],
                  [vi("cond", BOOL, []), vi("x", F, [2])], [helper.make_tensor_sequence_value_info("s", F, None)],
                  {"k": np.array([5.0, 6.0], np.float32)})
    x = rand(2)
    (seq,) = same_as_ort(model, {"cond": np.array(True), "x": x})
    assert len(seq) == 2
    (seq,) = same_as_ort(model, {"cond": np.array(False), "x": x})
    assert len(seq) == 1


def test_if_output_is_not_the_branch_constant():
    then_g = helper.make_graph([], "then", [], [vi("c1")], [numpy_helper.from_array(np.ones(2, np.float32), "c1")])
    else_g = helper.make_graph([], "else", [], [vi("c2")], [numpy_helper.from_array(np.zeros(2, np.float32), "c2")])
    model = build([helper.make_node("If", ["cond"], ["r"], then_branch=then_g, else_branch=else_g)],
                  [vi("cond", BOOL, [])], [vi("r")])
    m = sporeling.Model(from_model_proto(model), "t")
    r = m.run({"cond": np.array(True)})["r"]
    r[:] = 42  # the caller owns its result
    np.testing.assert_array_equal(m.run({"cond": np.array(True)})["r"], np.ones(2, np.float32))


# ---- Loop ------------------------------------------------------------------------------------------


def loop_with_scan_outputs(with_cond_input=True):
    """v_{i+1} = v_i + x (x from the outer scope); scan outputs v_{i+1} and v_{i+1} * v_{i+1}."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "x"], ["v_out"]),
            helper.make_node("Mul", ["v_out", "v_out"], ["sq"]),
            helper.make_node("Identity", ["v_out"], ["scan_v"]),
        ],
        "body",
        [vi("i", I64, []), vi("cond_in", BOOL, []), vi("v_in", F, None)],
        [vi("cond_out", BOOL, []), vi("v_out", F, None), vi("scan_v", F, None), vi("sq", F, None)],
    )
    cond = "cond" if with_cond_input else ""
    node = helper.make_node("Loop", ["M", cond, "v0"], ["v_final", "vs", "sqs"], body=body)
    inputs = [vi("M", I64, []), vi("v0", F, None), vi("x", F, None)]
    if with_cond_input:
        inputs.insert(1, vi("cond", BOOL, []))
    return build([node], inputs, [vi("v_final"), vi("vs"), vi("sqs")])


@settings(max_examples=25, deadline=None)
@given(shape=shapes, trips=st.integers(1, 6), with_cond=st.booleans())
def test_loop_scan_outputs(shape, trips, with_cond):
    model = loop_with_scan_outputs(with_cond)
    feeds = {"M": np.array(trips, np.int64), "v0": rand(shape, 1), "x": rand(shape, 2)}
    if with_cond:
        feeds["cond"] = np.array(True)
    v_final, vs, sqs = same_as_ort(model, feeds, rtol=1e-4)
    assert vs.shape == (trips, *shape)
    np.testing.assert_allclose(v_final, feeds["v0"] + trips * feeds["x"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sqs, vs * vs, rtol=1e-5)


def test_loop_zero_iterations():
    model = loop_with_scan_outputs(True)
    v0 = rand((2, 3))
    for feeds in ({"M": np.array(0, np.int64), "cond": np.array(True)},
                  {"M": np.array(4, np.int64), "cond": np.array(False)}):
        v_final, vs, sqs = same_as_ort(model, {**feeds, "v0": v0, "x": v0})  # ORT also gives shape (0,)
        np.testing.assert_array_equal(v_final, v0)
        assert vs.shape[0] == 0 and sqs.shape[0] == 0 and vs.dtype == np.float32


def test_loop_stops_on_condition_and_counts_iterations():
    """No trip count: runs while i < limit (limit from the outer scope); carries the iteration
    number out and scans it."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["i", "one"], ["next_i"]),
            helper.make_node("Less", ["next_i", "limit"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "i"], ["acc_out"]),
            helper.make_node("Identity", ["i"], ["i_scan"]),
        ],
        "body",
        [vi("i", I64, []), vi("c", BOOL, []), vi("acc_in", I64, [])],
        [vi("cond_out", BOOL, []), vi("acc_out", I64, []), vi("i_scan", I64, [])],
        [numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    node = helper.make_node("Loop", ["", "start", "acc0"], ["acc", "steps"], body=body)
    model = build([node], [vi("start", BOOL, []), vi("acc0", I64, []), vi("limit", I64, [])],
                  [vi("acc", I64, None), vi("steps", I64, None)])
    for limit in (1, 4, 7):
        acc, steps = same_as_ort(model, {"start": np.array(True), "acc0": np.array(10, np.int64),
                                         "limit": np.array(limit, np.int64)})
        np.testing.assert_array_equal(steps, np.arange(limit))
        assert int(acc) == 10 + limit * (limit - 1) // 2


def test_loop_body_with_nested_if_reading_two_levels_up():
    inner_then = helper.make_graph([helper.make_node("Add", ["v_in", "w"], ["a"])], "t", [], [vi("a")])
    inner_else = helper.make_graph([helper.make_node("Sub", ["v_in", "w"], ["b"])], "e", [], [vi("b")])
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c"], ["c_out"]),
            helper.make_node("If", ["flag"], ["v_out"], then_branch=inner_then, else_branch=inner_else),
        ],
        "body",
        [vi("i", I64, []), vi("c", BOOL, []), vi("v_in", F, [3])],
        [vi("c_out", BOOL, []), vi("v_out", F, [3])],
    )
    nodes = [helper.make_node("Mul", ["x", "x"], ["w"]),
             helper.make_node("Loop", ["M", "", "x"], ["v"], body=body)]
    model = build(nodes, [vi("M", I64, []), vi("flag", BOOL, []), vi("x", F, [3])], [vi("v", F, [3])])
    x = rand(3)
    for flag in (True, False):
        (v,) = same_as_ort(model, {"M": np.array(3, np.int64), "flag": np.array(flag), "x": x})
        np.testing.assert_allclose(v, x + (3 if flag else -3) * x * x, rtol=1e-5)


# ---- Scan ------------------------------------------------------------------------------------------


def scan_model(rank, in_axis, in_dir, out_axis, out_dir, opset=17):
    """A running sum over the scan axis of x plus an outer bias; the running value is scanned out."""
    elem = [None] * (rank - 1)
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "e"], ["t"]), helper.make_node("Add", ["t", "bias"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y"])],
        "body", [vi("s_in", F, elem), vi("e", F, elem)], [vi("s_out", F, elem), vi("y", F, elem)],
    )
    node = helper.make_node("Scan", ["s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1,
                            scan_input_axes=[in_axis], scan_input_directions=[in_dir],
                            scan_output_axes=[out_axis], scan_output_directions=[out_dir])
    return build([node], [vi("s0"), vi("x"), vi("bias")], [vi("s"), vi("ys")], opset=opset)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), data=st.data())
def test_scan_axes_and_directions(shape, data):
    rank = len(shape)
    in_axis = data.draw(st.integers(-rank, rank - 1))
    out_axis = data.draw(st.integers(-rank, rank - 1))
    in_dir, out_dir = data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1))
    model = scan_model(rank, in_axis, in_dir, out_axis, out_dir)
    x = rand(shape, 1)
    elem_shape = tuple(d for k, d in enumerate(shape) if k != in_axis % rank)
    _, ys = same_as_ort(model, {"s0": rand(elem_shape, 2), "x": x, "bias": rand(elem_shape, 3)}, rtol=1e-4)
    assert ys.shape[out_axis % rank] == shape[in_axis % rank]


def test_scan_opset8_batched_with_sequence_lens():
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "e"], ["s_out"]), helper.make_node("Identity", ["s_out"], ["y"])],
        "body", [vi("s_in", F, [2]), vi("e", F, [2])], [vi("s_out", F, [2]), vi("y", F, [2])],
    )
    node = helper.make_node("Scan", ["lens", "s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1,
                            directions=[1])
    model = build([node], [vi("lens", I64, [3]), vi("s0", F, [3, 2]), vi("x", F, [3, 4, 2])],
                  [vi("s"), vi("ys")], opset=8)
    model.ir_version = 3
    feeds = {"lens": np.array([4, 2, 3], np.int64), "s0": rand((3, 2)), "x": rand((3, 4, 2), 1)}
    s, ys = same_as_ort(model, feeds, rtol=1e-5)
    np.testing.assert_allclose(s[1], feeds["s0"][1] + feeds["x"][1, :2].sum(0), rtol=1e-5)
    assert np.all(ys[1, 2:] == 0)


def test_scan_mismatched_lengths_is_an_error():
    model = build([helper.make_node("Scan", ["a", "b"], ["ya", "yb"], num_scan_inputs=2, body=helper.make_graph(
        [helper.make_node("Identity", ["ea"], ["ya"]), helper.make_node("Identity", ["eb"], ["yb"])],
        "body", [vi("ea"), vi("eb")], [vi("ya"), vi("yb")]))], [vi("a"), vi("b")], [vi("ya"), vi("yb")])
    with pytest.raises(SporelingError, match="different sequence lengths"):
        run_sporeling(model, {"a": rand((3, 2)), "b": rand((4, 2))})

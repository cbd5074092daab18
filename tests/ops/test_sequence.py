"""Sequence and optional ops against onnxruntime."""

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
from sporeling.ops.sequence import is_empty_optional, sequence_insert
from tests.ops.oracle import run_ort, run_sporeling

F, I64, BOOL = TP.FLOAT, TP.INT64, TP.BOOL


def vi(name, elem=F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def seq_vi(name, elem=F):
    return helper.make_tensor_sequence_value_info(name, elem, None)


def build(nodes, inputs, outputs, inits=None, opset=18):
    inits = [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()]
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def assert_same(a, b):
    if isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
        return
    assert a.dtype == b.dtype and a.shape == b.shape, f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    np.testing.assert_allclose(a, b, rtol=1e-6)


def same_as_ort(model, feeds):
    ours, theirs = run_sporeling(model, feeds), run_ort(model, feeds)
    for a, b in zip(ours, theirs):
        assert_same(a, b)
    return ours


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


# ---- SplitToSequence / ConcatFromSequence ----------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data())
def test_split_then_concat(shape, data):
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1))
    dim = shape[axis]
    form = data.draw(st.sampled_from(["none", "scalar", "list"]))
    keepdims = data.draw(st.integers(0, 1))
    const = data.draw(st.booleans())
    # without split and keepdims=0 the pieces lose the axis: stacking them (new_axis) rebuilds x
    new_axis = 1 if form == "none" and not keepdims else 0
    inputs, inits = [vi("x", F, list(shape))], {}
    split_name = ""
    if form != "none":
        if form == "scalar":
            split = np.array(data.draw(st.integers(1, dim)), np.int64)
        else:
            cuts = sorted(data.draw(st.lists(st.integers(0, dim), max_size=3)))
            split = np.diff([0, *cuts, dim]).astype(np.int64)
        split_name = "split"
        if const:
            inits["split"] = split
        else:
            inputs.append(vi("split", I64, list(split.shape)))
    attrs = {"axis": axis} if form != "none" else {"axis": axis, "keepdims": keepdims}
    nodes = [
        helper.make_node("SplitToSequence", ["x", split_name] if split_name else ["x"], ["s"], **attrs),
        helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=axis, new_axis=new_axis),
        helper.make_node("SequenceLength", ["s"], ["n"]),
    ]
    model = build(nodes, inputs, [seq_vi("s"), vi("y"), vi("n", I64, [])], inits)
    feeds = {"x": rand(shape)}
    if split_name and not const:
        feeds["split"] = split
    seq, y, n = same_as_ort(model, feeds)
    assert int(n) == len(seq)
    np.testing.assert_array_equal(y, feeds["x"])


def test_split_sizes_must_cover_the_axis():
    model = build([helper.make_node("SplitToSequence", ["x", "split"], ["s"], axis=0)],
                  [vi("x", F, [5]), vi("split", I64, [2])], [seq_vi("s")])
    with pytest.raises(SporelingError, match="do not add up"):
        run_sporeling(model, {"x": rand(5), "split": np.array([2, 2], np.int64)})


# ---- SequenceInsert / At / Erase / Length / Empty ---------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), data=st.data())
def test_insert_at_erase(n, data):
    pos_insert = data.draw(st.integers(-n, n))
    pos_at = data.draw(st.integers(-(n + 1), n))
    pos_erase = data.draw(st.integers(-(n + 1), n))
    names = [f"t{k}" for k in range(n)]
    nodes = [
        helper.make_node("SequenceConstruct", names, ["s0"]),
        helper.make_node("SequenceInsert", ["s0", "new", "pi"], ["s1"]),
        helper.make_node("SequenceAt", ["s1", "pa"], ["at"]),
        helper.make_node("SequenceErase", ["s1", "pe"], ["s2"]),
        helper.make_node("SequenceErase", ["s2"], ["s3"]),  # no position: the last one
        helper.make_node("SequenceLength", ["s3"], ["len"]),
    ]
    inputs = [vi(nm, F, [k + 1]) for k, nm in enumerate(names)] + [vi("new", F, [7]), vi("pe", I64, [])]
    inits = {"pi": np.array(pos_insert, np.int64), "pa": np.array(pos_at, np.int64)}
    model = build(nodes, inputs, [seq_vi("s1"), vi("at"), seq_vi("s3"), vi("len", I64, [])], inits)
    feeds = {nm: rand(k + 1, k) for k, nm in enumerate(names)}
    feeds |= {"new": rand(7, 9), "pe": np.array(pos_erase, np.int64)}
    s1, at, s3, length = same_as_ort(model, feeds)
    assert len(s1) == n + 1 and int(length) == len(s3) == n - 1
    assert at is s1[pos_at] or np.array_equal(at, s1[pos_at])


def test_sequence_empty_insert_and_out_of_range():
    nodes = [helper.make_node("SequenceEmpty", [], ["e"], dtype=F),
             helper.make_node("SequenceInsert", ["e", "x"], ["s"]),
             helper.make_node("SequenceAt", ["s", "p"], ["y"])]
    model = build(nodes, [vi("x", F, [2]), vi("p", I64, [])], [vi("y")])
    x = rand(2)
    (y,) = same_as_ort(model, {"x": x, "p": np.array(0, np.int64)})
    np.testing.assert_array_equal(y, x)
    with pytest.raises(SporelingError, match="out of range"):
        run_sporeling(model, {"x": x, "p": np.array(1, np.int64)})


def test_sequences_own_their_tensors():
    """A sequence holding a planned intermediate must not change when the next run reuses the
    arena; nor may SequenceInsert modify the list it was given."""
    nodes = [helper.make_node("Add", ["x", "x"], ["d"]), helper.make_node("Add", ["d", "x"], ["t"]),
             helper.make_node("SequenceConstruct", ["d", "t"], ["s"])]
    model = build(nodes, [vi("x", F, [4])], [seq_vi("s")])
    m = sporeling.Model(from_model_proto(model), "t")
    x = rand(4)
    first = m.run({"x": x})["s"]
    m.run({"x": rand(4, 5)})
    np.testing.assert_allclose(first[0], 2 * x)
    np.testing.assert_allclose(first[1], 3 * x)
    base = [np.zeros(1, np.float32)]
    grown = sequence_insert(base, np.ones(1, np.float32))
    assert len(base) == 1 and len(grown) == 2


def test_sequence_length_is_planned():
    nodes = [helper.make_node("SplitToSequence", ["x"], ["s"], axis=0),
             helper.make_node("SequenceLength", ["s"], ["n"]),
             helper.make_node("Add", ["n", "n"], ["y"])]
    model = build(nodes, [vi("x", F, [5, 2])], [vi("y", I64, [])])
    m = sporeling.Model(from_model_proto(model), "t")
    assert int(m.run({"x": rand((5, 2))})["y"]) == 10
    (plan,) = m.session._plans.values()
    assert plan.steps[1].mode == 1  # WRITES: SequenceLength's scalar is planned


def test_sequence_feed():
    model = build([helper.make_node("SequenceAt", ["s", "p"], ["y"])], [seq_vi("s"), vi("p", I64, [])], [vi("y")])
    seq = [rand(2), rand(3, 1), rand(4, 2)]
    (y,) = run_sporeling(model, {"s": seq, "p": np.array(-2, np.int64)})
    np.testing.assert_array_equal(y, seq[1])


# ---- SequenceMap -----------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(1, 4), min_size=1, max_size=4))
def test_sequence_map_with_extra_inputs(lengths):
    """Body: (a + b) * w, where a walks the first sequence, b the second and w is a tensor; the
    body also reads k from the outer scope."""
    body = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Mul", ["ab", "w"], ["abw"]),
         helper.make_node("Add", ["abw", "k"], ["out"]), helper.make_node("Shape", ["a"], ["shp"])],
        "body", [vi("a", F, None), vi("b", F, None), vi("w", F, [1])], [vi("out", F, None), vi("shp", I64, [1])],
    )
    names_a = [f"a{k}" for k in range(len(lengths))]
    names_b = [f"b{k}" for k in range(len(lengths))]
    nodes = [helper.make_node("SequenceConstruct", names_a, ["sa"]),
             helper.make_node("SequenceConstruct", names_b, ["sb"]),
             helper.make_node("SequenceMap", ["sa", "sb", "w"], ["mapped", "shapes"], body=body)]
    inputs = [vi(nm, F, [n]) for nm, n in zip(names_a + names_b, lengths * 2)] + [vi("w", F, [1])]
    model = build(nodes, inputs, [seq_vi("mapped"), seq_vi("shapes", I64)], {"k": np.array([0.5], np.float32)})
    feeds = {nm: rand(n, i) for i, (nm, n) in enumerate(zip(names_a + names_b, lengths * 2))}
    feeds["w"] = np.array([2.0], np.float32)
    mapped, shapes_out = same_as_ort(model, feeds)
    assert [int(s[0]) for s in shapes_out] == lengths
    np.testing.assert_allclose(mapped[0], (feeds["a0"] + feeds["b0"]) * 2 + 0.5, rtol=1e-6)


# ---- Optional --------------------------------------------------------------------------------------


def test_optional_roundtrip_and_empty():
    tensor_type = helper.make_tensor_type_proto(F, [3])
    nodes = [
        helper.make_node("Optional", ["x"], ["o"]),
        helper.make_node("OptionalHasElement", ["o"], ["has"]),
        helper.make_node("OptionalGetElement", ["o"], ["back"]),
        helper.make_node("Optional", [], ["none"], type=tensor_type),
        helper.make_node("OptionalHasElement", ["none"], ["has_none"]),
        helper.make_node("OptionalGetElement", ["x"], ["plain"]),  # opset 18: a plain tensor passes through
    ]
    model = build(nodes, [vi("x", F, [3])],
                  [vi("has", BOOL, []), vi("back", F, [3]), vi("has_none", BOOL, []), vi("plain", F, [3])])
    x = rand(3)
    has, back, has_none, plain = same_as_ort(model, {"x": x})
    assert bool(has) and not bool(has_none)
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(plain, x)


def test_optional_get_element_of_empty_fails():
    nodes = [helper.make_node("Optional", [], ["o"], type=helper.make_tensor_type_proto(F, [2])),
             helper.make_node("OptionalGetElement", ["o"], ["y"])]
    model = build(nodes, [], [helper.make_value_info("y", helper.make_tensor_type_proto(F, [2]))])
    with pytest.raises(SporelingError, match="empty"):
        run_sporeling(model, {})
    assert is_empty_optional(None) and is_empty_optional(np.asarray(None))
    assert not is_empty_optional(np.array("x", object)) and not is_empty_optional([])

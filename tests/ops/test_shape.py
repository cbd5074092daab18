"""Shape and indexing kernels against onnxruntime.

Shape-deciding inputs (Reshape's shape, Slice's starts, Pad's pads...) are passed both as
initializers, so the planned path (infer + out=) runs, and as feeds, so the kernels' own allocation
runs. `assert_planned` checks that a constant-shape node really got a planned, writing step.
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
from sporeling.ops.shape import reshape, squeeze, unsqueeze

INT_MAX = np.iinfo(np.int64).max
WRITES = 1


def rand(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(-9, 10, shape).astype(dtype)


def i64(*values):
    return np.array(values, np.int64)


def assert_planned(op_type, inputs, attrs=None, opset=17, constants=(), n_outputs=1):
    """The node's step writes into planned buffers (its infer gave shapes) and matches the unplanned run."""
    consts = {k: inputs[k] for k in constants}
    model = make_model(op_type, inputs, n_outputs, attrs, opset, consts)
    feeds = {k: v for k, v in inputs.items() if k not in consts}
    m = sporeling.Model(from_model_proto(model), "t")
    plan = m.session.prepare(m.session.check_feeds(feeds))
    assert [s.mode for s in plan.steps] == [WRITES]


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


# ---- Reshape family --------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), const=st.booleans())
def test_reshape_zero_and_minus_one(shape, data, const):
    target = list(np.random.default_rng(len(shape)).permutation(shape))
    if data.draw(st.booleans()):
        target[data.draw(st.integers(0, len(target) - 1))] = -1
    k = data.draw(st.integers(0, len(target) - 1))
    if target[k] == shape[k] and target[k] != -1:
        target[k] = 0  # 0 copies the input's dim at the same position
    inputs = {"x": rand(shape), "shape": np.array(target, np.int64)}
    (y,) = check_op("Reshape", inputs, opset=14, constants=("shape",) if const else ())
    assert y.size == inputs["x"].size


def test_reshape_allowzero_and_views():
    x = np.zeros((0, 3, 4), np.float32)
    check_op("Reshape", {"x": x, "s": i64(3, 4, 0)}, {"allowzero": 1}, opset=14, constants=("s",))
    base = rand((2, 3, 4))
    assert np.shares_memory(reshape(base, i64(0, -1)), base)
    assert reshape(base, i64(0, -1)).shape == (2, 12)
    assert np.shares_memory(squeeze(base[None]), base) and np.shares_memory(unsqueeze(base, i64(-1)), base)
    assert lookup("Reshape", 21).out is False and lookup("Reshape", 21).infer is not None


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data())
def test_flatten(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape)))
    check_op("Flatten", {"x": rand(shape)}, {"axis": axis}, opset=13)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=5).map(tuple), const=st.booleans())
def test_squeeze_unsqueeze(shape, const):
    ones = [k - len(shape) if k % 2 else k for k, d in enumerate(shape) if d == 1]
    x = rand(shape)
    if ones:
        check_op("Squeeze", {"x": x, "axes": np.array(ones, np.int64)}, opset=13,
                 constants=("axes",) if const else ())
        check_op("Squeeze", {"x": x}, {"axes": ones}, opset=11)
    check_op("Squeeze", {"x": x}, opset=13)
    new = sorted({0, len(shape), -1})
    check_op("Unsqueeze", {"x": x, "axes": np.array(new, np.int64)}, opset=13, constants=("axes",) if const else ())
    check_op("Unsqueeze", {"x": x}, {"axes": [0, 2]}, opset=11)


def test_identity_passes_sequences_through():
    from sporeling.ops.shape import identity

    seq = [rand((2,)), rand((3,))]
    assert identity(seq) is seq
    check_op("Identity", {"x": rand((2, 3))}, opset=21)


# ---- Transpose / Concat / Split / Expand / Tile ------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data())
def test_transpose(shape, data):
    perm = data.draw(st.permutations(range(len(shape))))
    check_op("Transpose", {"x": rand(shape, np.int32)}, {"perm": list(perm)}, opset=13)
    check_op("Transpose", {"x": rand(shape)}, opset=13)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data())
def test_concat(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = axis % len(shape)
    parts = {f"x{k}": rand(shape[:a] + (data.draw(st.integers(0, 3)),) + shape[a + 1 :], seed=k) for k in range(3)}
    check_op("Concat", parts, {"axis": axis}, opset=13)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), const=st.booleans())
def test_split(shape, data, const):
    axis = data.draw(st.integers(0, len(shape) - 1))
    dim = shape[axis]
    first = data.draw(st.integers(0, dim))
    sizes = np.array([first, dim - first], np.int64)
    x = rand(shape)
    check_op("Split", {"x": x, "split": sizes}, {"axis": axis}, n_outputs=2, opset=13,
             constants=("split",) if const else ())
    check_op("Split", {"x": x}, {"axis": axis - len(shape), "split": sizes.tolist()}, n_outputs=2, opset=11)
    check_op("Split", {"x": x, "split": np.array([dim], np.int64)}, {"axis": axis}, opset=13)  # one output
    n = data.draw(st.integers(1, 3))
    if n <= dim:
        check_op("Split", {"x": x}, {"axis": axis, "num_outputs": n}, n_outputs=n, opset=18)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), const=st.booleans())
def test_expand_and_tile(shape, data, const):
    x = rand(shape)
    target = [data.draw(st.sampled_from([1, d])) if d > 1 else data.draw(st.integers(1, 3)) for d in shape]
    target = [data.draw(st.integers(1, 2))] + target
    check_op("Expand", {"x": x, "s": np.array(target, np.int64)}, opset=13, constants=("s",) if const else ())
    reps = np.array([data.draw(st.integers(0, 3)) for _ in shape], np.int64)
    check_op("Tile", {"x": x, "r": reps}, opset=13, constants=("r",) if const else ())


def test_data_movers_are_planned_for_constant_shapes():
    x = rand((2, 3, 4))
    assert_planned("Transpose", {"x": x}, {"perm": [2, 0, 1]})
    assert_planned("Slice", {"x": x, "s": i64(1), "e": i64(-1)}, constants=("s", "e"))
    assert_planned("Tile", {"x": x, "r": i64(1, 2, 3)}, constants=("r",))
    assert_planned("Pad", {"x": x, "p": i64(0, 1, -1, 1, 0, 2)}, constants=("p",))
    assert_planned("Gather", {"x": x, "i": i64(1, -1)}, {"axis": 1})
    assert_planned("TopK", {"x": x, "k": i64(2)}, n_outputs=2, constants=("k",))


# ---- Slice / Pad / CenterCropPad -------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), const=st.booleans())
def test_slice(shape, data, const):
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True))
    ends_pool = st.sampled_from([INT_MAX, -INT_MAX, -1, 0, 1, 2, 5, -5])
    starts = [data.draw(st.integers(-6, 6)) for _ in axes]
    ends = [data.draw(ends_pool) for _ in axes]
    steps = [data.draw(st.sampled_from([1, 2, -1, -2, 3])) for _ in axes]
    # onnxruntime reads end=INT64_MAX with a negative step as "through index 0"; the spec (and ONNX's
    # reference) clamp it to dim - 1, giving nothing. test_slice_spec_clamping covers that case.
    ends = [-INT_MAX if e == INT_MAX and st_ < 0 else e for e, st_ in zip(ends, steps)]
    axes = [a - len(shape) if data.draw(st.booleans()) else a for a in axes]
    inputs = {"x": rand(shape), "starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64),
              "axes": np.array(axes, np.int64), "steps": np.array(steps, np.int64)}
    check_op("Slice", inputs, opset=13, constants=("starts", "ends", "axes", "steps") if const else ())


def test_slice_spec_clamping():
    from sporeling.ops.shape_slice import slice_
    x = np.arange(4.0)
    assert slice_(x, i64(3), i64(INT_MAX), i64(0), i64(-1)).size == 0
    np.testing.assert_array_equal(slice_(x, i64(9), i64(-INT_MAX), i64(0), i64(-2)), [3.0, 1.0])
    np.testing.assert_array_equal(slice_(x, i64(-9), i64(INT_MAX)), x)


def test_slice_attribute_form_and_default_axes():
    x = rand((4, 5))
    check_op("Slice", {"x": x}, {"starts": [1, -3], "ends": [3, 100]}, opset=1)
    check_op("Slice", {"x": x, "s": i64(3, 4), "e": i64(0, -100), "a": i64(0, 1), "st": i64(-1, -2)}, opset=13)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(2, 4), min_size=1, max_size=3).map(tuple), data=st.data(), const=st.booleans())
def test_pad(shape, data, const):
    mode = data.draw(st.sampled_from(["constant", "reflect", "edge", "wrap"]))
    low = -1 if mode == "constant" else 0
    # onnxruntime refuses reflect pads of dim or more (nothing left to mirror)
    pads = [data.draw(st.integers(low, min(2, d - 1) if mode == "reflect" else 2)) for d in shape + shape]
    inputs = {"x": rand(shape), "pads": np.array(pads, np.int64), "v": np.array(1.5, np.float32)}
    check_op("Pad", inputs, {"mode": mode}, opset=19, constants=("pads",) if const else ())


def test_pad_axes_and_old_forms():
    x = rand((3, 4, 5))
    check_op("Pad", {"x": x, "p": i64(1, -1, 2, 0), "v": np.array(0.0, np.float32), "a": i64(-1, 0)},
             opset=18, constants=("p", "a"))
    check_op("Pad", {"x": x}, {"pads": [0, 1, 2, 0, 0, 1], "value": 2.0, "mode": "edge"}, opset=2)
    check_op("Pad", {"x": rand((3, 4), np.int32), "p": i64(1, 1, 1, 1)}, {"mode": "constant"}, opset=13)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data())
def test_center_crop_pad(shape, data):
    target = np.array([data.draw(st.integers(1, 6)) for _ in shape], np.int64)
    check_op("CenterCropPad", {"x": rand(shape), "s": target}, opset=18, constants=("s",))
    if len(shape) > 1:
        check_op("CenterCropPad", {"x": rand(shape), "s": target[:1]}, {"axes": [-1]}, opset=18)


# ---- generators: Shape, Size, ConstantOfShape, Range, EyeLike, Trilu, OneHot ------------------------


@settings(max_examples=25, deadline=None)
@given(shape=shapes, start=st.integers(-5, 5), end=st.one_of(st.none(), st.integers(-5, 5)))
def test_shape_and_size(shape, start, end):
    attrs = {"start": start} if end is None else {"start": start, "end": end}
    check_op("Shape", {"x": rand(shape)}, attrs, opset=15)
    check_op("Size", {"x": rand(shape)}, opset=13)


def test_constant_of_shape():
    from onnx import numpy_helper

    value = numpy_helper.from_array(np.array([7], np.int32))
    check_op("ConstantOfShape", {"s": i64(2, 0, 3)}, {"value": value}, opset=9, constants=("s",))
    check_op("ConstantOfShape", {"s": i64(2, 3)}, opset=9)


@settings(max_examples=25, deadline=None)
@given(start=st.integers(-20, 20), span=st.integers(-20, 20), delta=st.integers(-4, 4).filter(bool),
       dtype=st.sampled_from([np.int32, np.int64, np.float32, np.float64]), const=st.booleans())
def test_range(start, span, delta, dtype, const):
    inputs = {"a": np.array(start, dtype), "b": np.array(start + span, dtype), "d": np.array(delta * 0.75, dtype)
              if np.dtype(dtype).kind == "f" else np.array(delta, dtype)}
    check_op("Range", inputs, opset=11, constants=("a", "b", "d") if const else ())


def test_eyelike_trilu_onehot():
    for k in (-2, 0, 1, 3):
        check_op("EyeLike", {"x": rand((3, 4))}, {"k": k}, opset=9)
        check_op("Trilu", {"x": rand((2, 3, 4)), "k": i64(k)}, {"upper": k % 2}, opset=14)
    check_op("EyeLike", {"x": rand((3, 3), np.int32)}, {"dtype": 1}, opset=9)
    for axis in (-1, 0, 1):
        check_op("OneHot", {"i": i64(0, -1, 3, 7, -5).reshape(5), "depth": np.array(5, np.int64),
                            "v": np.array([2, 9], np.float32)}, {"axis": axis}, opset=11, constants=("depth",))


def test_depth_space_reverse_compress():
    x = rand((2, 8, 3, 2))
    for mode in ("DCR", "CRD"):
        check_op("DepthToSpace", {"x": x}, {"blocksize": 2, "mode": mode}, opset=13)
    check_op("SpaceToDepth", {"x": rand((1, 3, 4, 6))}, {"blocksize": 2}, opset=13)
    check_op("ReverseSequence", {"x": rand((4, 3, 2)), "l": i64(4, 1, 2)}, {"batch_axis": 1, "time_axis": 0},
             opset=10)
    check_op("ReverseSequence", {"x": rand((3, 5)), "l": i64(0, 5, 3)}, {"batch_axis": 0, "time_axis": 1},
             opset=10)
    cond = np.array([True, False, True], bool)
    check_op("Compress", {"x": rand((3, 4)), "c": cond}, {"axis": 0}, opset=11)
    check_op("Compress", {"x": rand((3, 4)), "c": cond}, opset=11, constants=("c",))


# ---- indexing ----------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data())
def test_gather_and_gather_elements(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    dim = shape[axis]
    idx_shape = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple))
    idx = np.random.default_rng(dim).integers(-dim, dim, idx_shape).astype(np.int64)
    check_op("Gather", {"x": rand(shape), "i": idx}, {"axis": axis}, opset=13)
    el_shape = tuple(data.draw(st.integers(1, d)) for d in shape)
    el_idx = np.random.default_rng(7).integers(-dim, dim, el_shape).astype(np.int32)
    check_op("GatherElements", {"x": rand(shape), "i": el_idx}, {"axis": axis}, opset=13)


def test_gather_scalar_index_drops_the_axis():
    from sporeling.ops.shape_index import gather

    x = rand((2, 3, 4))
    np.testing.assert_array_equal(gather(x, np.array(-1), axis=1), x[:, -1])
    out = np.empty((2, 4), np.float32)
    assert gather(x, np.array(2, np.int32), axis=1, out=out) is out
    np.testing.assert_array_equal(out, x[:, 2])


def test_gather_nd():
    x = rand((2, 3, 4))
    check_op("GatherND", {"x": x, "i": np.array([[1, -1], [0, 2]], np.int64)}, opset=13)
    check_op("GatherND", {"x": x, "i": np.array([[[2], [0]], [[1], [1]]], np.int64)}, {"batch_dims": 1}, opset=13)
    check_op("GatherND", {"x": x, "i": np.array([[0, 1, 3]], np.int64)}, opset=13)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), reduction=st.sampled_from(["none", "add", "mul", "max", "min"]))
def test_scatter_elements(shape, data, reduction):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    dim = shape[axis]
    up_shape = tuple(data.draw(st.integers(1, d)) for d in shape)
    rng = np.random.default_rng(dim)
    if reduction == "none":  # duplicate targets would be order-dependent: use distinct positions
        a = axis % len(shape)
        up_shape = up_shape[:a] + (min(up_shape[a], dim),) + up_shape[a + 1 :]
        idx = np.argsort(rng.random(up_shape[:a] + (dim,) + up_shape[a + 1 :]), axis=a)
        idx = np.take(idx, np.arange(up_shape[a]), axis=a) - dim * (rng.random(up_shape) < 0.5)
    else:
        idx = rng.integers(-dim, dim, up_shape)
    inputs = {"x": rand(shape), "i": idx.astype(np.int64), "u": rand(up_shape, seed=3)}
    check_op("ScatterElements", inputs, {"axis": axis, "reduction": reduction}, opset=18)


def test_scatter_nd_and_old_scatter():
    x = rand((4, 3))
    for reduction in ("none", "add", "mul", "max", "min"):
        idx = np.array([[1], [3]] if reduction == "none" else [[1], [3], [1]], np.int64)
        check_op("ScatterND", {"x": x, "i": idx, "u": rand((len(idx), 3), seed=5)}, {"reduction": reduction},
                 opset=18)
    check_op("ScatterND", {"x": x, "i": np.array([[0, -1], [2, 1]], np.int64), "u": rand((2,))}, opset=13)
    check_op("Scatter", {"x": x, "i": np.array([[1, 0, 2]], np.int64), "u": rand((1, 3))}, {"axis": 0}, opset=10)


def test_scatter_runs_in_place_on_a_dying_planned_buffer():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("ScatterND", ["t", "i", "u"], ["s"], reduction="add"),
             helper.make_node("Transpose", ["s"], ["y"], perm=[1, 0])]
    x, idx, upd = rand((3, 4)), np.array([[1], [1], [3]], np.int64), rand((3, 3), seed=2)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
                              [onnx_array(idx, "i"), onnx_array(upd, "u")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    m = sporeling.Model(from_model_proto(model), "t")
    want = x.T.copy()
    np.add.at(want, (idx[:, 0],), upd)
    np.testing.assert_allclose(m.run({"x": x})["y"], want.T, rtol=1e-6)
    plan = m.session.prepare(m.session.check_feeds({"x": x}))
    transposed, scattered = plan.steps[0].outs[0], plan.steps[1].outs[0]
    assert np.shares_memory(plan.template[transposed], plan.template[scattered])


def onnx_array(value, name):
    from onnx import numpy_helper

    return numpy_helper.from_array(value, name)


def test_tensor_scatter():
    from sporeling.ops.shape_index import tensor_scatter

    cache = rand((2, 3, 5, 2))
    update = rand((2, 3, 2, 2), seed=1)
    got = tensor_scatter(cache, update, i64(1, 4), mode="circular")
    want = cache.copy()
    for b, start in enumerate((1, 4)):
        for s in range(2):
            want[b, :, (start + s) % 5] = update[b, :, s]
    np.testing.assert_array_equal(got, want)
    lin = tensor_scatter(cache, update, None)
    np.testing.assert_array_equal(lin[:, :, :2], update)
    np.testing.assert_array_equal(lin[:, :, 2:], cache[:, :, 2:])


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 100))
def test_nonzero_unique(shape, seed):
    x = np.random.default_rng(seed).integers(0, 3, shape).astype(np.float32)
    check_op("NonZero", {"x": x}, opset=13)
    check_op("Unique", {"x": x}, {"sorted": 1}, n_outputs=4, opset=11)
    check_op("Unique", {"x": x}, {"sorted": 0}, n_outputs=4, opset=11)
    check_op("Unique", {"x": x}, {"sorted": 1, "axis": -1}, n_outputs=4, opset=11)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, data=st.data(), const=st.booleans())
def test_topk_ties(shape, data, const):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    k = data.draw(st.integers(1, shape[axis]))
    dtype = data.draw(st.sampled_from([np.float32, np.int64, np.uint8]))
    x = np.random.default_rng(k).integers(0, 3, shape).astype(dtype)  # many ties
    attrs = {"axis": axis, "largest": data.draw(st.sampled_from([0, 1]))}
    check_op("TopK", {"x": x, "k": i64(k)}, attrs, n_outputs=2, opset=11, constants=("k",) if const else ())


@pytest.mark.parametrize("largest", [0, 1])
def test_topk_small_k_of_long_axis(largest):
    """The partition path (k much smaller than the axis), ties crossing the k-th place included."""
    x = np.random.default_rng(largest).integers(0, 4, (3, 90, 2)).astype(np.float32)
    check_op("TopK", {"x": x, "k": i64(7)}, {"axis": 1, "largest": largest}, n_outputs=2, opset=11)
    check_op("TopK", {"x": x.astype(np.int64), "k": i64(3)}, {"axis": -2, "largest": largest}, n_outputs=2,
             opset=11, constants=("k",))


def test_topk_attribute_form():
    x = rand((3, 5))
    model = make_model("TopK", {"x": x}, 2, {"k": 2}, opset=1)
    values, index = run_sporeling(model, {"x": x})
    np.testing.assert_array_equal(index, np.argsort(-x, axis=-1, kind="stable")[:, :2])
    np.testing.assert_array_equal(values, np.sort(x, axis=-1)[:, ::-1][:, :2])


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])

"""Elementwise arithmetic, math, logic and cast kernels against onnxruntime.

Besides one-node models (inputs fed, or some passed as initializers so the planned path with
`infer` + `out=` runs), `check_chain` puts a unary op in front of the op under test: its input is
then an arena buffer that dies at the op, so in-place execution (`inplace={0: 0}`) is exercised.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from tests.ops.oracle import check_op, helper, make_model, onnx, run_ort, run_sporeling

import sporeling  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402
from sporeling.ops import lookup  # noqa: E402
from sporeling.runtime.session import WRITES  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None)


def chain_model(op_type: str, inputs: dict[str, np.ndarray], attrs: dict | None = None, opset: int = 17,
                pre: str = "Neg", constants: tuple[str, ...] = (), n_outputs: int = 1):
    """Model `pre(first input) -> op_type(..) -> Identity`: the op reads and writes intermediate
    values, which the planner places in the arena (and may share, for in-place ops)."""
    names = list(inputs)
    first = names[0]
    nodes = [
        helper.make_node(pre, [first], ["t0"]),
        helper.make_node(op_type, ["t0"] + [n if inputs[n] is not None else "" for n in names[1:]],
                         [f"m{k}" for k in range(n_outputs)], **(attrs or {})),
    ] + [helper.make_node("Identity", [f"m{k}"], [f"y{k}"]) for k in range(n_outputs)]
    graph_inputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in inputs.items() if v is not None and k not in constants
    ]
    inits = [onnx.numpy_helper.from_array(inputs[k], k) for k in constants]
    outs = [onnx.ValueInfoProto(name=f"y{k}") for k in range(n_outputs)]
    graph = helper.make_graph(nodes, "chain", graph_inputs, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def check_chain(op_type: str, inputs: dict[str, np.ndarray], attrs: dict | None = None, opset: int = 17,
                pre: str = "Neg", constants: tuple[str, ...] = (), rtol: float = 1e-5, atol: float = 1e-6):
    """Runs the chain model in both engines and compares; checks that the op ran as a planned
    step, and in place when it declares so and its output matches its input's shape and dtype."""
    inputs = {k: None if v is None else np.asarray(v) for k, v in inputs.items()}
    model = chain_model(op_type, inputs, attrs, opset, pre, constants)
    feeds = {k: v for k, v in inputs.items() if v is not None and k not in constants}
    ours, theirs = run_sporeling(model, feeds), run_ort(model, feeds)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=op_type)
    assert_planned(model, feeds, op_type)
    return ours


def assert_planned(model, feeds, op_type):
    m = sporeling.Model(from_model_proto(model), "chain")
    plan = m.session.prepare(m.session.check_feeds(feeds))
    step = next(s for s in plan.steps if s.node.op_type == op_type)
    assert step.mode == WRITES, f"{op_type}: not a planned step"
    op = lookup(op_type, model.opset_import[0].version)
    for o_idx, i_idx in op.inplace.items():
        src, dst = plan.template[step.ins[i_idx]], plan.template[step.outs[o_idx]]
        if isinstance(src, np.ndarray) and src.shape == dst.shape and src.dtype == dst.dtype and src.size:
            assert np.shares_memory(src, dst), f"{op_type}: declared in-place but got its own buffer"


def rand(rng, shape, dtype, low=-5.0, high=5.0):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if dtype.kind in "iu":
        lo = max(int(low), np.iinfo(dtype).min)
        return np.asarray(rng.integers(lo, int(high) + 1, size=shape), dtype)
    return np.asarray(rng.uniform(low, high, size=shape), dtype)


# ---- binary arithmetic ---------------------------------------------------------------------------
@SETTINGS
@given(
    op=st.sampled_from(["Add", "Sub", "Mul", "Div"]),
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.int8, np.uint8, np.float16]),
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
    mode=st.sampled_from(["feeds", "const", "chain"]),
    seed=st.integers(0, 2**31),
)
def test_binary_arithmetic(op, dtype, shapes, mode, seed):
    rng = np.random.default_rng(seed)
    a_shape, b_shape = shapes.input_shapes
    a, b = rand(rng, a_shape, dtype, -50, 50), rand(rng, b_shape, dtype, -50, 50)
    if op == "Div":
        b[b == 0] = 3
    tol = dict(rtol=2e-3, atol=1e-2) if dtype == np.float16 else {}
    if mode == "chain" and np.dtype(dtype).kind != "u":
        check_chain(op, {"a": a, "b": b}, opset=14, **tol)
    else:
        check_op(op, {"a": a, "b": b}, opset=14, constants=("b",) if mode == "const" else (), **tol)


def test_integer_div_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 0, 9, -9, 2**62 + 1, -(2**62) - 3, 5], np.int64)
    b = np.array([2, 2, -2, -2, 3, 3, 3, 3, 7, -(2**40)], np.int64)
    (ours,) = check_op("Div", {"a": a, "b": b}, opset=14)
    expected = [int(x / y) if abs(x) < 2**50 else (abs(x) // abs(y)) * (1 if (x < 0) == (y < 0) else -1)
                for x, y in zip(a.tolist(), b.tolist())]
    assert ours.tolist() == expected


def test_integer_division_by_zero_is_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = chain_model("Div", {"a": np.ones(3, np.int32), "b": np.zeros(3, np.int32)}, opset=14)
        out = run_sporeling(model, {"a": np.ones(3, np.int32), "b": np.zeros(3, np.int32)})[0]
    assert out.dtype == np.int32 and out.shape == (3,)


@SETTINGS
@given(
    base=st.sampled_from([np.float32, np.float64, np.int32, np.int64]),
    expo=st.sampled_from([np.float32, np.float64, np.int32, np.int64]),
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4),
    const=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_pow_mixed_types(base, expo, shapes, const, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, shapes.input_shapes[0], base, 0, 4)
    if np.dtype(base).kind == "f":
        x = np.asarray(x + 0.5, base)
    y = rand(rng, shapes.input_shapes[1], expo, 0, 3)
    (ours,) = check_op("Pow", {"x": x, "y": y}, opset=15, constants=("y",) if const else (), rtol=1e-5)
    assert ours.dtype == x.dtype


@pytest.mark.parametrize("exponent", [2.0, 3.0, 0.5, 1.0, -1.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pow_constant_exponent_specialisations(exponent, dtype):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 4, size=(3, 5)).astype(dtype)
    y = np.array(exponent, dtype)
    check_op("Pow", {"x": x, "y": y}, opset=15, constants=("y",))
    check_chain("Pow", {"x": -x, "y": y}, opset=15, constants=("y",))
    # a rank-2 scalar exponent broadcasts a 1-D base up
    y2 = np.full((1, 1), exponent, dtype)
    check_op("Pow", {"x": x[0], "y": y2}, opset=15, constants=("y",))


def test_pow_integer_base_negative_exponent():
    x = np.array([1, 2, -1, 3, 0], np.int64)
    y = np.array([-1, -1, -3, 2, 4], np.int64)
    (ours,) = run_sporeling(chain_model("Pow", {"x": x, "y": y}, opset=15, pre="Abs"), {"x": x, "y": y})
    assert ours.dtype == np.int64 and ours.tolist() == [1, 0, 1, 9, 0]


@SETTINGS
@given(
    dtype=st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.float32, np.float64]),
    fmod=st.sampled_from([0, 1]),
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4),
    seed=st.integers(0, 2**31),
)
def test_mod(dtype, fmod, shapes, seed):
    if np.dtype(dtype).kind == "f":
        fmod = 1  # float Mod requires fmod=1
    rng = np.random.default_rng(seed)
    a, b = rand(rng, shapes.input_shapes[0], dtype, -30, 30), rand(rng, shapes.input_shapes[1], dtype, -9, 9)
    b[b == 0] = 4
    check_op("Mod", {"a": a, "b": b}, {"fmod": fmod}, opset=13)


# ---- unary math ----------------------------------------------------------------------------------
UNARY_DOMAINS = {
    "Neg": (-5, 5), "Abs": (-5, 5), "Reciprocal": (0.5, 5), "Sqrt": (0, 9), "Exp": (-10, 10),
    "Log": (0.01, 100), "Ceil": (-5, 5), "Floor": (-5, 5), "Round": (-5, 5), "Sign": (-3, 3),
    "Tanh": (-5, 5), "Sin": (-6, 6), "Cos": (-6, 6), "Tan": (-1.4, 1.4), "Asin": (-1, 1), "Acos": (-1, 1),
    "Atan": (-9, 9), "Sinh": (-5, 5), "Cosh": (-5, 5), "Asinh": (-9, 9), "Acosh": (1, 9), "Atanh": (-0.99, 0.99),
    "Erf": (-5, 5),
}
UNARY_REFERENCE = {
    "Neg": np.negative, "Abs": np.abs, "Reciprocal": np.reciprocal, "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log,
    "Ceil": np.ceil, "Floor": np.floor, "Round": np.rint, "Sign": np.sign, "Tanh": np.tanh, "Sin": np.sin,
    "Cos": np.cos, "Tan": np.tan, "Asin": np.arcsin, "Acos": np.arccos, "Atan": np.arctan, "Sinh": np.sinh,
    "Cosh": np.cosh, "Asinh": np.arcsinh, "Acosh": np.arccosh, "Atanh": np.arctanh,
    "Erf": np.vectorize(math.erf, otypes=[np.float64]),
}


def ort_supports(model) -> bool:
    try:
        run_ort(model, {})
    except Exception as e:  # onnxruntime lacks some float64 kernels (Acos, Erf, Celu...)
        return "NOT_IMPLEMENTED" not in str(e) and "INVALID_GRAPH" not in str(e)
    return True


@SETTINGS
@given(
    op=st.sampled_from(sorted(UNARY_DOMAINS)),
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
    chain=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_unary_math(op, dtype, shape, chain, seed):
    lo, hi = UNARY_DOMAINS[op]
    x = np.asarray(np.random.default_rng(seed).uniform(lo, hi, size=shape), dtype)
    opset = 13 if op != "Round" else 11
    model = chain_model(op, {"x": x}, opset=opset) if chain else make_model(op, {"x": x}, opset=opset)
    feed = -x if chain else x
    (ours,) = run_sporeling(model, {"x": np.asarray(feed)})
    assert ours.dtype == x.dtype and ours.shape == x.shape
    if chain:
        assert_planned(model, {"x": np.asarray(feed)}, op)
    expected = UNARY_REFERENCE[op](x.astype(np.float64)).astype(dtype)
    np.testing.assert_allclose(ours, expected, rtol=2e-6 if dtype == np.float32 else 1e-12, atol=1e-7)
    if ort_supports(make_model(op, {"x": np.zeros(0, dtype)}, opset=opset)):
        (theirs,) = run_ort(model, {"x": np.asarray(feed)})
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_round_halves_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.3, -4.7, np.inf, np.nan], np.float32)
    (ours,) = check_op("Round", {"x": x}, opset=11)
    np.testing.assert_array_equal(ours, [0, 2, 2, -0, -2, -2, 2, -5, np.inf, np.nan])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_erf_accuracy(dtype):
    """Against math.erf over the whole range (tails, tiny values, inf, nan), on an array large
    enough to be processed block by block."""
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 2.5, 150_000), np.logspace(-30, 1.6, 200), -np.logspace(-30, 1.6, 200),
                        [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan]]).astype(dtype)
    model = make_model("Erf", {"x": x}, opset=13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (ours,) = run_sporeling(model, {"x": x})
    exact = np.array([math.erf(v) if not math.isnan(v) else math.nan for v in x.astype(np.float64).tolist()])
    ulp = {np.float32: 2e-7, np.float64: 1e-14, np.float16: 1e-3}[dtype]
    assert ours.dtype == x.dtype
    np.testing.assert_allclose(ours.astype(np.float64), exact, rtol=ulp, atol=np.finfo(dtype).tiny)
    # in place on an arena buffer, processed block by block: the same values
    (chained,) = run_sporeling(chain_model("Erf", {"x": x}, opset=13), {"x": -x})
    np.testing.assert_array_equal(chained, ours)
    if dtype == np.float32:
        np.testing.assert_allclose(ours, run_ort(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


# ---- variadic -------------------------------------------------------------------------------------
@SETTINGS
@given(
    op=st.sampled_from(["Max", "Min", "Sum", "Mean"]),
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8]),
    shapes=st.integers(1, 4).flatmap(
        lambda n: mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=3, max_side=4)),
    chain=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_variadic(op, dtype, shapes, chain, seed):
    if op in ("Sum", "Mean") and np.dtype(dtype).kind != "f":
        dtype = np.float32
    rng = np.random.default_rng(seed)
    inputs = {f"x{k}": rand(rng, s, dtype, 0, 20) for k, s in enumerate(shapes.input_shapes)}
    chain = chain and np.dtype(dtype).kind != "u"
    model = chain_model(op, inputs, opset=13) if chain else make_model(op, inputs, opset=13)
    feeds = dict(inputs)
    if chain:
        feeds["x0"] = np.asarray(-inputs["x0"])
    (ours,) = run_sporeling(model, feeds)
    if chain:
        assert_planned(model, feeds, op)
    ufunc = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add, "Mean": np.add}[op]
    expected = functools.reduce(ufunc, inputs.values())
    if op == "Mean":
        expected = expected / len(inputs)
    assert ours.dtype == np.dtype(dtype) and ours.shape == shapes.result_shape
    np.testing.assert_allclose(ours, np.asarray(expected, dtype), rtol=1e-6)
    if ort_supports(make_model(op, {k: np.zeros(0, dtype) for k in inputs}, opset=13)):
        np.testing.assert_allclose(ours, run_ort(model, feeds)[0], rtol=1e-6)


# ---- Clip and Where -----------------------------------------------------------------------------
@SETTINGS
@given(
    dtype=st.sampled_from([np.float32, np.float64, np.int8, np.int32, np.int64]),
    lo=st.one_of(st.none(), st.integers(-6, 6)),
    hi=st.one_of(st.none(), st.integers(-6, 6)),
    const=st.booleans(),
    chain=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_clip_inputs(dtype, lo, hi, const, chain, seed):
    x = rand(np.random.default_rng(seed), (3, 4), dtype, -10, 10)
    inputs = {"x": x, "lo": None if lo is None else np.array(lo, dtype),
              "hi": None if hi is None else np.array(hi, dtype)}
    consts = tuple(k for k in ("lo", "hi") if const and inputs[k] is not None)
    if chain:
        check_chain("Clip", inputs, opset=13, constants=consts)
    else:
        check_op("Clip", inputs, opset=13, constants=consts)


@pytest.mark.parametrize("attrs", [{}, {"min": -1.5}, {"max": 0.25}, {"min": -0.5, "max": 0.5},
                                   {"min": 1.0, "max": -1.0}])
def test_clip_attributes_opset6(attrs):
    x = np.random.default_rng(0).uniform(-3, 3, (2, 3, 4)).astype(np.float32)
    if attrs.get("min", -1) <= attrs.get("max", 1):
        (ours,) = check_op("Clip", {"x": x}, attrs, opset=6)
    else:  # onnxruntime refuses min > max; ONNX says every value becomes max
        (ours,) = run_sporeling(make_model("Clip", {"x": x}, attrs=attrs, opset=6), {"x": x})
    expected = np.minimum(np.maximum(x, attrs.get("min", -np.inf)), attrs.get("max", np.inf))
    np.testing.assert_array_equal(ours, expected.astype(np.float32))


@SETTINGS
@given(
    dtype=st.sampled_from([np.float32, np.int64, np.uint8, np.bool_]),
    shapes=mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=4),
    seed=st.integers(0, 2**31),
)
def test_where(dtype, shapes, seed):
    rng = np.random.default_rng(seed)
    c_shape, x_shape, y_shape = shapes.input_shapes
    inputs = {"c": rand(rng, c_shape, np.bool_), "x": rand(rng, x_shape, dtype), "y": rand(rng, y_shape, dtype)}
    model = make_model("Where", inputs, opset=16)
    (ours,) = run_sporeling(model, inputs)
    assert ours.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ours, np.where(inputs["c"], inputs["x"], inputs["y"]))
    if dtype != np.bool_:  # onnxruntime has no bool Where
        np.testing.assert_array_equal(ours, run_ort(model, inputs)[0])


def test_where_output_reuses_x_buffer():
    """X is an intermediate that dies at Where and has the output's shape: the in-place path, with
    NaN, inf and -0 that the bit blend must carry exactly."""
    rng = np.random.default_rng(3)
    c, x, y = rng.random((4, 5)) < 0.5, rng.normal(size=(4, 5)).astype(np.float32), np.float32([[np.nan]])
    x[0, :3] = [np.inf, -0.0, np.nan]
    nodes = [helper.make_node("Neg", ["x"], ["nx"]), helper.make_node("Where", ["c", "nx", "y"], ["w"]),
             helper.make_node("Identity", ["w"], ["out"])]
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in (("c", c), ("x", x), ("y", y))]
    graph = helper.make_graph(nodes, "w", ins, [onnx.ValueInfoProto(name="out")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=10)
    (ours,) = run_sporeling(model, {"c": c, "x": x, "y": y})
    expected = np.where(c, -x, y)
    assert ours.tobytes() == expected.tobytes()
    assert_planned(model, {"c": c, "x": x, "y": y}, "Where")


def test_where_strings():
    c = np.array([True, False, True])
    x, y = np.array(["a", "b", "c"], object), np.array(["x", "y", "z"], object)
    model = make_model("Where", {"c": c, "x": x, "y": y}, opset=16)
    (ours,) = run_sporeling(model, {"c": c, "x": x, "y": y})
    assert ours.tolist() == ["a", "y", "c"] == run_ort(model, {"c": c, "x": x, "y": y})[0].tolist()


# ---- comparison, logic, bitwise ------------------------------------------------------------------
@SETTINGS
@given(
    op=st.sampled_from(["Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"]),
    dtype=st.sampled_from([np.float32, np.float64, np.int8, np.int32, np.int64, np.uint16, np.uint64]),
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4),
    const=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_comparisons(op, dtype, shapes, const, seed):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, shapes.input_shapes[0], dtype, 0, 3), rand(rng, shapes.input_shapes[1], dtype, 0, 3)
    (ours,) = check_op(op, {"a": a, "b": b}, opset=19, constants=("b",) if const else ())
    assert ours.dtype == np.bool_


def test_equal_strings():
    a = np.array([["a", "bc"], ["", "d"]], object)
    b = np.array(["a", "d"], object)
    (ours,) = check_op("Equal", {"a": a, "b": b}, opset=19)
    assert ours.tolist() == [[True, False], [False, True]]


@SETTINGS
@given(
    op=st.sampled_from(["And", "Or", "Xor"]),
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
    chain=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_boolean_logic(op, shapes, chain, seed):
    rng = np.random.default_rng(seed)
    inputs = {"a": rand(rng, shapes.input_shapes[0], np.bool_), "b": rand(rng, shapes.input_shapes[1], np.bool_)}
    if chain:
        check_chain(op, inputs, opset=7, pre="Not")
    else:
        check_op(op, inputs, opset=7)


def test_not():
    x = np.random.default_rng(0).random((3, 4)) < 0.5
    (ours,) = check_op("Not", {"x": x}, opset=1)
    np.testing.assert_array_equal(ours, ~x)


@SETTINGS
@given(
    op=st.sampled_from(["BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitShiftLEFT", "BitShiftRIGHT"]),
    dtype=st.sampled_from([np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int32]),
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4),
    seed=st.integers(0, 2**31),
)
def test_bitwise(op, dtype, shapes, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, size=shapes.input_shapes[0], dtype=dtype, endpoint=True)
    if op.startswith("BitShift"):
        dtype = np.dtype(dtype).str.replace("i", "u")  # BitShift is unsigned only
        a = a.astype(dtype)
        b = rng.integers(0, 8 * np.dtype(dtype).itemsize, size=shapes.input_shapes[1]).astype(dtype)
        (ours,) = check_op("BitShift", {"a": a, "b": b}, {"direction": op[8:]}, opset=11)
        ref = np.left_shift(a, b) if op.endswith("LEFT") else np.right_shift(a, b)
        np.testing.assert_array_equal(ours, ref)
    else:
        b = rng.integers(info.min, info.max, size=shapes.input_shapes[1], dtype=dtype, endpoint=True)
        check_op(op, {"a": a, "b": b}, opset=18)


def test_bitwise_not():
    x = np.array([0, 1, 255, 128], np.uint8)
    (ours,) = check_op("BitwiseNot", {"x": x}, opset=18)
    assert ours.tolist() == [255, 254, 0, 127]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("attrs", [{}, {"detect_negative": 0}, {"detect_positive": 0},
                                   {"detect_negative": 0, "detect_positive": 0}])
def test_isinf_isnan(dtype, attrs):
    x = np.array([[1.0, np.inf, -np.inf], [np.nan, 0.0, -2.0]], dtype)
    (ours,) = check_op("IsInf", {"x": x}, attrs, opset=20)
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    np.testing.assert_array_equal(ours, (np.isposinf(x) & bool(pos)) | (np.isneginf(x) & bool(neg)))
    (nan,) = check_op("IsNaN", {"x": x}, opset=20)
    np.testing.assert_array_equal(nan, np.isnan(x))


# ---- Cast -----------------------------------------------------------------------------------------
NUMERIC = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64,
           np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]


@SETTINGS
@given(src=st.sampled_from(NUMERIC), dst=st.sampled_from(NUMERIC), chain=st.booleans(),
       shape=st.lists(st.integers(0, 4), max_size=3).map(tuple), seed=st.integers(0, 2**31))
def test_cast_numeric(src, dst, chain, shape, seed):
    rng = np.random.default_rng(seed)
    # values every destination holds (out-of-range float -> int is undefined in ONNX)
    x = rand(rng, shape, src, 0, 100)
    if np.dtype(src).kind == "f":
        x = np.asarray(x + rng.uniform(0, 0.99, size=shape), src)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    pre_ok = chain and np.dtype(src).kind in "f" and np.dtype(dst).kind in "f"
    if pre_ok:
        check_chain("Cast", {"x": x}, {"to": to}, opset=21, pre="Abs")
    else:
        check_op("Cast", {"x": x}, {"to": to}, opset=21, rtol=1e-3)


def test_cast_integer_wraps_and_bool():
    x = np.array([200, -56, 300, 0, -1], np.int16)
    (ours,) = check_op("Cast", {"x": x}, {"to": onnx.TensorProto.INT8}, opset=21)
    assert ours.tolist() == [-56, -56, 44, 0, -1]
    f = np.array([0.0, -0.0, 0.1, np.nan, -3.0], np.float32)
    (b,) = check_op("Cast", {"x": f}, {"to": onnx.TensorProto.BOOL}, opset=21)
    assert b.tolist() == [False, False, True, True, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_])
def test_cast_to_string_matches_onnxruntime(dtype):
    if np.dtype(dtype).kind == "f":
        x = np.array([0.1, 1 / 3, 1e10, 1e-7, -0.0, np.inf, -np.inf, np.nan, 100.0, 123456789.0, -2.5])
        with np.errstate(over="ignore"):
            x = x.astype(dtype)
    else:
        x = np.array([0, 1, 1, 0], dtype) if dtype == np.bool_ else np.array([0, 7, 255, 42], dtype)
    model = make_model("Cast", {"x": x}, attrs={"to": onnx.TensorProto.STRING}, opset=21)
    ours, theirs = run_sporeling(model, {"x": x})[0], run_ort(model, {"x": x})[0]
    assert ours.dtype == object and ours.tolist() == theirs.tolist()


def test_cast_from_string():
    s = np.array(["3.14", "1e-5", "1E8", "INF", "+inf", "-INF", "NaN", " 7", "-0"], object)
    (f,) = check_op("Cast", {"s": s}, {"to": onnx.TensorProto.FLOAT}, opset=21)
    assert f.dtype == np.float32 and np.isnan(f[6]) and f[3] == np.inf
    ints = np.array(["100", "-7", "2", "18446744073709551615"], object)
    model = make_model("Cast", {"s": ints}, attrs={"to": onnx.TensorProto.UINT64}, opset=21)
    assert run_sporeling(model, {"s": ints})[0].tolist() == [100, 2**64 - 7, 2, 2**64 - 1]
    (i8,) = check_op("Cast", {"s": ints[:3]}, {"to": onnx.TensorProto.UINT8}, opset=21)
    assert i8.tolist() == [100, 249, 2]
    frac = np.array(["100.5", "-2.7"], object)
    model = make_model("Cast", {"s": frac}, attrs={"to": onnx.TensorProto.INT32}, opset=21)
    assert run_sporeling(model, {"s": frac})[0].tolist() == [100, -2]
    scalar = np.array("300", object)  # 0-d, out of int8's range: wraps like an integer cast
    model = make_model("Cast", {"s": scalar}, attrs={"to": onnx.TensorProto.INT8}, opset=21)
    (wrapped,) = run_sporeling(model, {"s": scalar})
    assert wrapped.shape == () and wrapped.dtype == np.int8 and int(wrapped) == 44


def test_cast_round_trip_through_planned_strings():
    """float -> string -> float inside one graph: the string tensor is a planned intermediate."""
    x = np.array([[0.5, -2.25, 1e10], [3.0, -0.0, 7.125]], np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["s"], to=onnx.TensorProto.STRING),
             helper.make_node("Cast", ["s"], ["y"], to=onnx.TensorProto.DOUBLE)]
    graph = helper.make_graph(nodes, "rt", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
                              [onnx.ValueInfoProto(name="y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    m = sporeling.Model(from_model_proto(model), "rt")
    for _ in range(2):  # the second run reuses the plan
        out = m.run({"x": x})["y"]
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, x.astype(np.float64))
    plan = m.session.prepare(m.session.check_feeds({"x": x}))
    assert all(s.mode == WRITES for s in plan.steps)


@SETTINGS
@given(src=st.sampled_from(NUMERIC), dst=st.sampled_from(NUMERIC), seed=st.integers(0, 2**31))
def test_cast_like(src, dst, seed):
    x = rand(np.random.default_rng(seed), (2, 3), src, 0, 100)
    like = np.zeros((1,), dst)
    (ours,) = check_op("CastLike", {"x": x, "like": like}, opset=21, constants=("like",), rtol=1e-3)
    assert ours.dtype == np.dtype(dst)


@pytest.mark.parametrize("src,dst", [(np.float32, np.int32), (np.int64, np.float64), (np.uint16, np.int16),
                                     (np.bool_, np.uint8), (np.int8, np.uint8)])
def test_bitcast(src, dst):
    x = np.arange(-3, 3).astype(src).reshape(2, 3)
    model = make_model("BitCast", {"x": x}, attrs={"to": helper.np_dtype_to_tensor_dtype(np.dtype(dst))}, opset=26)
    (ours,) = run_sporeling(model, {"x": x})
    assert ours.dtype == np.dtype(dst) and ours.shape == x.shape
    np.testing.assert_array_equal(ours, x.view(dst))

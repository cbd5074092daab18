"""MatMul, Gemm, Einsum and Det against onnxruntime, with shapes and attributes drawn by hypothesis.

Weights are passed both as initializers (the planned path: infer + make + out=) and as feeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ops.oracle import check_op, make_model, run_sporeling

import sporeling  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402
from sporeling.ops.matmul import einsum_shape, matmul_shape  # noqa: E402
from sporeling.runtime.session import WRITES  # noqa: E402


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# ---- MatMul ------------------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    m, k, n = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    a_rank1, b_rank1 = draw(st.booleans()), draw(st.booleans())

    def bcast(dims):  # knock some batch dims down to 1 or drop leading ones
        dims = [1 if draw(st.booleans()) else d for d in dims]
        return dims[draw(st.integers(0, len(dims))):]

    a = [k] if a_rank1 else bcast(batch) + [m, k]
    b = [k] if b_rank1 else bcast(batch) + [k, n]
    return tuple(a), tuple(b)


@settings(max_examples=25, deadline=None)
@given(shapes=matmul_shapes(), const_b=st.booleans(), seed=st.integers(0, 2**16))
def test_matmul_matches_onnxruntime(shapes, const_b, seed):
    rng = np.random.default_rng(seed)
    a, b = _rand(rng, shapes[0]), _rand(rng, shapes[1])
    ours = check_op("MatMul", {"a": a, "b": b}, opset=13, constants=("b",) if const_b else (), rtol=1e-5, atol=1e-5)
    assert ours[0].shape == np.matmul(a, b).shape == matmul_shape(a.shape, b.shape)


def test_matmul_stacked_rows_and_half():
    rng = np.random.default_rng(1)
    a, w = _rand(rng, (2, 7, 16)), _rand(rng, (16, 5))
    check_op("MatMul", {"a": a, "w": w}, opset=13, constants=("w",), rtol=1e-5, atol=1e-5)
    # a transposed (non-contiguous) left operand must not take the folded-rows path wrongly
    check_op("MatMul", {"a": np.ascontiguousarray(a.transpose(1, 0, 2)), "w": w}, opset=13, rtol=1e-5, atol=1e-5)
    ah, wh = a.astype(np.float16), w.astype(np.float16)
    ours = check_op("MatMul", {"a": ah, "w": wh}, opset=13, rtol=1e-2, atol=1e-2)
    assert ours[0].dtype == np.float16
    ints = check_op("MatMul", {"a": (a * 10).astype(np.int32), "w": (w * 10).astype(np.int32)}, opset=13)
    assert ints[0].dtype == np.int32


def test_matmul_is_planned_and_stateless():
    """With a constant weight the op is planned (writes into the arena); repeated runs with other
    inputs give fresh, correct results."""
    rng = np.random.default_rng(2)
    w = _rand(rng, (8, 4))
    model = make_model("MatMul", {"x": _rand(rng, (3, 8)), "w": w}, opset=13, constants={"w": w})
    m = sporeling.Model(from_model_proto(model), "t")
    for _ in range(3):
        x = _rand(rng, (3, 8))
        np.testing.assert_allclose(m.run({"x": x})["y0"], x @ w, rtol=1e-5, atol=1e-5)
    plan = next(iter(m.session._plans.values()))
    assert all(step.mode == WRITES for step in plan.steps)


# ---- Gemm --------------------------------------------------------------------------------------
C_SHAPES = ["none", "scalar", "one", "row", "row2d", "col", "full"]


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 6), k=st.integers(1, 6), n=st.integers(1, 6), trans_a=st.integers(0, 1),
       trans_b=st.integers(0, 1), alpha=st.sampled_from([1.0, 0.5, -2.0]), beta=st.sampled_from([1.0, 0.0, 0.25]),
       c_kind=st.sampled_from(C_SHAPES), const_b=st.booleans(), const_c=st.booleans(), seed=st.integers(0, 2**16))
def test_gemm_matches_onnxruntime(m, k, n, trans_a, trans_b, alpha, beta, c_kind, const_b, const_c, seed):
    rng = np.random.default_rng(seed)
    a = _rand(rng, (k, m) if trans_a else (m, k))
    b = _rand(rng, (n, k) if trans_b else (k, n))
    c_shape = {"scalar": (), "one": (1,), "row": (n,), "row2d": (1, n), "col": (m, 1), "full": (m, n)}.get(c_kind)
    inputs = {"a": a, "b": b}
    consts = ("b",) if const_b else ()
    if c_shape is not None:
        inputs["c"] = _rand(rng, c_shape)
        consts += ("c",) if const_c or c_shape == () else ()  # 0-d feeds are not round-tripped exactly
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta}
    ours = check_op("Gemm", inputs, attrs, opset=13, constants=consts, rtol=1e-5, atol=1e-5)
    want = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
    if c_shape is not None:
        want = want + beta * inputs["c"]
    np.testing.assert_allclose(ours[0], want, rtol=1e-4, atol=1e-4)


def test_gemm_constant_weights_are_not_mutated():
    rng = np.random.default_rng(3)
    a, b, c = _rand(rng, (4, 3)), _rand(rng, (5, 3)), _rand(rng, (5,))
    b0, c0 = b.copy(), c.copy()
    model = make_model("Gemm", {"a": a, "b": b, "c": c}, attrs={"transB": 1, "alpha": 2.0, "beta": 3.0}, opset=13,
                       constants={"b": b, "c": c})
    for _ in range(2):
        (y,) = run_sporeling(model, {"a": a})
        np.testing.assert_allclose(y, 2 * a @ b.T + 3 * c, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(b, b0)
    np.testing.assert_array_equal(c, c0)


def test_gemm_all_constant_inputs_fold():
    rng = np.random.default_rng(16)
    a, b, c = _rand(rng, (3, 4)), _rand(rng, (5, 4)), _rand(rng, (3, 5))
    model = make_model("Gemm", {"a": a, "b": b, "c": c}, attrs={"transB": 1, "alpha": 0.5, "beta": 2.0}, opset=13,
                       constants={"a": a, "b": b, "c": c})
    (y,) = run_sporeling(model, {})
    np.testing.assert_allclose(y, 0.5 * a @ b.T + 2 * c, rtol=1e-5, atol=1e-5)


# ---- Einsum ------------------------------------------------------------------------------------
EINSUM_CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ii->i", [(4, 4)]),
    ("ij->", [(3, 4)]),
    ("i,i", [(5,), (5,)]),
    ("ij,jk", [(3, 4), (4, 2)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (1, 4, 2)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("ab,bc,cd->ad", [(2, 3), (3, 4), (4, 5)]),
    ("i,j->ij", [(3,), (4,)]),
]


@pytest.mark.parametrize("equation,shapes", EINSUM_CASES)
@pytest.mark.parametrize("const", [False, True])
def test_einsum_matches_onnxruntime(equation, shapes, const):
    rng = np.random.default_rng(4)
    inputs = {f"x{k}": _rand(rng, s) for k, s in enumerate(shapes)}
    consts = tuple(list(inputs)[1:]) if const else ()
    ours = check_op("Einsum", inputs, {"equation": equation}, opset=12, constants=consts, rtol=1e-5, atol=1e-5)
    assert einsum_shape(equation, shapes) == np.einsum(equation, *inputs.values()).shape == ours[0].shape


def test_einsum_integer():
    rng = np.random.default_rng(5)
    a, b = rng.integers(-5, 5, (3, 4)).astype(np.int64), rng.integers(-5, 5, (4, 2)).astype(np.int64)
    ours = check_op("Einsum", {"a": a, "b": b}, {"equation": "ij,jk->ik"}, opset=12)
    np.testing.assert_array_equal(ours[0], a @ b)


# ---- Det ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (2, 1, 2, 2)])
def test_det_matches_onnxruntime(shape):
    rng = np.random.default_rng(6)
    x = _rand(rng, shape)
    ours = check_op("Det", {"x": x}, opset=11, rtol=1e-4, atol=1e-5)
    assert ours[0].shape == shape[:-2]

"""Activation kernels and Softmax/LogSoftmax/Hardmax against onnxruntime, plus float64 references
for the tails where the fast formulas could lose accuracy, and large inputs that run block by block."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ops.oracle import check_op, make_model, run_ort, run_sporeling
from tests.ops.test_elementwise import assert_planned, chain_model, check_chain, ort_supports

SETTINGS = settings(max_examples=25, deadline=None)
F32 = np.float32


def _sigmoid64(x):
    return np.exp(-np.logaddexp(0.0, -x))


def _softplus64(x):
    return np.logaddexp(x, 0.0)


_ERF = np.vectorize(math.erf, otypes=[np.float64])
_ERFC = np.vectorize(math.erfc, otypes=[np.float64])

# op -> (opset, attribute strategies, float64 reference(x, **attrs))
ACTIVATIONS = {
    "Relu": (14, {}, lambda x: np.maximum(x, 0)),
    "LeakyRelu": (16, {"alpha": st.floats(-2, 3)}, lambda x, alpha=0.01: np.where(x < 0, alpha * x, x)),
    "Elu": (22, {"alpha": st.floats(0.1, 3)},
            lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))),
    "Selu": (22, {"alpha": st.floats(0.5, 2), "gamma": st.floats(0.5, 2)},
             lambda x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875:
             gamma * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))),
    "Celu": (12, {"alpha": st.floats(0.2, 3)},
             lambda x, alpha=1.0: np.maximum(x, 0) + alpha * np.expm1(np.minimum(x, 0) / alpha)),
    "HardSigmoid": (22, {"alpha": st.floats(0.05, 1), "beta": st.floats(-1, 1)},
                    lambda x, alpha=0.2, beta=0.5: np.clip(alpha * x + beta, 0, 1)),
    "HardSwish": (14, {}, lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    "Sigmoid": (13, {}, _sigmoid64),
    "Softplus": (22, {}, _softplus64),
    "Softsign": (22, {}, lambda x: x / (1 + np.abs(x))),
    "Mish": (18, {}, lambda x: x * np.tanh(_softplus64(x))),
    "ThresholdedRelu": (10, {"alpha": st.floats(-1, 2)}, lambda x, alpha=1.0: np.where(x > alpha, x, 0)),
    "Shrink": (9, {"lambd": st.floats(0, 2), "bias": st.floats(-1, 1)},
               lambda x, lambd=0.5, bias=0.0: np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0))),
    "Gelu": (20, {"approximate": st.sampled_from(["none", "tanh"])},
             lambda x, approximate="none": 0.5 * x * _ERFC(-x / math.sqrt(2)) if approximate == "none"
             else x * _sigmoid64(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "Swish": (24, {"alpha": st.floats(0.1, 3)}, lambda x, alpha=1.0: x * _sigmoid64(alpha * x)),
}


@st.composite
def activation_case(draw):
    op = draw(st.sampled_from(sorted(ACTIVATIONS)))
    opset, attr_strategies, _ = ACTIVATIONS[op]
    attrs = {k: draw(s) for k, s in attr_strategies.items() if draw(st.booleans())}
    # ONNX float attributes are float32: the reference must use the rounded value the kernel sees
    attrs = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in attrs.items()}
    return op, opset, attrs


def one_op_model(op, x, attrs, opset, chain):
    """op on a graph input, or (chain) on the output of a Neg, so its input is an arena buffer."""
    if chain:
        return chain_model(op, {"x": x}, attrs, opset=opset)
    return make_model(op, {"x": x}, attrs=attrs, opset=opset)


def compare(op, opset, attrs, x, chain, rtol, atol, ort_rtol=1e-5, ort_atol=1e-6):
    """Runs op on x (after a Neg when chained) and checks it against the float64 reference and,
    where it has the kernel, onnxruntime. Returns our output."""
    model = one_op_model(op, x, attrs, opset, chain)
    feed = np.asarray(-x) if chain else x
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow/invalid warnings may leak
        (ours,) = run_sporeling(model, {"x": feed})
    assert ours.dtype == x.dtype and ours.shape == x.shape
    if chain:
        assert_planned(model, {"x": feed}, op)
    with np.errstate(all="ignore"):
        expected = ACTIVATIONS[op][2](x.astype(np.float64), **attrs)
    np.testing.assert_allclose(ours.astype(np.float64), expected, rtol=rtol, atol=atol, err_msg=f"{op} {attrs}")
    if ort_supports(make_model(op, {"x": np.zeros(0, x.dtype)}, attrs=attrs, opset=opset)):
        (theirs,) = run_ort(model, {"x": feed})
        np.testing.assert_allclose(ours, theirs, rtol=max(rtol, ort_rtol), atol=max(atol, ort_atol),
                                   err_msg=f"{op} onnxruntime")
    return ours


@SETTINGS
@given(case=activation_case(), dtype=st.sampled_from([np.float32, np.float64]),
       shape=st.lists(st.integers(0, 5), max_size=4).map(tuple), chain=st.booleans(), seed=st.integers(0, 2**31))
def test_activations(case, dtype, shape, chain, seed):
    op, opset, attrs = case
    x = np.asarray(np.random.default_rng(seed).uniform(-6, 6, size=shape), dtype)
    compare(op, opset, attrs, x, chain, rtol=1e-5 if dtype == F32 else 1e-11, atol=1e-6 if dtype == F32 else 1e-12)


@pytest.mark.parametrize("op,attrs", [(op, {}) for op in sorted(ACTIVATIONS)] + [("Gelu", {"approximate": "tanh"})])
def test_activation_extremes_and_blocks(op, attrs):
    """Huge magnitudes (overflow must not leak warnings or NaNs), tiny ones, inf, and an input
    large enough to run block by block; the float32 result stays close to float64 math."""
    opset, _, _ = ACTIVATIONS[op]
    rng = np.random.default_rng(5)
    special = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-4, -1e-4, 30, -30, 80, -80, 100, -100, 1e4, -1e4, 3e38, -3e38])
    x = np.concatenate([special, rng.normal(0, 4, 150_000)]).astype(F32)
    # HardSigmoid/HardSwish cancel in alpha*x + beta: float32 gives ~3e-8 absolute error there.
    # Gelu's far tail inherits erfc's conditioning (relative error ~ x^2 * eps from rounding x/sqrt 2).
    atol = 1e-7 if op.startswith("Hard") else 1e-37
    rtol = 5e-5 if op == "Gelu" else 2e-6
    # onnxruntime's own sigmoid approximation is off by up to ~2e-6 absolute in Swish's tail
    ours = compare(op, opset, attrs, x, chain=True, rtol=rtol, atol=atol, ort_rtol=1e-4, ort_atol=5e-6)
    assert not np.isnan(ours).any()


def test_relu_integers_and_make_path():
    for dtype in (np.int8, np.int32, np.int64):  # onnxruntime has no integer Relu: numpy is the reference
        x = np.arange(-5, 5, dtype=dtype).reshape(2, 5)
        (ours,) = run_sporeling(make_model("Relu", {"x": x}, opset=14), {"x": x})
        assert ours.dtype == dtype and ours.tolist() == np.maximum(x, 0).tolist()
        model = chain_model("Relu", {"x": x}, opset=14)
        (chained,) = run_sporeling(model, {"x": x})
        assert chained.tolist() == np.maximum(-x, 0).tolist()
        assert_planned(model, {"x": x}, "Relu")


@pytest.mark.parametrize("dtype", [np.float16])
@pytest.mark.parametrize("op", ["Sigmoid", "Gelu", "Softplus", "Elu", "Mish", "HardSwish", "Relu", "Tanh"])
def test_float16(op, dtype):
    x = np.random.default_rng(2).uniform(-8, 8, (4, 33)).astype(dtype)
    opset = ACTIVATIONS[op][0] if op in ACTIVATIONS else 13
    (ours,) = run_sporeling(make_model(op, {"x": x}, opset=opset), {"x": x})
    assert ours.dtype == np.float16
    ref = ACTIVATIONS[op][2](x.astype(np.float64)) if op in ACTIVATIONS else np.tanh(x.astype(np.float64))
    np.testing.assert_allclose(ours.astype(np.float64), ref, rtol=2e-3, atol=1e-4)


# ---- PRelu ---------------------------------------------------------------------------------------
@SETTINGS
@given(
    slope_kind=st.sampled_from(["small", "big", "mixed", "negative"]),
    slope_shape=st.sampled_from([(), (1,), (4,), (3, 1, 1), (1, 4), (2, 3, 5, 4)]),
    const=st.booleans(),
    chain=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31),
)
def test_prelu(slope_kind, slope_shape, const, chain, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 3, 5, 4)).astype(dtype)
    lo, hi = {"small": (0, 1), "big": (1, 3), "mixed": (-1, 3), "negative": (-2, 0)}[slope_kind]
    slope = np.asarray(rng.uniform(lo, hi, size=slope_shape), dtype)
    consts = ("slope",) if const else ()
    if chain:
        check_chain("PRelu", {"x": x, "slope": slope}, opset=16, constants=consts)
    else:
        check_op("PRelu", {"x": x, "slope": slope}, opset=16, constants=consts)


# ---- Softmax family --------------------------------------------------------------------------------
@SETTINGS
@given(
    op=st.sampled_from(["Softmax", "LogSoftmax", "Hardmax"]),
    opset=st.sampled_from([11, 13]),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    axis_pick=st.integers(0, 100),
    dtype=st.sampled_from([np.float32, np.float64]),
    chain=st.booleans(),
    scale=st.sampled_from([1.0, 100.0]),
    seed=st.integers(0, 2**31),
)
def test_softmax_family(op, opset, shape, axis_pick, dtype, chain, scale, seed):
    rank = len(shape)
    axis = axis_pick % (2 * rank) - rank
    x = (np.random.default_rng(seed).normal(size=shape) * scale).astype(dtype)
    if op == "Hardmax":
        x = np.round(x)  # ties: the first maximum wins
    attrs = {"axis": axis}
    model = one_op_model(op, x, attrs, opset, chain)
    feed = np.asarray(-x) if chain else x
    (ours,) = run_sporeling(model, {"x": feed})
    assert ours.dtype == x.dtype and ours.shape == x.shape
    if chain:
        assert_planned(model, {"x": feed}, op)
    np.testing.assert_allclose(ours, softmax_reference(op, x, axis, opset), rtol=1e-5, atol=1e-6)
    if ort_supports(make_model(op, {"x": np.zeros((1,) * rank, dtype)}, attrs=attrs, opset=opset)):
        np.testing.assert_allclose(ours, run_ort(model, {"x": feed})[0], rtol=1e-5, atol=1e-6)


def softmax_reference(op, x, axis, opset):
    """float64 Softmax/LogSoftmax/Hardmax; before opset 13 over the dims from `axis` on, flattened."""
    shape = x.shape
    axis = axis % x.ndim
    x2 = x.astype(np.float64).reshape(int(np.prod(shape[:axis])), -1) if opset < 13 else np.moveaxis(x, axis, -1)
    x2 = x2.astype(np.float64)
    if op == "Hardmax":
        res = (np.arange(x2.shape[-1]) == np.argmax(x2, axis=-1)[..., None]).astype(np.float64)
    else:
        shifted = x2 - x2.max(axis=-1, keepdims=True)
        log_total = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        res = shifted - log_total if op == "LogSoftmax" else np.exp(shifted - log_total)
    return res.reshape(shape) if opset < 13 else np.moveaxis(res, -1, axis)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_default_axis_and_large_logits(op, opset):
    x = np.array([[0, 1, 2, 3], [10000, 10001, 10002, 10003]], F32)[:, None, :].repeat(3, axis=1)
    (ours,) = check_op(op, {"x": x}, opset=opset, rtol=1e-5, atol=1e-6)
    if op == "LogSoftmax" and opset == 13:  # exact for huge logits: (x - max) - log(sum)
        np.testing.assert_allclose(ours[1, 0], [-3.4401896, -2.4401896, -1.4401897, -0.44018966], rtol=1e-6)


def test_softmax_large_planned_input():
    x = np.random.default_rng(4).normal(size=(64, 2048)).astype(F32) * 10
    check_chain("Softmax", {"x": x}, {"axis": -1}, opset=13, rtol=1e-5, atol=1e-7)
    check_chain("LogSoftmax", {"x": x}, {"axis": 0}, opset=13, rtol=1e-5, atol=1e-5)
    check_chain("Softmax", {"x": x.reshape(8, 8, 2048)}, {"axis": 1}, opset=11, rtol=1e-5, atol=1e-7)

"""Quantized models: int8 per-tensor and per-channel weights, int8/uint8/int16 activations, the
QUANTIZE and DEQUANTIZE builtins, and float16 weights behind DEQUANTIZE. LiteRT computes in integers;
sporeling dequantizes, computes in float and quantizes, so integer outputs must agree within one
quantization step."""

from __future__ import annotations

import numpy as np
import pytest

from sporeling.frontends.tflite import from_buffer
from sporeling.model import Model

from .common import Const, Feed, check, one_op, rand, run_sporeling

I8, U8, I16, I32 = np.int8, np.uint8, np.int16, np.int32


def q(scale, zero_point=0, axis=0) -> dict:
    scale = np.atleast_1d(np.asarray(scale, np.float32))
    zp = np.broadcast_to(np.atleast_1d(np.asarray(zero_point, np.int64)), scale.shape)
    return {"scale": scale, "zero_point": zp, "axis": axis}


def ints(shape, dtype=I8, seed=0, low=None, high=None) -> np.ndarray:
    info = np.iinfo(dtype)
    lo = info.min if low is None else low
    hi = info.max if high is None else high
    return np.random.default_rng(seed).integers(lo, hi + 1, shape).astype(dtype)


def _weights(shape, axis, seed=1):
    """int8 weights with a scale per channel along axis (symmetric, as TFLite requires)."""
    w = ints(shape, I8, seed, -127, 127)
    scales = np.random.default_rng(seed + 10).uniform(0.002, 0.01, shape[axis]).astype(np.float32)
    return w, scales


def _bias(n, scales, in_scale, seed=2, dtype=I32):
    b = np.random.default_rng(seed).integers(-2000, 2000, n).astype(dtype)
    return Const(b, q(in_scale * scales, 0, 0))


@pytest.mark.parametrize("padding, stride, act", [(0, 1, 0), (1, 2, 1), (0, 2, 3)])
def test_int8_conv_per_channel(padding, stride, act):
    in_q = q(0.02, -3)
    w, ws = _weights((4, 3, 3, 3), 0)
    o = -(-12 // stride) if padding == 0 else (12 - 3) // stride + 1
    data, feeds = one_op("CONV_2D", [Feed(ints((1, 12, 12, 3)), in_q), Const(w, q(ws, 0, 0)), _bias(4, ws, 0.02)],
                         [((1, o, o, 4), I8, q(0.05, 5))], "Conv2DOptions", Padding=padding, StrideH=stride,
                         StrideW=stride, FusedActivationFunction=act)
    ref = check(data, feeds, steps=1)
    assert len(np.unique(ref["out0"])) > 20  # not saturated: the comparison means something


@pytest.mark.parametrize("mult", [1, 2])
def test_int8_depthwise_per_channel(mult):
    in_q = q(0.03, 2)
    w, ws = _weights((1, 3, 3, 3 * mult), 3)
    data, feeds = one_op("DEPTHWISE_CONV_2D", [Feed(ints((1, 7, 7, 3)), in_q), Const(w, q(ws, 0, 3)),
                                               _bias(3 * mult, ws, 0.03)],
                         [((1, 7, 7, 3 * mult), I8, q(0.02, -1))], "DepthwiseConv2DOptions", Padding=0, StrideH=1,
                         StrideW=1, DepthMultiplier=mult)
    ref = check(data, feeds, steps=1)
    assert len(np.unique(ref["out0"])) > 20


def test_int8_fully_connected():
    in_q = q(0.05, 10)
    w, ws = _weights((6, 16), 0)
    ws = ws[:1]  # per-tensor weights
    data, feeds = one_op("FULLY_CONNECTED", [Feed(ints((3, 16)), in_q), Const(w, q(ws, 0)), _bias(6, ws, 0.05)],
                         [((3, 6), I8, q(0.04, -2))], "FullyConnectedOptions")
    check(data, feeds, steps=1)


def test_uint8_conv_per_tensor():
    w = ints((2, 3, 3, 3), U8, 1)
    data, feeds = one_op("CONV_2D", [Feed(ints((1, 6, 6, 3), U8), q(0.02, 128)), Const(w, q(0.005, 120)),
                                     Const(ints(2, I32, 2, -500, 500), q(0.0001, 0))],
                         [((1, 6, 6, 2), U8, q(0.03, 130))], "Conv2DOptions", Padding=0, StrideH=1, StrideW=1)
    check(data, feeds, steps=1)


def test_int16_activations_with_int8_weights():
    """The 16x8 scheme: int16 activations with zero point 0, int8 weights, int64 bias."""
    w, ws = _weights((3, 3, 3, 2), 0)
    data, feeds = one_op("CONV_2D", [Feed(ints((1, 5, 5, 2), I16, 0, -3000, 3000), q(0.001)), Const(w, q(ws, 0, 0)),
                                     _bias(3, ws, 0.001, dtype=np.int64)],
                         [((1, 5, 5, 3), I16, q(0.0005))], "Conv2DOptions", Padding=0, StrideH=1, StrideW=1)
    check(data, feeds, steps=1)


@pytest.mark.parametrize("op, options", [("ADD", "AddOptions"), ("MUL", "MulOptions"), ("SUB", "SubOptions")])
def test_int8_binary_rescales(op, options):
    data, feeds = one_op(op, [Feed(ints((2, 5, 6)), q(0.02, 3)), Feed(ints((2, 5, 6), seed=1), q(0.03, -4))],
                         [((2, 5, 6), I8, q(0.05 if op != "MUL" else 0.1, 1))], options)
    check(data, feeds, steps=1)


def test_int16_add():
    data, feeds = one_op("ADD", [Feed(ints((3, 4), I16), q(0.001)), Feed(ints((3, 4), I16, 1), q(0.002))],
                         [((3, 4), I16, q(0.003))], "AddOptions")
    check(data, feeds, steps=1)


@pytest.mark.parametrize("op", ["MAX_POOL_2D", "AVERAGE_POOL_2D"])
def test_int8_pool(op):
    qq = q(0.02, -5)
    data, feeds = one_op(op, [Feed(ints((1, 6, 6, 3)), qq)], [((1, 3, 3, 3), I8, qq)], "Pool2DOptions", Padding=0,
                         StrideH=2, StrideW=2, FilterHeight=3, FilterWidth=3)
    check(data, feeds, steps=1)


@pytest.mark.parametrize("op, options", [("LOGISTIC", None), ("SOFTMAX", "SoftmaxOptions")])
def test_int8_fixed_output_scale(op, options):
    fields = {"Beta": 1.0} if options else {}
    data, feeds = one_op(op, [Feed(ints((2, 10)), q(0.04, 0))], [((2, 10), I8, q(1 / 256, -128))], options, **fields)
    check(data, feeds, steps=1)


def test_quantize_and_dequantize():
    x = rand(3, 8, low=-4, high=4)
    data, feeds = one_op("QUANTIZE", [Feed(x)], [((3, 8), I8, q(0.025, -7))])
    ref = check(data, feeds, steps=1)
    assert ref["out0"].min() == -128 and ref["out0"].max() > 100  # saturation is covered too
    data, feeds = one_op("DEQUANTIZE", [Feed(ints((3, 8)), q(0.025, -7))], [(3, 8)])
    check(data, feeds)
    data, feeds = one_op("QUANTIZE", [Feed(x)], [((3, 8), U8, q(0.03, 100))])
    check(data, feeds, steps=1)
    data, feeds = one_op("QUANTIZE", [Feed(x)], [((3, 8), I16, q(0.0002))])
    check(data, feeds, steps=1)


def test_requantize():
    data, feeds = one_op("QUANTIZE", [Feed(ints((4, 6)), q(0.02, 3))], [((4, 6), I8, q(0.035, -9))])
    check(data, feeds, steps=1)


def test_data_movement_keeps_the_integers():
    """Same scale on both sides: RESHAPE and CONCATENATION work on the stored int8 values directly."""
    qq = q(0.02, 3)
    data, feeds = one_op("RESHAPE", [Feed(ints((2, 3, 4)), qq), np.array([4, 6], I32)], [((4, 6), I8, qq)])
    check(data, feeds)
    ops = {n.op_type for n in from_buffer(data, "t").nodes}
    assert ops == {"Reshape"}
    data, feeds = one_op("CONCATENATION", [Feed(ints((2, 3)), qq), Feed(ints((2, 3), seed=1), qq)],
                         [((2, 6), I8, qq)], "ConcatenationOptions", Axis=1)
    check(data, feeds)


def test_concatenation_of_different_scales_requantizes():
    """uint8 only: LiteRT's int8 concatenation requires one scale (its XNNPACK delegate refuses this one)."""
    a, b = Feed(ints((2, 3), U8), q(0.02, 130)), Feed(ints((2, 3), U8, 1), q(0.05, 120))
    data, feeds = one_op("CONCATENATION", [a, b], [((2, 6), U8, q(0.04, 128))], "ConcatenationOptions", Axis=1)
    check(data, feeds, steps=1, xnnpack=False)


def _fp16_conv_model():
    from .builder import ModelBuilder

    b = ModelBuilder()
    x = b.input([1, 8, 8, 3], name="x")
    w16 = b.const(rand(4, 3, 3, 3, seed=1).astype(np.float16))
    b16 = b.const(rand(4, seed=2).astype(np.float16))
    w, bias = b.tensor([4, 3, 3, 3]), b.tensor([4])
    b.op("DEQUANTIZE", [w16], [w])
    b.op("DEQUANTIZE", [b16], [bias])
    y = b.output(b.tensor([1, 8, 8, 4], name="y"))
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", Padding=0, StrideH=1, StrideW=1, FusedActivationFunction=1)
    return b.finish(), {"x": rand(1, 8, 8, 3)}


def test_fp16_weights_stay_half_and_are_laid_out():
    data, feeds = _fp16_conv_model()
    check(data, feeds)
    graph = from_buffer(data, "t")
    halves = [a for a in graph.initializers.values() if a.dtype == np.float16]
    assert sorted(a.shape for a in halves) == [(4,), (4, 3, 3, 3)]
    assert not [a for a in graph.initializers.values() if a.dtype == np.float32 and a.size > 1]
    casts = [n for n in graph.nodes if n.op_type == "Cast"]
    assert len(casts) == 2 and all(n.attrs["to"] == 1 for n in casts)
    conv = next(n for n in graph.nodes if n.op_type == "Conv")
    assert conv.inputs[1] in {n.outputs[0] for n in casts}
    w_name = next(n.inputs[0] for n in casts if n.outputs[0] == conv.inputs[1])
    np.testing.assert_array_equal(graph.initializers[w_name],  # OHWI -> OIHW at import
                                  rand(4, 3, 3, 3, seed=1).astype(np.float16).transpose(0, 3, 1, 2))


def test_fp16_weights_are_constant_for_the_conv_kernel(monkeypatch):
    """The Session folds Cast(float16 initializer) at prepare, so the Conv kernel prepares its weights
    once, as for float32 initializers, and not on every run."""
    from sporeling.ops.conv import ConvPlan

    data, feeds = _fp16_conv_model()
    calls = []
    original = ConvPlan.prepare
    monkeypatch.setattr(ConvPlan, "prepare", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    model = Model(from_buffer(data, "t"), "t", threads=1)
    model.run(feeds)
    assert model.session.plan_for(model.session.check_feeds(feeds)).folded >= 2
    after_first = len(calls)
    assert after_first >= 1
    for _ in range(3):
        model.run(feeds)
    assert len(calls) == after_first


def test_graph_outputs_of_quantized_models_keep_their_integer_type():
    data, feeds = one_op("QUANTIZE", [Feed(rand(2, 3))], [((2, 3), I8, q(0.01))])
    out = run_sporeling(data, feeds)["out0"]
    assert out.dtype == np.int8

"""Conv family kernels against onnxruntime: Conv (every algorithm path), FusedConv, ConvTranspose,
Col2Im, ConvInteger, QLinearConv, DeformConv, CausalConvWithState."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sporeling.ops import Info, lookup
from sporeling.ops.conv import Activation, ConvPlan
from sporeling.ops.conv_depthwise import Depthwise2D, DepthwiseCols
from sporeling.ops.conv_gemm import BatchedIm2col, Im2colGemm, Pointwise, WideIm2col
from sporeling.ops.conv_winograd import Winograd, toom_cook
from tests.ops.oracle import check_op, make_model, run_ort, run_sporeling

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None)


def _rand(rng, shape, dtype=np.float32, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _conv_inputs(rng, x_shape, w_shape, bias=True):
    fan_in = int(np.prod(w_shape[1:]))
    ins = {"x": _rand(rng, x_shape), "w": _rand(rng, w_shape, scale=1 / np.sqrt(fan_in))}
    if bias:
        ins["b"] = _rand(rng, (w_shape[0],))
    return ins


def _algorithm(x_shape, w_shape, **attrs):
    return ConvPlan(x_shape, w_shape, np.float32, True, attrs, Activation()).algo


# ---- Conv: random 2-D geometry, both with constant weights (planned, make) and fed weights -------
@SETTINGS
@given(st.data())
def test_conv2d_random(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    n = data.draw(st.integers(1, 2))
    group = data.draw(st.sampled_from([1, 2, "depthwise"]))
    cg = data.draw(st.integers(1, 3))
    c = cg * (2 if group == 2 else 1) if group != "depthwise" else data.draw(st.integers(1, 6))
    g = c if group == "depthwise" else group
    k = data.draw(st.integers(1, 3)) * g
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    dh, dw = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    h = data.draw(st.integers((kh - 1) * dh + 1, 12))
    w = data.draw(st.integers((kw - 1) * dw + 1, 12))
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw], "dilations": [dh, dw], "group": g}
    pad_mode = data.draw(st.sampled_from(["explicit", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if pad_mode == "explicit":
        attrs["pads"] = [data.draw(st.integers(0, 2)) for _ in range(4)]
    else:
        attrs["auto_pad"] = pad_mode
    if pad_mode.startswith("SAME"):
        attrs.pop("dilations")  # onnxruntime rejects SAME with dilation > 1
    ins = _conv_inputs(rng, (n, c, h, w), (k, c // g, kh, kw), bias=data.draw(st.booleans()))
    consts = data.draw(st.sampled_from([(), tuple(k_ for k_ in ins if k_ != "x")]))
    check_op("Conv", ins, attrs, constants=consts, rtol=1e-4, atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_conv_1d_and_3d(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    nd = data.draw(st.sampled_from([1, 3]))
    c, g = data.draw(st.sampled_from([(2, 1), (4, 2), (3, 3)]))
    kernel = [data.draw(st.integers(1, 3)) for _ in range(nd)]
    sizes = [data.draw(st.integers(kk, 7)) for kk in kernel]
    attrs = {"kernel_shape": kernel, "strides": [data.draw(st.integers(1, 2)) for _ in range(nd)],
             "pads": [data.draw(st.integers(0, 1)) for _ in range(2 * nd)], "group": g}
    ins = _conv_inputs(rng, (1, c, *sizes), (g * 2, c // g, *kernel))
    check_op("Conv", ins, attrs, constants=("w", "b"), rtol=1e-4, atol=1e-5)


# ---- each algorithm path, at the shapes that pick it ---------------------------------------------
ALGO_CASES = [
    # (x shape, w shape, attrs, expected algorithm)
    ((1, 16, 9, 9), (64, 16, 1, 1), {}, Pointwise),  # expand: bias folded into the matmul
    ((2, 16, 9, 9), (8, 16, 1, 1), {}, Pointwise),
    ((1, 24, 12, 10), (24, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 24}, DepthwiseCols),
    ((1, 24, 14, 14), (24, 1, 3, 3), {"pads": [0, 0, 1, 1], "strides": [2, 2], "group": 24}, DepthwiseCols),
    ((1, 8, 13, 11), (8, 1, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2], "group": 8}, DepthwiseCols),
    ((1, 4, 40, 40), (4, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 4}, Depthwise2D),
    ((2, 4, 66, 64), (4, 1, 5, 5), {"pads": [2, 2, 2, 2], "strides": [2, 2], "group": 4}, Depthwise2D),
    ((1, 4, 40, 40), (4, 1, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2], "group": 4}, Depthwise2D),
    ((1, 16, 30, 26), (24, 16, 3, 3), {"pads": [1, 1, 1, 1]}, Winograd),  # F(4x4)
    ((2, 16, 15, 14), (16, 16, 3, 3), {"pads": [1, 0, 2, 1]}, Winograd),  # F(4x4), partial tiles
    ((1, 32, 9, 11), (16, 32, 3, 3), {"pads": [1, 1, 1, 1]}, Winograd),  # F(2x2)
    ((1, 3, 45, 45), (16, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}, WideIm2col),
    ((1, 16, 14, 14), (32, 16, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, WideIm2col),
    ((1, 16, 14, 14), (32, 16, 1, 1), {"strides": [2, 2]}, WideIm2col),
    ((1, 6, 11, 40), (6, 2, 3, 3), {"pads": [1, 1, 1, 1], "group": 3, "dilations": [2, 1]}, WideIm2col),
    ((1, 32, 7, 7), (32, 32, 3, 3), {"pads": [1, 1, 1, 1]}, Im2colGemm),  # narrow map: plain unrolling
    ((1, 4, 6, 5, 4), (4, 4, 3, 3, 3), {"pads": [1] * 6}, Im2colGemm),
    # a batch: all images unrolled at once, one GEMM (training shapes: LeNet-5's convs at batch 64)
    ((64, 1, 28, 28), (6, 1, 5, 5), {"pads": [2, 2, 2, 2]}, BatchedIm2col),
    ((64, 6, 14, 14), (16, 6, 5, 5), {}, BatchedIm2col),
    ((3, 5, 11, 9), (7, 5, 3, 2), {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]}, BatchedIm2col),
    ((2, 16, 14, 14), (32, 16, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, BatchedIm2col),
    ((4, 3, 10), (5, 3, 3), {"pads": [1, 2], "strides": [2]}, BatchedIm2col),
    ((2, 4, 6, 5, 4), (4, 4, 3, 3, 3), {"pads": [1] * 6}, BatchedIm2col),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs,algo", ALGO_CASES)
def test_conv_algorithms(x_shape, w_shape, attrs, algo):
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    assert isinstance(_algorithm(x_shape, w_shape, **attrs), algo)
    ins = _conv_inputs(rng, x_shape, w_shape)
    tol = 2e-4 if algo is Winograd else 1e-5  # Winograd's transforms round differently than direct sums
    check_op("Conv", ins, attrs, constants=("w", "b"), rtol=tol, atol=tol)
    check_op("Conv", ins, attrs, constants=(), rtol=tol, atol=tol)


def test_winograd_transforms_are_exact_toom_cook():
    rng = np.random.default_rng(0)
    for m in (2, 4):
        at, g, bt = toom_cook(m)
        assert np.all(bt == np.round(bt))  # input transform in small integers: exact in float32
        d, w = rng.standard_normal(m + 2), rng.standard_normal(3)
        np.testing.assert_allclose(at @ ((g @ w) * (bt @ d)), [w @ d[k : k + 3] for k in range(m)], atol=1e-12)


def test_conv_float64_and_float16():
    """onnxruntime has no float64 Conv: PyTorch is the oracle there; float16 is checked against the
    float32 result (it is computed in float32 and rounded once)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    ins = _conv_inputs(rng, (1, 16, 12, 12), (16, 16, 3, 3))
    want = torch.nn.functional.conv2d(*(torch.from_numpy(ins[k].astype(np.float64)) for k in ("x", "w", "b")),
                                      padding=1).numpy()
    for dt, tol in ((np.float64, 1e-9), (np.float32, 1e-4), (np.float16, 1e-2)):
        feeds = {k: v.astype(dt) for k, v in ins.items()}
        model = make_model("Conv", feeds, 1, {"pads": [1, 1, 1, 1]}, 17, {"w": feeds["w"], "b": feeds["b"]})
        got = run_sporeling(model, {"x": feeds["x"]})[0]
        assert got.dtype == dt
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)


def test_conv_dynamic_input_shapes_share_one_model():
    rng = np.random.default_rng(4)
    ins = _conv_inputs(rng, (1, 8, 10, 10), (8, 8, 3, 3))
    model = make_model("Conv", {"x": ins["x"], "w": ins["w"], "b": ins["b"]}, 1, {"pads": [1, 1, 1, 1]}, 17,
                       {"w": ins["w"], "b": ins["b"]})
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "h"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "w"
    import sporeling
    from sporeling.frontends.onnx import from_model_proto

    m = sporeling.Model(from_model_proto(model), "dyn")
    for h, w in ((10, 10), (7, 13), (10, 10)):
        x = _rand(rng, (1, 8, h, w))
        got = m.run({"x": x})["y0"]
        want = run_ort(model, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv_make_writes_out_and_uses_scratch_only():
    """The planned call writes into the given out and allocates no output of its own."""
    rng = np.random.default_rng(5)
    ins = _conv_inputs(rng, (1, 16, 20, 20), (32, 16, 3, 3))
    op = lookup("Conv", 17)
    infos = [Info(ins["x"].dtype, ins["x"].shape, None), Info(np.dtype(np.float32), ins["w"].shape, ins["w"]),
             Info(np.dtype(np.float32), (32,), ins["b"])]
    attrs = {"pads": [1, 1, 1, 1]}
    fn = op.make(infos, **attrs)
    scratch = np.empty(op.scratch(infos, **attrs), np.uint8)
    out = np.full((1, 32, 20, 20), np.nan, np.float32)
    res = fn(ins["x"], ins["w"], ins["b"], out=out, scratch=scratch)
    assert res is out
    want = run_ort(make_model("Conv", ins, 1, attrs, 17, {"w": ins["w"], "b": ins["b"]}), {"x": ins["x"]})[0]
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4)


# ---- FusedConv against onnxruntime running Conv -> Add -> activation ------------------------------
ACTS = [("", []), ("Relu", []), ("Clip", [0.0, 6.0]), ("Clip", [-1.0]), ("LeakyRelu", [0.1]),
        ("HardSigmoid", [0.3, 0.4]), ("HardSwish", []), ("Sigmoid", []), ("Tanh", [])]


def _unfused_model(ins, attrs, act, params, with_z):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    inits = [numpy_helper.from_array(ins["w"], "w"), numpy_helper.from_array(ins["b"], "b")]
    last = "c"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ins["x"].shape)]
    if with_z:
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ins["z"].shape))
        nodes.append(helper.make_node("Add", [last, "z"], ["s"]))
        last = "s"
    if act == "Clip":
        names = [last]
        for name, v in zip(("lo", "hi"), params):
            inits.append(numpy_helper.from_array(np.array(v, np.float32), name))
            names.append(name)
        nodes.append(helper.make_node("Clip", names, ["y0"]))
    elif act == "LeakyRelu":
        nodes.append(helper.make_node(act, [last], ["y0"], alpha=params[0]))
    elif act == "HardSigmoid":
        nodes.append(helper.make_node(act, [last], ["y0"], alpha=params[0], beta=params[1]))
    elif act:
        nodes.append(helper.make_node(act, [last], ["y0"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y0"]))
    g = helper.make_graph(nodes, "g", inputs, [onnx.ValueInfoProto(name="y0")], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("act,params", ACTS)
@pytest.mark.parametrize("shape", [((1, 16, 10, 10), (48, 16, 1, 1), {}),
                                   ((1, 8, 12, 12), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
                                   ((1, 16, 16, 16), (16, 16, 3, 3), {"pads": [1, 1, 1, 1]})])
def test_fused_conv_matches_unfused_graph(act, params, shape):
    x_shape, w_shape, attrs = shape
    rng = np.random.default_rng(len(act) + len(params) + w_shape[0])
    ins = _conv_inputs(rng, x_shape, w_shape)
    for with_z in (False, True):
        feeds = {"x": ins["x"]}
        names = ["x", "w", "b"]
        if with_z:
            ins["z"] = _rand(rng, (x_shape[0], w_shape[0], *x_shape[2:]))
            feeds["z"] = ins["z"]
            names.append("z")
        extra = {"activation": act, **({"activation_params": params} if params else {})}
        node = helper.make_node("FusedConv", names, ["y0"], domain="ai.sporeling", **attrs, **extra)
        inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, feeds[k].shape) for k in feeds]
        inits = [numpy_helper.from_array(ins["w"], "w"), numpy_helper.from_array(ins["b"], "b")]
        g = helper.make_graph([node], "g", inputs, [onnx.ValueInfoProto(name="y0")], inits)
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.sporeling", 1)]
        fused = helper.make_model(g, opset_imports=opsets, ir_version=10)
        got = run_sporeling(fused, feeds)[0]
        want = run_ort(_unfused_model(ins, attrs, act, params, with_z), feeds)[0]
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4, err_msg=f"{act} z={with_z}")


def test_fused_conv_rejects_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation"):
        Activation("Gelu")


# ---- ConvTranspose and Col2Im ----------------------------------------------------------------------
@SETTINGS
@given(st.data())
def test_conv_transpose_random(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    nd = data.draw(st.sampled_from([1, 2, 2, 3]))
    g = data.draw(st.sampled_from([1, 2]))
    c, cog = 2 * g, data.draw(st.integers(1, 3))
    kernel = [data.draw(st.integers(1, 3)) for _ in range(nd)]
    strides = [data.draw(st.integers(1, 3)) for _ in range(nd)]
    dil = [data.draw(st.integers(1, 2)) for _ in range(nd)]
    sizes = [data.draw(st.integers(1, 5)) for _ in range(nd)]
    attrs = {"strides": strides, "dilations": dil, "group": g}
    mode = data.draw(st.sampled_from(["pads", "output_shape", "SAME_UPPER", "plain"]))
    full = [s * (n - 1) + (k - 1) * d + 1 for s, n, k, d in zip(strides, sizes, kernel, dil)]
    if mode == "pads":
        attrs["pads"] = [data.draw(st.integers(0, (f - 1) // 2)) for f in full] * 2
        attrs["output_padding"] = [data.draw(st.integers(0, min(s, d) - 1)) for s, d in zip(strides, dil)]
    elif mode == "output_shape":
        attrs["output_shape"] = [f - data.draw(st.integers(0, f - 1)) for f in full]
    elif mode == "SAME_UPPER":
        attrs["auto_pad"] = "SAME_UPPER"
        attrs.pop("dilations")
        kernel = [max(kk, s) for kk, s in zip(kernel, strides)]
    ins = {"x": _rand(rng, (1, c, *sizes)), "w": _rand(rng, (c, cog, *kernel))}
    if data.draw(st.booleans()):
        ins["b"] = _rand(rng, (cog * g,))
    check_op("ConvTranspose", ins, attrs, constants=tuple(k for k in ins if k != "x"), rtol=1e-4, atol=1e-5)


def _col2im_reference(x, image, block, strides, dil, pads):
    """Direct scatter-add, one block cell at a time."""
    nd = len(image)
    counts = [(image[a] + pads[a] + pads[a + nd] - (block[a] - 1) * dil[a] - 1) // strides[a] + 1 for a in range(nd)]
    c = x.shape[1] // int(np.prod(block))
    out = np.zeros((x.shape[0], c, *image), x.dtype)
    cols = x.reshape(x.shape[0], c, *block, *counts)
    for tap in np.ndindex(*block):
        for pos in np.ndindex(*counts):
            idx = [pos[a] * strides[a] + tap[a] * dil[a] - pads[a] for a in range(nd)]
            if all(0 <= idx[a] < image[a] for a in range(nd)):
                out[(slice(None), slice(None), *idx)] += cols[(slice(None), slice(None), *tap, *pos)]
    return out


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_col2im_random(data):
    """2-D against onnxruntime; 3-D against a direct scatter (onnxruntime 1.32 mis-places dilated 3-D blocks)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    nd = data.draw(st.sampled_from([2, 3]))
    block = [data.draw(st.integers(1, 3)) for _ in range(nd)]
    strides = [data.draw(st.integers(1, 2)) for _ in range(nd)]
    dil = [data.draw(st.integers(1, 2)) for _ in range(nd)]
    pads = [data.draw(st.integers(0, 1)) for _ in range(2 * nd)]
    image = [data.draw(st.integers((b - 1) * d + 1, 7)) for b, d in zip(block, dil)]
    counts = [(i + pads[a] + pads[a + nd] - (b - 1) * d - 1) // s + 1
              for a, (i, b, d, s) in enumerate(zip(image, block, dil, strides))]
    x = _rand(rng, (1, 2 * int(np.prod(block)), int(np.prod(counts))))
    ins = {"x": x, "image": np.array(image, np.int64), "block": np.array(block, np.int64)}
    attrs = {"strides": strides, "dilations": dil, "pads": pads}
    if nd == 2:
        check_op("Col2Im", ins, attrs, opset=18, constants=("image", "block"), rtol=1e-5, atol=1e-6)
    else:
        model = make_model("Col2Im", ins, 1, attrs, 18, {"image": ins["image"], "block": ins["block"]})
        np.testing.assert_allclose(run_sporeling(model, {"x": x})[0],
                                   _col2im_reference(x, image, block, strides, dil, pads), rtol=1e-5, atol=1e-6)


# ---- integer convolutions ------------------------------------------------------------------------
@pytest.mark.parametrize("xdt,wdt", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)])
def test_conv_integer(xdt, wdt):
    rng = np.random.default_rng(7)
    info_x, info_w = np.iinfo(xdt), np.iinfo(wdt)
    x = rng.integers(info_x.min, info_x.max, (1, 4, 9, 9), endpoint=True).astype(xdt)
    w = rng.integers(info_w.min, info_w.max, (6, 4, 3, 3), endpoint=True).astype(wdt)
    ins = {"x": x, "w": w, "xz": np.array(3, xdt), "wz": np.array(-2 if wdt == np.int8 else 5, wdt)}
    out = check_op("ConvInteger", ins, {"pads": [1, 1, 1, 1]}, opset=10, constants=("w", "wz"), rtol=0, atol=0)
    assert out[0].dtype == np.int32
    # per-output-channel weight zero points (onnxruntime supports only per-tensor): PyTorch in float64
    torch = pytest.importorskip("torch")
    ins["wz"] = rng.integers(0, 9, (6,)).astype(wdt)
    model = make_model("ConvInteger", ins, 1, {"strides": [2, 2]}, 10)
    got = run_sporeling(model, ins)[0]
    xs = torch.from_numpy(x.astype(np.float64) - 3)
    ws = torch.from_numpy(w.astype(np.float64) - ins["wz"].astype(np.float64).reshape(6, 1, 1, 1))
    want = torch.nn.functional.conv2d(xs, ws, stride=2).numpy()
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want.astype(np.int32))


@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(per_channel):
    """Against onnxruntime with weights in [-63, 63] (its AVX2 u8s8 kernel saturates pairs of products
    in int16 beyond that), and against an exact float64 reference over the full int8 range."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.integers(0, 255, (1, 8, 10, 10), endpoint=True).astype(np.uint8)
    w_scale = (rng.random(16) * 0.01 + 0.001).astype(np.float32) if per_channel else np.array(0.004, np.float32)
    w_zp = np.zeros(16, np.int8) if per_channel else np.array(0, np.int8)
    for lim in (63, 127):
        w = rng.integers(-lim, lim, (16, 8, 3, 3), endpoint=True).astype(np.int8)
        ins = {"x": x, "xs": np.array(0.02, np.float32), "xz": np.array(120, np.uint8), "w": w, "ws": w_scale,
               "wz": w_zp, "ys": np.array(0.05, np.float32), "yz": np.array(100, np.uint8),
               "b": rng.integers(-500, 500, (16,)).astype(np.int32)}
        if lim == 63:
            out = check_op("QLinearConv", ins, {"pads": [1, 1, 1, 1]}, opset=10, constants=("w", "ws", "wz", "b"),
                           rtol=0, atol=1)  # a half may round differently
            assert out[0].dtype == np.uint8
            continue
        got = run_sporeling(make_model("QLinearConv", ins, 1, {"pads": [1, 1, 1, 1]}, 10), ins)[0]
        acc = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64) - 120),
                                         torch.from_numpy(w.astype(np.float64)), padding=1).numpy()
        acc += ins["b"].reshape(1, -1, 1, 1)
        scale = (np.float32(0.02) * w_scale / np.float32(0.05)).astype(np.float64).reshape(1, -1, 1, 1)
        want = np.clip(np.rint(acc * scale + 100), 0, 255)
        np.testing.assert_array_equal(got, want.astype(np.uint8))


# ---- DeformConv and CausalConvWithState ----------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(st.data())
def test_deform_conv_random(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    og, g = data.draw(st.sampled_from([(1, 1), (2, 1), (1, 2), (2, 2)]))
    c, k = 4, 2 * g
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    attrs = {"kernel_shape": [kh, kw], "pads": [data.draw(st.integers(0, 1)) for _ in range(4)],
             "strides": [data.draw(st.integers(1, 2))] * 2, "group": g, "offset_group": og}
    h, w = 6, 7
    oh = (h + attrs["pads"][0] + attrs["pads"][2] - kh) // attrs["strides"][0] + 1
    ow = (w + attrs["pads"][1] + attrs["pads"][3] - kw) // attrs["strides"][1] + 1
    ins = {"x": _rand(rng, (1, c, h, w)), "w": _rand(rng, (k, c // g, kh, kw)),
           "offset": _rand(rng, (1, og * kh * kw * 2, oh, ow), scale=1.5), "b": _rand(rng, (k,))}
    if data.draw(st.booleans()):
        ins["mask"] = rng.random((1, og * kh * kw, oh, ow)).astype(np.float32)
    check_op("DeformConv", ins, attrs, opset=19, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,length,past,bias,act", [(4, 8, False, False, "none"), (4, 8, True, True, "silu"),
                                                    (3, 1, True, False, "swish"), (5, 2, False, True, "none"),
                                                    (1, 6, False, False, "silu")])
def test_causal_conv_with_state(k, length, past, bias, act):
    rng = np.random.default_rng(k * 10 + length)
    ins = {"x": _rand(rng, (2, 3, length)), "w": _rand(rng, (3, 1, k)),
           "b": _rand(rng, (3,)) if bias else None, "past": _rand(rng, (2, 3, k - 1)) if past else None}
    out = check_op("CausalConvWithState", ins, {"activation": act}, n_outputs=2, opset=27, rtol=1e-5, atol=1e-6)
    assert out[1].shape == (2, 3, k - 1)

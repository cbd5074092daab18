"""GPTQ rounding with calibration data (sporeling/quant/gptq.py): the im2col and the input Hessian
against the engine's own convolutions, GPTQ against rounding to nearest on layer outputs, the codes
through the file format, and the fallbacks. The PP-OCRv4 measurement is marked slow."""

import numpy as np
import pytest

from sporeling.format import load_spore, save_spore
from sporeling.ir import Graph, Node, ValueInfo
from sporeling.model import Model
from sporeling.quant.encode import encode
from sporeling.quant.gptq import Calibrated, _conv_patches, gptq, gptq_quantize, layer_inputs, weight_readers
from sporeling.quant.mixed import decoded, quantize_levels, with_weights
from sporeling.quant.quantize import _rows, dequantize

F32 = np.dtype(np.float32)


def inputs(rng, shape, mix):
    """Samples whose channels are correlated (mixtures of a few sources, `mix` (channels, sources), plus
    noise) and not centred, as activations are: the case where the order of rounding matters."""
    base = rng.standard_normal((shape[0], mix.shape[1]) + tuple(shape[2:]))
    x = np.einsum("cs,ns...->nc...", mix, base) + 0.3 * rng.standard_normal(shape) + 0.5
    return x.astype(np.float32)


def conv_graph(rng, c_in=8, c_out=16, kernel=(3, 3), group=1, size=(10, 10), **attrs) -> Graph:
    spread = rng.uniform(0.2, 2, (c_out,) + (1,) * (1 + len(kernel)))  # channels of different ranges
    w = rng.standard_normal((c_out, c_in // group, *kernel)) * spread
    attrs = {"group": group, **attrs}
    x = ValueInfo("x", F32, (None, c_in, *size))
    return Graph([Node("Conv", ["x", "w"], ["y"], attrs)], [x], [ValueInfo("y", F32)], {"w": w.astype(np.float32)})


def dense_graph(rng, op="Gemm", k=24, n=20, **attrs) -> Graph:
    trans_b = attrs.get("transB", 0)
    w = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    shape = (None, 5, k) if op == "MatMul" else ((k, None) if attrs.get("transA", 0) else (None, k))
    return Graph([Node(op, ["x", "w"], ["y"], attrs)], [ValueInfo("x", F32, shape)], [ValueInfo("y", F32)], {"w": w})


def feeds_for(rng, g: Graph, n: int, batch: int = 2):
    """n feeds for the graph's input, all from one distribution."""
    shape = [batch if d is None else d for d in g.inputs[0].shape]
    trans_a = g.nodes[0].attrs.get("transA", 0)
    channels = shape[0] if trans_a else shape[-1] if g.nodes[0].op_type in ("Gemm", "MatMul") else shape[1]
    mix = rng.standard_normal((channels, 3))
    if trans_a:
        return [{"x": np.ascontiguousarray(inputs(rng, shape[::-1], mix).T)} for _ in range(n)]
    if g.nodes[0].op_type == "MatMul":
        return [{"x": inputs(rng, (shape[0] * shape[1], shape[2]), mix).reshape(shape)} for _ in range(n)]
    return [{"x": inputs(rng, shape, mix)} for _ in range(n)]


def output_error(g: Graph, w_q: np.ndarray, feeds) -> float:
    """||X W - X Wq|| over the feeds, by running the layer with both weights."""
    ref, got = Model(g), Model(with_weights(g, {"w": w_q}))
    return float(np.sqrt(sum(np.sum((ref.run(f)["y"].astype(np.float64) - got.run(f)["y"]) ** 2) for f in feeds)))


CONVS = [dict(pads=[1, 1, 1, 1]), dict(strides=[2, 2], pads=[1, 0, 1, 0]), dict(dilations=[2, 2], pads=[2, 2, 2, 2]),
         dict(group=2, pads=[1, 1, 1, 1]), dict(group=8, c_out=16, kernel=(5, 5), pads=[2, 2, 2, 2]),
         dict(auto_pad="SAME_UPPER", strides=[2, 2]), dict(kernel=(3,), size=(17,), strides=[2], pads=[1, 1]),
         dict(kernel=(1, 1))]


@pytest.mark.parametrize("geometry", CONVS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_patches_times_weights_give_the_convolution(geometry):
    rng = np.random.default_rng(1)
    g = conv_graph(rng, **geometry)
    x = feeds_for(rng, g, 1)[0]["x"]
    y = Model(g).run({"x": x})["y"]
    w, node = g.initializers["w"], g.nodes[0]
    patches = _conv_patches(x, w.shape, node.attrs, 1 << 30, rng)  # (N * positions, group, K)
    groups = node.attrs["group"]
    rows = _rows(w, 0).reshape(groups, -1, patches.shape[-1])
    got = np.einsum("rgk,gok->rgo", patches.astype(np.float64), rows).reshape(len(patches), -1)
    np.testing.assert_allclose(got, np.moveaxis(y, 1, -1).reshape(len(patches), -1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [("conv", dict(pads=[1, 1, 1, 1], strides=[2, 2])),
                                  ("conv", dict(group=4, pads=[1, 1, 1, 1])),
                                  ("conv", dict(group=8, kernel=(5, 5), pads=[2, 2, 2, 2])),
                                  ("Gemm", dict(transB=1)), ("Gemm", dict(transA=1)), ("MatMul", {})],
                         ids=lambda c: c[0] + str(c[1]))
def test_hessian_is_the_quadratic_form_of_the_output_error(case):
    """For any weight change E, sum over rows of ||x E^T||^2 = rows * sum_g tr(E_g H_g E_g^T)."""
    rng = np.random.default_rng(2)
    kind, attrs = case
    g = conv_graph(rng, **attrs) if kind == "conv" else dense_graph(rng, kind, **attrs)
    feeds = feeds_for(rng, g, 2)
    st = layer_inputs(g, ["w"], feeds, max_rows=1 << 30)["w"]
    e = rng.standard_normal(g.initializers["w"].shape).astype(np.float32)
    direct = output_error(with_weights(g, {"w": np.zeros_like(e)}), e, feeds) ** 2
    rows = _rows(e.astype(np.float64), st.axis).reshape(st.h.shape[0], -1, st.h.shape[-1])
    assert np.isclose(st.rows * np.einsum("grk,gkl,grl->", rows, st.h, rows), direct, rtol=1e-4)


LAYERS = [("conv", dict(pads=[1, 1, 1, 1])), ("conv", dict(group=2, pads=[1, 1, 1, 1])), ("Gemm", dict(transB=1)),
          ("MatMul", {})]


@pytest.mark.parametrize("levels", [3, 7, 15])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda c: c[0] + str(c[1]))
def test_gptq_output_error_is_below_rounding_to_nearest(layer, levels):
    rng = np.random.default_rng(levels)
    kind, attrs = layer
    g = conv_graph(rng, **attrs) if kind == "conv" else dense_graph(rng, kind, **attrs)
    w = g.initializers["w"]
    feeds = feeds_for(rng, g, 9)
    calib, held = feeds[:6], feeds[6:]
    st = layer_inputs(g, ["w"], calib)["w"]
    q = gptq_quantize(w, levels, st.axis, st.h, out_axis=st.axis)
    assert q.codes.dtype == np.uint8 and q.codes.shape == w.shape
    assert q.codes.min() >= 0 and q.codes.max() <= 2 * levels
    assert q.params.bits == quantize_levels(w, levels, st.axis).params.bits and q.params.gain is None
    mine = output_error(g, decoded(q, w.dtype), held)
    for nearest in (dict(bias_correction=False), dict(bias_correction=True, clip=True)):  # the latter: compress's
        rtn = output_error(g, decoded(quantize_levels(w, levels, st.axis, **nearest), w.dtype), held)
        assert mine < 0.9 * rtn, (nearest, mine, rtn)


@pytest.mark.parametrize("entropy", [False, True])
@pytest.mark.parametrize("axis", [0, None])
def test_codes_round_trip_through_the_file(tmp_path, entropy, axis):
    rng = np.random.default_rng(3)
    g = conv_graph(rng, c_in=16, c_out=32)
    w = g.initializers["w"]
    st = layer_inputs(g, ["w"], feeds_for(rng, g, 2))["w"]
    q = gptq_quantize(w, 7, axis, st.h, out_axis=0)
    assert q.params.axis == axis and q.params.scale.shape == (() if axis is None else (32,))
    enc = encode(q, entropy)
    save_spore(g, tmp_path / "m.spore", encoded={"w": enc})
    back = load_spore(tmp_path / "m.spore").initializers["w"]
    assert np.array_equal(back, decoded(q, w.dtype))
    deq = dequantize(q.codes, q.params, np.float64)
    assert np.isclose(q.error, np.mean(np.linalg.norm(_rows(deq - w, 0 if axis == 0 else None), axis=1)
                                       / np.linalg.norm(_rows(w, 0 if axis == 0 else None), axis=1)))


def test_inputs_never_active_in_calibration_are_rounded_to_nearest():
    rng = np.random.default_rng(4)
    g = conv_graph(rng, kernel=(1, 1))
    feeds = feeds_for(rng, g, 3)
    for f in feeds:
        f["x"][:, 2] = 0.0
    st = layer_inputs(g, ["w"], feeds)["w"]
    w = g.initializers["w"]
    q = gptq_quantize(w, 7, 0, st.h, clip="max")
    rtn = quantize_levels(w, 7, 0, bias_correction=False)
    assert np.array_equal(q.codes[:, 2], rtn.codes[:, 2])
    assert not np.array_equal(q.codes, rtn.codes)


def test_channels_far_below_the_others_keep_their_own_step_or_the_zero_code():
    """Pruned channels are left at ~1e-12 by exporters (PP-OCR's at 1e-36). The file's grid scales hold any
    float32 exponent, so such a channel is rounded on its own step and comes back as itself; one of
    float32 denormals, whose step underflows, gets the zero code and comes back as zeros. Nothing divides
    by zero on the way."""
    rng = np.random.default_rng(9)
    g = conv_graph(rng, kernel=(1, 1))
    w = g.initializers["w"]
    w[3] *= 1e-12
    w[5] *= 1e-45
    st = layer_inputs(g, ["w"], feeds_for(rng, g, 2))["w"]
    with np.errstate(divide="raise", invalid="raise"):
        q = gptq_quantize(w, 7, 0, st.h)
        back = decoded(q, w.dtype)
    assert q.codes.max() <= 14 and len(np.unique(q.codes[3])) > 3
    assert np.linalg.norm(back[3] - w[3]) < 0.25 * np.linalg.norm(w[3])
    assert (q.codes[5] == 7).all() and not back[5].any()


def test_weights_without_a_usable_reader_fall_back_to_rounding_to_nearest():
    rng = np.random.default_rng(5)
    conv_w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    scale_w = rng.standard_normal((16, 10, 10)).astype(np.float32)  # read by Mul: no Hessian
    fc_w = rng.standard_normal((32, 16, 1, 1)).astype(np.float32)  # after a global pool: one row per feed
    nodes = [Node("Conv", ["x", "cw"], ["c"], {"pads": [1, 1, 1, 1]}), Node("Mul", ["c", "sw"], ["m"]),
             Node("GlobalAveragePool", ["m"], ["p"]), Node("Conv", ["p", "fw"], ["y"])]
    g = Graph(nodes, [ValueInfo("x", F32, (1, 8, 10, 10))], [ValueInfo("y", F32)],
              {"cw": conv_w, "sw": scale_w, "fw": fc_w})
    assert set(weight_readers(g, ["cw", "sw", "fw"])) == {"cw", "fw"}
    plan = {"cw": (7, 0), "sw": (7, 0), "fw": (7, 0)}
    said = []
    feeds = feeds_for(rng, g, 3, batch=1)
    got = gptq(g, plan, feeds, said.append)
    for name in ("sw", "fw"):
        ref = quantize_levels(g.initializers[name], 7, 0, clip=True)
        assert np.array_equal(got[name].codes, ref.codes) and np.array_equal(got[name].params.gain, ref.params.gain)
    assert not np.array_equal(got["cw"].codes, quantize_levels(conv_w, 7, 0).codes)
    calibrated = Calibrated(g, {n: a for n, (_, a) in plan.items()}, feeds)
    for name in plan:  # the search helper follows the same rules
        assert np.array_equal(calibrated.quantize(name, 7).codes, got[name].codes)
    assert sorted(s.split(": ")[1].split()[0] for s in said) == ["gptq", "nearest", "nearest"]


def test_float16_weights_behind_a_cast():
    rng = np.random.default_rng(6)
    w16 = rng.standard_normal((16, 8, 3, 3)).astype(np.float16)
    nodes = [Node("Cast", ["w16"], ["w"], {"to": 1}), Node("Conv", ["x", "w"], ["y"], {"pads": [1, 1, 1, 1]})]
    g = Graph(nodes, [ValueInfo("x", F32, (None, 8, 10, 10))], [ValueInfo("y", F32)], {"w16": w16})
    q = gptq(g, {"w16": (7, 0)}, feeds_for(rng, g, 2))["w16"]
    assert q.params.gain is None  # GPTQ's, not the fallback's (which is bias-corrected)
    assert decoded(q, w16.dtype).dtype == np.float16


def test_sequential_takes_later_inputs_from_the_quantized_model():
    rng = np.random.default_rng(7)
    w1, w2 = (rng.standard_normal((8, 8, 3, 3)).astype(np.float32) for _ in range(2))
    nodes = [Node("Conv", ["x", "w1"], ["h"], {"pads": [1, 1, 1, 1]}), Node("Relu", ["h"], ["r"]),
             Node("Conv", ["r", "w2"], ["y"], {"pads": [1, 1, 1, 1]})]
    g = Graph(nodes, [ValueInfo("x", F32, (None, 8, 10, 10))], [ValueInfo("y", F32)], {"w1": w1, "w2": w2})
    feeds = feeds_for(rng, g, 2)
    plan = {"w1": (3, 0), "w2": (3, 0)}
    once, seq = gptq(g, plan, feeds), gptq(g, plan, feeds, sequential=True)
    assert np.array_equal(once["w1"].codes, seq["w1"].codes)
    assert not np.array_equal(once["w2"].codes, seq["w2"].codes)
    assert seq["w2"].codes.max() <= 6


def test_bad_arguments():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    h = np.eye(6)
    with pytest.raises(ValueError, match="does not fit"):
        gptq_quantize(w, 7, 0, np.eye(5))
    with pytest.raises(ValueError, match="output-channel axis"):
        gptq_quantize(w, 7, None, h)
    with pytest.raises(ValueError, match="output-channel axis"):
        gptq_quantize(w, 7, 1, h, out_axis=0)
    with pytest.raises(ValueError, match="levels"):
        gptq_quantize(w, 0, 0, h)


@pytest.mark.slow
@pytest.mark.assets
def test_ppocr_det_keeps_its_outputs_better_than_rounding_to_nearest():
    """PP-OCRv4 det, every weight compress quantizes at L=15: calibrated on three of the real inputs,
    judged on the other three, GPTQ's outputs are closer to float than bias-corrected rounding's."""
    import os
    import sys

    from tests.assets import require

    require("ppocr_det")
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from real_inputs import case, cosine

    from sporeling.model import load_graph
    from sporeling.passes import optimize
    from sporeling.quant.encode import channel_axes
    from sporeling.quant.quantize import should_quantize

    c = case("ppocr_det")
    g = optimize(load_graph(c.path))
    axes = channel_axes(g)
    plan = {n: (15, axes[n]) for n, w in g.initializers.items() if should_quantize(n, w, axis=axes[n])}
    feeds = [f for _, f in c.inputs]
    calib, held = feeds[1::2], feeds[0::2]
    ref = [Model(g).run(f) for f in held]

    def mean_cosine(qs):
        m = Model(with_weights(g, {n: decoded(q, g.initializers[n].dtype) for n, q in qs.items()}))
        return np.mean([cosine(r[k], o[k]) for r, f in zip(ref, held) for o in [m.run(f)] for k in r])

    rtn = mean_cosine({n: quantize_levels(g.initializers[n], lv, a) for n, (lv, a) in plan.items()})
    mine = mean_cosine(gptq(g, plan, calib))
    assert mine > rtn + 0.02, (mine, rtn)

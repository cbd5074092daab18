"""Judging inputs distilled from BatchNormalization statistics (sporeling.quant.distill)."""

import json

import numpy as np
import pytest

from sporeling.ir import Graph, Node, ValueInfo
from sporeling.quant import distill
from sporeling.quant.distill import (batchnorm_statistics, distill_refusal, distillable_input, distilled_feeds,
                                     loss_graph, runtime_normalizations)

C_IN, C1, C2, SIDE = 3, 8, 6, 12


def _train_like(rng, n: int) -> np.ndarray:
    """What the toy model 'trained' on: per-channel offsets and scales no white noise has."""
    return (np.array([0.8, -0.5, 0.2]).reshape(1, 3, 1, 1)
            + np.array([0.3, 0.6, 0.2]).reshape(1, 3, 1, 1) * rng.standard_normal((n, C_IN, SIDE, SIDE))
            ).astype(np.float32)


def _convs(rng) -> dict:
    return {"w0": (rng.standard_normal((C1, C_IN, 3, 3)) / 5).astype(np.float32),
            "b0": rng.standard_normal(C1).astype(np.float32),
            "w1": (rng.standard_normal((C2, C1, 3, 3)) / 8).astype(np.float32),
            "b1": np.zeros(C2, np.float32)}


def bn_graph(seed: int = 3, second_input: bool = False) -> Graph:
    """Conv-BN-Relu-Conv-BN whose running statistics are what _train_like inputs give each BN (per sample,
    averaged), as a trained model's would be."""
    from sporeling.model import Model

    rng = np.random.default_rng(seed)
    inits = _convs(rng)
    spec = ValueInfo("x", np.dtype(np.float32), ("batch", C_IN, SIDE, SIDE))
    nodes = [Node("Conv", ["x", "w0", "b0"], ["c0"], {"pads": [1, 1, 1, 1]}),
             Node("BatchNormalization", ["c0", "s0", "o0", "m0", "v0"], ["n0"]),
             Node("Relu", ["n0"], ["r0"]),
             Node("Conv", ["r0", "w1", "b1"], ["c1"], {"pads": [1, 1, 1, 1]}),
             Node("BatchNormalization", ["c1", "s1", "o1", "m1", "v1"], ["y"])]
    train = _train_like(rng, 64)
    for width, k in ((C1, 0), (C2, 1)):  # placeholders, then each layer's statistics given the one before it
        inits.update({f"{p}{k}": np.full(width, float(p in "sv"), np.float32) for p in "msvo"})
    for k, (name, width) in enumerate((("c0", C1), ("c1", C2))):
        probe = Graph(nodes, [spec], [ValueInfo(name, np.dtype(np.float32))], dict(inits), opsets={"": 17})
        z = Model(probe, "probe").run({"x": train})[name]
        inits[f"m{k}"] = z.mean(axis=(2, 3)).mean(0).astype(np.float32)
        inits[f"v{k}"] = (z.std(axis=(2, 3)).mean(0) ** 2).astype(np.float32)
        inits[f"s{k}"] = (1 + 0.1 * rng.standard_normal(width)).astype(np.float32)
        inits[f"o{k}"] = (0.1 * rng.standard_normal(width)).astype(np.float32)
    inputs = [spec]
    if second_input:
        inputs.append(ValueInfo("gain", np.dtype(np.float32), (1,)))
        nodes[-1].outputs = ["yb"]
        nodes.append(Node("Mul", ["yb", "gain"], ["y"]))
    return Graph(nodes, inputs, [ValueInfo("y", np.dtype(np.float32))], inits, opsets={"": 17})


def with_layer_norm(g: Graph, rms: bool = False) -> Graph:
    """g with its output normalised over the channel axis at run time, decomposed as an exporter writes it:
    y - mean(y), over sqrt(mean of its square + eps); or, rms, y over sqrt(mean(y^2) + eps)."""
    g = Graph(list(g.nodes), g.inputs, g.outputs, dict(g.initializers), opsets=g.opsets)
    g.nodes[-1] = Node(g.nodes[-1].op_type, g.nodes[-1].inputs, ["pre"], g.nodes[-1].attrs, "last")
    g.initializers["eps"], g.initializers["two"] = np.float32(1e-5), np.float32(2.0)
    if rms:
        g.nodes += [Node("Pow", ["pre", "two"], ["sq"]), Node("ReduceMean", ["sq"], ["ms"], {"axes": [1]}),
                    Node("Add", ["ms", "eps"], ["mse"]), Node("Sqrt", ["mse"], ["rms"]),
                    Node("Div", ["pre", "rms"], ["y"])]
        return g
    g.nodes += [Node("ReduceMean", ["pre"], ["mu"], {"axes": [1]}), Node("Sub", ["pre", "mu"], ["c"]),
                Node("Pow", ["c", "two"], ["sq"]), Node("ReduceMean", ["sq"], ["var"], {"axes": [1]}),
                Node("Add", ["var", "eps"], ["vare"]), Node("Sqrt", ["vare"], ["sd"]), Node("Div", ["c", "sd"], ["y"])]
    return g


def _numpy_loss(graph: Graph, x: np.ndarray) -> float:
    """The distillation loss computed by hand: per layer, sample and channel, the squared distances of the
    mean and std over positions from the running ones in running stds; averaged."""
    from sporeling.model import Model

    probe = Graph(graph.nodes, graph.inputs, [ValueInfo("c0"), ValueInfo("c1")], graph.initializers,
                  opsets=graph.opsets)
    got = Model(probe, "probe").run({"x": x})
    terms = []
    for k, name in enumerate(("c0", "c1")):
        z = got[name].astype(np.float64)
        std = np.sqrt(graph.initializers[f"v{k}"].astype(np.float64) + 1e-5)
        a = (z.mean(axis=(2, 3)) - graph.initializers[f"m{k}"]) / std
        b = np.sqrt(z.var(axis=(2, 3)) + 1e-5) / std - 1
        terms.append(float((a * a + b * b).mean()))
    return float(np.mean(terms))


def test_batchnorm_statistics_and_the_input_to_optimise():
    g = bn_graph()
    taps = batchnorm_statistics(g)
    assert [t[0] for t in taps] == ["c0", "c1"]
    np.testing.assert_allclose(taps[0][2], np.sqrt(g.initializers["v0"] + 1e-5), rtol=1e-6)
    assert distillable_input(g, None).name == "x"
    assert distillable_input(bn_graph(second_input=True), None) is None  # two float inputs: which?
    assert distillable_input(bn_graph(second_input=True), {"gain": np.ones(1, np.float32)}).name == "x"


def test_loss_graph_computes_the_loss_it_documents():
    from sporeling.model import Model

    g = bn_graph()
    x = np.random.default_rng(0).standard_normal((3, C_IN, SIDE, SIDE)).astype(np.float32)
    lg, out = loss_graph(g, "x", x, batchnorm_statistics(g))
    value = float(Model(lg, "loss").run({})[out])
    np.testing.assert_allclose(value, _numpy_loss(g, x), rtol=1e-4)
    assert "x" in g.inputs[0].name and "x" not in g.initializers  # the model itself is left alone


def test_distilled_inputs_meet_the_statistics_white_noise_misses():
    g = bn_graph()
    feeds, info = distilled_feeds(g, {}, None, samples=6, steps=150, seed=1)
    assert len(feeds) == 6 and all(f["x"].shape == (1, C_IN, SIDE, SIDE) for f in feeds)
    noise = np.random.default_rng(1).standard_normal((6, C_IN, SIDE, SIDE)).astype(np.float32)
    distilled = np.concatenate([f["x"] for f in feeds])
    before, after = _numpy_loss(g, noise), _numpy_loss(g, distilled)
    assert info["loss"][0] == pytest.approx(before, rel=1e-4)
    assert info["loss"][1] == pytest.approx(after, rel=1e-3, abs=1e-5)
    assert after < 0.05 * before
    # what the layers see now: the first BN's input channels at their running means, within a tenth of a std
    taps = batchnorm_statistics(g)
    probe = Graph(g.nodes, g.inputs, [ValueInfo("c0")], g.initializers, opsets=g.opsets)
    from sporeling.model import Model

    c0 = Model(probe, "probe").run({"x": distilled})["c0"].mean(axis=(0, 2, 3))
    assert np.abs((c0 - taps[0][1]) / taps[0][2]).max() < 0.1
    # seeded: the same seed gives the same inputs, another seed others
    again, _ = distilled_feeds(g, {}, None, samples=6, steps=150, seed=1)
    other, _ = distilled_feeds(g, {}, None, samples=6, steps=150, seed=2)
    assert np.array_equal(again[0]["x"], feeds[0]["x"]) and not np.allclose(other[0]["x"], feeds[0]["x"])


def test_one_at_a_time_where_the_batch_is_fixed():
    g = bn_graph()
    g.inputs = [ValueInfo("x", np.dtype(np.float32), (1, C_IN, SIDE, SIDE))]
    feeds, info = distilled_feeds(g, {}, None, samples=3, steps=60, seed=0)
    assert len(feeds) == 3 and info["loss"][1] < 0.2 * info["loss"][0]


def test_nothing_to_distill_from():
    g = bn_graph()
    plain = Graph([n for n in g.nodes if n.op_type != "BatchNormalization"], g.inputs, g.outputs,
                  g.initializers, opsets=g.opsets)
    plain.nodes[0].outputs, plain.nodes[-1].outputs = ["n0"], ["y"]
    assert distilled_feeds(plain, {}, None) is None
    assert distilled_feeds(bn_graph(second_input=True), {}, None) is None


def test_batches_of_bounded_input_bytes_give_the_same_inputs(monkeypatch):
    """The samples go in batches of at most BATCH_INPUT_BYTES of input (memory); each sample's loss is its own,
    so batching changes where Adam takes them only through its epsilon, against gradients a third as large."""
    g = bn_graph()
    whole, info = distilled_feeds(g, {}, None, samples=6, steps=40, seed=4)
    lines = []
    monkeypatch.setattr(distill, "BATCH_INPUT_BYTES", 2 * 4 * C_IN * SIDE * SIDE)  # two samples a batch
    split, split_info = distilled_feeds(g, {}, None, samples=6, steps=40, seed=4, say=lines.append)
    assert [s for s in lines if s.startswith("  inputs")] == ["  inputs 1-2 of 6", "  inputs 3-4 of 6",
                                                             "  inputs 5-6 of 6"]
    np.testing.assert_allclose(split_info["loss"], info["loss"], rtol=1e-2)
    for a, b in zip(whole, split):
        np.testing.assert_allclose(a["x"], b["x"], atol=2e-2)  # inputs of unit scale


def test_distillation_runs_on_the_default_blas_threads(monkeypatch):
    """It runs before any Model does, so it sets the BLAS pool as a Model's run would (on two OpenBLAS threads
    PP-OCR cls's distillation took 124 s instead of 10 here)."""
    from sporeling.runtime import threads

    calls = []
    monkeypatch.setattr(threads, "apply_threads", calls.append)
    distilled_feeds(bn_graph(), {}, None, samples=2, steps=3, seed=0)
    assert calls and set(calls) == {threads.default_threads()}


def test_runtime_normalizations_are_found():
    g = bn_graph()
    assert runtime_normalizations(g) == [] and distill_refusal(g, None) is None
    for rms, means in ((False, 2), (True, 1)):  # a layer norm's two means (centre, spread); an RMS norm's one
        ln = with_layer_norm(g, rms)
        assert runtime_normalizations(ln) == ["ReduceMean"] * means
        assert "at run time" in distill_refusal(ln, None) and distill_refusal(ln, None, asked=True) is None
    op = Graph(list(g.nodes) + [Node("LayerNormalization", ["y", "s1", "o1"], ["z"], {"axis": 1}, "ln")],
               g.inputs, [ValueInfo("z", np.dtype(np.float32))], g.initializers, opsets=g.opsets)
    assert runtime_normalizations(op) == ["ln"]
    # a mean that does not come back to what it averaged is no normalisation: global pooling, squeeze-excitation
    # (the mean goes through a convolution before it scales the value)
    squeeze = [Node("ReduceMean", ["y"], ["pool"], {"axes": [2, 3]}, "pool"),
               Node("Conv", ["pool", "wse"], ["gate"], {}, "se_conv"),
               Node("Mul", ["y", "gate"], ["z"], {}, "se_scale")]
    se = Graph(list(g.nodes) + squeeze, g.inputs, [ValueInfo("z", np.dtype(np.float32))],
               {**g.initializers, "wse": np.ones((C2, C2, 1, 1), np.float32)}, opsets=g.opsets)
    assert runtime_normalizations(se) == []
    plain = Graph([n for n in g.nodes if n.op_type != "BatchNormalization"], g.inputs, g.outputs, g.initializers,
                  opsets=g.opsets)
    assert "no BatchNormalization statistics" in distill_refusal(plain, None, asked=True)
    assert "one float32 input" in distill_refusal(bn_graph(second_input=True), None)


@pytest.fixture(scope="module")
def bn_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    from sporeling.frontends.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("bn") / "bn.onnx"
    export_onnx(bn_graph(), path)
    return path


def test_compress_judges_on_distilled_inputs_by_default(bn_onnx, tmp_path):
    import sporeling
    from sporeling.quant.compress import compress

    lines = []
    r = compress(bn_onnx, tmp_path / "d.spore", check=False, input_shapes={"x": (1, 3, 12, 12)}, stream=_Lines(lines))
    assert lines[0].startswith("the model normalises with BatchNormalization alone") and "--no-distill" in lines[0]
    assert r["judged_on"] == {"distilled": 8}
    assert r["distilled"]["batchnorm_layers"] == 2 and r["distilled"]["loss"][1] < r["distilled"]["loss"][0]
    assert r["met"]
    out = sporeling.load(tmp_path / "d.spore").run({"x": _train_like(np.random.default_rng(5), 1)})
    assert np.isfinite(next(iter(out.values()))).all()
    plain = compress(bn_onnx, tmp_path / "r.spore", verbose=False, check=False, distill=False)
    assert plain["judged_on"] == {"random": 4} and "distilled" not in plain
    # beside calibration inputs, distilled ones take the random ones' place, of the calibration inputs' shape
    calib = [{"x": _train_like(np.random.default_rng(k), 1)} for k in range(2)]
    calibrated = compress(bn_onnx, tmp_path / "c.spore", verbose=False, check=False, calib=calib)
    assert calibrated["judged_on"] == {"calibration": 2, "distilled": 8} and "distilled" in calibrated
    random_beside = compress(bn_onnx, tmp_path / "c.spore", verbose=False, check=False, calib=calib, distill=False)
    assert random_beside["judged_on"] == {"calibration": 2, "random": 4} and "distilled" not in random_beside
    alone = compress(bn_onnx, tmp_path / "c.spore", verbose=False, check=False, calib=calib, samples=0)
    assert alone["judged_on"] == {"calibration": 2} and "distilled" not in alone


def test_gptq_leaves_the_distilled_inputs_beside_the_calibration_out_of_its_statistics(bn_onnx, tmp_path,
                                                                                       monkeypatch):
    """GPTQ fits the inputs whose statistics it takes, and a fitted group no longer checks anything: the
    distilled group judged beside the calibration inputs stays out (random ones beside are in, as before)."""
    from sporeling.quant import compress as module

    seen, real = [], module._gptq_rounders

    def counting(graph, chosen, stats, *rest):
        seen.append(len(stats))
        return real(graph, chosen, stats, *rest)

    monkeypatch.setattr(module, "_gptq_rounders", counting)
    calib = [{"x": _train_like(np.random.default_rng(k), 1)} for k in range(2)]
    r = module.compress(bn_onnx, tmp_path / "g.spore", verbose=False, check=False, calib=calib, rounding="gptq")
    assert r["judged_on"] == {"calibration": 2, "distilled": 8} and seen == [2]
    r = module.compress(bn_onnx, tmp_path / "g.spore", verbose=False, check=False, calib=calib, rounding="gptq",
                        distill=False)
    assert r["judged_on"] == {"calibration": 2, "random": 4} and seen == [2, 6]


def test_cli_distill(bn_onnx, tmp_path):
    from sporeling.cli import main

    for flags, judged in (([], {"distilled": 8}), (["--no-distill"], {"random": 2}), (["--distill"], {"distilled": 8})):
        report = tmp_path / "r.json"
        assert main(["compress", str(bn_onnx), "-o", str(tmp_path / "o.spore"), "--samples", "2",
                     "--input-shape", "x=1,3,12,12", "--report", str(report), *flags]) == 0
        assert json.loads(report.read_text())["judged_on"] == judged


@pytest.fixture(scope="module")
def ln_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    from sporeling.frontends.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("ln") / "ln.onnx"
    export_onnx(with_layer_norm(bn_graph()), path)
    return path


def test_a_model_normalising_at_run_time_is_judged_on_random_inputs_unless_asked(ln_onnx, tmp_path):
    from sporeling.quant.compress import compress

    lines = []
    r = compress(ln_onnx, tmp_path / "r.spore", check=False, samples=2, input_shapes={"x": (1, 3, 12, 12)},
                 stream=_Lines(lines))
    assert r["judged_on"] == {"random": 2} and "distilled" not in r
    assert any(s.startswith("random inputs judge, not distilled ones: the model normalises") for s in lines)
    asked = compress(ln_onnx, tmp_path / "d.spore", verbose=False, check=False, samples=2, distill=True,
                     input_shapes={"x": (1, 3, 12, 12)})
    assert asked["judged_on"] == {"distilled": 8}


class _Lines:
    def __init__(self, into: list):
        self.into = into

    def write(self, s: str) -> None:
        self.into += [x for x in s.split("\n") if x]

    def flush(self) -> None:
        pass


def test_which_real_models_distillation_judges():
    """PP-OCR det and cls normalise with BatchNormalization alone; rec also with five decomposed LayerNorms."""
    from tests.assets import require

    from sporeling.model import load_graph

    for name, refused in (("ppocr_det", False), ("ppocr_cls", False), ("ppocr_rec", True)):
        g = load_graph(require(name))
        assert (distill_refusal(g, None) is not None) == refused, name
    assert len(runtime_normalizations(load_graph(require("ppocr_rec")))) == 10  # two means in each of five


def test_ppocr_cls_distils_toward_its_batchnorm_statistics():
    """The real PP-OCR cls model (35 BatchNormalization layers): 30 Adam steps take the loss far down."""
    from tests.assets import require

    from sporeling.model import load_graph

    g = load_graph(require("ppocr_cls"))
    feeds, info = distilled_feeds(g, {"x": (1, 3, 48, 192)}, None, samples=2, steps=30, seed=0)
    assert info["batchnorm_layers"] == 35
    assert info["loss"][1] < 0.2 * info["loss"][0]
    assert all(np.isfinite(f["x"]).all() and f["x"].shape == (1, 3, 48, 192) for f in feeds)

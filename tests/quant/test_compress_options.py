"""sporeling.compress's search options: --target-size, --plot, fixed inputs, and how outputs are judged."""

import json

import numpy as np
import pytest

from sporeling.errors import FeedError, SporelingError
from sporeling.ir import Graph, Node, ValueInfo
from sporeling.quant.judge import agreement, cosine, worst_mean_agreement

rng = np.random.default_rng(7)


def chain_graph() -> Graph:
    """Three convolutions of different widths and scales: a graph where an allocation has choices."""
    inits, nodes, prev, c_in = {}, [], "x", 8
    for i, (c_out, gain) in enumerate([(48, 1.0), (96, 0.2), (32, 3.0)]):
        inits[f"w{i}"] = (rng.standard_normal((c_out, c_in, 3, 3)) * gain / np.sqrt(9 * c_in)).astype(np.float32)
        inits[f"b{i}"] = rng.standard_normal(c_out).astype(np.float32) * 0.1
        out = "y" if i == 2 else f"h{i}"
        nodes += [Node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], {"pads": [1, 1, 1, 1]}),
                  Node("Relu", [f"c{i}"], [out])]
        prev, c_in = out, c_out
    return Graph(nodes, [ValueInfo("x", np.dtype(np.float32), (1, 8, 10, 10))],
                 [ValueInfo("y", np.dtype(np.float32), (1, 32, 10, 10))], inits, opsets={"": 17})


def _exported(graph: Graph, tmp_path_factory, name: str):
    pytest.importorskip("onnx")
    from sporeling.frontends.onnx_export import export_onnx

    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    export_onnx(graph, path)
    return path


@pytest.fixture(scope="module")
def chain_onnx(tmp_path_factory):
    return _exported(chain_graph(), tmp_path_factory, "chain")


def many_small_layers(k: int = 24, d: int = 48) -> Graph:
    """x (4, d) -> k times (MatMul d x d -> Tanh) -> y: each tensor's own entry in the file counts."""
    inits, nodes, x = {}, [], "x"
    for i in range(k):
        inits[f"w{i}"] = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        out = "y" if i == k - 1 else f"t{i}"
        nodes += [Node("MatMul", [x, f"w{i}"], [f"m{i}"]), Node("Tanh", [f"m{i}"], [out])]
        x = out
    return Graph(nodes, [ValueInfo("x", np.dtype(np.float32), (4, d))], [ValueInfo("y", np.dtype(np.float32), (4, d))],
                 inits, opsets={"": 17})


def test_a_target_size_below_the_smallest_file_is_said_and_the_smallest_is_met(tmp_path):
    import io

    from sporeling.format import save_spore
    from sporeling.quant.compress import compress

    save_spore(many_small_layers(), tmp_path / "float.spore")
    out = io.StringIO()
    low = compress(tmp_path / "float.spore", tmp_path / "low.spore", min_size=16, target_size=0.008, stream=out,
                   check=False)
    smallest = low["output_bytes"]
    assert smallest > 8000 and not low["within_target_size"] and "B over 0.008 MB" in out.getvalue()
    # asked for exactly the smallest file the search can write, it writes one within it
    r = compress(tmp_path / "float.spore", tmp_path / "at.spore", min_size=16, target_size=smallest / 1e6,
                 verbose=False, check=False)
    assert r["within_target_size"] and r["output_bytes"] <= smallest


def test_target_size_trades_error_for_bytes(chain_onnx, tmp_path):
    from sporeling.quant.compress import compress

    reports = {}
    for mb in (0.03, 0.06):
        r = compress(chain_onnx, tmp_path / f"{mb}.spore", target_size=mb, verbose=False)
        assert r["output_bytes"] <= mb * 1e6 and r["within_target_size"]
        assert r["target_size_code_bytes"] > 0
        reports[mb] = r
    small, large = reports[0.03], reports[0.06]
    assert small["output_bytes"] < large["output_bytes"]
    assert small["search_cosine"] < large["search_cosine"]
    with pytest.raises(SporelingError, match="cannot be met"):
        compress(chain_onnx, tmp_path / "x.spore", target_size=0.001, verbose=False)
    with pytest.raises(SporelingError, match="target size needs --method mixed"):
        compress(chain_onnx, tmp_path / "x.spore", method="fixed", target_size=0.05, verbose=False)


def test_mixed_is_never_larger_than_a_uniform_reference_that_meets_the_target(chain_onnx, tmp_path):
    from sporeling.quant.compress import compress

    r = compress(chain_onnx, tmp_path / "m.spore", target_cosine=0.999, verbose=False)
    curve = r["curve"]
    assert {p["what"].split(" (")[0] for p in curve} >= {"uniform about 8-bit", "uniform about 6-bit"}
    (chosen,) = [p for p in curve if p["chosen"]]
    assert chosen["agreement"] >= 0.999 and r["met"]
    meeting = [p["code_bytes"] for p in curve if p["agreement"] >= 0.999]
    assert chosen["code_bytes"] == min(meeting)
    assert all(p["file_bytes"] > p["code_bytes"] for p in curve)
    json.dumps(r)


def test_plot_draws_the_measured_allocations(chain_onnx, tmp_path):
    pytest.importorskip("matplotlib")
    from sporeling.quant.compress import compress

    compress(chain_onnx, tmp_path / "m.spore", plot=str(tmp_path / "curve.png"), verbose=False, check=False)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SporelingError, match="--plot"):
        compress(chain_onnx, tmp_path / "f.spore", method="fixed", plot=str(tmp_path / "f.png"), verbose=False)


def test_fixed_inputs_in_the_samples():
    from sporeling.model import Model
    from sporeling.quant.judge import sample_feeds

    model = Model(chain_graph())
    feeds = sample_feeds(model, {}, 3, {"x": np.ones((1, 8, 10, 10), np.float32)})
    assert len(feeds) == 3 and all(np.array_equal(f["x"], np.ones((1, 8, 10, 10))) for f in feeds)
    free = sample_feeds(model, {}, 2)
    assert not np.array_equal(free[0]["x"], free[1]["x"])  # seeded, and a different seed per sample
    with pytest.raises(SporelingError, match="no input 'sr'.*x"):
        sample_feeds(model, {}, 1, {"sr": 16000})


def test_seed_and_samples_pick_the_random_inputs_the_search_judges_on(chain_onnx, tmp_path, monkeypatch):
    import sporeling.quant.compress as compress_module
    from sporeling import compress
    from sporeling.cli import main

    drawn = []
    real = compress_module.sample_feeds

    def spy(model, shapes, samples, fixed=None, seed=0):
        feeds = real(model, shapes, samples, fixed, seed)
        drawn.append((samples, seed, feeds[0]["x"].copy()))
        return feeds

    monkeypatch.setattr(compress_module, "sample_feeds", spy)
    a = compress(chain_onnx, tmp_path / "a.spore", verbose=False, check=False)
    b = compress(chain_onnx, tmp_path / "b.spore", verbose=False, check=False, samples=2, seed=7)
    assert [d[:2] for d in drawn] == [(4, 0), (2, 7)]
    assert not np.array_equal(drawn[0][2], drawn[1][2])  # another seed, another draw
    assert a["met"] and b["met"]
    c = compress(chain_onnx, tmp_path / "c.spore", verbose=False, check=False, samples=2, seed=7)
    assert c["layers"] == b["layers"] and c["curve"] == b["curve"]  # the same draw, the same search and codes
    assert main(["compress", str(chain_onnx), "-o", str(tmp_path / "d.spore"), "--samples", "3", "--seed", "5"]) == 0
    assert drawn[-1][:2] == (3, 5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(SporelingError, match="samples must be a whole number"):
            compress(chain_onnx, tmp_path / "e.spore", verbose=False, samples=bad)


def test_cli_input_values():
    from sporeling.cli import _input_value

    name, v = _input_value("sr=16000")
    assert name == "sr" and v.dtype == np.int64 and v.shape == () and v == 16000
    assert _input_value("t=0.5")[1].dtype == np.float32
    with pytest.raises(FeedError, match="NAME=NUMBER"):
        _input_value("sr=fast")


def test_agreement_centres_only_offset_dominated_outputs():
    coords = rng.uniform(80, 120, 300)  # landmark-like: a big common offset
    moved = coords + rng.normal(0, 3, 300)
    plain = float(coords @ moved / np.linalg.norm(coords) / np.linalg.norm(moved))
    assert agreement(coords, moved) < 0.99 < 0.999 < plain  # 3 px of noise on 40 px of spread is no 0.999
    probs = np.abs(rng.normal(0, 1e-3, 1000))  # a probability map of a photo without text: small noise at 0
    probs[:50] = 0.9
    noisy = probs + np.abs(rng.normal(0, 1e-3, 1000))
    assert agreement(probs, noisy) > 0.999  # plain cosine: the noise floor is not judged on its own


def test_small_outputs_are_judged_joined_over_the_inputs():
    ref = [{"score": np.array([[s]])} for s in (2.0, 5.0, -1.0)]
    same_sign = [{"score": np.array([[s]])} for s in (5.0, 0.5, -4.0)]  # each alone has cosine 1
    assert worst_mean_agreement(ref, same_sign) < 0.9
    assert worst_mean_agreement(ref, ref) == pytest.approx(1.0)


def test_channels_a_billion_times_weaker_count_as_zero():
    from sporeling.quant.mixed import quantize_levels

    w = rng.standard_normal((4, 50)).astype(np.float32)
    w[1] = np.float32(2.7e-36)  # PP-OCR rec keeps channels like this; at 4095 levels their scale underflows
    q = quantize_levels(w, 4095, 0)
    assert q.error < 1e-3


def if_graph() -> Graph:
    """y = x @ Wt + bt if cond else x @ We + be, each weight inside its branch (as silero-vad keeps its
    weights)."""
    def branch(name: str, scale: float) -> Graph:
        w = (rng.standard_normal((64, 48)) * scale).astype(np.float32)
        b = (rng.standard_normal(48) * 0.1).astype(np.float32)
        nodes = [Node("MatMul", ["x", name], [f"m_{name}"]), Node("Add", [f"m_{name}", f"b{name}"], [f"y_{name}"])]
        return Graph(nodes, [], [ValueInfo(f"y_{name}", np.dtype(np.float32), (2, 48))], {name: w, f"b{name}": b})

    return Graph([Node("If", ["cond"], ["y"], {"then_branch": branch("wt", 1.0), "else_branch": branch("we", 0.5)})],
                 [ValueInfo("x", np.dtype(np.float32), (2, 64)), ValueInfo("cond", np.dtype(np.bool_), ())],
                 [ValueInfo("y", np.dtype(np.float32), (2, 48))], {}, opsets={"": 17})


def test_weights_inside_if_branches_are_compressed(tmp_path):
    from sporeling.format import save_spore
    from sporeling.model import Model, load
    from sporeling.quant.compress import compress

    g = if_graph()
    save_spore(g, tmp_path / "if.spore")
    r = compress(tmp_path / "if.spore", tmp_path / "c.spore", inputs={"cond": np.array(True)}, verbose=False)
    layers = {x["name"]: x for x in r["layers"]}
    assert set(layers) == {"wt", "we"} and all(x["codec"] in ("qpack", "qfse") for x in layers.values())
    assert r["unreached"] == ["we"] and layers["we"]["bits"] == 8  # never run on cond=True: 8 bits, not judged
    # the biases go to float16 (within either branch), and that is not mistaken for every weight's own loss:
    # the branch never run stays unreached, not judged insensitive
    assert r["float16_tensors"] == 2
    assert r["output_bytes"] < (tmp_path / "if.spore").stat().st_size / 2.5
    back = load(tmp_path / "c.spore")
    x = rng.standard_normal((2, 64)).astype(np.float32)
    for cond in (True, False):
        ref = Model(g).run({"x": x, "cond": np.array(cond)})["y"]
        got = back.run({"x": x, "cond": np.array(cond)})["y"]
        assert float(np.sum(ref * got) / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.99


def test_a_joined_small_output_must_keep_its_magnitude():
    ref = [{"score": np.array([[4.0]])}, {"score": np.array([[6.0]])}]
    halved = [{"score": np.array([[2.0]])}, {"score": np.array([[3.0]])}]  # the same direction, half the size
    assert worst_mean_agreement(ref, halved) < 0.9
    close = [{"score": np.array([[4.01]])}, {"score": np.array([[5.99]])}]
    assert worst_mean_agreement(ref, close) > 0.9999


@pytest.mark.assets
def test_silero_weights_in_its_if_branches_are_compressed(tmp_path):
    from sporeling.model import load, load_graph
    from sporeling.passes import optimize
    from sporeling.quant.compress import compress

    from ..assets import require

    src = require("silero_vad")
    r = compress(src, tmp_path / "s.spore", method="fixed", bits=8, inputs={"sr": np.array(16000)},
                 input_shapes={"input": (1, 576), "state": (2, 1, 128)}, verbose=False)
    names = [x["name"] for x in r["layers"]]
    assert any("then_branch" in n for n in names) and any("else_branch" in n for n in names)
    assert r["ratio"] > 3.5  # was 1.0 while only top-level initializers were compressed
    # every branch weight decodes to its own float tensor (8-bit codes: about 1% error), none mixed up
    reference = load_graph(src)
    optimize(reference, [])
    ref_w = reference.named_initializers()
    back = load(tmp_path / "s.spore")
    got_w = back.graph.named_initializers()
    for n in names:
        err = np.linalg.norm(got_w[n] - ref_w[n]) / np.linalg.norm(ref_w[n])
        assert err < 0.03, (n, err)
    t = np.arange(576, dtype=np.float32) / 16000
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)[None]
    float_model = load(src)
    for sr in (16000, 8000):  # both branches run
        feeds = {"input": x[:, :576 if sr == 16000 else 288], "state": np.zeros((2, 1, 128), np.float32),
                 "sr": np.array(sr, np.int64)}
        ref, got = float_model.run(feeds), back.run(feeds)
        assert abs(float(ref["output"].ravel()[0]) - float(got["output"].ravel()[0])) < 0.05


def test_gptq_rounding_in_the_mixed_search(chain_onnx, tmp_path):
    from sporeling.quant.compress import compress

    calib = [{"x": rng.standard_normal((1, 8, 10, 10)).astype(np.float32)} for _ in range(4)]
    near = compress(chain_onnx, tmp_path / "n.spore", calib=calib, rounding="nearest", target_cosine=0.999,
                    verbose=False)
    gptq = compress(chain_onnx, tmp_path / "g.spore", calib=calib, rounding="gptq", target_cosine=0.999,
                    verbose=False)
    assert near["rounding"] == "nearest" and gptq["rounding"] == "gptq"
    assert gptq["met"] and gptq["search_cosine"] >= 0.999
    # the same grid, rounded to cancel errors: the target is met at least as coarsely on these inputs
    assert gptq["output_bytes"] <= near["output_bytes"] * 1.02
    for bad in ({"rounding": "gptq"}, {"rounding": "gptq", "calib": calib, "method": "original"},
                {"rounding": "best"}):
        with pytest.raises(SporelingError, match="rounding"):
            compress(chain_onnx, tmp_path / "x.spore", verbose=False, **bad)


def two_branch_graph() -> Graph:
    """y = relu(conv(x)) + relu(conv(z)): calibration inputs with z near zero never exercise the z branch."""
    inits, nodes = {}, []
    for i, inp in enumerate(("x", "z")):
        inits[f"w{i}"] = (rng.standard_normal((24, 8, 3, 3)) / np.sqrt(72)).astype(np.float32)
        inits[f"b{i}"] = np.zeros(24, np.float32)
        nodes += [Node("Conv", [inp, f"w{i}", f"b{i}"], [f"c{i}"], {"pads": [1, 1, 1, 1]}),
                  Node("Relu", [f"c{i}"], [f"r{i}"])]
    nodes.append(Node("Add", ["r0", "r1"], ["y"]))
    spec = [ValueInfo(n, np.dtype(np.float32), (1, 8, 10, 10)) for n in ("x", "z")]
    return Graph(nodes, spec, [ValueInfo("y", np.dtype(np.float32), (1, 24, 10, 10))], inits, opsets={"": 17})


@pytest.mark.parametrize("rounding", ["nearest", "gptq"])
def test_calibration_inputs_are_judged_beside_random_ones(tmp_path_factory, tmp_path, rounding):
    """A few calibration inputs can leave part of the model idle (here the z branch, fed almost nothing): held
    to the target on them alone, the search would give that part the coarsest levels. The random samples are
    judged beside them, each group on its own, so the model keeps the target on inputs the calibration missed.
    GPTQ weighs each layer's inputs over both groups."""
    from sporeling.model import load
    from sporeling.quant.compress import compress

    src = _exported(two_branch_graph(), tmp_path_factory, "two_branch")
    calib = [{"x": rng.standard_normal((1, 8, 10, 10)).astype(np.float32),
              "z": 1e-4 * rng.standard_normal((1, 8, 10, 10)).astype(np.float32)} for _ in range(3)]
    lines = []
    report = compress(src, tmp_path / "c.spore", calib=calib, verbose=True, check=False, rounding=rounding,
                      stream=_Lines(lines))
    assert report["met"] and report["judged_on"] == {"calibration": 3, "random": 4}
    assert any("on 3 calibration inputs and, apart, 4 random inputs" in t for t in lines)
    assert (rounding == "gptq") == any("GPTQ rounding" in t and "from 7 sample inputs" in t for t in lines)
    float_model, small = load(src), load(tmp_path / "c.spore")
    fresh = [{k: rng.standard_normal((1, 8, 10, 10)).astype(np.float32) for k in ("x", "z")} for _ in range(6)]
    got = worst_mean_agreement([float_model.run(f) for f in fresh], [small.run(f) for f in fresh])
    assert got >= 0.99, got
    # still judged on the calibration inputs: they pass too
    on_calib = worst_mean_agreement([float_model.run(f) for f in calib], [small.run(f) for f in calib])
    assert on_calib >= 0.995
    if rounding == "nearest":  # samples=0: judged on the calibration inputs alone, which never reach the z branch
        alone = compress(src, tmp_path / "alone.spore", calib=calib, samples=0, verbose=False, check=False)
        assert alone["met"] and alone["judged_on"] == {"calibration": 3}
        bits = {x["name"]: x["bits_per_weight"] for x in alone["layers"]}
        beside = {x["name"]: x["bits_per_weight"] for x in report["layers"]}
        assert bits["w1"] < beside["w1"] and bits["w1"] < bits["w0"]  # the idle branch went coarse
        small = load(tmp_path / "alone.spore")
        assert worst_mean_agreement([float_model.run(f) for f in calib], [small.run(f) for f in calib]) >= 0.995


def test_no_random_samples_needs_calibration_inputs(chain_onnx, tmp_path, capsys):
    from sporeling.cli import main
    from sporeling.quant.compress import compress

    with pytest.raises(SporelingError, match=r"at least 1 \(or 0 with calib\)"):
        compress(chain_onnx, tmp_path / "x.spore", verbose=False, samples=0)
    assert main(["compress", str(chain_onnx), "-o", str(tmp_path / "y.spore"), "--samples", "0"]) != 0
    assert "or 0 with calib" in capsys.readouterr().err
    assert not (tmp_path / "x.spore").exists() and not (tmp_path / "y.spore").exists()


def test_the_judged_figure_is_the_mean_less_its_standard_error():
    ref = [{"y": np.ones(64) + np.arange(64) * 0.01} for _ in range(4)]
    steady = [{"y": r["y"] * 1.0 + 0.01 * np.sin(np.arange(64) + k)} for k, r in enumerate(ref)]
    values = np.array([agreement(r["y"], o["y"]) for r, o in zip(ref, steady)])
    expected = values.mean() - values.std(ddof=1) / 2  # sqrt(4) samples
    assert worst_mean_agreement(ref, steady) == pytest.approx(expected, abs=1e-12)
    assert worst_mean_agreement(ref[:1], steady[:1]) == pytest.approx(values[0], abs=1e-12)  # one sample: its value


# ---- recurrent models: judged over a stream, their state fed back ----------------------------------------
def rnn_graph(seed: int = 0) -> Graph:
    """stateN = tanh(x Wx + state Wh), y = stateN Wo: a state that carries (Wh orthogonal, gain 0.98), so rounding
    errors in Wh build up from step to step."""
    r = np.random.default_rng(seed)
    q, _ = np.linalg.qr(r.standard_normal((128, 128)))
    inits = {"wx": (r.standard_normal((64, 128)) / 8).astype(np.float32), "wh": (q * 0.98).astype(np.float32),
             "wo": (r.standard_normal((128, 8)) / 11).astype(np.float32)}
    nodes = [Node("MatMul", ["x", "wx"], ["a"]), Node("MatMul", ["state", "wh"], ["b"]), Node("Add", ["a", "b"], ["c"]),
             Node("Tanh", ["c"], ["stateN"]), Node("MatMul", ["stateN", "wo"], ["y"])]
    f = np.dtype(np.float32)
    return Graph(nodes, [ValueInfo("x", f, (1, 64)), ValueInfo("state", f, (1, 128))],
                 [ValueInfo("y", f, (1, 8)), ValueInfo("stateN", f, (1, 128))], inits, opsets={"": 17})


def test_feedback_pairs_match_state_outputs_to_inputs_by_shape_and_name():
    from sporeling.quant.judge import feedback_pairs

    s = np.zeros((2, 1, 128), np.float32)
    assert feedback_pairs({"input": np.zeros((1, 512), np.float32), "state": s, "sr": np.array(16000)},
                          {"output": np.zeros((1, 1), np.float32), "stateN": s}) == {"stateN": "state"}
    h = np.zeros((1, 1, 64), np.float32)
    assert feedback_pairs({"x": np.zeros((1, 5), np.float32), "h0": h, "c0": h},
                          {"y": np.zeros((1, 5), np.float32), "hn": h, "cn": h}) == {"hn": "h0", "cn": "c0"}
    assert feedback_pairs({"state_in": h}, {"state_out": h}) == {"state_out": "state_in"}
    # an image-to-image model's input and output share a shape, but not a name stem: no state
    img = np.zeros((1, 3, 8, 8), np.float32)
    assert feedback_pairs({"input": img}, {"output": img}) == {}
    # a state of another shape or dtype is not fed back
    assert feedback_pairs({"state": s}, {"stateN": np.zeros((2, 1, 64), np.float32)}) == {}
    assert feedback_pairs({"state": s}, {"stateN": s.astype(np.float64)}) == {}


@pytest.fixture(scope="module")
def rnn_onnx(tmp_path_factory):
    return _exported(rnn_graph(), tmp_path_factory, "rnn")


def test_a_recurrent_model_is_judged_over_a_stream_of_its_own_state(rnn_onnx, tmp_path):
    """Judged step by step, the search keeps each step's cosine but not the state's drift over a stream: it
    passes a smaller file that does worse over a stream (on quantize_levels' grid, below the target; on the
    step grid the drift is smaller, 0.9950-0.9960 over 32-128 steps of this model). Judged as a stream,
    the compressed model keeps the target over a fresh stream of 64 inputs."""
    from sporeling.model import Model, load
    from sporeling.quant.compress import compress
    from sporeling.quant.judge import run_stream

    r = np.random.default_rng(5)
    stream = [{"x": r.standard_normal((1, 64)).astype(np.float32), "state": np.zeros((1, 128), np.float32)}]
    stream += [{"x": r.standard_normal((1, 64)).astype(np.float32)} for _ in range(63)]
    pairs = {"stateN": "state"}
    expected = run_stream(Model(rnn_graph(), "float"), stream, pairs)
    streamed, size = {}, {}
    for label, feedback in (("found", None), ("per step", {})):
        dst = tmp_path / f"{label}.spore"
        report = compress(rnn_onnx, dst, feedback=feedback, verbose=False)
        assert report["feedback"] == (pairs if feedback is None else {}) and report["met"]
        streamed[label] = worst_mean_agreement(expected, run_stream(load(dst), stream, pairs))
        size[label] = report["output_bytes"]
    assert streamed["found"] >= 0.995 and streamed["per step"] < streamed["found"] - 0.001, streamed
    assert size["per step"] < size["found"], size


def test_feedback_options_are_checked(rnn_onnx, tmp_path):
    from sporeling.quant.compress import compress

    from ..test_cli import cli

    with pytest.raises(SporelingError, match="needs an output 'hn' and an input 'h'"):
        compress(rnn_onnx, tmp_path / "a.spore", feedback={"hn": "h"}, verbose=False)
    r = cli("compress", rnn_onnx, "-o", tmp_path / "b.spore", "--feedback", "stateN")
    assert r.returncode == 2 and "expected OUT=IN" in r.stderr and "Traceback" not in r.stderr
    r = cli("compress", rnn_onnx, "-o", tmp_path / "b.spore", "--feedback", "stateN=state", "--no-feedback")
    assert r.returncode == 2 and "contradict" in r.stderr
    r = cli("compress", rnn_onnx, "-o", tmp_path / "b.spore", "--feedback", "stateN=state", "--report",
            tmp_path / "r.json")
    assert r.returncode == 0 and "as a stream feeding stateN into state" in r.stdout
    assert json.loads((tmp_path / "r.json").read_text())["feedback"] == {"stateN": "state"}


@pytest.mark.assets
def test_silero_compressed_data_free_keeps_its_output_over_a_real_audio_stream(tmp_path):
    """The default data-free search finds Silero's state and judges a stream: over 16 chunks of a voiced
    signal, carrying each model's own state, its outputs keep cosine >= 0.995 (judged step by step, the search
    left the state at 0.982 and the speech probability up to 0.22 off: benchmarks/README.md)."""
    from sporeling.model import load
    from sporeling.quant.compress import compress
    from sporeling.quant.judge import run_stream

    from ..assets import require
    from ..test_real_models import audio_frames

    src = require("silero_vad")
    frames = audio_frames(16)
    report = compress(src, tmp_path / "s.spore", inputs={"sr": np.array(16000)},
                      input_shapes={"input": frames[:1].shape, "state": (2, 1, 128)}, verbose=False)
    assert report["feedback"] == {"stateN": "state"} and report["ratio"] > 4
    sr = np.array(16000, np.int64)
    stream = [{"input": frames[:1], "state": np.zeros((2, 1, 128), np.float32), "sr": sr}]
    stream += [{"input": frames[i:i + 1], "sr": sr} for i in range(1, len(frames))]
    pairs = {"stateN": "state"}
    expected, got = (run_stream(load(p), stream, pairs) for p in (src, tmp_path / "s.spore"))
    p, q = (np.array([float(o["output"].ravel()[0]) for o in outs]) for outs in (expected, got))
    # judged as benchmarks/compression.py judges it: the speech probabilities joined over the stream, the
    # state's cosine per chunk averaged
    assert cosine(p, q) >= 0.995 and np.abs(p - q).max() < 0.1
    assert np.mean([cosine(e["stateN"], g["stateN"]) for e, g in zip(expected, got)]) >= 0.995


def test_float_tensors_go_to_float16_when_the_search_finds_it_harmless(chain_onnx, tmp_path):
    from sporeling.format import load_spore
    from sporeling.format.reader import _File
    from sporeling.quant.compress import compress

    r = compress(chain_onnx, tmp_path / "m.spore", verbose=False)
    assert r["float16_tensors"] == 3 and r["met"]  # the three biases
    graph = load_spore(tmp_path / "m.spore")
    for b in ("b0", "b1", "b2"):
        v = graph.initializers[b]
        assert v.dtype == np.float32 and np.array_equal(v.astype(np.float16).astype(np.float32), v)
        assert np.abs(v - chain_graph().initializers[b]).max() > 0  # rounded, not the float32 values
    f = _File(str(tmp_path / "m.spore"))
    codecs = {e.codec.name for e in f.entries}
    f.close()
    assert "half" in codecs and codecs & {"qfse", "qpack"}
    fixed = compress(chain_onnx, tmp_path / "f.spore", method="fixed", verbose=False)
    assert "float16_tensors" not in fixed  # no search, nothing to judge the rounding by: fixed keeps float32


def offset_graph() -> Graph:
    """y = (x @ w + 1000.3) - 1000: float16 rounds 1000.3 to 1000.5, which moves every output by 0.2 on
    values of about 0.3. Reading the constant through a Resize-like shape op would not be rounded at all."""
    w = (rng.standard_normal((64, 64)) / 80).astype(np.float32)
    inits = {"w": w, "big": np.full(64, 1000.3, np.float32), "back": np.full(64, 1000.0, np.float32)}
    nodes = [Node("MatMul", ["x", "w"], ["m"]), Node("Add", ["m", "big"], ["a"]), Node("Sub", ["a", "back"], ["y"])]
    return Graph(nodes, [ValueInfo("x", np.dtype(np.float32), (4, 64))],
                 [ValueInfo("y", np.dtype(np.float32), (4, 64))], inits, opsets={"": 17})


def test_float_tensors_stay_float32_when_float16_alone_costs_the_outputs(tmp_path_factory, tmp_path):
    from sporeling.format import load_spore
    from sporeling.quant.compress import compress
    from sporeling.quant.encode import half_candidates

    assert set(half_candidates(offset_graph(), {"w"})) == {"big"}  # 1000.0 is exact in float16 already
    path = _exported(offset_graph(), tmp_path_factory, "offset")
    lines = []
    r = compress(path, tmp_path / "o.spore", verbose=True, stream=_Lines(lines))
    assert r["float16_tensors"] == 0 and r["met"]
    assert any("stay float32" in s for s in lines)
    assert load_spore(tmp_path / "o.spore").initializers["big"][0] == np.float32(1000.3)


def test_only_arithmetic_operands_are_rounded():
    from sporeling.quant.encode import half_candidates

    g = Graph([Node("Resize", ["x", "", "scales"], ["r"], {"mode": "nearest"}),
               Node("Mul", ["r", "gain"], ["m"]), Node("Cast", ["gain2"], ["g2"], {"to": 1}),
               Node("Add", ["m", "g2"], ["y"])],
              [ValueInfo("x", np.dtype(np.float32), (1, 1, 3, 3))], [ValueInfo("y", np.dtype(np.float32), None)],
              {"scales": np.array([1, 1, 1.7, 1.7], np.float32), "gain": np.full(3, 0.1, np.float32),
               "gain2": np.full(3, 0.3, np.float32)}, opsets={"": 17})
    found = half_candidates(g, set())
    assert set(found) == {"gain", "gain2"}  # Resize's scales decide a shape: never rounded
    assert found["gain"].dtype == np.float32 and found["gain"][0] == np.float32(np.float16(0.1))
    assert half_candidates(g, {"gain"}).keys() == {"gain2"}


class _Lines:
    def __init__(self, lines: list):
        self.lines = lines

    def write(self, s: str) -> None:
        self.lines.extend(x for x in s.splitlines() if x)

    def flush(self) -> None:
        pass

"""Transform coding of dense weights after a flatten (sporeling.quant.dct): the DCT, its codec params, the
per-tensor choice, and compress() end to end."""

import sys

import numpy as np
import pytest

from sporeling.format import Encoded, SporeFormatError, load_spore, save_spore
from sporeling.ir import Graph, Node, ValueInfo
from sporeling.quant import dct
from sporeling.quant.bias_correction import mean_relative_rms_error
from sporeling.quant.encode import encode
from sporeling.quant.mixed import decoded, quantize_step

rng = np.random.default_rng(7)


def smooth_maps(outputs: int, channels: int, h: int, w: int, noise: float = 0.05) -> np.ndarray:
    """Weights over (channels, h, w) positions that vary slowly with position, as a trained classifier's over a
    feature map do, plus a little white noise: (outputs, channels * h * w)."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    base = np.zeros((outputs, channels, h, w))
    for fy in range(3):
        for fx in range(3):
            amp = rng.standard_normal((outputs, channels, 1, 1)) / (1 + fy + fx)
            base += amp * np.cos(np.pi * fy * yy) * np.cos(np.pi * fx * xx)
    base += noise * rng.standard_normal(base.shape)
    return base.reshape(outputs, -1).astype(np.float32)


def flatten_graph(w: np.ndarray, c: int, h: int, wd: int, reshape: bool = False, matmul: bool = False) -> Graph:
    """x (1, c, h, wd) -> Flatten (or Reshape to (1, -1)) -> Gemm with w (outputs, c*h*wd), transB (or MatMul
    with w.T) -> y."""
    x = ValueInfo("x", np.dtype(np.float32), (1, c, h, wd))
    y = ValueInfo("y", np.dtype(np.float32), (1, w.shape[0]))
    inits = {"b": rng.standard_normal(w.shape[0]).astype(np.float32)}
    if reshape:
        inits["shape"] = np.array([1, -1], np.int64)
        nodes = [Node("Reshape", ["x", "shape"], ["f"])]
    else:
        nodes = [Node("Flatten", ["x"], ["f"], {"axis": 1})]
    if matmul:
        inits["w"] = np.ascontiguousarray(w.T)
        nodes += [Node("MatMul", ["f", "w"], ["m"]), Node("Add", ["m", "b"], ["y"])]
    else:
        inits["w"] = w
        nodes += [Node("Gemm", ["f", "w", "b"], ["y"], {"transB": 1})]
    return Graph(nodes, [x], [y], inits, opsets={"": 17})


@pytest.mark.parametrize("n", [4, 5, 12, 64])
def test_dct_matrix_is_orthonormal_and_gathers_a_constant_in_one_coefficient(n):
    m = dct.matrix(n)
    np.testing.assert_allclose(m @ m.T, np.eye(n), atol=1e-12)
    c = m @ np.full(n, 3.0)
    assert abs(c[0] - 3.0 * np.sqrt(n)) < 1e-9 and np.abs(c[1:]).max() < 1e-9


@pytest.mark.parametrize("view,axes", [((6, 4, 5, 7), (2, 3)), ((6, 4, 5, 7), (1, 2, 3)), ((35, 8), (0,))])
def test_dct_round_trips_and_keeps_every_channels_norm(view, axes):
    x = rng.standard_normal(view).reshape(view[0], -1) if axes[0] != 0 else rng.standard_normal((35, 8))
    c = dct.apply(x, view, axes)
    np.testing.assert_allclose(dct.apply(c, view, axes, inverse=True), x, atol=1e-12)
    if axes[0] != 0:  # the transform stays within each row (output channel): row norms are kept
        np.testing.assert_allclose(np.linalg.norm(c, axis=1), np.linalg.norm(x, axis=1), rtol=1e-12)
    else:
        np.testing.assert_allclose(np.linalg.norm(c, axis=0), np.linalg.norm(x, axis=0), rtol=1e-12)


@pytest.mark.parametrize("spec,axis,fragment", [
    ({"view": [8, 4, 6, 6]}, 0, "view and axes"),
    ({"view": [8, 4, 6, 5], "axes": [2]}, 0, "does not hold"),
    ({"view": [8, 4, 6, 6], "axes": [2, 2]}, 0, "distinct"),
    ({"view": [8, 4, 6, 6], "axes": [4]}, 0, "distinct"),
    ({"view": [8, 2, 12, 6], "axes": [1]}, 0, "4 to 256"),
    ({"view": [2, 576], "axes": [1]}, None, "4 to 256"),
    ({"view": [8, 4, 6, 6], "axes": [0]}, 0, "leave it out"),
    ({"view": [4, 8, 6, 6], "axes": [2]}, 0, "as one axis"),
    ({"view": [8, 4, 6, 6], "axes": [2], "x": 1}, 0, "view and axes"),
    ({"view": [8, 4, 6, 6], "axes": [[2]]}, 0, "distinct"),
    ({"view": [8, 4, 6, 6.0], "axes": [2]}, 0, "positive integers"),
    ({"view": [8, 4, 6, 6] + [1] * 5, "axes": [2]}, 0, "1 to 8"),
])
def test_bad_dct_params_are_refused(spec, axis, fragment):
    with pytest.raises(ValueError, match=fragment):
        dct.check(spec, (8, 144), axis)
    assert dct.check({"view": [8, 4, 6, 6], "axes": [2, 3]}, (8, 144), 0) == ((8, 4, 6, 6), (2, 3))
    assert dct.check({"view": [4, 6, 6, 8], "axes": [1, 2]}, (144, 8), 1) == ((4, 6, 6, 8), (1, 2))


def test_coefficients_error_is_the_weights_error_and_the_file_decodes_them(tmp_path):
    """Rounding the coefficients costs the weights the same relative error (the transform is orthonormal within
    each channel), the file gives back exactly what the search evaluated, and it lists the feature."""
    from sporeling.format import reader

    w = smooth_maps(16, 4, 8, 8)
    g = flatten_graph(w, 4, 8, 8)
    view, axes = (16, 4, 8, 8), (2, 3)
    for levels in (2, 7, 31):
        q = quantize_step(w, levels, 0, True, dct=(view, axes))
        assert q.dct == (view, axes)
        got = decoded(q, np.float32)  # with the scales as the file stores them (on their grid): within 1e-3
        assert abs(mean_relative_rms_error(w, got, 0) - q.error) < 1e-3 * q.error
    enc = encode(q)
    assert enc.params["dct"] == {"view": list(view), "axes": list(axes)}
    save_spore(g, tmp_path / "m.spore", encoded={"w": enc})
    assert np.array_equal(load_spore(tmp_path / "m.spore").initializers["w"], decoded(q, np.float32))
    old = reader.KNOWN_FEATURES
    try:  # a reader that does not know the transform refuses the file by the feature's name
        reader.KNOWN_FEATURES = old - {"quant-dct"}
        with pytest.raises(SporeFormatError, match="quant-dct"):
            load_spore(tmp_path / "m.spore")
    finally:
        reader.KNOWN_FEATURES = old
    bad = Encoded(enc.codec, enc.payload, {**enc.params, "dct": {"view": [16, 4, 8, 8], "axes": [0]}})
    save_spore(g, tmp_path / "bad.spore", encoded={"w": bad})
    with pytest.raises(SporeFormatError, match=r"bad\.spore.*leave it out"):
        load_spore(tmp_path / "bad.spore")


def test_smooth_weights_code_smaller_as_coefficients_and_white_noise_does_not():
    w = smooth_maps(32, 8, 12, 12)
    view = (32, 8, 12, 12)
    cands = [(1,), (2,), (3,), (2, 3), (1, 2, 3)]
    chosen = dct.choose(w, 0, view, cands)
    assert chosen is not None and set(chosen) >= {2, 3}  # the positions, not (only) the channels
    from sporeling.quant.allocate import entropy_bytes

    for levels in (2, 4, 11):  # on the same step: fewer bits and no more error than the weights themselves
        plain, coef = quantize_step(w, levels, 0), quantize_step(w, levels, 0, dct=(view, chosen))
        assert entropy_bytes(coef.codes) < 0.9 * entropy_bytes(plain.codes)
        assert coef.error <= plain.error * 1.02
    noise = rng.standard_normal((32, 8 * 12 * 12)).astype(np.float32)
    assert dct.choose(noise, 0, view, cands) is None


@pytest.mark.parametrize("reshape,matmul", [(False, False), (True, False), (False, True)])
def test_views_split_a_flattened_maps_positions_out_of_the_weights_inputs(reshape, matmul):
    from sporeling.quant.encode import channel_axes

    g = flatten_graph(smooth_maps(10, 3, 6, 5), 3, 6, 5, reshape=reshape, matmul=matmul)
    axes = channel_axes(g)
    feed = {"x": rng.standard_normal((1, 3, 6, 5)).astype(np.float32)}
    found = dct.views(g, {"w": axes["w"]}, feed)
    if matmul:  # (inputs, outputs): the map's dimensions come first
        assert found == {"w": ((3, 6, 5, 10), [(1,), (2,), (1, 2)])}
    else:
        assert found == {"w": ((10, 3, 6, 5), [(2,), (3,), (2, 3)])}  # the 3 channels are too few to transform


def test_compress_codes_a_smooth_classifier_as_its_dct_and_the_file_runs_as_judged(tmp_path):
    import sporeling
    from sporeling.quant.compress import compress

    c, h, wd = 8, 12, 12
    g = flatten_graph(smooth_maps(64, c, h, wd), c, h, wd)
    save_spore(g, tmp_path / "float.spore")
    report = compress(tmp_path / "float.spore", tmp_path / "q.spore", verbose=False, min_size=16)
    assert report["dct"] == {"w": {"view": [64, c, h, wd], "axes": [2, 3]}}
    (layer,) = [x for x in report["layers"] if x["name"] == "w"]
    assert layer["dct"] and layer["codec"] == "qfse"
    assert report["met"] and report["cosine"]["y"] >= 0.995 - 1e-3
    x = rng.standard_normal((1, c, h, wd)).astype(np.float32)
    ref = sporeling.load(tmp_path / "float.spore").run({"x": x})["y"]
    got = sporeling.load(tmp_path / "q.spore").run({"x": x})["y"]
    assert np.dot(ref.ravel(), got.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(got)) > 0.99


def test_a_tensor_too_sparse_for_the_fse_bound_is_priced_as_the_writer_stores_it():
    """FSE may not code a tensor tighter than 1/MAX_RATIO of its float32 bytes (a bound on what a reader
    decodes per stored byte), so encode() packs such codes; the search prices them so, not at their entropy."""
    from sporeling.quant.allocate import coded_bytes

    w = rng.standard_normal((64, 4096)).astype(np.float32)
    w[:, 8:] *= 1e-3  # nearly every weight rounds to zero at a coarse step
    q = quantize_step(w, 1, 0)
    enc = encode(q)
    assert enc.codec == "qpack"
    assert abs(coded_bytes(q) - len(enc.payload)) <= 0.01 * len(enc.payload)
    q = quantize_step(rng.standard_normal((64, 4096)).astype(np.float32), 31, 0)  # one FSE codes: its entropy
    enc = encode(q)
    assert enc.codec == "qfse" and abs(coded_bytes(q) - len(enc.payload)) <= 0.02 * len(enc.payload)


def test_no_dct_keeps_the_weights_domain_and_the_file_needs_no_new_feature(tmp_path):
    """--no-dct (dct=False): the same classifier is coded as its weights, and the file lists no quant-dct, so a
    1.3 reader opens it; the CLI passes the switch through."""
    from sporeling.cli import main
    from sporeling.format.reader import read_info
    from sporeling.quant.compress import compress

    c, h, wd = 8, 12, 12
    save_spore(flatten_graph(smooth_maps(64, c, h, wd), c, h, wd), tmp_path / "float.spore")
    report = compress(tmp_path / "float.spore", tmp_path / "plain.spore", verbose=False, min_size=16, dct=False)
    assert "dct" not in report and not any(x["dct"] for x in report["layers"])
    assert "quant-dct" not in read_info(tmp_path / "plain.spore")["requires"]
    assert main(["compress", str(tmp_path / "float.spore"), "-o", str(tmp_path / "cli.spore"), "--no-dct",
                 "--min-size", "16", "--report", str(tmp_path / "r.json")]) == 0
    import json

    cli = json.loads((tmp_path / "r.json").read_text())
    assert "dct" not in cli and cli["output_bytes"] == report["output_bytes"]
    with_dct = compress(tmp_path / "float.spore", tmp_path / "dct.spore", verbose=False, min_size=16)
    assert with_dct["output_bytes"] < report["output_bytes"]
    assert "quant-dct" in read_info(tmp_path / "dct.spore")["requires"]


# draws of the weights where the budget's first bisection lands on a DCT level whose FSE coding runs over the
# prediction by a little, and lowering the budget by that excess bisected back to the same level every round
@pytest.mark.parametrize("seed", [7, 9, 12])
def test_a_size_budget_holds_with_dct_coded_layers(tmp_path, monkeypatch, seed):
    """--target-size prices the coefficients' codes as the file stores them: the file keeps within the budget,
    and spends it, while the DCT lets it keep more of the outputs than the weights' own codes would; a budget
    no allocation fits is said, not silently passed."""
    from sporeling.quant.compress import compress

    monkeypatch.setattr(sys.modules[__name__], "rng", np.random.default_rng(seed))

    c, h, wd = 8, 12, 12
    save_spore(flatten_graph(smooth_maps(64, c, h, wd), c, h, wd), tmp_path / "float.spore")
    budget = 0.014  # MB: about 1.3 bits a weight for the classifier's 73,728 weights, after the graph
    reports = {d: compress(tmp_path / "float.spore", tmp_path / f"{d}.spore", verbose=False, min_size=16,
                           target_size=budget, dct=d) for d in (True, False)}
    for r in reports.values():
        assert 0.8 * budget * 1e6 <= r["output_bytes"] <= budget * 1e6
    assert "dct" in reports[True] and "dct" not in reports[False]
    assert reports[True]["search_cosine"] > reports[False]["search_cosine"]
    import io

    out = io.StringIO()
    r = compress(tmp_path / "float.spore", tmp_path / "tight.spore", min_size=16, target_size=0.0035, dct=False,
                 stream=out)
    assert "no allocation codes within" in out.getvalue() and r["output_bytes"] > 0.0035 * 1e6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dct_candidates_go_on_between_one_and_two_levels(monkeypatch, seed):
    """A DCT-coded layer's search candidates include DCT_LEVELS, coarser than 2 levels and finer than 1, where the
    coefficients still code smaller than at 2 levels (Fashion-MNIST's classifier: 0.59 bits a weight at 1.41,
    0.99 at 2); a weight's own candidates keep the integer grid."""
    from sporeling.quant.allocate import DCT_LEVELS, Candidates

    monkeypatch.setattr(sys.modules[__name__], "rng", np.random.default_rng(seed))
    w = smooth_maps(32, 8, 12, 12, noise=1.5).astype(np.float32)
    coded = Candidates(w, 0, True, dct=((32, 8, 12, 12), (2, 3)))
    plain = Candidates(w, 0, True)
    assert set(DCT_LEVELS) <= {lv for lv, _, _ in coded.table}
    assert not set(DCT_LEVELS) & {lv for lv, _, _ in plain.table}
    ladder = (1,) + DCT_LEVELS + (2,)
    assert all(coded.error_at(a) > coded.error_at(b) for a, b in zip(ladder, ladder[1:]))
    # the coarsest may be too tight for FSE's bound (priced bit-packed then); the other two code below 2 levels
    assert coded.size_at(1.41) < coded.size_at(1.68) < coded.size_at(2)

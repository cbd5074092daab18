"""Quantized tensors in .spore files (codecs qpack/qfse) and sporeling.compress with the fixed method."""

import json

import numpy as np
import pytest

from sporeling.format import Encoded, SporeFormatError, load_spore, save_spore
from sporeling.format.codecs_quant import GRID_HEAD, wide_size
from sporeling.ir import Graph, Node, ValueInfo
from sporeling.quant.bitpack import pack
from sporeling.quant.encode import affine, encode, quantize_tensor
from sporeling.quant.mixed import decoded
from sporeling.quant.quantize import dequantize

rng = np.random.default_rng(0)


def conv_graph(c_out=32, c_in=16, k=3, dtype=np.float32) -> Graph:
    w = (rng.standard_normal((c_out, c_in, k, k)) * rng.uniform(0.1, 2.0, (c_out, 1, 1, 1))).astype(dtype)
    b = rng.standard_normal(c_out).astype(np.float32)
    x = ValueInfo("x", np.dtype(np.float32), (1, c_in, 8, 8))
    y = ValueInfo("y", np.dtype(np.float32), (1, c_out, 8, 8))
    nodes = [Node("Conv", ["x", "w", "b"], ["c"], {"pads": [1, 1, 1, 1]}), Node("Relu", ["c"], ["y"])]
    if dtype != np.float32:
        nodes.insert(0, Node("Cast", ["w16"], ["w"], {"to": 1}))
        return Graph(nodes, [x], [y], {"w16": w, "b": b}, opsets={"": 17})
    return Graph(nodes, [x], [y], {"w": w, "b": b}, opsets={"": 17})


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 12, 16])
@pytest.mark.parametrize("axis", [0, None])
def test_quantized_tensor_round_trips_through_the_file(tmp_path, bits, axis):
    g = conv_graph()
    w = g.initializers["w"]
    q = quantize_tensor(w, bits, axis)
    enc = encode(q, entropy=False)
    assert enc.codec == "qpack"
    save_spore(g, tmp_path / "m.spore", encoded={"w": enc})
    back = load_spore(tmp_path / "m.spore").initializers["w"]
    assert back.dtype == np.float32 and back.shape == w.shape
    # bit for bit what the quantizer says the file holds (what the searches evaluate)
    assert np.array_equal(back, decoded(q, np.float32))
    grid = axis is not None and bits >= 2  # per-channel scales on the grid: about 2 bytes a channel, not 8
    assert (enc.params.get("scales") == "grid") == grid
    codes_bytes = -(-w.size * bits // 8)
    if grid:
        e0, p, q_bits, wv, wd, _ = GRID_HEAD.unpack_from(enc.payload, 0)
        assert len(enc.payload) == GRID_HEAD.size + wide_size(32, wv) + wide_size(32, wd) + codes_bytes
        assert len(enc.payload) - codes_bytes <= 4 * 32  # smaller than float16 scales (4 + 4C bytes)
    else:
        assert len(enc.payload) == 8 * (32 if axis == 0 else 1) + codes_bytes
    # and within the grid's promise of the exact dequantization: per weight at most 1/16 of a step for a
    # code at the extreme (+- zero), and 1/2**8 of a step of shift; each channel's mean kept to that shift
    expected = dequantize(q.codes, q.params, dtype=np.float64)
    if grid:
        step = np.asarray(q.params.effective()[1], np.float64).reshape(-1, 1, 1, 1)  # A = scale * gain
        assert (np.abs(back - expected) <= step * (1 / 16 + 2.0**-8) * 1.001 + 1e-7).all()
        assert (np.abs((back - expected).mean(axis=(1, 2, 3))) <= step.ravel() * 2.0**-8 + 1e-7).all()
    else:
        np.testing.assert_allclose(back, expected, rtol=2e-6, atol=2e-6 * float(np.abs(expected).max()))
    assert np.array_equal(load_spore(tmp_path / "m.spore").initializers["b"], g.initializers["b"])


def test_float16_weights_come_back_float16(tmp_path):
    g = conv_graph(dtype=np.float16)
    q = quantize_tensor(g.initializers["w16"], 8, 0)
    save_spore(g, tmp_path / "m.spore", encoded={"w16": encode(q, entropy=False)})
    back = load_spore(tmp_path / "m.spore").initializers["w16"]
    assert back.dtype == np.float16
    ref = g.initializers["w16"].astype(np.float32)
    assert np.linalg.norm(back.astype(np.float32) - ref) / np.linalg.norm(ref) < 0.01


def test_affine_form_matches_dequantize():
    w = rng.standard_normal((8, 50)).astype(np.float32)
    for symmetric, bits in ((True, 5), (False, 5), (True, 12)):
        q = quantize_tensor(w, bits, 0, bias_correction=True, symmetric=symmetric)
        a, b = affine(q.params, q.codes)
        got, exact = q.codes * a[:, None] + b[:, None], dequantize(q.codes, q.params, dtype=np.float64)
        if symmetric:  # the grid: within 1/16 + 1/256 of a step per weight, each channel's mean to 1/256
            step = np.asarray(q.params.effective()[1], np.float64)[:, None]
            assert (np.abs(got - exact) <= step * (1 / 16 + 2.0**-8) * 1.001).all()
            assert (np.abs((got - exact).mean(axis=1)) <= step[:, 0] * 2.0**-8 * 1.001).all()
            assert not np.array_equal(got, exact)  # rounded, so the bounds above are what is tested
        else:  # float32 exactly
            np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))
        assert np.array_equal(affine(q.params, None)[0], a)  # A does not depend on the codes; B does


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 11, 13, 16])
def test_grid_scales_hold_any_float32_exponent_to_their_mantissa(bits):
    """Scales over 60 octaves (channels pruned to 1e-9 next to live ones): each A comes back within
    2**-(p+1) of itself, p >= log2(8 * zero), and the header the writer makes decodes to the very A and B
    the searches evaluated."""
    from sporeling.format.codecs_quant import _grid_scales
    from sporeling.quant.encode import grid_scales, scales_header
    from sporeling.quant.quantize import QuantParams

    zero = (1 << (bits - 1)) - 1
    channels = 200
    scale = np.exp2(rng.uniform(-30, 30, channels)).astype(np.float32)
    shift = (rng.standard_normal(channels) * scale * 0.3).astype(np.float32)
    params = QuantParams(bits, True, 0, scale, np.full(channels, zero, np.int32), np.ones(channels, np.float32), shift)
    codes = rng.integers(0, 2 * zero + 1, (channels, 9)).astype(np.uint16)
    e0, p, q, v, d, z = grid_scales(params, codes)
    assert z == zero and p >= np.log2(8 * zero)
    a, b = affine(params, codes)
    assert (np.abs(a / scale.astype(np.float64) - 1) <= 2.0 ** -(p + 1)).all()
    head, form = scales_header(params, codes)
    assert form == {"scales": "grid", "zero": zero} and len(head) < (4 if bits <= 8 else 8) * channels  # f16, f32
    a2, b2, size = _grid_scales(memoryview(head), channels, zero)
    assert size == len(head) and np.array_equal(a2, a) and np.array_equal(b2, b)
    for cut in (GRID_HEAD.size - 1, len(head) - 1):
        with pytest.raises(ValueError, match="grid scales"):
            _grid_scales(memoryview(head[:cut]), channels, zero)
    # each channel's mean kept: mean code * A + B as exactly computed, to half of 1/256 of a step (of the
    # stored A, which is up to 2**-(p+1) off the exact scale), plus the float32 rounding of B (about zero steps)
    mean_code = codes.mean(axis=1)
    exact = (mean_code - zero) * scale.astype(np.float64) + shift
    tol = a.astype(np.float64) * 2.0**-9 + scale.astype(np.float64) * (zero + 1) * 2.0**-23
    assert (np.abs(mean_code * a + b.astype(np.float64) - exact) <= tol).all()


@pytest.mark.parametrize("field, value, message", [
    ("e0", 129, "exponent 129"), ("p", 24, "mantissa bits 24"), ("q", 17, "shift bits 17"),
    ("wv", 0, "widths 0 and"), ("wd", 33, "and 33 must be 1 to 32")])
def test_corrupt_grid_scales_are_refused_by_name(tmp_path, field, value, message):
    g = conv_graph()
    enc = encode(quantize_tensor(g.initializers["w"], 6, 0), entropy=False)
    names = ("e0", "p", "q", "wv", "wd", "d_min")
    fields = dict(zip(names, GRID_HEAD.unpack_from(enc.payload, 0)))
    fields[field] = value
    payload = GRID_HEAD.pack(*fields.values()) + enc.payload[GRID_HEAD.size:]
    save_spore(g, tmp_path / "bad.spore", encoded={"w": Encoded("qpack", payload, enc.params)})
    with pytest.raises(SporeFormatError, match=f"bad.spore.*'w'.*{message}"):
        load_spore(tmp_path / "bad.spore")


def test_half_codec_is_lossless_and_only_for_exact_values(tmp_path):
    from sporeling.format.codecs_quant import encode_half

    exact = rng.standard_normal(300).astype(np.float16).astype(np.float32)
    exact[:3] = [0.0, -0.0, 65504.0]
    assert encode_half(exact) is not None
    assert encode_half(exact + np.float32(1e-4)) is None and encode_half(np.array([1e-9], np.float32)) is None
    g = Graph([Node("Add", ["x", "c"], ["y"])], [ValueInfo("x", np.dtype(np.float32), (300,))],
              [ValueInfo("y", np.dtype(np.float32), (300,))], {"c": exact}, opsets={"": 17})
    save_spore(g, tmp_path / "h.spore", encoded={"c": encode_half(exact)})
    back = load_spore(tmp_path / "h.spore").initializers["c"]
    assert back.dtype == np.float32 and np.array_equal(back.view(np.uint32), exact.view(np.uint32))


def test_compact_scales_are_a_required_feature(tmp_path):
    """The grid form (1.3) and the float16 form (1.1) each make their feature required; a 1.2 file's float16
    scales still load as they did."""
    from sporeling.format import reader
    from sporeling.format.codecs_quant import half_affine, half_affine_header
    from sporeling.quant.encode import compact_scales

    g = conv_graph()
    q = quantize_tensor(g.initializers["w"], 6, 0)
    save_spore(g, tmp_path / "grid.spore", encoded={"w": encode(q)})
    base, a16, d16, zero = compact_scales(q.params)  # what a 1.2 writer stored
    old_form = Encoded("qpack", half_affine_header(base, a16, d16) + pack(q.codes, 6).tobytes(),
                       {"bits": 6, "axis": 0, "channels": 32, "scales": "f16", "zero": zero})
    save_spore(g, tmp_path / "f16.spore", encoded={"w": old_form})
    a, b = half_affine(base, a16, d16, zero)
    assert np.array_equal(load_spore(tmp_path / "f16.spore").initializers["w"],
                          q.codes * a[:, None, None, None] + b[:, None, None, None])
    assert {"quant-scales-f16", "quant-scales-grid"} <= reader.KNOWN_FEATURES
    old = reader.KNOWN_FEATURES
    try:  # a reader without the feature refuses the file by name rather than misreading the scales
        for name, feature in (("grid", "quant-scales-grid"), ("f16", "quant-scales-f16")):
            reader.KNOWN_FEATURES = old - {feature}
            with pytest.raises(SporeFormatError, match=feature):
                load_spore(tmp_path / f"{name}.spore")
    finally:
        reader.KNOWN_FEATURES = old


def test_decoded_payloads_are_packed_and_raw_ones_stay_aligned(tmp_path):
    """Quantized and float16 payloads follow each other with no padding (format 1.2's packed-offsets); a raw
    tensor, which the reader views in place, still starts on a multiple of 64; a reader without the feature
    refuses by name; a raw tensor placed off the grid is refused."""
    from sporeling.format import reader
    from sporeling.format.codecs_quant import encode_half
    from sporeling.format.reader import _File
    from tests.format.helpers import build, explode

    g = conv_graph()
    odd = rng.standard_normal(7).astype(np.float16).astype(np.float32)  # 14 bytes as float16
    g.initializers.update(h=odd, h2=odd[::-1].copy())
    g.nodes += [Node("Add", ["y", "h"], ["z0"]), Node("Add", ["z0", "h2"], ["z"])]
    g.outputs = [ValueInfo("z", np.dtype(np.float32), None)]
    enc = {"h": encode_half(odd), "h2": encode_half(odd[::-1].copy()),
           "w": encode(quantize_tensor(g.initializers["w"], 5, 0))}
    path = tmp_path / "p.spore"
    save_spore(g, path, encoded=enc)
    f = _File(str(path))
    assert any(e.offset % 64 for e in f.entries if e.codec.name != "raw")  # something follows the 14 bytes
    assert all(e.offset % 64 == 0 for e in f.entries if e.codec.name == "raw")
    assert "packed-offsets" in f.doc["requires"]
    f.close()
    back = load_spore(path)
    assert np.array_equal(back.initializers["h"], odd) and np.array_equal(back.initializers["b"], g.initializers["b"])
    old = reader.KNOWN_FEATURES
    try:
        reader.KNOWN_FEATURES = old - {"packed-offsets"}
        with pytest.raises(SporeFormatError, match="packed-offsets"):
            load_spore(path)
    finally:
        reader.KNOWN_FEATURES = old
    # the raw bias moved off the grid by one byte (the data section has room after it): refused by name
    doc, meta, data, _ = explode(path.read_bytes())
    (bias,) = [e for e in doc["tensors"] if e["name"] == "b"]
    assert bias["codec"] == "raw" and bias["offset"] + bias["length"] < len(data)
    bias["offset"] += 1
    (tmp_path / "bad.spore").write_bytes(build(doc, meta, data))
    with pytest.raises(SporeFormatError, match=r"'b': offset \d+ is not a multiple of 64 \(codec raw is read in"):
        load_spore(tmp_path / "bad.spore")


@pytest.mark.parametrize("params,fragment", [({"bits": 17, "axis": 0, "channels": 32}, "bits"),
                                             ({"bits": 8, "axis": 5, "channels": 32}, "axis"),
                                             ({"bits": 8, "axis": 0, "channels": 31}, "channels"),
                                             ({"bits": 4, "axis": 0, "channels": 32}, "pack into")])
def test_bad_quantized_entries_are_format_errors(tmp_path, params, fragment):
    g = conv_graph()
    q = quantize_tensor(g.initializers["w"], 8, 0)
    good = encode(q, entropy=False)
    save_spore(g, tmp_path / "m.spore", encoded={"w": Encoded("qpack", good.payload, params)})
    with pytest.raises(SporeFormatError, match=fragment):
        load_spore(tmp_path / "m.spore")


def test_unknown_initializer_in_encoded_is_refused(tmp_path):
    g = conv_graph()
    with pytest.raises(SporeFormatError, match="not initializers"):
        save_spore(g, tmp_path / "m.spore", encoded={"nope": Encoded("qpack", b"", {})})


def test_compress_fixed_bits_shrinks_and_keeps_outputs(tmp_path):
    pytest.importorskip("onnx")
    import onnx

    from sporeling import load
    from sporeling.frontends.onnx_export import export_onnx
    from sporeling.quant.compress import compress

    g = conv_graph(c_out=64, c_in=64)
    export_onnx(g, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"))
    sizes = {}
    for bits in (8, 4):
        report = compress(tmp_path / "m.onnx", tmp_path / f"m{bits}.spore", method="fixed", bits=bits, verbose=False)
        sizes[bits] = report["output_bytes"]
        (layer,) = report["layers"]
        assert layer["name"] == "w" and layer["bits"] == bits and layer["codec"] in ("qpack", "qfse")
        assert layer["bits_per_weight"] <= bits + 0.2  # the per-channel scales cost a little
        assert report["cosine"]["y"] > (0.999 if bits == 8 else 0.98)
        json.dumps(report)  # the report is plain JSON
        model = load(tmp_path / f"m{bits}.spore")
        assert model.graph.initializers["w"].dtype == np.float32
    assert sizes[4] < sizes[8] < (tmp_path / "m.onnx").stat().st_size / 3


def test_compress_cli_writes_report(tmp_path):
    pytest.importorskip("onnx")
    from sporeling.frontends.onnx_export import export_onnx

    from ..test_cli import cli

    export_onnx(conv_graph(c_out=64, c_in=64), tmp_path / "m.onnx")
    r = cli("compress", tmp_path / "m.onnx", "-o", tmp_path / "m.spore", "--method", "fixed", "--bits", "6",
            "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert "output cosine to float" in r.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["bits"] == 6 and report["ratio"] > 3
    r = cli("compress", tmp_path / "m.onnx", "-o", tmp_path / "m.spore", "--method", "fixed", "--bits", "17")
    assert r.returncode == 2 and "bits" in r.stderr and "Traceback" not in r.stderr


def test_mixed_search_meets_its_cosine_target_on_its_samples(tmp_path):
    pytest.importorskip("onnx")
    from sporeling.frontends.onnx_export import export_onnx
    from sporeling.quant.compress import compress

    export_onnx(conv_graph(c_out=64, c_in=64), tmp_path / "m.onnx")
    for method in ("original", "mixed"):
        loose = compress(tmp_path / "m.onnx", tmp_path / "a.spore", method=method, target_cosine=0.99, verbose=False)
        tight = compress(tmp_path / "m.onnx", tmp_path / "b.spore", method=method, target_cosine=0.9999,
                         verbose=False)
        for r in (loose, tight):
            assert r["method"] == method and r["met"] and r["search_cosine"] >= r["target_cosine"]
            assert r["cosine"]["y"] >= r["target_cosine"] - 1e-3  # a fresh random input, not one of the samples
        assert tight["output_bytes"] > loose["output_bytes"]
        if method == "original":
            assert tight["target_error"] < loose["target_error"]
        else:
            assert set(loose["sensitivity"]) == {"w"}


def test_the_same_source_and_settings_write_the_same_bytes(tmp_path):
    """The file keeps what each pass did, not how long it took (the report does), so compressing twice gives
    identical files."""
    pytest.importorskip("onnx")
    from sporeling.format.reader import read_info
    from sporeling.frontends.onnx_export import export_onnx
    from sporeling.quant.compress import compress

    export_onnx(conv_graph(c_out=32, c_in=32), tmp_path / "m.onnx")
    reports = [compress(tmp_path / "m.onnx", tmp_path / f"{k}.spore", verbose=False, check=False) for k in "ab"]
    assert (tmp_path / "a.spore").read_bytes() == (tmp_path / "b.spore").read_bytes()
    assert all("ms" not in p for p in read_info(tmp_path / "a.spore")["provenance"]["passes"])
    assert reports[0]["output_bytes"] == reports[1]["output_bytes"]


def test_allocation_spends_bytes_where_the_output_is_sensitive():
    from sporeling.quant.allocate import Candidates

    w = rng.standard_normal((32, 64)).astype(np.float32)
    c = Candidates(w, 0, True)
    errors = [e for _, e, _ in c.table]
    # finer levels: less error, more bytes; but at 1 level the codes are too sparse for FSE's bound, and are
    # priced bit-packed, as the file stores them (allocate.coded_bytes)
    sizes = [b for lv, _, b in c.table if lv > 1]
    assert errors == sorted(errors, reverse=True) and sizes == sorted(sizes)
    assert c.size_at(1) > c.size_at(2)
    picks = [c.pick(1.0, lam) for lam in (1e-12, 1e-6, 1e-3, 1.0)]
    assert picks == sorted(picks, reverse=True) and picks[0] > picks[-1]  # a higher price of bytes: coarser
    assert c.pick(1e3, 1e-6) >= c.pick(1.0, 1e-6)  # a more sensitive tensor gets at least as many levels


def test_sensitivity_probes_judge_one_tensor_against_the_float_model_not_the_candidates_baseline():
    # Every candidate is judged with something else changed too (float16 biases: a loss `offset`, which
    # quantizing "a" happens to cancel). Probed with that score, the offset would count as a tensor's own
    # loss ("b" looks far more sensitive than it is); the probes score each tensor alone against float.
    from sporeling.quant.allocate import LEVEL_GRID, Candidates, allocate

    ws = {"a": rng.standard_normal((16, 64)).astype(np.float32), "b": rng.standard_normal((16, 64)).astype(np.float32)}
    cands = {n: Candidates(w, 0, True) for n, w in ws.items()}
    true = {"a": 1.0, "b": 0.05}
    offset = 1e-3

    def probe(qs):
        return 1.0 - sum(true[n] * q.error ** 2 for n, q in qs.items())

    def score(qs):
        cancel = offset if "a" in qs else 0.0
        return probe(qs) - offset + cancel

    found = allocate(cands, score, 0.995, probe=probe)
    assert abs(found.sensitivity["a"] / true["a"] - 1) < 1e-6 and abs(found.sensitivity["b"] / true["b"] - 1) < 1e-6
    assert found.value >= 0.995 and found.unreached == []
    levels = {n: q.params.zero_point.flat[0] for n, q in found.quantized.items()}  # symmetric: zero point = levels
    assert levels["a"] > levels["b"] > LEVEL_GRID[0]
    blind = allocate(cands, score, 0.995)  # probed with score itself: "b" takes the offset as its own loss
    assert blind.sensitivity["b"] > 2 * true["b"]


def test_tensor_search_finds_the_coarsest_step_meeting_the_target():
    from sporeling.quant.mixed import TensorSearch

    w = rng.standard_normal((16, 300)).astype(np.float32)
    search = TensorSearch(w, 0)
    for target in (0.3, 0.05, 0.01):
        levels = search.levels_for(target)
        assert search.error(levels) <= target
        assert levels == 1 or search.error(levels - 1) > target
    assert search.levels_for(0.01) > search.levels_for(0.05) > search.levels_for(0.3)


def test_denormal_channels_count_as_zero():
    from sporeling.quant.bias_correction import relative_rms_error
    from sporeling.quant.mixed import quantize_levels

    w = rng.standard_normal((4, 50)).astype(np.float32)
    w[2] = np.float32(1e-40)  # a pruned channel an exporter left as denormals
    q = quantize_levels(w, 127, 0)
    assert q.error < 0.01
    assert relative_rms_error(w, np.where(np.arange(4)[:, None] == 2, 0, w), 0)[2] == 0


def test_step_grid_equalises_channels_relative_error_and_round_trips_through_the_file(tmp_path):
    """quantize_step: a step of STEP_PEAK * rms_c / L per channel, codes as wide as an outlier needs, one zero
    code; its channels share one relative error where max|w_c| / L leaves a channel with an outlier coarse,
    and at the same entropy-coded size its mean relative error is lower (the search's error and size)."""
    from sporeling.quant.allocate import entropy_bytes
    from sporeling.quant.bias_correction import relative_rms_error
    from sporeling.quant.mixed import STEP_PEAK, quantize_levels, quantize_step

    r = np.random.default_rng(3)
    w = (r.standard_normal((32, 16, 3, 3)) * r.uniform(0.1, 2.0, (32, 1, 1, 1))).astype(np.float32)
    w.reshape(32, -1)[::4, 0] *= 12  # every fourth channel has one outlier
    q = quantize_step(w, 15, 0, bias_correction=False)
    rows = w.reshape(32, -1).astype(np.float64)
    rms = np.sqrt((rows ** 2).mean(axis=1))
    np.testing.assert_allclose(q.params.scale, STEP_PEAK * rms / 15, rtol=1e-6)
    zero = int(q.params.zero_point[0])
    assert (q.params.zero_point == zero).all() and zero > 2 * 15 and q.codes.max() <= 2 * zero
    rel = relative_rms_error(w, dequantize(q.codes, q.params, np.float64), 0)
    assert rel.max() < 1.3 * rel.min()  # rounding noise of 144 weights a channel
    by_peak = quantize_levels(w, 15, 0, False)
    old = relative_rms_error(w, dequantize(by_peak.codes, by_peak.params, np.float64), 0)
    assert old[::4].mean() > 2 * old[1::4].mean()  # the outlier channels: a coarse step for every weight
    # at equal coded size (an L for each that brackets the other's size), the step grid errs less
    sized = {lv: quantize_step(w, lv, 0) for lv in range(4, 60)}
    for levels in (7, 15, 31):
        ref = quantize_levels(w, levels, 0, clip=True)
        fits = [x for x in sized.values() if entropy_bytes(x.codes) <= entropy_bytes(ref.codes)]
        assert max(fits, key=lambda x: entropy_bytes(x.codes)).error < ref.error
    # the file gives back exactly what the search judged, FSE-coded or packed (codes past 8 bits too)
    g = conv_graph()
    for levels, entropy in ((31, True), (200, True), (200, False)):
        qs = quantize_step(w, levels, 0)
        enc = encode(qs, entropy=entropy)
        assert enc.codec == ("qfse" if entropy else "qpack") and qs.params.bits > (8 if levels == 200 else 5)
        save_spore(g, tmp_path / "s.spore", encoded={"w": enc})
        assert np.array_equal(load_spore(tmp_path / "s.spore").initializers["w"], decoded(qs, np.float32))


def test_calibration_inputs_from_npz_file_and_folder(tmp_path):
    pytest.importorskip("onnx")
    from sporeling.errors import SporelingError
    from sporeling.frontends.onnx_export import export_onnx
    from sporeling.quant.compress import compress, load_calibration

    export_onnx(conv_graph(c_out=64, c_in=64), tmp_path / "m.onnx")
    x = rng.standard_normal((3, 1, 64, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    (tmp_path / "calib").mkdir()
    for i in range(2):
        np.savez(tmp_path / "calib" / f"{i}.npz", x=x[i])
    samples = load_calibration(tmp_path / "calib.npz")
    assert len(samples) == 3 and np.array_equal(samples[1]["x"], x[1])
    assert len(load_calibration(tmp_path / "calib")) == 2
    report = compress(tmp_path / "m.onnx", tmp_path / "c.spore", calib=tmp_path / "calib.npz", verbose=False)
    assert report["met"] and report["search_cosine"] >= 0.995
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(SporelingError, match="bad.npz"):
        load_calibration(tmp_path / "bad.npz")
    np.savez(tmp_path / "ragged.npz", x=x, y=x[:2])
    with pytest.raises(SporelingError, match="same number of samples"):
        load_calibration(tmp_path / "ragged.npz")

"""The converter (sporeling.convert and `sporeling convert`), export, and load of every format: what it
prints, what it writes, and that real models give the same outputs through every path."""

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import sporeling  # noqa: E402
from sporeling.errors import FeedError, ModelLoadError  # noqa: E402
from sporeling.format import read_info  # noqa: E402
from sporeling.tools import random_feeds  # noqa: E402

from .assets import require  # noqa: E402
from .test_cli import assert_one_line_error, cli  # noqa: E402

rng = np.random.default_rng(0)


@pytest.fixture()
def bn_model(tmp_path):
    """x[N,3,8,8] -> Conv -> BN -> Relu -> Flatten(by a shape chain) -> y: something for every pass."""
    c = 3
    inits = {"w": rng.standard_normal((c, c, 3, 3)).astype(np.float32), "b": np.zeros(c, np.float32),
             "s": rng.uniform(0.5, 1.5, c).astype(np.float32), "t": rng.standard_normal(c).astype(np.float32),
             "m": rng.standard_normal(c).astype(np.float32), "v": rng.uniform(0.5, 2, c).astype(np.float32),
             "zero": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"]),
             h.make_node("Relu", ["n"], ["r"]), h.make_node("Identity", ["r"], ["i"]),
             h.make_node("Shape", ["i"], ["shape"]), h.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
             h.make_node("Concat", ["batch", "minus1"], ["target"], axis=0),
             h.make_node("Reshape", ["i", "target"], ["y"])]
    g = h.make_graph(nodes, "bn", [h.make_tensor_value_info("x", T.FLOAT, ["N", c, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", c * 64])],
                     [nh.from_array(v, k) for k, v in inits.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.metadata_props.add(key="author", value="tests")
    path = tmp_path / "bn.onnx"
    onnx.save(m, path)
    return path


def test_convert_prints_each_pass_and_writes_a_spore(bn_model, tmp_path, capsys):
    dst = tmp_path / "bn.spore"
    report = sporeling.convert(bn_model, dst, input_shapes={"x": (2, 3, 8, 8)})
    printed = capsys.readouterr().out
    for name in ("fold_constants", "fuse_conv_bn", "fuse_activation", "dce"):
        assert name in printed
    assert "wrote" in printed and report["output_bytes"] == os.path.getsize(dst)
    assert report["nodes_before"] == 8 and report["nodes_after"] == 2  # FusedConv + Reshape
    info = read_info(dst)
    prov = info["provenance"]
    assert prov["source"] == "bn.onnx" and len(prov["source_sha256"]) == 64
    assert [p["pass"] for p in prov["passes"]][:2] == ["remove_identity", "fold_constants"]
    model = sporeling.load(dst)
    assert model.metadata.get("author") == "tests"
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = sporeling.load(bn_model, optimize=False).run({"x": x})["y"]
    np.testing.assert_allclose(model.run({"x": x})["y"], ref, rtol=1e-5, atol=1e-5)


def test_converting_twice_writes_the_same_bytes(bn_model, tmp_path):
    """Pass timings go to the report and the printout, not into the file."""
    reports = [sporeling.convert(bn_model, tmp_path / f"{k}.spore", verbose=False) for k in "ab"]
    assert (tmp_path / "a.spore").read_bytes() == (tmp_path / "b.spore").read_bytes()
    assert all("ms" in p for p in reports[0]["passes"])
    assert all("ms" not in p for p in read_info(tmp_path / "a.spore")["provenance"]["passes"])


def test_convert_without_optimize_keeps_the_graph(bn_model, tmp_path):
    dst = tmp_path / "raw.spore"
    report = sporeling.convert(bn_model, dst, optimize=False, verbose=False)
    assert report["passes"] == [] and report["nodes_after"] == 8
    graph = sporeling.load(dst, optimize=False).graph
    assert [n.op_type for n in graph.nodes][:3] == ["Conv", "BatchNormalization", "Relu"]


def test_convert_input_shape_errors(bn_model, tmp_path):
    with pytest.raises(FeedError, match="'nope'"):
        sporeling.convert(bn_model, tmp_path / "a.spore", input_shapes={"nope": (1,)}, verbose=False)
    with pytest.raises(FeedError, match="declared"):
        sporeling.convert(bn_model, tmp_path / "a.spore", input_shapes={"x": (1, 4, 8, 8)}, verbose=False)
    assert not (tmp_path / "a.spore").exists()


def test_cli_convert_check_and_export_round_trip(bn_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    spore, back = tmp_path / "bn.spore", tmp_path / "back.onnx"
    r = cli("convert", bn_model, "-o", spore, "--check")
    assert r.returncode == 0, r.stderr
    assert "fuse_conv_bn" in r.stdout and "check: converted model matches" in r.stdout
    r = cli("export", spore, "-o", back)
    assert r.returncode == 0, r.stderr
    onnx.checker.check_model(onnx.load(back))
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    theirs = ort.InferenceSession(str(back), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref = ort.InferenceSession(str(bn_model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(theirs, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_cli_on_a_damaged_spore_names_the_file(bn_model, tmp_path, damage):
    spore = tmp_path / "bn.spore"
    sporeling.convert(bn_model, spore, verbose=False)
    data = bytearray(spore.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data[8:] = b"\x07" * (len(data) - 8)
    else:
        data[len(data) // 3] ^= 0x10
    spore.write_bytes(bytes(data))
    for command in ("run", "info"):
        assert_one_line_error(cli(command, spore), str(spore))
    with pytest.raises(ModelLoadError, match="bn.spore"):
        sporeling.load(spore)


def test_load_sniffs_the_format_not_the_extension(bn_model, tmp_path):
    spore = tmp_path / "model.bin"
    sporeling.convert(bn_model, tmp_path / "m.spore", verbose=False)
    os.replace(tmp_path / "m.spore", spore)
    assert sporeling.load(spore).graph.nodes
    other = tmp_path / "model.xyz"
    other.write_bytes(b"hello")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        sporeling.load(other)


# ---- real models: the same outputs with and without passes, and through .spore -------------------------
REAL = {"ppocr_det": {"x": (1, 3, 160, 160)}, "ppocr_rec": {"x": (1, 3, 48, 320)}, "ppocr_cls": {"x": (1, 3, 48, 192)},
        "silero_vad": {"input": (1, 512)}, "silero_op18_ifless": {"input": (1, 512)}}


@pytest.mark.assets
@pytest.mark.parametrize("name", REAL)
def test_real_model_same_outputs_with_and_without_passes_and_through_spore(name, tmp_path):
    path = require(name)
    plain = sporeling.load(path, optimize=False)
    feeds = random_feeds(plain, 0, REAL[name])
    if "silero" in name:
        feeds = {k: (v if v.dtype != np.int64 else np.array(16000, np.int64)) for k, v in feeds.items()}
        feeds = {k: (v * 0.1 if k == "input" else v) for k, v in feeds.items()}
    ref = plain.run(feeds)
    optimized = sporeling.load(path).run(feeds)
    dst = tmp_path / f"{name}.spore"
    sporeling.convert(path, dst, verbose=False)
    via_spore = sporeling.load(dst).run(feeds)
    for key, value in ref.items():
        tol = 1e-4 * max(1.0, float(np.abs(value).max()))
        assert np.abs(optimized[key] - value).max() <= tol, key
        np.testing.assert_array_equal(via_spore[key], optimized[key])  # the same graph, the same kernels


@pytest.mark.assets
def test_cli_check_on_symbolic_dims_asks_for_input_shape(tmp_path):
    r = cli("convert", require("ppocr_rec"), "-o", tmp_path / "rec.spore", "--check")
    assert_one_line_error(r, "--input-shape", "x[1, 3, 1, 1]")
    r = cli("convert", require("ppocr_rec"), "-o", tmp_path / "rec.spore", "--check", "--input-shape", "x=1,3,48,320")
    assert r.returncode == 0 and "check: converted model matches" in r.stdout, r.stderr

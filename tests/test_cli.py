"""The command line: one line and a non-zero exit for every bad input, never a traceback."""

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402


@pytest.fixture()
def small_model(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    g = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Relu", ["m"], ["y"])], "g",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])], [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])],
        [onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "small.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return path, w


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sporeling", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def assert_one_line_error(r, *fragments):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_run_with_input_file_and_output_npz(small_model, tmp_path):
    path, w = small_model
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli("run", path, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "out.npz")
    assert r.returncode == 0, r.stderr
    assert "y: float32[2, 3]" in r.stdout
    saved = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(saved["y"], np.maximum(x @ w, 0), rtol=1e-6)


def test_run_with_random_inputs(small_model):
    r = cli("run", small_model[0])
    assert r.returncode == 0, r.stderr
    assert "y: float32[1, 3]" in r.stdout


def test_info_lists_inputs_ops_and_plan(small_model):
    r = cli("info", small_model[0])
    assert r.returncode == 0, r.stderr
    assert "x: float32 [N, 4]" in r.stdout
    assert "MatMul 1" in r.stdout and "Relu 1" in r.stdout
    assert "parameters: 12" in r.stdout
    assert "arena" in r.stdout


def test_bench_reports_latency_and_plan(small_model, tmp_path):
    r = cli("bench", small_model[0], "--runs", 3, "--json", tmp_path / "b.json")
    assert r.returncode == 0, r.stderr
    assert "median latency: sporeling" in r.stdout and "plan: arena" in r.stdout
    assert (tmp_path / "b.json").exists()


def test_missing_file(tmp_path):
    assert_one_line_error(cli("run", tmp_path / "nope.onnx"), "nope.onnx", "no such file")


def test_corrupt_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    assert_one_line_error(cli("info", bad), "bad.onnx", "not a valid ONNX model")


def test_truncated_model(small_model, tmp_path):
    data = small_model[0].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    r = cli("run", cut)
    assert_one_line_error(r, "cut.onnx")


def test_wrong_feed_name(small_model, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    assert_one_line_error(cli("run", small_model[0], "--input", f"nope={tmp_path / 'x.npy'}"), "unknown input 'nope'")


def test_wrong_feed_shape_and_dtype(small_model, tmp_path):
    np.save(tmp_path / "a.npy", np.ones((1, 5), np.float32))
    assert_one_line_error(cli("run", small_model[0], "--input", f"x={tmp_path / 'a.npy'}"), "input 'x'", "shape")
    np.save(tmp_path / "b.npy", np.ones((1, 4), np.int32))
    assert_one_line_error(cli("run", small_model[0], "--input", f"x={tmp_path / 'b.npy'}"), "input 'x'", "dtype")


def test_missing_feed_file(small_model, tmp_path):
    assert_one_line_error(cli("run", small_model[0], "--input", f"x={tmp_path / 'none.npy'}"), "no such file")


def test_help_teaches():
    r = cli("--help")
    assert r.returncode == 0
    for word in ("run", "bench", "info", "demo", "examples:"):
        assert word in r.stdout
    r = cli("bench", "--help")
    assert "--compare" in r.stdout and "--threads" in r.stdout


def test_absurd_declared_shape_is_refused_in_one_line(tmp_path):
    g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [100000, 100000])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    path = tmp_path / "huge.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    assert_one_line_error(cli("run", path), "input 'x'", "--input-shape")
    r = cli("run", path, "--input-shape", "x=2,3")
    assert r.returncode == 2 and "Traceback" not in r.stderr  # [2, 3] does not match the declared shape
    assert "expected [100000,100000]" in r.stderr


def test_compare_without_onnxruntime_says_what_to_install(small_model):
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from sporeling.cli import main\n"
            f"sys.exit(main(['bench', {str(small_model[0])!r}, '--runs', '1', '--compare', 'onnxruntime']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_one_line_error(r, "needs the onnxruntime package")

"""rounding="sums": 2-D convolution kernels rounded keeping each input channel's kernel sum (mixed.kept_sums,
encode.conv_windows, compress end to end)."""

import numpy as np
import pytest

import sporeling
from sporeling.errors import SporelingError
from sporeling.format import load_spore, save_spore
from sporeling.ir import Graph, Node, ValueInfo
from sporeling.quant.compress import compress
from sporeling.quant.encode import conv_windows
from sporeling.quant.mixed import STEP_PEAK, decoded, kept_sums, quantize_step

rng = np.random.default_rng(11)


@pytest.mark.parametrize("rows,k", [(1, 2), (7, 9), (50, 25), (300, 3)])
def test_kept_sums_meets_each_rows_nearest_sum_moving_each_entry_at_most_one_step(rows, k):
    t = rng.standard_normal((rows, k)) * 3
    q = kept_sums(t)
    assert np.array_equal(q.sum(axis=1), np.rint(t.sum(axis=1)))
    moved = q - np.rint(t)
    assert set(np.unique(moved)) <= {-1.0, 0.0, 1.0}
    # a move goes the way the entry was nearer to rounding anyway, and only where the sum needed it
    assert np.all(np.sign(moved[moved != 0]) == np.sign((t - np.rint(t))[moved != 0]))
    assert np.all(np.abs(moved).sum(axis=1) == np.abs(np.rint(t.sum(axis=1)) - np.rint(t).sum(axis=1)))


def test_kept_sums_is_rounding_to_nearest_where_that_already_keeps_the_sum():
    t = np.array([[0.2, 0.3, -0.4], [1.1, 2.2, 3.1]])
    assert np.array_equal(kept_sums(t), np.rint(t))


@pytest.mark.parametrize("levels", [1, 3, 9])
def test_quantize_step_with_a_window_keeps_every_kernels_sum_to_half_a_step(levels):
    w = (rng.standard_normal((8, 6, 3, 3)) * 0.1 + 0.02).astype(np.float32)
    q = quantize_step(w, levels, 0, bias_correction=True, window=9)
    assert q.params.gain is None  # no bias correction: its gain would scale the sums away
    deq = decoded(q, np.float32).astype(np.float64)
    step = STEP_PEAK * np.sqrt((w.reshape(8, -1).astype(np.float64) ** 2).mean(axis=1)) / levels
    err = np.abs(deq.sum(axis=(2, 3)) - w.sum(axis=(2, 3), dtype=np.float64))
    assert np.all(err <= 0.5 * step[:, None] * (1 + 1e-5))
    nearest = quantize_step(w, levels, 0, bias_correction=False)
    assert np.abs(q.codes.astype(int) - nearest.codes.astype(int)).max() <= 1
    # rounding to nearest alone misses some kernel's sum by more than half a step at these levels
    sums = w.sum(axis=(2, 3), dtype=np.float64)
    loose = np.abs(decoded(nearest, np.float32).sum(axis=(2, 3), dtype=np.float64) - sums)
    assert np.any(loose > 0.5 * step[:, None] * 1.01)


def conv_graph() -> Graph:
    """x (1, 4, 12, 12) -> Conv 3x3 (8 <- 4) -> Relu -> depthwise 3x3 -> 1x1 Conv (6 <- 8) -> Flatten -> Gemm -> y."""
    inits = {"k3": (rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32),
             "b3": rng.standard_normal(8).astype(np.float32) * 0.1,
             "dw": (rng.standard_normal((8, 1, 3, 3)) * 0.3).astype(np.float32),
             "k1": (rng.standard_normal((6, 8, 1, 1)) * 0.3).astype(np.float32),
             "fc": (rng.standard_normal((5, 6 * 8 * 8)) * 0.05).astype(np.float32)}
    nodes = [Node("Conv", ["x", "k3", "b3"], ["a"], {"kernel_shape": [3, 3]}), Node("Relu", ["a"], ["r"]),
             Node("Conv", ["r", "dw"], ["d"], {"kernel_shape": [3, 3], "group": 8}),
             Node("Conv", ["d", "k1"], ["p"], {"kernel_shape": [1, 1]}), Node("Flatten", ["p"], ["f"], {"axis": 1}),
             Node("Gemm", ["f", "fc"], ["y"], {"transB": 1})]
    return Graph(nodes, [ValueInfo("x", np.dtype(np.float32), (1, 4, 12, 12))],
                 [ValueInfo("y", np.dtype(np.float32), (1, 5))], inits, opsets={"": 17})


def test_conv_windows_are_the_2d_kernels_that_mix_input_channels():
    assert conv_windows(conv_graph()) == {"k3": 9}  # not depthwise, 1x1, a bias or a dense weight


def test_conv_windows_leave_out_one_row_or_one_column_kernels():
    # a 1 x 3 or 3 x 1 kernel is a sequence's 1-D convolution in a 4-D layout: no flat patches to keep
    inits = {"row": (rng.standard_normal((8, 4, 1, 3)) * 0.3).astype(np.float32),
             "col": (rng.standard_normal((8, 8, 3, 1)) * 0.3).astype(np.float32),
             "both": (rng.standard_normal((8, 8, 2, 2)) * 0.3).astype(np.float32)}
    nodes = [Node("Conv", ["x", "row"], ["a"], {"kernel_shape": [1, 3]}),
             Node("Conv", ["a", "col"], ["b"], {"kernel_shape": [3, 1]}),
             Node("Conv", ["b", "both"], ["y"], {"kernel_shape": [2, 2]})]
    g = Graph(nodes, [ValueInfo("x", np.dtype(np.float32), (1, 4, 6, 6))],
              [ValueInfo("y", np.dtype(np.float32), (1, 8, 3, 3))], inits, opsets={"": 17})
    assert conv_windows(g) == {"both": 4}


def test_conv_windows_take_float16_kernels_and_leave_out_a_kernel_as_large_as_its_map():
    # "half" is a float16 kernel read through a Cast (MediaPipe's); "head" covers its whole 3 x 3 map: a dense layer
    inits = {"half": (rng.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float16),
             "head": (rng.standard_normal((10, 8, 3, 3)) * 0.3).astype(np.float32)}
    nodes = [Node("Cast", ["half"], ["half32"], {"to": 1}),
             Node("Conv", ["x", "half32"], ["a"], {"kernel_shape": [3, 3], "strides": [2, 2]}),
             Node("Conv", ["a", "head"], ["y"], {"kernel_shape": [3, 3]})]
    g = Graph(nodes, [ValueInfo("x", np.dtype(np.float32), (1, 4, 7, 7))],
              [ValueInfo("y", np.dtype(np.float32), (1, 10, 1, 1))], inits, opsets={"": 17})
    assert conv_windows(g) == {"half": 9, "head": 9}  # without a run, the map sizes are unknown
    assert conv_windows(g, {"x": rng.standard_normal((1, 4, 7, 7)).astype(np.float32)}) == {"half": 9}


def test_compress_with_sums_keeps_the_kernel_sums_in_the_file_and_it_runs(tmp_path):
    g = conv_graph()
    save_spore(g, tmp_path / "float.spore")
    report = compress(tmp_path / "float.spore", tmp_path / "q.spore", verbose=False, min_size=16, rounding="sums")
    assert report["rounding"] == "sums" and report["kernel_sums"] == ["k3"]
    got = load_spore(tmp_path / "q.spore").initializers["k3"].astype(np.float64)
    w = g.initializers["k3"].astype(np.float64)
    layer = next(x for x in report["layers"] if x["name"] == "k3")
    assert layer["codec"] != "raw"
    sums_err = np.abs(got.sum(axis=(2, 3)) - w.sum(axis=(2, 3)))
    step = np.abs(np.diff(np.unique(got[0]))).min()  # the first channel's step, from its decoded values
    assert sums_err[0].max() <= 0.5 * step * (1 + 1e-4)
    x = rng.standard_normal((1, 4, 12, 12)).astype(np.float32)
    out = sporeling.load(tmp_path / "q.spore").run({"x": x})["y"]
    assert out.shape == (1, 5) and np.all(np.isfinite(out))


@pytest.mark.parametrize("method", ["fixed", "original"])
def test_sums_is_refused_outside_the_mixed_search(tmp_path, method):
    save_spore(conv_graph(), tmp_path / "float.spore")
    with pytest.raises(SporelingError, match="sums --method mixed"):
        compress(tmp_path / "float.spore", tmp_path / "q.spore", verbose=False, method=method, rounding="sums")


def test_sums_is_the_mixed_searchs_default_and_nearest_the_others(tmp_path):
    save_spore(conv_graph(), tmp_path / "float.spore")
    mixed = compress(tmp_path / "float.spore", tmp_path / "m.spore", verbose=False, min_size=16)
    assert mixed["rounding"] == "sums" and mixed["kernel_sums"] == ["k3"]
    near = compress(tmp_path / "float.spore", tmp_path / "n.spore", verbose=False, min_size=16, rounding="nearest")
    assert near["rounding"] == "nearest" and "kernel_sums" not in near
    for method in ("fixed", "original"):
        other = compress(tmp_path / "float.spore", tmp_path / f"{method}.spore", verbose=False, min_size=16,
                         method=method)
        assert other["rounding"] == "nearest" and "kernel_sums" not in other

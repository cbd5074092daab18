"""threads=N is applied to the BLAS pool when a model runs."""

import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402

import sporeling  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402


def _model(threads):
    g = h.make_graph([h.make_node("MatMul", ["x", "x"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, [8, 8])])
    return sporeling.Model(from_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", 17)])), "m", threads)


def blas_threads():
    return {d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"}


@pytest.mark.parametrize("n", [2, 1])
def test_run_applies_the_thread_count(n):
    m = _model(n)
    x = np.eye(8, dtype=np.float32)
    np.testing.assert_array_equal(m.run({"x": x})["y"], x)
    assert blas_threads() == {n}


def test_default_is_one_thread():
    assert _model(None).threads == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads"):
        _model(bad)

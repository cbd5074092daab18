"""fold_constants and the Gemm half of fuse_conv_bn, each on a small graph written for it, checked against
onnxruntime on the original graph."""

import numpy as np
import pytest

pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402

from sporeling.frontends.onnx import from_model_proto  # noqa: E402
from sporeling.ir import verify  # noqa: E402
from sporeling.passes import dce, fold_constants, fuse_conv_bn  # noqa: E402

from .test_passes import ort_run, ours, proto  # noqa: E402

rng = np.random.default_rng(1)


def shape_chain(batch):
    """y = Reshape(x, Concat(Shape(x)[0], [-1])) + (k * 2): a shape subgraph and a constant expression."""
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
             h.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             h.make_node("Reshape", ["x", "target"], ["flat"]),
             h.make_node("Mul", ["k", "two"], ["k2"]),
             h.make_node("Add", ["flat", "k2"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "zero1": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
             "k": rng.standard_normal(24).astype(np.float32), "two": np.array(2.0, np.float32)}
    return proto(nodes, [h.make_tensor_value_info("x", T.FLOAT, [batch, 2, 3, 4])],
                 [h.make_tensor_value_info("y", T.FLOAT, [batch, 24])], inits)


def test_fold_constants_folds_shape_subgraph_when_the_input_shape_is_static():
    p = shape_chain(2)
    g = from_model_proto(p)
    assert fold_constants.run(g) == 5  # Shape, Gather, Unsqueeze, Concat, Mul
    dce.run(g)
    verify(g)
    assert [n.op_type for n in g.nodes] == ["Reshape", "Add"]
    np.testing.assert_array_equal(g.initializers[g.nodes[0].inputs[1]], [2, -1])
    assert g.value_info["flat"].shape == (2, 24)  # shapes it inferred are recorded
    x = rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ort_run(p, {"x": x})[0], rtol=1e-6)


def test_fold_constants_keeps_shape_chain_of_a_symbolic_input():
    p = shape_chain("batch")
    g = from_model_proto(p)
    assert fold_constants.run(g) == 1  # only k * 2
    verify(g)
    assert "Shape" in [n.op_type for n in g.nodes] and "Mul" not in [n.op_type for n in g.nodes]
    x = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ort_run(p, {"x": x})[0], rtol=1e-6)


def test_fold_constants_does_not_grow_the_model():
    """Cast(float16 weights -> float32) would double the stored bytes: left for load time."""
    w = rng.standard_normal((256, 256)).astype(np.float16)
    p = proto([h.make_node("Cast", ["w16"], ["w"], to=T.FLOAT), h.make_node("MatMul", ["x", "w"], ["y"])],
              [h.make_tensor_value_info("x", T.FLOAT, [1, 256])], [h.make_tensor_value_info("y", T.FLOAT, [1, 256])],
              {"w16": w})
    g = from_model_proto(p)
    assert fold_constants.run(g) == 0
    assert g.initializers["w16"].dtype == np.float16


def test_fold_constants_leaves_random_ops_and_graph_outputs():
    p = proto([h.make_node("RandomNormal", [], ["r"], shape=[3]), h.make_node("Add", ["x", "r"], ["y"]),
               h.make_node("Mul", ["k", "k"], ["z"])],
              [h.make_tensor_value_info("x", T.FLOAT, [3])],
              [h.make_tensor_value_info("y", T.FLOAT, [3]), h.make_tensor_value_info("z", T.FLOAT, [3])],
              {"k": np.ones(3, np.float32)})
    g = from_model_proto(p)
    assert fold_constants.run(g) == 0
    assert [n.op_type for n in g.nodes] == ["RandomNormal", "Add", "Mul"]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [True, False])
def test_fuse_gemm_bn(trans_b, with_c):
    k, m = 6, 5
    w = rng.standard_normal((m, k) if trans_b else (k, m)).astype(np.float32)
    inits = {"w": w, "scale": rng.uniform(0.5, 1.5, m).astype(np.float32),
             "shift": rng.standard_normal(m).astype(np.float32), "mean": rng.standard_normal(m).astype(np.float32),
             "var": rng.uniform(0.5, 2.0, m).astype(np.float32)}
    if with_c:
        inits["c"] = rng.standard_normal(m).astype(np.float32)
    gemm = h.make_node("Gemm", ["x", "w"] + (["c"] if with_c else []), ["g"], transB=trans_b, alpha=0.7, beta=1.3)
    bn = h.make_node("BatchNormalization", ["g", "scale", "shift", "mean", "var"], ["y"], epsilon=1e-3)
    p = proto([gemm, bn], [h.make_tensor_value_info("x", T.FLOAT, [3, k])],
              [h.make_tensor_value_info("y", T.FLOAT, [3, m])], inits)
    g = from_model_proto(p)
    assert fuse_conv_bn.run(g) == 1
    dce.run(g)
    verify(g)
    assert [n.op_type for n in g.nodes] == ["Gemm"] and g.nodes[0].outputs == ["y"]
    x = rng.standard_normal((3, k)).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ort_run(p, {"x": x})[0], rtol=1e-5, atol=1e-5)

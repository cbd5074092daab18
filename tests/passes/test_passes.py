"""Each graph pass on a small graph written for it: the rewrite it must make, the IR still verifies,
and the optimized graph computes what onnxruntime computes on the original."""

import copy

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import sporeling  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402
from sporeling.ir import verify  # noqa: E402
from sporeling.passes import dce, fuse_activation, fuse_conv_bn, optimize, remove_identity  # noqa: E402

rng = np.random.default_rng(0)


def proto(nodes, inputs, outputs, inits=()):
    g = h.make_graph(nodes, "g", inputs, outputs, [nh.from_array(v, k) for k, v in dict(inits).items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def ort_run(p, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def ours(graph, feeds):
    m = sporeling.Model(graph, "opt")
    return [m.run(feeds)[o.name] for o in graph.outputs]


def conv_net(with_residual=True, activation="Relu"):
    """x -> Conv -> BN -> (+x) -> activation -> y, with random BN statistics."""
    c = 4
    inits = {
        "w": rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.3,
        "b": rng.standard_normal(c).astype(np.float32),
        "scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "shift": rng.standard_normal(c).astype(np.float32),
        "mean": rng.standard_normal(c).astype(np.float32),
        "var": rng.uniform(0.5, 2.0, c).astype(np.float32),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
    }
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], epsilon=1e-5)]
    last = "n"
    if with_residual:
        nodes.append(h.make_node("Add", ["n", "x"], ["s"]))
        last = "s"
    if activation == "Relu":
        nodes.append(h.make_node("Relu", [last], ["y"]))
    elif activation == "Clip":
        nodes.append(h.make_node("Clip", [last, "lo", "hi"], ["y"]))
    else:
        nodes.append(h.make_node("Identity", [last], ["y"]))
    return proto(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, c, 8, 8])],
                 [h.make_tensor_value_info("y", T.FLOAT, [1, c, 8, 8])], inits)


def test_remove_identity_keeps_output_names():
    p = proto([h.make_node("Identity", ["x"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
               h.make_node("Identity", ["b"], ["y"])],
              [h.make_tensor_value_info("x", T.FLOAT, [3])], [h.make_tensor_value_info("y", T.FLOAT, [3])])
    g = from_model_proto(p)
    assert remove_identity.run(g) == 1  # the first; the last names a graph output
    verify(g)
    assert [n.op_type for n in g.nodes] == ["Relu", "Identity"] and g.nodes[0].inputs == ["x"]
    x = rng.standard_normal(3).astype(np.float32)
    np.testing.assert_array_equal(ours(g, {"x": x})[0], np.maximum(x, 0))


def test_dce_drops_unreachable_nodes_and_unused_initializers():
    p = proto([h.make_node("Relu", ["x"], ["y"]), h.make_node("Add", ["x", "k"], ["dead"])],
              [h.make_tensor_value_info("x", T.FLOAT, [3])], [h.make_tensor_value_info("y", T.FLOAT, [3])],
              {"k": np.ones(3, np.float32)})
    g = from_model_proto(p)
    assert dce.run(g) == 1
    verify(g)
    assert [n.op_type for n in g.nodes] == ["Relu"] and "k" not in g.initializers


def test_fuse_conv_bn_folds_into_the_weights():
    p = conv_net(with_residual=False, activation=None)
    g = from_model_proto(p)
    assert fuse_conv_bn.run(g) == 1
    verify(g)
    assert [n.op_type for n in g.nodes] == ["Conv", "Identity"]
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ort_run(p, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_fuse_conv_bn_leaves_a_shared_conv_output_alone():
    p = conv_net(with_residual=False, activation=None)
    p.graph.output.append(h.make_tensor_value_info("c", T.FLOAT, [1, 4, 8, 8]))
    g = from_model_proto(p)
    assert fuse_conv_bn.run(g) == 0


@pytest.mark.parametrize("activation", ["Relu", "Clip"])
@pytest.mark.parametrize("residual", [True, False])
def test_fuse_activation_and_residual_into_fused_conv(activation, residual):
    p = conv_net(with_residual=residual, activation=activation)
    g = from_model_proto(p)
    fuse_conv_bn.run(g)
    if fuse_activation.run(g) == 0:
        pytest.skip("FusedConv kernel not registered")
    verify(g)
    fused = [n for n in g.nodes if n.op_type == "FusedConv"]
    assert len(fused) == 1 and len(g.nodes) == 1
    assert fused[0].attrs["activation"] == activation
    assert (len(fused[0].inputs) == 4) == residual
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ort_run(p, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_optimize_pipeline_logs_each_pass_and_keeps_outputs():
    p = conv_net(with_residual=True, activation="Relu")
    g = from_model_proto(p)
    before = copy.deepcopy(g)
    log = []
    optimize(g, log)
    from sporeling.passes import PIPELINE

    assert [e["pass"] for e in log] == [name for name, _ in PIPELINE]
    assert {"fuse_conv_bn", "fuse_activation", "dce"} <= {e["pass"] for e in log}
    assert log[0]["nodes_before"] == 4 and log[-1]["nodes_after"] == len(g.nodes) < 4
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ours(before, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_fold_conv_affine_folds_mul_and_add_by_channel_constants():
    from sporeling.passes import fold_conv_affine

    c = 3
    inits = {"w": rng.standard_normal((c, 2, 3, 3)).astype(np.float32),
             "s": rng.uniform(0.5, 2, (1, c, 1, 1)).astype(np.float32),
             "t": np.array([0.25], np.float32), "d": np.array(2.0, np.float32)}
    p = proto([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Mul", ["s", "c"], ["m"]),
               h.make_node("Add", ["m", "t"], ["a"]), h.make_node("Div", ["a", "d"], ["y"])],
              [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 6, 6])],
              [h.make_tensor_value_info("y", T.FLOAT, [1, c, 4, 4])], inits)
    g = from_model_proto(p)
    assert fold_conv_affine.run(g) == 3
    verify(g)
    assert [n.op_type for n in g.nodes] == ["Conv"] and g.nodes[0].outputs == ["y"]
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ort_run(p, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_fold_conv_affine_refuses_non_channel_constants_and_divided_conv():
    from sporeling.passes import fold_conv_affine

    inits = {"w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
             "row": rng.standard_normal((1, 1, 1, 4)).astype(np.float32), "k": np.array(2.0, np.float32)}
    p = proto([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Mul", ["c", "row"], ["m"]),
               h.make_node("Conv", ["x", "w"], ["c2"]), h.make_node("Div", ["k", "c2"], ["q"])],
              [h.make_tensor_value_info("x", T.FLOAT, [1, 2, 6, 6])],
              [h.make_tensor_value_info("m", T.FLOAT, None), h.make_tensor_value_info("q", T.FLOAT, None)], inits)
    assert fold_conv_affine.run(from_model_proto(p)) == 0  # a per-column Mul; k / conv is not affine in conv


@pytest.mark.parametrize("variant", ["mul_then_div", "div_then_mul", "mul_by_sixth"])
def test_fuse_hardswish_recognises_the_arithmetic_form(variant):
    from sporeling.passes import fuse_hardswish

    inits = {"three": np.array([3.0], np.float32), "zero": np.array(0.0, np.float32),
             "six": np.array(6.0, np.float32), "sixth": np.array(1 / 6, np.float32)}
    nodes = [h.make_node("Relu", ["x"], ["r"]), h.make_node("Add", ["r", "three"], ["a"]),
             h.make_node("Clip", ["a", "zero", "six"], ["c"])]
    if variant == "mul_then_div":
        nodes += [h.make_node("Mul", ["r", "c"], ["m"]), h.make_node("Div", ["m", "six"], ["y"])]
    elif variant == "div_then_mul":
        nodes += [h.make_node("Div", ["c", "six"], ["d"]), h.make_node("Mul", ["d", "r"], ["y"])]
    else:
        nodes += [h.make_node("Mul", ["c", "r"], ["m"]), h.make_node("Mul", ["m", "sixth"], ["y"])]
    p = proto(nodes, [h.make_tensor_value_info("x", T.FLOAT, [2, 8])], [h.make_tensor_value_info("y", T.FLOAT, [2, 8])],
              inits)
    g = from_model_proto(p)
    assert fuse_hardswish.run(g) == 1
    verify(g)
    assert [n.op_type for n in g.nodes] == ["Relu", "HardSwish"]
    x = (rng.standard_normal((2, 8)) * 4).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ort_run(p, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_fuse_hardswish_leaves_other_clips_alone():
    from sporeling.passes import fuse_hardswish

    inits = {"three": np.array([3.0], np.float32), "zero": np.array(0.0, np.float32),
             "five": np.array(5.0, np.float32), "six": np.array(6.0, np.float32)}
    nodes = [h.make_node("Add", ["x", "three"], ["a"]), h.make_node("Clip", ["a", "zero", "five"], ["c"]),
             h.make_node("Mul", ["x", "c"], ["m"]), h.make_node("Div", ["m", "six"], ["y"])]
    p = proto(nodes, [h.make_tensor_value_info("x", T.FLOAT, [4])], [h.make_tensor_value_info("y", T.FLOAT, [4])], inits)
    assert fuse_hardswish.run(from_model_proto(p)) == 0


@pytest.mark.parametrize("order", ["x_then_half", "half_then_x", "mul_by_inverse_sqrt2"])
def test_fuse_gelu_recognises_the_pytorch_export(order):
    from sporeling.passes import fuse_gelu

    inits = {"sqrt2": np.array(np.sqrt(2), np.float32), "isqrt2": np.array(1 / np.sqrt(2), np.float32),
             "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    scale = (h.make_node("Mul", ["x", "isqrt2"], ["d"]) if order == "mul_by_inverse_sqrt2"
             else h.make_node("Div", ["x", "sqrt2"], ["d"]))
    nodes = [scale, h.make_node("Erf", ["d"], ["e"]), h.make_node("Add", ["e", "one"], ["a"])]
    if order == "half_then_x":
        nodes += [h.make_node("Mul", ["a", "half"], ["m"]), h.make_node("Mul", ["x", "m"], ["y"])]
    else:
        nodes += [h.make_node("Mul", ["x", "a"], ["m"]), h.make_node("Mul", ["m", "half"], ["y"])]
    p = proto(nodes, [h.make_tensor_value_info("x", T.FLOAT, [4, 300])],
              [h.make_tensor_value_info("y", T.FLOAT, [4, 300])], inits)
    g = from_model_proto(p)
    assert fuse_gelu.run(g) == 1
    verify(g)
    assert [(n.domain, n.op_type) for n in g.nodes] == [("ai.sporeling", "Gelu")]
    x = (rng.standard_normal((4, 300)) * 3).astype(np.float32)
    np.testing.assert_allclose(ours(g, {"x": x})[0], ort_run(p, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_fuse_gelu_needs_the_right_constants():
    from sporeling.passes import fuse_gelu

    inits = {"c": np.array(2.0, np.float32), "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    nodes = [h.make_node("Div", ["x", "c"], ["d"]), h.make_node("Erf", ["d"], ["e"]),
             h.make_node("Add", ["e", "one"], ["a"]), h.make_node("Mul", ["x", "a"], ["m"]),
             h.make_node("Mul", ["m", "half"], ["y"])]
    p = proto(nodes, [h.make_tensor_value_info("x", T.FLOAT, [3])], [h.make_tensor_value_info("y", T.FLOAT, [3])], inits)
    assert fuse_gelu.run(from_model_proto(p)) == 0


def test_fuse_matmul_bias():
    from sporeling.passes import fuse_matmul_bias

    inits = {"w": rng.standard_normal((8, 5)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32),
             "wide": rng.standard_normal((2, 1, 5)).astype(np.float32)}
    p = proto([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["b", "m"], ["y"]),
               h.make_node("MatMul", ["x", "w"], ["m2"]), h.make_node("Add", ["m2", "wide"], ["z"])],
              [h.make_tensor_value_info("x", T.FLOAT, [2, 3, 8])],
              [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("z", T.FLOAT, None)], inits)
    g = from_model_proto(p)
    assert fuse_matmul_bias.run(g) == 1  # the second Add broadcasts a 3-D tensor: not a bias
    verify(g)
    assert [n.op_type for n in g.nodes] == ["FusedMatMul", "MatMul", "Add"]
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    for a, b in zip(ours(g, {"x": x}), ort_run(p, {"x": x})):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_optimize_reaches_into_subgraph_bodies():
    then_g = h.make_graph([h.make_node("Identity", ["x"], ["i"]), h.make_node("Relu", ["i"], ["t"])], "then", [],
                          [h.make_tensor_value_info("t", T.FLOAT, [3])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [h.make_tensor_value_info("e", T.FLOAT, [3])])
    p = proto([h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
              [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [3])],
              [h.make_tensor_value_info("y", T.FLOAT, [3])])
    g = from_model_proto(p)
    optimize(g)
    body = g.nodes[0].attrs["then_branch"]
    assert [n.op_type for n in body.nodes] == ["Relu"] and body.nodes[0].inputs == ["x"]
    x = np.array([-1, 0, 2], np.float32)
    for c in (True, False):
        np.testing.assert_array_equal(ours(g, {"c": np.array(c), "x": x})[0], ort_run(p, {"c": np.array(c), "x": x})[0])

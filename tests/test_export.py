"""Export back to ONNX (sporeling.frontends.onnx_export).

Small graphs written here go through sporeling.load (optimized, so the passes create our ai.sporeling
ops), are exported, checked by onnx's checker, and run in onnxruntime beside the original model: the
outputs must agree within float tolerance. One test per expansion and lowering, then the IR's details
(attributes of every type, dtypes, symbolic dims, subgraphs, metadata) through export and re-import,
then the errors. The real models (the `assets` tests) make the whole round trip: ONNX -> sporeling ->
ONNX -> onnxruntime and sporeling again, against onnxruntime on the original.
"""

import glob
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import sporeling  # noqa: E402
from sporeling.errors import SporelingError  # noqa: E402
from sporeling.frontends import onnx_export  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402
from sporeling.frontends.onnx_export import export_onnx, to_model_proto  # noqa: E402
from sporeling.ir import Graph, Node, ValueInfo  # noqa: E402

rng = np.random.default_rng(7)
SPORELING = "ai.sporeling"


def proto(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(nodes, "g", inputs, outputs, [nh.from_array(v, k) for k, v in dict(inits).items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=8)


def ort_run(model, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def all_nodes(graph_proto):
    for n in graph_proto.node:
        yield n
        for a in n.attribute:
            for g in ([a.g] if a.type == a.GRAPH else list(a.graphs)):
                yield from all_nodes(g)


def export_and_compare(tmp_path, original, feeds, atol=1e-5):
    """Loads `original` optimized, exports it, and checks the export against onnxruntime on the original.
    Returns (sporeling graph, exported proto)."""
    src = os.path.join(tmp_path, "original.onnx")
    onnx.save(original, src)
    graph = sporeling.load(src).graph
    exported = to_model_proto(graph)
    onnx.checker.check_model(exported, full_check=True)
    assert all(n.domain != SPORELING for n in all_nodes(exported.graph))
    assert SPORELING not in {o.domain for o in exported.opset_import}
    want, got = ort_run(original, feeds), ort_run(exported, feeds)
    assert want.keys() == got.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=atol, err_msg=k)
    return graph, exported


def sporeling_ops(graph):
    return {(n.op_type, str(n.attrs.get("activation", ""))) for n in graph.nodes if n.domain == SPORELING}


def ops_of(exported):
    return [n.op_type for n in all_nodes(exported.graph)]


# ---- FusedConv ------------------------------------------------------------------------------------
def conv_model(activation, residual, opset=17):
    """Conv [+ z] -> activation, written as the standard ops the fusion pass recognises."""
    c = 6
    inits = {"w": rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.4,
             "b": rng.standard_normal(c).astype(np.float32)}
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1])]
    last = "c"
    if residual:
        nodes.append(h.make_node("Add", ["c", "z"], ["s"]))
        last = "s"
    name, *params = activation
    if name == "Clip" and opset < 11:
        nodes.append(h.make_node("Clip", [last], ["y"], min=params[0], max=params[1]))
    elif name == "Clip":
        inits["lo"] = np.array(params[0], np.float32)
        if len(params) > 1:
            inits["hi"] = np.array(params[1], np.float32)
        nodes.append(h.make_node("Clip", [last, "lo"] + (["hi"] if len(params) > 1 else []), ["y"]))
    elif name == "HardSwishArithmetic":  # x * clip(x + 3, 0, 6) / 6, which fuse_hardswish turns into HardSwish
        inits.update(three=np.array(3, np.float32), zero=np.array(0, np.float32), six=np.array(6, np.float32))
        nodes += [h.make_node("Add", [last, "three"], ["p3"]), h.make_node("Clip", ["p3", "zero", "six"], ["cl"]),
                  h.make_node("Mul", [last, "cl"], ["m"]), h.make_node("Div", ["m", "six"], ["y"])]
    else:
        attrs = dict(zip(["alpha", "beta"], params))
        nodes.append(h.make_node(name, [last], ["y"], **attrs))
    inputs = [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 8, 8])]
    if residual:
        inputs.append(h.make_tensor_value_info("z", T.FLOAT, ["N", c, 8, 8]))
    return proto(nodes, inputs, [h.make_tensor_value_info("y", T.FLOAT, ["N", c, 8, 8])], inits, opset)


ACTIVATION_CASES = [("Relu",), ("Clip", 0.0, 6.0), ("Clip", -0.5), ("LeakyRelu", 0.1), ("LeakyRelu", 2.5),
                    ("HardSigmoid", 0.3, 0.4), ("HardSwish",), ("Sigmoid",), ("Tanh",)]


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("activation", ACTIVATION_CASES, ids=lambda a: "-".join(map(str, a)))
def test_fused_conv_exports_as_conv_add_activation(tmp_path, activation, residual):
    p = conv_model(activation, residual)
    feeds = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32) * 2}
    if residual:
        feeds["z"] = rng.standard_normal((2, 6, 8, 8)).astype(np.float32)
    graph, exported = export_and_compare(tmp_path, p, feeds)
    assert sporeling_ops(graph) == {("FusedConv", activation[0])}
    assert ops_of(exported) == ["Conv"] + (["Add"] if residual else []) + [activation[0]]


def test_fused_conv_residual_without_activation(tmp_path):
    p = conv_model(("Identity",), residual=True)
    p.graph.node[-1].CopyFrom(h.make_node("Add", ["c", "z"], ["y"]))
    del p.graph.node[1]
    feeds = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
             "z": rng.standard_normal((1, 6, 8, 8)).astype(np.float32)}
    graph, exported = export_and_compare(tmp_path, p, feeds)
    assert sporeling_ops(graph) == {("FusedConv", "")}
    assert ops_of(exported) == ["Conv", "Add"]


def test_every_fused_conv_activation_has_an_onnx_spelling():
    from sporeling.frontends.onnx_expand import ACTIVATION_SPELLINGS
    from sporeling.ops.conv import ACTIVATIONS

    assert set(ACTIVATION_SPELLINGS) == set(ACTIVATIONS) - {""}


@pytest.mark.parametrize("opset", [10, 13])
def test_activations_below_their_opset_are_lowered(tmp_path, opset):
    """Clip's bounds are attributes before opset 11; HardSwish (created by a pass at any opset) is only in
    ONNX from 14, so it becomes HardSigmoid * x."""
    feeds = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32) * 3}
    _, exported = export_and_compare(tmp_path, conv_model(("Clip", -1.0, 2.0), False, opset), feeds)
    assert ops_of(exported) == ["Conv", "Clip"] and exported.opset_import[0].version == opset
    assert {a.name for a in exported.graph.node[1].attribute} == ({"min", "max"} if opset < 11 else set())
    if opset >= 11:
        graph, exported = export_and_compare(tmp_path, conv_model(("HardSwishArithmetic",), True, opset),
                                             dict(feeds, z=rng.standard_normal((2, 6, 8, 8)).astype(np.float32)))
        assert sporeling_ops(graph) == {("FusedConv", "HardSwish")}
        assert ops_of(exported) == ["Conv", "Add", "HardSigmoid", "Mul"]


def test_fused_conv_in_float16_keeps_its_dtype(tmp_path):
    p = conv_model(("Clip", 0.0, 6.0), False)
    for init in p.graph.initializer:
        init.CopyFrom(nh.from_array(nh.to_array(init).astype(np.float16), init.name))
    for v in list(p.graph.input) + list(p.graph.output):
        v.type.tensor_type.elem_type = T.FLOAT16
    feeds = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float16)}
    _, exported = export_and_compare(tmp_path, p, feeds, atol=1e-2)
    assert {t.data_type for t in exported.graph.initializer} == {T.FLOAT16}


# ---- FusedMatMul and Gelu ---------------------------------------------------------------------------
def linear_model(opset=17):
    inits = {"w": rng.standard_normal((8, 5)).astype(np.float32), "bias": rng.standard_normal(5).astype(np.float32)}
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "bias"], ["y"])]
    return proto(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["B", 3, 8])],
                 [h.make_tensor_value_info("y", T.FLOAT, ["B", 3, 5])], inits, opset)


def test_fused_matmul_exports_as_matmul_add(tmp_path):
    graph, exported = export_and_compare(tmp_path, linear_model(), {"x": rng.standard_normal((2, 3, 8)).astype(
        np.float32)})
    assert sporeling_ops(graph) == {("FusedMatMul", "")}
    assert ops_of(exported) == ["MatMul", "Add"]


def test_fused_matmul_transpose_and_alpha_attributes():
    """A FusedMatMul with transB and alpha (not made by today's pass; the expansion spells them out)."""
    a, b, bias = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 4), (5, 4), (5,)))
    g = Graph(nodes=[Node("FusedMatMul", ["a", "b", "bias"], ["y"], {"transB": 1, "alpha": 0.5}, "fm", SPORELING)],
              inputs=[ValueInfo("a", np.dtype(np.float32), ("N", 3, 4))],
              outputs=[ValueInfo("y", np.dtype(np.float32), ("N", 3, 5))],
              initializers={"b": b, "bias": bias}, opsets={"": 17, SPORELING: 1})
    exported = to_model_proto(g)
    onnx.checker.check_model(exported, full_check=True)
    assert ops_of(exported) == ["Transpose", "MatMul", "Mul", "Add"]
    np.testing.assert_allclose(ort_run(exported, {"a": a})["y"], 0.5 * (a @ b.T) + bias, rtol=1e-5, atol=1e-6)


def gelu_model(opset):
    """x @ w, then GELU written out as PyTorch exports it."""
    inits = {"w": rng.standard_normal((6, 6)).astype(np.float32), "sqrt2": np.array(np.sqrt(2), np.float32),
             "one": np.array(1, np.float32), "half": np.array(0.5, np.float32)}
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Div", ["m", "sqrt2"], ["d"]),
             h.make_node("Erf", ["d"], ["e"]), h.make_node("Add", ["e", "one"], ["p"]),
             h.make_node("Mul", ["m", "p"], ["q"]), h.make_node("Mul", ["q", "half"], ["y"])]
    return proto(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["B", 6])],
                 [h.make_tensor_value_info("y", T.FLOAT, ["B", 6])], inits, opset)


@pytest.mark.parametrize("opset", [17, 20])
def test_gelu_exports_as_erf_chain_or_gelu(tmp_path, opset):
    graph, exported = export_and_compare(tmp_path, gelu_model(opset), {"x": rng.standard_normal((4, 6)).astype(
        np.float32) * 2})
    assert ("Gelu", "") in sporeling_ops(graph)
    assert ops_of(exported) == (["MatMul", "Gelu"] if opset >= 20 else ["MatMul", "Mul", "Erf", "Add", "Mul", "Mul"])


def test_tanh_gelu_below_opset_20_is_lowered():
    """A standard Gelu (as another frontend may write it) at an opset without Gelu."""
    x = rng.standard_normal((3, 7)).astype(np.float32) * 3
    g = Graph(nodes=[Node("Gelu", ["x"], ["y"], {"approximate": "tanh"}, "gelu")],
              inputs=[ValueInfo("x", np.dtype(np.float32), (3, 7))],
              outputs=[ValueInfo("y", np.dtype(np.float32), (3, 7))], opsets={"": 17})
    exported = to_model_proto(g)
    onnx.checker.check_model(exported, full_check=True)
    assert "Gelu" not in ops_of(exported) and "Tanh" in ops_of(exported)
    want = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(ort_run(exported, {"x": x})["y"], want, rtol=1e-5, atol=1e-6)


def test_constants_of_unknown_dtype_are_cast_like_their_input():
    """Without a recorded dtype for Gelu's input, the lowering's constants follow it through CastLike (float64
    here, which a float32 constant would turn into a type error in onnxruntime)."""
    x = rng.standard_normal((2, 5)) * 3
    g = Graph(nodes=[Node("Relu", ["x"], ["r"]), Node("Gelu", ["r"], ["y"], {"approximate": "tanh"}, "gelu")],
              inputs=[ValueInfo("x", np.dtype(np.float64), (2, 5))], outputs=[ValueInfo("y", None, None)],
              opsets={"": 17})
    exported = to_model_proto(g)
    assert ops_of(exported).count("CastLike") == 4  # 0.044715, sqrt(2 / pi), 1 and 0.5
    r = np.maximum(x, 0)
    want = 0.5 * r * (1 + np.tanh(np.sqrt(2 / np.pi) * (r + 0.044715 * r**3)))
    got = ort_run(exported, {"x": x})["y"]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_opset_argument_converts_the_model(tmp_path):
    src = os.path.join(tmp_path, "g.onnx")
    onnx.save(gelu_model(17), src)
    exported = to_model_proto(sporeling.load(src).graph, opset=20)
    assert exported.opset_import[0].version == 20
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(ort_run(exported, {"x": x})["y"], ort_run(src, {"x": x})["y"], rtol=1e-5,
                               atol=1e-6)


# ---- the IR's details ---------------------------------------------------------------------------------
def small_body(name):
    return Graph(nodes=[Node("Neg", ["a"], ["b"])], inputs=[ValueInfo("a", np.dtype(np.float32), (2,))],
                 outputs=[ValueInfo("b", np.dtype(np.float32), (2,))], initializers={}, name=name)


def test_attributes_dtypes_value_info_and_metadata_round_trip():
    import ml_dtypes

    attrs = {"i": 3, "flag": True, "f": 0.25, "s": "h\u00e9", "ints": [1, -2], "floats": [0.5, 2.0],
             "strings": ["a", "b"], "t": np.arange(6, dtype=np.int32).reshape(2, 3),
             "ts": [np.ones(2, np.float16), np.array([True, False])], "g": small_body("g1"),
             "gs": [small_body("g2"), small_body("g3")]}
    inits = {"f16": np.array([1.5, -2], np.float16), "f64": np.array([np.pi]), "bool": np.array([True, False]),
             "i8": np.array([-3], np.int8), "u16": np.array([7], np.uint16), "i32": np.array([1, 2], np.int32),
             "i64": np.array([[1], [2]], np.int64), "u64": np.array([2**63], np.uint64),
             "str": np.array(["x", "yz"], object), "bf16": np.array([1.25, 3], ml_dtypes.bfloat16),
             "c64": np.array([1 + 2j], np.complex64), "scalar": np.array(4.0, np.float32)}
    metadata = {"author": "me", "onnx.doc_string": "doc", "onnx.domain": "org.example", "onnx.ir_version": "3",
                "onnx.producer_name": "pytorch"}
    g = Graph(nodes=[Node("Identity", ["x"], ["mid"], {}, "id"),
                     Node("Custom", ["mid", "f16"], ["y"], attrs, "custom", "org.example.ops")],
              inputs=[ValueInfo("x", np.dtype(np.float32), ("batch", None, 3))],
              outputs=[ValueInfo("y", np.dtype(np.int64), ("batch", 4))],
              initializers=inits, opsets={"": 17, "org.example.ops": 2}, metadata=metadata, name="details",
              value_info={"mid": ValueInfo("mid", np.dtype(np.float32), ("batch", None, 3)),
                          "gone": ValueInfo("gone", np.dtype(np.float32), (1,))})
    exported = to_model_proto(g)
    onnx.checker.check_model(exported)
    assert (exported.producer_name, exported.producer_version) == ("sporeling", sporeling.__version__)
    assert (exported.doc_string, exported.domain) == ("doc", "org.example")
    assert {p.key: p.value for p in exported.metadata_props} == {"author": "me"}
    assert {(o.domain, o.version) for o in exported.opset_import} == {("", 17), ("org.example.ops", 2)}
    assert [v.name for v in exported.graph.value_info] == ["mid"]  # a stale entry is not written

    back = from_model_proto(exported)
    assert back.name == "details"
    assert back.metadata == {"author": "me", "onnx.doc_string": "doc", "onnx.domain": "org.example",
                             "onnx.producer_name": "sporeling", "onnx.producer_version": sporeling.__version__,
                             "onnx.ir_version": str(exported.ir_version)}
    assert [(v.name, v.dtype, v.shape) for v in back.inputs] == [("x", np.float32, ("batch", None, 3))]
    assert [(v.name, v.dtype, v.shape) for v in back.outputs] == [("y", np.int64, ("batch", 4))]
    assert back.value_info["mid"].shape == ("batch", None, 3)
    for k, a in inits.items():
        assert back.initializers[k].dtype == a.dtype and back.initializers[k].shape == a.shape, k
        np.testing.assert_array_equal(back.initializers[k], a, err_msg=k)
    node = back.nodes[1]
    assert (node.op_type, node.domain, node.name) == ("Custom", "org.example.ops", "custom")
    got = node.attrs
    for k in ("i", "f", "s", "ints", "floats", "strings"):
        assert got[k] == attrs[k] and type(got[k]) is type(attrs[k]), k
    assert got["flag"] == 1
    np.testing.assert_array_equal(got["t"], attrs["t"])
    assert got["t"].dtype == np.int32 and [t.dtype for t in got["ts"]] == [np.float16, np.bool_]
    assert str(got["g"]) == str(attrs["g"]) and [str(b) for b in got["gs"]] == [str(b) for b in attrs["gs"]]


def control_flow_model(kind):
    """If with a Conv + Relu in one branch (fused there), a Loop that adds x M times, or a cumulative Scan."""
    f = T.FLOAT
    if kind == "If":
        w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
        then = h.make_graph([h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Relu", ["c"], ["t"])], "then", [],
                            [h.make_tensor_value_info("t", f, None)])
        other = h.make_graph([h.make_node("Conv", ["x", "w"], ["e"])], "else", [],
                             [h.make_tensor_value_info("e", f, None)])
        nodes = [h.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
        ins = [h.make_tensor_value_info("cond", T.BOOL, []), h.make_tensor_value_info("x", f, [1, 2, 5, 5])]
        outs = [h.make_tensor_value_info("y", f, [1, 4, 3, 3])]
        return proto(nodes, ins, outs, {"w": w}), ["Conv", "Conv", "Relu"]  # else_branch, then then_branch
    if kind == "Loop":
        body = h.make_graph([h.make_node("Identity", ["c_in"], ["c_out"]), h.make_node("Add", ["v", "x"], ["v2"]),
                             h.make_node("Mul", ["v2", "two"], ["scan"])], "body",
                            [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("c_in", T.BOOL, []),
                             h.make_tensor_value_info("v", f, [3])],
                            [h.make_tensor_value_info("c_out", T.BOOL, []), h.make_tensor_value_info("v2", f, [3]),
                             h.make_tensor_value_info("scan", f, [3])],
                            [nh.from_array(np.array(2, np.float32), "two")])
        nodes = [h.make_node("Loop", ["M", "", "v0"], ["y", "ys"], body=body)]
        ins = [h.make_tensor_value_info("M", T.INT64, []), h.make_tensor_value_info("v0", f, [3]),
               h.make_tensor_value_info("x", f, [3])]
        outs = [h.make_tensor_value_info("y", f, [3]), h.make_tensor_value_info("ys", f, ["M", 3])]
        return proto(nodes, ins, outs), ["Identity", "Add", "Mul"]
    body = h.make_graph([h.make_node("Add", ["acc", "row"], ["acc2"]), h.make_node("Identity", ["acc2"], ["out"])],
                        "body", [h.make_tensor_value_info("acc", f, [3]), h.make_tensor_value_info("row", f, [3])],
                        [h.make_tensor_value_info("acc2", f, [3]), h.make_tensor_value_info("out", f, [3])])
    nodes = [h.make_node("Scan", ["a0", "rows"], ["total", "cumsum"], body=body, num_scan_inputs=1)]
    ins = [h.make_tensor_value_info("a0", f, [3]), h.make_tensor_value_info("rows", f, ["R", 3])]
    outs = [h.make_tensor_value_info("total", f, [3]), h.make_tensor_value_info("cumsum", f, ["R", 3])]
    return proto(nodes, ins, outs), ["Add", "Identity"]


@pytest.mark.parametrize("kind", ["If", "Loop", "Scan"])
def test_control_flow_bodies(tmp_path, kind):
    p, body_ops = control_flow_model(kind)
    if kind == "If":
        x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
        for cond in (True, False):
            graph, exported = export_and_compare(tmp_path, p, {"cond": np.array(cond), "x": x})
        assert sporeling_ops(graph.nodes[0].attrs["then_branch"]) == {("FusedConv", "Relu")}
    elif kind == "Loop":
        feeds = {"M": np.array(4, np.int64), "v0": rng.standard_normal(3).astype(np.float32),
                 "x": rng.standard_normal(3).astype(np.float32)}
        graph, exported = export_and_compare(tmp_path, p, feeds)
    else:
        feeds = {"a0": np.zeros(3, np.float32), "rows": rng.standard_normal((5, 3)).astype(np.float32)}
        graph, exported = export_and_compare(tmp_path, p, feeds)
    assert ops_of(exported) == [kind] + body_ops


def test_split_output_count_recorded_by_the_importer_is_not_written(tmp_path):
    """Before opset 18 an equal Split has no num_outputs; the importer records it, the export drops it."""
    p = proto([h.make_node("Split", ["x"], ["a", "b"], axis=1)], [h.make_tensor_value_info("x", T.FLOAT, [2, 6])],
              [h.make_tensor_value_info("a", T.FLOAT, [2, 3]), h.make_tensor_value_info("b", T.FLOAT, [2, 3])],
              opset=13)
    graph, exported = export_and_compare(tmp_path, p, {"x": rng.standard_normal((2, 6)).astype(np.float32)})
    assert "num_outputs" in graph.nodes[0].attrs
    assert [a.name for a in exported.graph.node[0].attribute] == ["axis"]


# ---- errors and the file ------------------------------------------------------------------------------
def test_domain_op_without_expansion_is_named():
    g = Graph(nodes=[Node("FusedWonder", ["x"], ["y"], {}, "wonder", SPORELING)],
              inputs=[ValueInfo("x", np.dtype(np.float32), (2,))], outputs=[ValueInfo("y", np.dtype(np.float32), (2,))],
              opsets={"": 17, SPORELING: 1})
    with pytest.raises(SporelingError, match="FusedWonder.*'wonder'.*ai.sporeling op FusedWonder has no ONNX"):
        to_model_proto(g)


def test_unknown_attribute_of_a_fused_op_is_an_error_not_dropped():
    g = Graph(nodes=[Node("FusedMatMul", ["x", "w"], ["y"], {"transpose_mode": 3}, "fm", SPORELING)],
              inputs=[ValueInfo("x", np.dtype(np.float32), (2, 2))],
              outputs=[ValueInfo("y", np.dtype(np.float32), (2, 2))],
              initializers={"w": np.eye(2, dtype=np.float32)}, opsets={"": 17, SPORELING: 1})
    with pytest.raises(SporelingError, match="transpose_mode"):
        to_model_proto(g)


def test_standard_op_missing_from_the_opset_is_named():
    g = Graph(nodes=[Node("LayerNormalization", ["x", "s"], ["y"], {}, "ln")],
              inputs=[ValueInfo("x", np.dtype(np.float32), (2, 3))], outputs=[ValueInfo("y", None, None)],
              initializers={"s": np.ones(3, np.float32)}, opsets={"": 11})
    with pytest.raises(SporelingError, match="LayerNormalization is not in ONNX opset 11"):
        to_model_proto(g)


def test_export_onnx_writes_a_loadable_file_atomically(tmp_path):
    src = os.path.join(tmp_path, "src.onnx")
    onnx.save(linear_model(), src)
    model = sporeling.load(src)
    out = os.path.join(tmp_path, "out.onnx")
    export_onnx(model.graph, out)
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", "src.onnx"]  # no temporary file left
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(sporeling.load(out).run({"x": x})["y"], ort_run(src, {"x": x})["y"], rtol=1e-5,
                               atol=1e-6)
    # a failing export leaves the previous file as it was
    bad = Graph(nodes=[Node("FusedWonder", ["x"], ["y"], {}, "w", SPORELING)],
                inputs=[ValueInfo("x", np.dtype(np.float32), (1,))], outputs=[ValueInfo("y", None, None)])
    with open(out, "rb") as f:
        before = f.read()
    with pytest.raises(SporelingError):
        export_onnx(bad, out)
    with open(out, "rb") as f:
        assert f.read() == before
    with pytest.raises(SporelingError, match="does not exist"):
        export_onnx(model.graph, os.path.join(tmp_path, "missing", "m.onnx"))


def test_models_past_the_protobuf_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "PROTOBUF_LIMIT", 100)  # 100 bytes instead of 2 GiB, same rule
    src = os.path.join(tmp_path, "src.onnx")
    onnx.save(linear_model(), src)
    with pytest.raises(SporelingError, match="2 GiB"):
        export_onnx(sporeling.load(src).graph, os.path.join(tmp_path, "out.onnx"))
    assert not os.path.exists(os.path.join(tmp_path, "out.onnx"))


# ---- real models: ONNX -> sporeling -> ONNX, against onnxruntime on the original ----------------------
def _real_feeds(name, path):
    from . import test_real_models as real

    if name == "ppocr_det":
        return {"x": real.det_input(real.load_photo("coffee"), limit_side=320)}
    if name in ("ppocr_rec", "ppocr_cls"):
        return {"x": real.line_input(real.load_photo("page")[real.TITLE_LINE], 48, 320 if name == "ppocr_rec" else 192)}
    if name.startswith("silero"):
        return real.silero_feeds(path, real.audio_frames(8)[4:5])
    model = sporeling.load(path)
    if name.startswith("tinybert"):
        ids = rng.integers(1000, 20000, size=(1, 128), dtype=np.int64)
        return {"input_ids": ids, "attention_mask": (np.arange(128) < 100).astype(np.int64)[None]}
    from sporeling.tools import random_feeds
    return random_feeds(model, seed=3)


def _bench_models():
    from sporeling.assets import cache_dir

    return [os.path.basename(p).split("-")[0] for p in sorted(glob.glob(os.path.join(cache_dir(), "bench", "*.onnx")))]


REAL_MODELS = ["ppocr_det", "ppocr_rec", "ppocr_cls", "silero_vad", "silero_16k_op15", "silero_16k_sequence",
               "silero_half", "silero_op18_ifless", "silero_openvino_16k", "mobilenetv2", "resnet18", "tinybert"]


@pytest.mark.assets
@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_model_round_trip(tmp_path, name):
    from sporeling.assets import cache_dir

    from .assets import require
    from .test_real_models import assert_outputs_match

    if name in ("mobilenetv2", "resnet18", "tinybert"):
        found = sorted(glob.glob(os.path.join(cache_dir(), "bench", f"{name}-*.onnx")))
        if not found:
            pytest.skip(f"{name}: no bench/{name}-*.onnx in {cache_dir()} (built by benchmarks/models.py)")
        path = found[-1]
    else:
        path = require(name)
    model = sporeling.load(path)
    fused = sporeling_ops(model.graph) | {op for n in model.graph.nodes for b in n.subgraphs()
                                          for op in sporeling_ops(b)}
    assert fused, "the passes fused nothing: the expansions would go untested"
    out = os.path.join(tmp_path, "exported.onnx")
    export_onnx(model.graph, out)
    onnx.checker.check_model(out)
    exported, original = onnx.load(out), onnx.load(path)
    assert all(n.domain != SPORELING for n in all_nodes(exported.graph))
    assert sum(n.op_type == "If" for n in all_nodes(exported.graph)) == sum(
        n.op_type == "If" for n in all_nodes(original.graph))
    props = {p.key: p.value for p in original.metadata_props}
    assert props.items() <= {p.key: p.value for p in exported.metadata_props}.items()  # e.g. PP-OCR's characters

    feeds = _real_feeds(name, path)
    want = ort_run(path, feeds)
    assert_outputs_match(ort_run(out, feeds), want, f"{name} exported, in onnxruntime")
    assert_outputs_match(sporeling.load(out).run(feeds), want, f"{name} exported, re-imported by sporeling")

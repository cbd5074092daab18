"""ONNX import: initializers in external files, metadata, Constant nodes, subgraphs, bad files."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402

import sporeling  # noqa: E402
from sporeling.errors import ModelLoadError  # noqa: E402
from sporeling.ir import verify  # noqa: E402


def _model(w):
    g = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, w.shape[0]])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, w.shape[1]])],
                     [onnx.numpy_helper.from_array(w, "w")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    h.set_model_props(m, {"author": "tests", "character": "a\nb"})
    return m


def test_external_data_and_metadata_are_loaded(tmp_path):
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    m = _model(w)
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
                    size_threshold=0)
    assert (tmp_path / "weights.bin").stat().st_size >= w.nbytes
    model = sporeling.load(path)
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], x @ w, rtol=1e-5)
    assert model.metadata["author"] == "tests" and model.metadata["character"] == "a\nb"
    assert model.graph.opset == 13


def test_missing_external_data_file_is_named(tmp_path):
    w = np.ones((64, 32), np.float32)
    path = tmp_path / "ext.onnx"
    onnx.save_model(_model(w), path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError) as e:
        sporeling.load(path)
    assert "ext.onnx" in str(e.value)


def test_constant_nodes_become_initializers():
    g = h.make_graph([h.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0]),
                      h.make_node("Add", ["x", "c"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [2])], [h.make_tensor_value_info("y", T.FLOAT, [2])])
    from sporeling.frontends.onnx import from_model_proto

    graph = from_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    assert [n.op_type for n in graph.nodes] == ["Add"]
    assert graph.initializers["c"].tolist() == [1.0, 2.0]


def test_subgraph_reading_outer_scope_verifies():
    then_g = h.make_graph([h.make_node("Add", ["x", "x"], ["t"])], "then", [], [h.make_tensor_value_info("t", T.FLOAT, [2])])
    else_g = h.make_graph([h.make_node("Sub", ["x", "x"], ["e"])], "else", [], [h.make_tensor_value_info("e", T.FLOAT, [2])])
    g = h.make_graph([h.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)], "g",
                     [h.make_tensor_value_info("cond", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [2])],
                     [h.make_tensor_value_info("y", T.FLOAT, [2])])
    from sporeling.frontends.onnx import from_model_proto

    graph = from_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    verify(graph)
    assert graph.nodes[0].subgraphs()[0].outer_names() == {"x"}


def test_not_a_model(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\xff" * 100)
    with pytest.raises(ModelLoadError, match="junk.onnx"):
        sporeling.load(p)


def test_unknown_extension(tmp_path):
    p = tmp_path / "model.xyz"
    p.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        sporeling.load(p)


def test_parameters_inside_subgraphs_are_counted():
    w = onnx.numpy_helper.from_array(np.ones((3, 4), np.float32), "w_then")
    then_g = h.make_graph([h.make_node("Identity", ["w_then"], ["t"])], "then", [],
                          [h.make_tensor_value_info("t", T.FLOAT, [3, 4])], [w])
    else_g = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [],
                          [h.make_tensor_value_info("e", T.FLOAT, [3, 4])])
    g = h.make_graph([h.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)], "g",
                     [h.make_tensor_value_info("cond", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [3, 4])],
                     [h.make_tensor_value_info("y", T.FLOAT, [3, 4])],
                     [onnx.numpy_helper.from_array(np.zeros(5, np.float32), "unused")])
    from sporeling.frontends.onnx import from_model_proto

    graph = from_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    assert graph.parameter_count() == 12 + 5
    m = sporeling.Model(graph, "if.onnx")
    x = np.full((3, 4), 2.0, np.float32)
    assert m.run({"cond": np.array(True), "x": x})["y"].tolist() == np.ones((3, 4)).tolist()
    assert m.run({"cond": np.array(False), "x": x})["y"].tolist() == x.tolist()


def test_converting_a_callers_proto_leaves_it_unchanged():
    from sporeling.frontends.onnx import from_model_proto

    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)  # past the 4 KiB set aside
    proto = _model(w)
    before = proto.SerializeToString()
    graph = from_model_proto(proto)
    assert proto.SerializeToString() == before
    np.testing.assert_array_equal(graph.initializers["w"], w)
    assert graph.value_info == {} or all(v.shape for v in graph.value_info.values())


def test_shape_inference_fills_value_info_for_the_passes(tmp_path):
    w = np.ones((64, 64), np.float32)
    g = h.make_graph([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Relu", ["m"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [2, 64])], [h.make_tensor_value_info("y", T.FLOAT, None)],
                     [onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    model = sporeling.load(path, optimize=False)
    assert model.graph.value_info["m"].shape == (2, 64)
    np.testing.assert_array_equal(model.graph.initializers["w"], w)  # read before the bytes were dropped

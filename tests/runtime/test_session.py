"""The Session: shape inference and folding at prepare, plans per signature, feed checks, results
that never alias the arena."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402

import sporeling  # noqa: E402
from sporeling.errors import FeedError, KernelError, UnsupportedOpError  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402


def model_of(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return sporeling.Model(from_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", opset)])), "m.onnx")


def mlp():
    """x[N,4] -> MatMul(w) -> Add(b) -> Relu -> Reshape to [N*2, 2] via a shape computed from x."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["mm"]),
        h.make_node("Add", ["mm", "b"], ["z"]),
        h.make_node("Relu", ["z"], ["r"]),
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        h.make_node("Mul", ["n", "two"], ["n2"]),
        h.make_node("Concat", ["n2", "two"], ["newshape"], axis=0),
        h.make_node("Reshape", ["r", "newshape"], ["y"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(w, "w"),
        onnx.numpy_helper.from_array(b, "b"),
        onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
        onnx.numpy_helper.from_array(np.array([2], np.int64), "two"),
    ]
    m = model_of(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 4])],
                 [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    return m, w, b


def reference(x, w, b):
    return np.maximum(x @ w + b, 0).reshape(-1, 2)


def test_dynamic_batch_gets_one_plan_per_signature_and_right_answers():
    m, w, b = mlp()
    for n in (1, 3, 1, 5):
        x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        np.testing.assert_allclose(m.run({"x": x})["y"], reference(x, w, b), rtol=1e-5, atol=1e-6)
    assert len(m.session._plans) == 3


def test_shape_subgraph_is_folded_at_prepare():
    m, _, _ = mlp()
    x = np.ones((2, 4), np.float32)
    plan = m.session.plan_for(m.session.check_feeds({"x": x}))
    assert plan.folded >= 4  # Shape, Gather, Mul, Concat
    assert [st.node.op_type for st in plan.steps] == ["MatMul", "Add", "Relu", "Reshape"]


def test_results_do_not_alias_the_arena_between_runs():
    m, w, b = mlp()
    x1 = np.ones((2, 4), np.float32)
    y1 = m.run({"x": x1})["y"]
    kept = y1.copy()
    m.run({"x": -x1})
    np.testing.assert_array_equal(y1, kept)


def test_inplace_chain_shares_one_buffer():
    nodes = [h.make_node("Add", ["x", "x"], ["a"]), h.make_node("Relu", ["a"], ["r"]),
             h.make_node("Add", ["r", "r"], ["y"])]
    m = model_of(nodes, [h.make_tensor_value_info("x", T.FLOAT, [8, 8])], [h.make_tensor_value_info("y", T.FLOAT, None)])
    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    np.testing.assert_allclose(m.run({"x": x})["y"], 2 * np.maximum(2 * x, 0))
    plan = m.session.plan_for(m.session.check_feeds({"x": x}))
    assert len(plan.arena.buffers) == 1  # a and r share a buffer; y is a fresh output
    assert plan.arena.arena_size == 256


@pytest.mark.parametrize(
    "feeds, message",
    [
        ({"x": np.ones((2, 4), np.float32), "extra": np.ones(1)}, "unknown input 'extra'"),
        ({}, "missing input 'x'"),
        ({"x": np.ones((2, 4), np.float64)}, "input 'x' has dtype float64, expected float32"),
        ({"x": np.ones((2, 5), np.float32)}, "input 'x' has shape [2, 5], expected [?,4]"),
        ({"x": np.ones((2, 4, 1), np.float32)}, "input 'x' has shape [2, 4, 1]"),
    ],
)
def test_bad_feeds_name_the_input(feeds, message):
    m, _, _ = mlp()
    with pytest.raises(FeedError) as e:
        m.run(feeds)
    assert message in str(e.value) and "m.onnx" in str(e.value)


def test_unsupported_ops_are_listed_all_at_once():
    nodes = [h.make_node("FancyOp", ["x"], ["a"]), h.make_node("OtherOp", ["a"], ["y"], domain="com.example")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1])], [h.make_tensor_value_info("y", T.FLOAT, None)])
    proto = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOpError) as e:
        sporeling.Model(from_model_proto(proto), "m.onnx")
    assert "FancyOp" in str(e.value) and "com.example:OtherOp" in str(e.value) and "(2)" in str(e.value)


def test_kernel_failure_names_the_node():
    nodes = [h.make_node("MatMul", ["x", "y"], ["z"], name="the_matmul")]
    m = model_of(nodes, [h.make_tensor_value_info("x", T.FLOAT, None), h.make_tensor_value_info("y", T.FLOAT, None)],
                 [h.make_tensor_value_info("z", T.FLOAT, None)])
    with pytest.raises(KernelError) as e:
        m.run({"x": np.ones((2, 3), np.float32), "y": np.ones((4, 2), np.float32)})
    assert "the_matmul" in str(e.value)


def test_constant_output_is_returned_as_a_copy():
    c = np.arange(3, dtype=np.float32)
    nodes = [h.make_node("Identity", ["x"], ["y"])]
    m = model_of(nodes, [h.make_tensor_value_info("x", T.FLOAT, [3])],
                 [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("c", T.FLOAT, None)],
                 [onnx.numpy_helper.from_array(c, "c")])
    x = np.ones(3, np.float32)
    out = m.run({"x": x})
    out["c"][:] = 99
    out["y"][:] = 7
    assert m.run({"x": x})["c"].tolist() == [0, 1, 2]
    assert x.tolist() == [1, 1, 1]


def test_output_that_is_a_view_of_a_planned_buffer_survives_later_steps():
    # y = Identity(a) returns a view of a's arena buffer; b is planned after a's last reader and must
    # not take a's place, or y would read b's values when results are handed out.
    nodes = [h.make_node("Add", ["x", "x"], ["a"]), h.make_node("Identity", ["a"], ["y"]),
             h.make_node("Mul", ["x", "x"], ["b"]), h.make_node("Add", ["b", "b"], ["z"])]
    m = model_of(nodes, [h.make_tensor_value_info("x", T.FLOAT, [4])],
                 [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("z", T.FLOAT, None)])
    x = np.arange(4, dtype=np.float32) + 3
    out = m.run({"x": x})
    np.testing.assert_array_equal(out["y"], 2 * x)
    np.testing.assert_array_equal(out["z"], 2 * x * x)


def test_plan_cache_is_bounded_least_recently_used_first():
    m, w, b = mlp()
    m.session.max_plans = 2
    xs = {n: np.full((n, 4), n, np.float32) for n in (1, 2, 3)}
    m.run({"x": xs[1]})
    m.run({"x": xs[2]})
    m.run({"x": xs[1]})  # 1 is now the most recent
    m.run({"x": xs[3]})  # evicts 2
    keys = [k[0][2] for k in m.session._plans]
    assert keys == [(1, 4), (3, 4)]
    np.testing.assert_allclose(m.run({"x": xs[2]})["y"], reference(xs[2], w, b), rtol=1e-5)


def test_subgraph_sessions_are_freed_with_their_model():
    import gc

    from sporeling.runtime import context

    then_g = h.make_graph([h.make_node("Relu", ["x"], ["t"])], "then", [], [h.make_tensor_value_info("t", T.FLOAT, [3])])
    else_g = h.make_graph([h.make_node("Neg", ["x"], ["e"])], "else", [], [h.make_tensor_value_info("e", T.FLOAT, [3])])
    m = model_of([h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                 [h.make_tensor_value_info("c", T.BOOL, []), h.make_tensor_value_info("x", T.FLOAT, [3])],
                 [h.make_tensor_value_info("y", T.FLOAT, [3])])
    gc.collect()
    before = len(context._SESSIONS)
    x = np.array([-1, 0, 2], np.float32)
    assert m.run({"c": np.array(True), "x": x})["y"].tolist() == [0, 0, 2]
    assert m.run({"c": np.array(False), "x": x})["y"].tolist() == [1, 0, -2]
    assert len(context._SESSIONS) == before + 2
    del m
    gc.collect()
    assert len(context._SESSIONS) == before


def test_planned_buffers_are_cache_line_aligned():
    from sporeling.memory.planner import ALIGN

    m, _, _ = mlp()
    plan = m.session.plan_for(m.session.check_feeds({"x": np.ones((3, 4), np.float32)}))
    views = [plan.template[plan.slots[name]] for name in ("mm", "z", "r")]  # in place: one buffer
    assert all(np.shares_memory(views[0], v) for v in views)
    assert all(v.ctypes.data % ALIGN == 0 for v in views)


def test_concurrent_runs_of_one_model_do_not_mix_results():
    import threading

    m, w, b = mlp()
    xs = [np.random.default_rng(k).standard_normal((64, 4)).astype(np.float32) for k in range(4)]
    wrong = []

    def worker(x):
        want = reference(x, w, b)
        for _ in range(200):
            if not np.allclose(m.run({"x": x})["y"], want, rtol=1e-5, atol=1e-6):
                wrong.append(1)

    threads = [threading.Thread(target=worker, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong

"""The layout pass on small graphs written for each rule: how many Transposes are left, that the IR
still verifies, and that sporeling computes the same outputs before and after the pass. The graphs are
in the shape a TFLite import has: NHWC tensors, layout-sensitive ops wrapped in Transposes."""

import copy

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

import sporeling  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402
from sporeling.ir import verify  # noqa: E402
from sporeling.passes import layout, optimize  # noqa: E402

rng = np.random.default_rng(0)
C = 4
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
NHWC = [1, 6, 5, C]


def graph(nodes, inputs, outputs, inits=(), opset=17):
    """A Graph from ONNX helper nodes; inputs/outputs are (name, shape) pairs, float32."""
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs],
                     [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in outputs],
                     [nh.from_array(v, k) for k, v in dict(inits).items()])
    return from_model_proto(h.make_model(g, opset_imports=[h.make_opsetid("", opset)]))


def tr(src, dst, perm):
    return h.make_node("Transpose", [src], [dst], perm=perm)


def conv(src, dst, w):
    """TFLite-style Conv on NHWC tensors: Transpose, NCHW Conv, Transpose back."""
    return [tr(src, src + "_in", TO_NCHW), h.make_node("Conv", [src + "_in", w], [dst + "_out"], pads=[1, 1, 1, 1]),
            tr(dst + "_out", dst, TO_NHWC)]


def transposes(g):
    return sum(n.op_type == "Transpose" for n in g.nodes)


def check(g, expected, rewrites=None, exact=True):
    """Runs the pass on g and checks: the Transposes left, the IR, and equal outputs on random feeds."""
    before = copy.deepcopy(g)
    done = layout.run(g)
    verify(g)
    assert expected is None or transposes(g) == expected, str(g)
    if rewrites is not None:
        assert done == rewrites
    feeds = {v.name: rng.standard_normal([int(d) for d in v.shape]).astype(np.float32) for v in g.inputs
             if v.name not in g.initializers}
    want = sporeling.Model(before).run(feeds)
    got = sporeling.Model(g).run(feeds)
    assert [v.name for v in g.outputs] == [v.name for v in before.outputs]
    for name, ref in want.items():
        assert got[name].shape == ref.shape and got[name].dtype == ref.dtype
        if exact:
            np.testing.assert_array_equal(got[name], ref)
        else:
            np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=1e-6)
    return g


def weights(*names):
    return {k: (rng.standard_normal((C, C, 3, 3)) * 0.3).astype(np.float32) for k in names}


def test_conv_relu_residual_chain_runs_without_transposes():
    nodes = conv("x", "a", "w1") + conv("a", "b", "w2") + [
        h.make_node("Relu", ["b"], ["c"]), h.make_node("Add", ["c", "a"], ["d"])] + conv("d", "y", "w3")
    g = graph(nodes, [("x", NHWC)], [("y", NHWC)], weights("w1", "w2", "w3"))
    check(g, 2)  # the one after the NHWC input and the one before the NHWC output
    assert g.nodes[0].op_type == "Transpose" and g.nodes[0].inputs == ["x"]
    assert g.nodes[-1].op_type == "Transpose" and g.nodes[-1].outputs == ["y"]
    relu = next(n for n in g.nodes if n.op_type == "Relu")
    assert g.producers()[relu.inputs[0]].op_type == "Conv"  # so fuse_activation sees Conv -> Relu
    assert list(g.value_info[relu.outputs[0]].shape) == [1, C, 6, 5]  # recorded shape now NCHW


def test_pipeline_fuses_the_chain_once_transposes_are_gone():
    nodes = conv("x", "a", "w1") + [h.make_node("Relu", ["a"], ["r"])] + conv("r", "b", "w2") + [
        h.make_node("Add", ["b", "r"], ["s"]), h.make_node("Relu", ["s"], ["y"])]
    g = graph(nodes, [("x", NHWC)], [("y", NHWC)], weights("w1", "w2"))
    before = copy.deepcopy(g)
    optimize(g)
    counts = g.op_counts()
    assert counts.get("Transpose") == 2 and "Relu" not in counts and "Add" not in counts, str(g)
    x = rng.standard_normal(NHWC).astype(np.float32)
    np.testing.assert_allclose(sporeling.Model(g).run({"x": x})["y"], sporeling.Model(before).run({"x": x})["y"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,extra", [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("Exp", {}),
                                      ("LeakyRelu", {"alpha": 0.2}), ("Cast", {"to": T.FLOAT16}), ("Clip", {})])
def test_unary_ops(op, extra):
    ins = ["t", "lo", "hi"] if op == "Clip" else ["t"]
    nodes = [tr("x", "t", TO_NHWC), h.make_node(op, ins, ["u"], **extra), tr("u", "y", TO_NCHW)]
    inits = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)} if op == "Clip" else {}
    g = graph(nodes, [("x", [1, C, 6, 5])], [("y", None)], inits)
    check(g, 0, rewrites=2)  # sink, then cancel against the inverse


def test_binary_op_with_both_sides_transposed():
    nodes = [tr("x1", "a", TO_NHWC), tr("x2", "b", TO_NHWC), h.make_node("Mul", ["a", "b"], ["m"]),
             tr("m", "y", TO_NCHW)]
    check(graph(nodes, [("x1", [1, C, 6, 5]), ("x2", [1, C, 6, 5])], [("y", None)]), 0)


@pytest.mark.parametrize("op,shape,relaid", [("Add", [C], [C, 1, 1]), ("Mul", [1, 1, 1, C], [C, 1, 1]),
                                             ("Sub", [6, 5, C], [C, 6, 5]), ("Div", [], []),
                                             ("PRelu", [C], [C, 1, 1]), ("PRelu", [1, 1, C], [C, 1, 1])])
def test_binary_op_with_a_constant_relaid_out(op, shape, relaid):
    k = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    nodes = [tr("x", "t", TO_NHWC), h.make_node(op, ["t", "k"] if op in ("PRelu", "Sub") else ["k", "t"], ["u"]),
             tr("u", "y", TO_NCHW)]
    g = check(graph(nodes, [("x", [1, C, 6, 5])], [("y", None)], {"k": k}), 0)
    const = g.initializers[next(i for i in g.nodes[0].inputs if i in g.initializers)]
    assert list(const.shape) == relaid


@pytest.mark.parametrize("maker", ["Cast", "DequantizeLinear"])
def test_a_constant_behind_a_cast_or_dequantize_is_relaid_out_with_it(maker):
    # How imported fp16 / int8 weights arrive: Cast(fp16 const) or DequantizeLinear(int8 const, s, z).
    if maker == "Cast":
        inits = {"k": rng.uniform(0.1, 0.5, [C]).astype(np.float16)}
        make = h.make_node("Cast", ["k"], ["slope"], to=T.FLOAT)
    else:
        inits = {"k": rng.integers(-100, 100, [1, 1, C]).astype(np.int8), "s": np.array(0.01, np.float32),
                 "z": np.array(3, np.int8)}
        make = h.make_node("DequantizeLinear", ["k", "s", "z"], ["slope"])
    nodes = [tr("x", "t", TO_NHWC), make, h.make_node("PRelu", ["t", "slope"], ["u"]), tr("u", "y", TO_NCHW)]
    g = check(graph(nodes, [("x", [1, C, 6, 5])], [("y", None)], inits), 0)
    assert [n.op_type for n in g.nodes] == [maker, "PRelu"]
    assert list(g.initializers[g.nodes[0].inputs[0]].shape) == [C, 1, 1]


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_dequantize_pairs_remap_their_axis(per_channel):
    scale = rng.uniform(0.01, 0.05, [C] if per_channel else []).astype(np.float32)
    zero = np.full(scale.shape, 3, np.int8)
    axis = {"axis": 3} if per_channel else {}
    nodes = [tr("x", "t", TO_NHWC), h.make_node("QuantizeLinear", ["t", "s", "z"], ["q"], **axis),
             h.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], **axis), tr("d", "y", TO_NCHW)]
    g = check(graph(nodes, [("x", [1, C, 6, 5])], [("y", None)], {"s": scale, "z": zero}), 0)
    assert all(n.attrs.get("axis", 1) == 1 for n in g.nodes) or not per_channel


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_pad_permutes_its_pads(mode):
    pads = np.array([0, 1, 2, 0, 0, 2, 1, 0], np.int64)  # NHWC: H by (1, 2), W by (2, 1)
    nodes = [tr("x", "t", TO_NHWC), h.make_node("Pad", ["t", "pads"], ["p"], mode=mode), tr("p", "y", TO_NCHW)]
    g = check(graph(nodes, [("x", [1, C, 6, 5])], [("y", None)], {"pads": pads}), 0)
    assert g.initializers[g.nodes[0].inputs[1]].tolist() == [0, 0, 1, 2, 0, 0, 2, 1]


@pytest.mark.parametrize("axis", [3, -1, 1])
def test_concat_remaps_its_axis(axis):
    shape = [1, 6, 5, 2] if axis != 1 else [1, 2, 5, C]
    nodes = [tr("x1", "a", TO_NHWC), tr("x2", "b", TO_NHWC), h.make_node("Concat", ["a", "k", "b"], ["c"], axis=axis),
             tr("c", "y", TO_NCHW)]
    k = rng.standard_normal(shape).astype(np.float32)
    check(graph(nodes, [("x1", [1, C, 6, 5]), ("x2", [1, C, 6, 5])], [("y", None)], {"k": k}), 0)


@pytest.mark.parametrize("axes,keepdims,left", [([1, 2], 1, 0), ([1, 2], 0, 0), ([3], 0, 0), ([1], 0, 1),
                                                (None, 1, 0)])
def test_reductions(axes, keepdims, left):
    attrs = {"keepdims": keepdims} | ({"axes": axes} if axes else {})
    nodes = [tr("x", "t", TO_NHWC), h.make_node("ReduceMean", ["t"], ["r"], **attrs)]
    if keepdims:
        nodes.append(tr("r", "y", TO_NCHW))  # back to NCHW for the next conv
    else:
        nodes.append(h.make_node("Relu", ["r"], ["y"]))  # a graph output in the reduced NHWC order
    check(graph(nodes, [("x", [1, C, 6, 5])], [("y", None)], opset=13), left, exact=False)


def test_reduce_sum_with_axes_input():
    nodes = [tr("x", "t", TO_NHWC), h.make_node("ReduceSum", ["t", "axes"], ["r"], keepdims=1), tr("r", "y", TO_NCHW)]
    check(graph(nodes, [("x", [1, C, 6, 5])], [("y", None)], {"axes": np.array([-1], np.int64)}), 0, exact=False)


def test_split_slice_and_softmax_remap_axes():
    nodes = [tr("x", "t", TO_NHWC), h.make_node("Split", ["t", "sizes"], ["s1", "s2"], axis=3),
             h.make_node("Slice", ["s1", "starts", "ends", "axes"], ["sl"]), h.make_node("Softmax", ["s2"], ["sm"]),
             tr("sl", "y1", TO_NCHW), tr("sm", "y2", TO_NCHW)]
    inits = {"sizes": np.array([1, 3], np.int64), "starts": np.array([1], np.int64),
             "ends": np.array([4], np.int64), "axes": np.array([2], np.int64)}
    check(graph(nodes, [("x", [1, C, 6, 5])], [("y1", None), ("y2", None)], inits), 0)


def test_transpose_pairs_merge_and_fold():
    nodes = [tr("x", "a", [0, 2, 3, 1]), tr("a", "b", [1, 0, 2, 3]), tr("k", "kt", [1, 0]),
             h.make_node("MatMul", ["b", "kt"], ["y"])]
    g = check(graph(nodes, [("x", [2, 3, 4, 5])], [("y", None)], {"k": rng.standard_normal((6, 3)).astype(
        np.float32)}), 1, exact=False)
    assert g.nodes[0].attrs["perm"] == [2, 0, 3, 1] and "kt" in g.initializers


def test_identity_transposes_go_and_graph_outputs_keep_their_names():
    nodes = [tr("x", "a", [0, 1, 2]), h.make_node("Relu", ["a"], ["r"]), tr("r", "b", [2, 0, 1]),
             tr("b", "y", [1, 2, 0])]
    g = check(graph(nodes, [("x", [2, 3, 4])], [("y", None)]), 0)
    assert [(n.op_type, n.inputs, n.outputs) for n in g.nodes] == [("Relu", ["x"], ["y"])]
    # A graph input handed straight back out cannot take the output's name: an Identity stays.
    g = check(graph([tr("x", "a", [1, 2, 0]), tr("a", "y", [2, 0, 1])], [("x", [2, 3, 4])], [("y", None)]), 0)
    assert [n.op_type for n in g.nodes] == ["Identity"]


def test_fan_out_is_not_made_worse():
    # The Transpose feeds two ops whose outputs the graph hands out in NHWC: moving it below both
    # would turn one Transpose into two.
    nodes = [tr("x", "t", TO_NHWC), h.make_node("Relu", ["t"], ["y1"]), h.make_node("Sigmoid", ["t"], ["y2"])]
    check(graph(nodes, [("x", [1, C, 6, 5])], [("y1", None), ("y2", None)]), 1, rewrites=0)


def test_a_plain_operand_gets_a_transpose_only_when_that_wins():
    # Add(T(x1), x2) feeding an NHWC output: sinking would need a Transpose on x2 and one after the
    # Add for the one it frees, so nothing moves. Feeding an inverse Transpose it wins: 2 -> 1.
    add = [tr("x1", "a", TO_NHWC), h.make_node("Add", ["a", "x2"], ["s"])]
    ins = [("x1", [1, C, 6, 5]), ("x2", NHWC)]
    check(graph(add, ins, [("s", None)]), 1, rewrites=0)
    check(graph(add + [tr("s", "y", TO_NCHW)], ins, [("y", None)]), 1)


def test_graph_inputs_and_outputs_keep_their_layout():
    nodes = conv("x", "a", "w1") + [h.make_node("Relu", ["a"], ["y"])]
    g = check(graph(nodes, [("x", NHWC)], [("y", NHWC)], weights("w1")), 2)
    assert [n.op_type for n in g.nodes] == ["Transpose", "Conv", "Relu", "Transpose"]
    assert g.nodes[0].inputs == ["x"] and g.nodes[-1].outputs == ["y"] and g.inputs[0].shape == tuple(NHWC)


def random_graph(seed):
    """A random NHWC-ish graph: Transposes with random perms among the ops the pass moves them through,
    some values read twice, some handed out as outputs."""
    r = np.random.default_rng(seed)
    values, nodes, inits = [("x", (2, 3, 4, 5))], [], {}
    for i in range(12):
        name, shape = values[r.integers(len(values))] if r.random() < 0.4 else values[-1]
        rank, out = len(shape), f"v{i}"
        if rank == 0:
            continue
        kind = r.choice(["T", "T", "T", "unary", "add", "mulc", "concat", "reduce", "pad", "softmax", "slice"])
        if kind == "T":
            perm = [int(a) for a in r.permutation(rank)]
            nodes.append(tr(name, out, perm))
            shape = tuple(shape[a] for a in perm)
        elif kind == "unary":
            nodes.append(h.make_node(str(r.choice(["Relu", "Sigmoid", "Neg"])), [name], [out]))
        elif kind == "add" and (same := [v for v in values if v[1] == shape and v[0] != name]):
            nodes.append(h.make_node("Add", [name, same[r.integers(len(same))][0]], [out]))
        elif kind == "mulc":
            k = r.integers(0, rank + 1)
            cshape = [d if r.random() < 0.5 else 1 for d in shape[rank - k:]]
            if r.random() < 0.5:
                inits[f"c{i}"] = r.uniform(0.5, 2, cshape).astype(np.float32)
            else:  # an fp16 weight as a TFLite import leaves it
                inits[f"h{i}"] = r.uniform(0.5, 2, cshape).astype(np.float16)
                nodes.append(h.make_node("Cast", [f"h{i}"], [f"c{i}"], to=T.FLOAT))
            nodes.append(h.make_node("Mul", [f"c{i}", name], [out]))
        elif kind == "concat":
            axis = int(r.integers(-rank, rank))
            nodes.append(h.make_node("Concat", [name, name], [out], axis=axis))
            shape = tuple(d * 2 if a == axis % rank else d for a, d in enumerate(shape))
        elif kind == "reduce":
            axes = sorted({int(a) for a in r.integers(0, rank, 2)})
            keep = int(r.integers(2))
            nodes.append(h.make_node("ReduceMean", [name], [out], axes=axes, keepdims=keep))
            shape = tuple(1 if a in axes else d for a, d in enumerate(shape) if keep or a not in axes)
        elif kind == "pad":
            pads = [int(p) for p in r.integers(0, 2, 2 * rank)]
            inits[f"p{i}"] = np.array(pads, np.int64)
            nodes.append(h.make_node("Pad", [name, f"p{i}"], [out]))
            shape = tuple(d + pads[a] + pads[a + rank] for a, d in enumerate(shape))
        elif kind == "softmax":
            nodes.append(h.make_node("Softmax", [name], [out], axis=int(r.integers(-rank, rank))))
        elif kind == "slice" and shape[(axis := int(r.integers(rank)))] > 1:
            inits.update({f"s{i}": np.array([1]), f"e{i}": np.array([shape[axis]]), f"a{i}": np.array([axis])})
            nodes.append(h.make_node("Slice", [name, f"s{i}", f"e{i}", f"a{i}"], [out]))
            shape = tuple(d - 1 if a == axis else d for a, d in enumerate(shape))
        else:
            continue
        values.append((out, shape))
    outs = {values[-1][0]} | {values[int(r.integers(1, len(values)))][0]}
    return graph(nodes, [("x", [2, 3, 4, 5])], [(o, None) for o in sorted(outs)], inits, opset=13)


@pytest.mark.parametrize("seed", range(60))
def test_random_graphs_keep_their_outputs_and_never_gain_transposes(seed):
    g = random_graph(seed)
    before = transposes(g)
    check(g, None, exact=False)
    assert transposes(g) <= before, str(g)

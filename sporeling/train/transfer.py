"""Transfer learning: a pretrained backbone joined to a new head, which alone learns.

with_classifier(model, classes) puts a fresh linear classifier for `classes` classes on a backbone: on the
features its old classifier read if it ends in one (Gemm, or MatMul + Add, with Softmax after them or not),
which the new head replaces, otherwise on its output. join(backbone, head) feeds a backbone's features into
a separate head model, whose names get a prefix so the two never collide. Both return a Graph that
Trainer takes; freeze the backbone with trainable=["classifier.*"] (or the head's prefix). The new
classifier's weights are drawn as torch.nn.Linear draws them, U(-1/sqrt(F), 1/sqrt(F)), from `seed`.

A frozen backbone costs little to train: its weights stay constants the Session folds and pre-packs,
nothing of it is kept for backward, and its BatchNormalization keeps its running statistics.
"""

from __future__ import annotations

import copy
import math
import os

import numpy as np

from ..errors import SporelingError
from ..ir import Graph, Node, ValueInfo
from ..ir.graph import unique_name

PASS_THROUGH = ("Softmax", "LogSoftmax", "Identity")


def _as_graph(model) -> Graph:
    from ..model import Model, load_graph

    if isinstance(model, (str, os.PathLike)):
        return load_graph(model)
    if isinstance(model, Model):
        return load_graph(model.source) if os.path.isfile(model.source) else model.graph
    if isinstance(model, Graph):
        return model
    raise TypeError(f"expected a sporeling Model, a Graph or a model path, got {type(model).__name__}")


def _copy(graph: Graph) -> Graph:
    g = copy.copy(graph)
    g.nodes = [copy.copy(n) for n in graph.nodes]
    for n in g.nodes:
        n.inputs, n.outputs, n.attrs = list(n.inputs), list(n.outputs), dict(n.attrs)
    g.initializers = dict(graph.initializers)
    g.inputs, g.outputs, g.value_info = list(graph.inputs), list(graph.outputs), dict(graph.value_info)
    return g


def classifier_input(graph: Graph) -> str:
    """The features a graph's classifier reads, if its first output comes from one; else that output."""
    producers = {o: n for n in graph.nodes for o in n.outputs if o}
    name = graph.outputs[0].name
    node = producers.get(name)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producers.get(node.inputs[0])
    if node is not None and node.op_type == "Gemm" and not node.attrs.get("transA", 0):
        return node.inputs[0]
    if node is not None and node.op_type == "Add":
        for x in node.inputs:
            mm = producers.get(x)
            if mm is not None and mm.op_type == "MatMul" and mm.inputs[1] in graph.initializers:
                return mm.inputs[0]
    return name


def _feature_shape(graph: Graph, feature: str) -> tuple[int, ...]:
    """The feature's shape for one sample, from a Session prepared on a zero input (symbolic dims as 1)."""
    from ..runtime.session import Session

    feeds = {}
    for v in graph.inputs:
        if v.name in graph.initializers:
            continue
        if v.shape is None or v.dtype is None:
            raise SporelingError(f"input '{v.name}' has no declared shape: give feature_size")
        feeds[v.name] = np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in v.shape], v.dtype)
    probe = _copy(graph)
    probe.outputs = [ValueInfo(feature)]
    shapes = Session(probe, "backbone", strict=False).plan_for(feeds).shapes
    if feature not in shapes:
        raise SporelingError(f"cannot tell the shape of '{feature}': give feature_size")
    return tuple(shapes[feature])


def with_classifier(model, classes: int, feature: str | None = None, feature_size: int | None = None,
                    seed: int = 0, name: str = "classifier") -> Graph:
    """The backbone with a new linear classifier for `classes` classes; output 'logits' (batch, classes)."""
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive int, got {classes!r}")
    g = _copy(_as_graph(model))
    feature = feature or classifier_input(g)
    known = {o for n in g.nodes for o in n.outputs} | {v.name for v in g.inputs}
    if feature not in known:
        raise SporelingError(f"no value '{feature}' in the backbone")
    if feature_size is None:
        shape = _feature_shape(g, feature)
        feature_size = math.prod(shape[1:]) if len(shape) > 1 else 1
    batch = g.inputs[0].shape[0] if g.inputs and g.inputs[0].shape else "batch"
    g.outputs = [ValueInfo(feature)]
    _prune(g)  # the old classifier goes, and its names with it
    taken = {x for n in g.nodes for x in n.inputs + n.outputs} | set(g.initializers) | {v.name for v in g.inputs}
    w_name, b_name = unique_name(f"{name}.weight", taken), unique_name(f"{name}.bias", taken)
    flat, logits = unique_name(f"{name}/flat", taken), unique_name("logits", taken)
    bound = 1.0 / math.sqrt(feature_size)
    rng = np.random.default_rng(seed)
    g.initializers[w_name] = rng.uniform(-bound, bound, (classes, feature_size)).astype(np.float32)
    g.initializers[b_name] = rng.uniform(-bound, bound, (classes,)).astype(np.float32)
    g.nodes.append(Node("Flatten", [feature], [flat], {"axis": 1}, f"{name}/Flatten"))
    g.nodes.append(Node("Gemm", [flat, w_name, b_name], [logits], {"transB": 1}, f"{name}/Gemm"))
    g.outputs = [ValueInfo(logits, np.dtype(np.float32), (batch, classes))]
    return g


def join(backbone, head, feature: str | None = None, prefix: str = "head/") -> Graph:
    """One graph: the backbone's `feature` (default: its first output) feeds the head's only data input."""
    b, h = _copy(_as_graph(backbone)), _as_graph(head)
    feature = feature or b.outputs[0].name
    h_inputs = [v for v in h.inputs if v.name not in h.initializers]
    if len(h_inputs) != 1:
        raise SporelingError(f"the head must have one data input, it has {len(h_inputs)}")
    rename = {h_inputs[0].name: feature}
    taken = {x for n in b.nodes for x in n.inputs + n.outputs} | set(b.initializers) | {v.name for v in b.inputs}

    def new(x: str) -> str:
        if not x:
            return x
        if x not in rename:
            rename[x] = unique_name(prefix + x, taken)
        return rename[x]

    for name, arr in h.initializers.items():
        b.initializers[new(name)] = arr
    for n in h.nodes:
        if n.subgraphs():
            raise SporelingError("a head with control flow (If/Loop/Scan) cannot be joined")
        b.nodes.append(Node(n.op_type, [new(x) for x in n.inputs], [new(x) for x in n.outputs], dict(n.attrs),
                            prefix + (n.name or n.op_type), n.domain))
    for dom, ver in h.opsets.items():
        if b.opsets.get(dom, ver) != ver:
            raise SporelingError(f"backbone and head use different versions of opset '{dom or 'ai.onnx'}' "
                                 f"({b.opsets[dom]} and {ver})")
        b.opsets.setdefault(dom, ver)
    b.outputs = [ValueInfo(new(v.name), v.dtype, v.shape) for v in h.outputs]
    return _prune(b)


def _prune(g: Graph) -> Graph:
    from ..passes import dce

    dce.run(g)
    return g

"""Fuses a Conv with what follows it into one ai.sporeling FusedConv: first a residual Add
(Z: the other Add operand, same shape as the conv output), then an activation (Relu, Clip with
constant bounds, LeakyRelu, HardSigmoid, HardSwish, Sigmoid, Tanh). The kernel then applies bias,
residual and activation in the pass over its output that it makes anyway.

The fused node takes the place of the last node it absorbs, so every input it reads (the residual
included) is already computed there."""

from __future__ import annotations

from ..ir import Graph, Node
from ..ops.registry import lookup
from ._util import clip_bounds, shape_of, single_consumer

DOMAIN = "ai.sporeling"


def _activation(graph: Graph, n: Node) -> tuple[str, list[float]] | None:
    if n.domain not in ("", "ai.onnx"):
        return None
    op = n.op_type
    if op in ("Relu", "Sigmoid", "Tanh", "HardSwish"):
        return op, []
    if op == "LeakyRelu":
        return op, [float(n.attrs.get("alpha", 0.01))]
    if op == "HardSigmoid":
        return op, [float(n.attrs.get("alpha", 0.2)), float(n.attrs.get("beta", 0.5))]
    if op == "Clip":
        bounds = clip_bounds(graph, n)
        return None if bounds is None else (op, list(bounds))
    return None


def run(graph: Graph) -> int:
    if lookup("FusedConv", 1, DOMAIN) is None:
        return 0
    fused = 0
    for conv in list(graph.nodes):
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx") or conv not in graph.nodes:
            continue
        consumers = graph.consumers()
        inputs = list(conv.inputs) + [""] * (3 - len(conv.inputs))
        last, out = conv, conv.outputs[0]
        nxt = single_consumer(graph, out, consumers)
        if nxt is not None and nxt.op_type == "Add" and nxt.domain in ("", "ai.onnx") and len(nxt.inputs) == 2:
            other = nxt.inputs[1] if nxt.inputs[0] == out else nxt.inputs[0]
            if other != out and _same_shape(graph, other, out):
                inputs = inputs[:3] + [other]
                last, out = nxt, nxt.outputs[0]
                nxt = single_consumer(graph, out, consumers)
        activation, params = "", []
        if nxt is not None and (act := _activation(graph, nxt)) is not None:
            activation, params = act
            last, out = nxt, nxt.outputs[0]
        if last is conv:
            continue
        attrs = dict(conv.attrs, activation=activation, activation_params=params)
        node = Node("FusedConv", inputs, [out], attrs, conv.name, DOMAIN)
        idx = graph.nodes.index(last)
        absorbed = {id(conv), id(last)} | ({id(n) for n in consumers.get(conv.outputs[0], [])} if last is not conv
                                           else set())
        graph.nodes[idx] = node
        graph.nodes[:] = [n for n in graph.nodes if n is node or id(n) not in absorbed]
        graph.opsets.setdefault(DOMAIN, 1)
        fused += 1
    return fused


def _same_shape(graph: Graph, a: str, b: str) -> bool:
    """The residual must have the conv output's shape (the fused kernel does not broadcast), as the
    shapes recorded at import say; without that information, no fusion."""
    sa, sb = shape_of(graph, a), shape_of(graph, b)
    return sa is not None and sa == sb and None not in sa

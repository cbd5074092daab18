"""Recognises exact GELU written out as arithmetic, x * 0.5 * (1 + erf(x / sqrt 2)) (the
PyTorch export: Div or Mul by 1/sqrt 2, Erf, Add 1, Mul by x, Mul by 0.5, in either order of the
last two), and replaces the five nodes with one ai.sporeling Gelu: one pass over memory instead of
five, with no intermediate tensors."""

from __future__ import annotations

import math

from ..ir import Graph, Node
from ._util import scalar, single_consumer

DOMAIN = "ai.sporeling"


def _close(v: float | None, want: float) -> bool:
    return v is not None and abs(v - want) <= 1e-5 * abs(want)


def _other(n: Node, name: str) -> str:
    return n.inputs[1] if n.inputs[0] == name else n.inputs[0]


def run(graph: Graph) -> int:
    fused = 0
    consumers = graph.consumers()
    for erf in list(graph.nodes):
        if erf.op_type != "Erf" or erf.domain:
            continue
        scale = graph.producers().get(erf.inputs[0])
        if scale is None or single_consumer(graph, scale.outputs[0], consumers) is not erf:
            continue
        if scale.op_type == "Div" and _close(scalar(graph, scale.inputs[1]), math.sqrt(2)):
            x = scale.inputs[0]
        elif scale.op_type == "Mul" and len(scale.inputs) == 2:
            x = next((i for i in scale.inputs if scalar(graph, i) is None), None)
            if x is None or not _close(scalar(graph, _other(scale, x)), 1 / math.sqrt(2)):
                continue
        else:
            continue
        add = single_consumer(graph, erf.outputs[0], consumers)
        if add is None or add.op_type != "Add" or not _close(scalar(graph, _other(add, erf.outputs[0])), 1.0):
            continue
        m1 = single_consumer(graph, add.outputs[0], consumers)
        if m1 is None or m1.op_type != "Mul":
            continue
        m2 = single_consumer(graph, m1.outputs[0], consumers)
        if m2 is None or m2.op_type != "Mul":
            continue
        # (1 + erf) * x, then * 0.5 -- or (1 + erf) * 0.5, then * x
        a, b = _other(m1, add.outputs[0]), _other(m2, m1.outputs[0])
        if not ((a == x and _close(scalar(graph, b), 0.5)) or (b == x and _close(scalar(graph, a), 0.5))):
            continue
        node = Node("Gelu", [x], list(m2.outputs), {}, f"{erf.name}.gelu", DOMAIN)
        graph.nodes[graph.nodes.index(m2)] = node
        for n in (scale, erf, add, m1):
            graph.nodes.remove(n)
        graph.opsets.setdefault(DOMAIN, 1)
        consumers = graph.consumers()
        fused += 1
    return fused

"""MatMul by a constant matrix followed by Add of a constant bias vector (a Linear layer as
exported) becomes one ai.sporeling FusedMatMul, which adds the bias inside its output buffer."""

from __future__ import annotations

from ..ir import Graph, Node
from ._util import const, single_consumer

DOMAIN = "ai.sporeling"


def run(graph: Graph) -> int:
    fused = 0
    consumers = graph.consumers()
    for mm in list(graph.nodes):
        if mm.op_type != "MatMul" or mm.domain:
            continue
        w = const(graph, mm.inputs[1])
        add = single_consumer(graph, mm.outputs[0], consumers)
        if w is None or w.ndim != 2 or add is None or add.op_type != "Add" or add.domain:
            continue
        bias_name = add.inputs[1] if add.inputs[0] == mm.outputs[0] else add.inputs[0]
        bias = const(graph, bias_name)
        if bias is None or bias.shape != (w.shape[1],) or bias.dtype != w.dtype:
            continue
        node = Node("FusedMatMul", [mm.inputs[0], mm.inputs[1], bias_name], list(add.outputs), {}, mm.name, DOMAIN)
        graph.nodes[graph.nodes.index(add)] = node
        graph.nodes.remove(mm)
        graph.opsets.setdefault(DOMAIN, 1)
        consumers = graph.consumers()
        fused += 1
    return fused

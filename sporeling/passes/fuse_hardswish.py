"""Recognises HardSwish written out as arithmetic, x * clip(x + 3, 0, 6) / 6 (also with * (1/6),
or x * (clip(...) / 6)), and replaces it with one HardSwish node, which the activation fusion can
then fold into the conv before it."""

from __future__ import annotations

from ..ir import Graph, Node
from ._util import clip_bounds, scalar, single_consumer


def _is_sixth(graph: Graph, n: Node, operand: str) -> bool:
    """n divides `operand` by 6 or multiplies it by 1/6."""
    if n.op_type == "Div" and n.inputs[0] == operand:
        return scalar(graph, n.inputs[1]) == 6.0
    if n.op_type == "Mul" and operand in n.inputs:
        other = n.inputs[1] if n.inputs[0] == operand else n.inputs[0]
        s = scalar(graph, other)
        return s is not None and abs(s - 1 / 6) < 1e-6
    return False


def run(graph: Graph) -> int:
    fused = 0
    consumers = graph.consumers()
    for add in list(graph.nodes):
        if add.op_type != "Add" or add.domain or len(add.inputs) != 2 or add not in graph.nodes:
            continue
        x = next((i for i in add.inputs if scalar(graph, i) is None), None)
        three = add.inputs[1] if add.inputs[0] == x else add.inputs[0]
        if x is None or scalar(graph, three) != 3.0:
            continue
        clip = single_consumer(graph, add.outputs[0], consumers)
        if clip is None or clip.op_type != "Clip" or clip_bounds(graph, clip) != (0.0, 6.0):
            continue
        nxt = single_consumer(graph, clip.outputs[0], consumers)
        if nxt is None:
            continue
        if nxt.op_type == "Mul" and set(nxt.inputs) == {x, clip.outputs[0]}:  # x * clip, then / 6
            last = single_consumer(graph, nxt.outputs[0], consumers)
            if last is None or not _is_sixth(graph, last, nxt.outputs[0]):
                continue
            chain = [add, clip, nxt, last]
        elif _is_sixth(graph, nxt, clip.outputs[0]):  # clip / 6, then * x
            last = single_consumer(graph, nxt.outputs[0], consumers)
            if last is None or last.op_type != "Mul" or set(last.inputs) != {x, nxt.outputs[0]}:
                continue
            chain = [add, clip, nxt, last]
        else:
            continue
        node = Node("HardSwish", [x], list(last.outputs), {}, f"{add.name}.hardswish")
        graph.nodes[graph.nodes.index(last)] = node
        for n in chain[:-1]:
            graph.nodes.remove(n)
        fused += 1
        consumers = graph.consumers()
    return fused

"""Removes Identity nodes and inference-mode Dropout (whose mask output nobody reads): their readers
read the input directly. An Identity that produces a graph output is kept unless its input can take
the output's name, since output names are the model's interface."""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ._util import rename_uses


def _is_passthrough(graph: Graph, n) -> bool:
    if n.domain not in ("", "ai.onnx"):
        return False
    if n.op_type == "Identity":
        return True
    if n.op_type == "Dropout":
        mask_unused = len(n.outputs) < 2 or not n.outputs[1]
        training = n.inputs[2] if len(n.inputs) > 2 else ""
        not_training = not training or (
            training in graph.initializers and not bool(np.asarray(graph.initializers[training]).reshape(-1)[0])
        )
        return mask_unused and not_training and not n.attrs.get("is_test", 1) == 0
    return False


def run(graph: Graph) -> int:
    outputs = {v.name for v in graph.outputs}
    removed = 0
    for n in list(graph.nodes):
        if not _is_passthrough(graph, n) or not n.inputs or not n.inputs[0]:
            continue
        src, dst = n.inputs[0], n.outputs[0]
        if dst in outputs:
            continue
        graph.nodes.remove(n)
        rename_uses(graph, dst, src)
        removed += 1
    return removed

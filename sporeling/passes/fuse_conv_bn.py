"""Folds an inference-mode BatchNormalization into the Conv that feeds it.

BN(y) = scale * (y - mean) / sqrt(var + eps) + bias is per output channel affine, so with
k = scale / sqrt(var + eps) the pair is one Conv with weights W * k (per output channel) and bias
(B - mean) * k + bias. Only when the Conv's weights and every BN parameter are constants, the Conv's
output feeds nothing else, and the BN has one output (inference form)."""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ._util import const, single_consumer


def run(graph: Graph) -> int:
    consumers = graph.consumers()
    folded = 0
    for conv in list(graph.nodes):
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            continue
        bn = single_consumer(graph, conv.outputs[0], consumers)
        if bn is None or bn.op_type != "BatchNormalization" or len([o for o in bn.outputs if o]) != 1:
            continue
        if bn.attrs.get("training_mode", 0):
            continue
        w = const(graph, conv.inputs[1])
        params = [const(graph, i) for i in bn.inputs[1:5]]
        if w is None or any(p is None for p in params) or w.dtype.kind != "f" or bn.inputs[0] != conv.outputs[0]:
            continue
        b = const(graph, conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else np.zeros(w.shape[0], w.dtype)
        if b is None:
            continue
        scale, shift, mean, var = (p.astype(np.float64) for p in params)
        k = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        new_w = (w.astype(np.float64) * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(w.dtype)
        new_b = ((b.astype(np.float64) - mean) * k + shift).astype(w.dtype)
        wname, bname = f"{conv.name}.fused_weight", f"{conv.name}.fused_bias"
        graph.initializers[wname] = np.ascontiguousarray(new_w)
        graph.initializers[bname] = new_b
        conv.inputs = [conv.inputs[0], wname, bname]
        conv.outputs = list(bn.outputs[:1])
        graph.nodes.remove(bn)
        folded += 1
    return folded

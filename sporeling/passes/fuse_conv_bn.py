"""Folds an inference-mode BatchNormalization into the Conv or Gemm that feeds it.

BN(y) = scale * (y - mean) / sqrt(var + eps) + bias is per output channel affine, so with
k = scale / sqrt(var + eps) the pair is one Conv with weights W * k (per output channel) and bias
(B - mean) * k + bias. For a Gemm (Y = alpha * A @ op(B) + beta * C, output [N, M], BN over M) the
columns of op(B) scale by k and the new C is (beta * C - mean) * k + bias, with beta 1. Only when the
weights and every BN parameter are constants, the producer's output feeds nothing else, and the BN has
one output (inference form)."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ._util import const, single_consumer


def _bn_factors(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(k, mean, shift) of an inference BN with constant parameters, in float64."""
    if bn.attrs.get("training_mode", 0) or len([o for o in bn.outputs if o]) != 1:
        return None
    params = [const(graph, i) for i in bn.inputs[1:5]]
    if len(params) != 4 or any(p is None or p.ndim != 1 for p in params):
        return None
    scale, shift, mean, var = (p.astype(np.float64) for p in params)
    return scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5))), mean, shift


def _fold_conv(graph: Graph, conv: Node, k, mean, shift) -> bool:
    w = const(graph, conv.inputs[1])
    if w is None or w.dtype.kind != "f" or w.shape[0] != k.size:
        return False
    b = const(graph, conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else np.zeros(w.shape[0], w.dtype)
    if b is None:
        return False
    new_w = w.astype(np.float64) * k.reshape(-1, *([1] * (w.ndim - 1)))
    _replace(graph, conv, [conv.inputs[0]], new_w.astype(w.dtype), ((b - mean) * k + shift).astype(w.dtype))
    return True


def _fold_gemm(graph: Graph, gemm: Node, k, mean, shift) -> bool:
    w = const(graph, gemm.inputs[1])
    if w is None or w.dtype.kind != "f" or w.ndim != 2:
        return False
    trans_b = int(gemm.attrs.get("transB", 0))
    m = w.shape[0] if trans_b else w.shape[1]
    if m != k.size:
        return False
    c = const(graph, gemm.inputs[2]) if len(gemm.inputs) > 2 and gemm.inputs[2] else np.zeros(m, w.dtype)
    if c is None or c.size not in (1, m) or (c.ndim == 2 and c.shape[0] != 1):
        return False
    alpha, beta = float(gemm.attrs.get("alpha", 1.0)), float(gemm.attrs.get("beta", 1.0))
    new_w = w.astype(np.float64) * alpha * (k[:, None] if trans_b else k[None, :])
    new_c = (beta * np.broadcast_to(c.astype(np.float64).reshape(-1), (m,)) - mean) * k + shift
    _replace(graph, gemm, [gemm.inputs[0]], new_w.astype(w.dtype), new_c.astype(w.dtype))
    gemm.attrs = {**gemm.attrs, "alpha": 1.0, "beta": 1.0}
    return True


def _replace(graph: Graph, node: Node, inputs: list[str], w: np.ndarray, b: np.ndarray) -> None:
    wname, bname = f"{node.name or node.outputs[0]}.fused_weight", f"{node.name or node.outputs[0]}.fused_bias"
    graph.initializers[wname] = np.ascontiguousarray(w)
    graph.initializers[bname] = b
    node.inputs = inputs + [wname, bname]


_FOLDERS = {"Conv": _fold_conv, "Gemm": _fold_gemm}


def run(graph: Graph) -> int:
    consumers = graph.consumers()
    folded = 0
    for node in list(graph.nodes):
        fold = _FOLDERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if fold is None:
            continue
        bn = single_consumer(graph, node.outputs[0], consumers)
        if bn is None or bn.op_type != "BatchNormalization" or bn.inputs[0] != node.outputs[0]:
            continue
        factors = _bn_factors(graph, bn)
        if factors is None or not fold(graph, node, *factors):
            continue
        node.outputs = list(bn.outputs[:1])
        graph.nodes.remove(bn)
        folded += 1
    return folded

"""Folds a per-channel affine op that follows a Conv into its weights and bias.

Exporters often write BatchNorm, or a learned scale, as Mul/Add/Sub/Div by a constant after the
conv. When that constant broadcasts per output channel (a scalar, or shape [C,1,1], [1,C,1,1]...),
conv(x, W, B) * s == conv(x, W * s, B * s) and conv(x, W, B) + t == conv(x, W, B + t), so the op
disappears. Repeats until no conv is followed by such an op (Conv -> Mul -> Add folds both)."""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ._util import const, single_consumer

_OPS = {"Mul", "Add", "Sub", "Div"}


def _per_channel(value: np.ndarray, channels: int, out_rank: int) -> np.ndarray | None:
    """The constant as a [channels] vector if it broadcasts along the channel axis only."""
    if value.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - value.ndim) + value.shape
    if any(d != 1 for k, d in enumerate(shape) if k != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float64)


def run(graph: Graph) -> int:
    folded = 0
    changed = True
    while changed:
        changed = False
        consumers = graph.consumers()
        for conv in graph.nodes:
            if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
                continue
            w = const(graph, conv.inputs[1])
            nxt = single_consumer(graph, conv.outputs[0], consumers)
            if w is None or w.dtype.kind != "f" or nxt is None or nxt.op_type not in _OPS or nxt.domain:
                continue
            if len(nxt.inputs) != 2 or (nxt.op_type in ("Sub", "Div") and nxt.inputs[0] != conv.outputs[0]):
                continue
            other = nxt.inputs[1] if nxt.inputs[0] == conv.outputs[0] else nxt.inputs[0]
            c = const(graph, other)
            if c is None or other == conv.outputs[0] or c.dtype != w.dtype:
                continue
            vec = _per_channel(c, w.shape[0], w.ndim)
            if vec is None:
                continue
            has_b = len(conv.inputs) > 2 and conv.inputs[2]
            b = const(graph, conv.inputs[2]) if has_b else np.zeros(w.shape[0], w.dtype)
            if b is None:
                continue
            w64, b64 = w.astype(np.float64), b.astype(np.float64)
            if nxt.op_type in ("Mul", "Div"):
                k = vec if nxt.op_type == "Mul" else 1.0 / vec
                w64 = w64 * k.reshape(-1, *([1] * (w.ndim - 1)))
                b64 = b64 * k
            else:
                b64 = b64 + (vec if nxt.op_type == "Add" else -vec)
            wname, bname = f"{conv.name}.w{folded}", f"{conv.name}.b{folded}"
            graph.initializers[wname] = np.ascontiguousarray(w64.astype(w.dtype))
            graph.initializers[bname] = b64.astype(w.dtype)
            conv.inputs = [conv.inputs[0], wname, bname]
            conv.outputs = list(nxt.outputs)
            graph.nodes.remove(nxt)
            folded += 1
            changed = True
            break
    return folded

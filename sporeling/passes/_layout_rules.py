"""How each layout-agnostic op is rewritten when the layout pass sinks a Transpose below it.

If y = transpose(x, p), axis a of y is axis p[a] of x. A rule gets an op that reads y (and maybe
other values laid out like y) and says how the same op reads x instead: its new attributes, new
constant inputs (pads, axes), and for each output the perm of the Transpose that must follow it so
that its readers see what they saw before (None: the output is the same in both layouts, as after
a reduction that drops the permuted axes). A rule returns None to leave the op alone: an attribute
it cannot remap, a computed pads or axes input, a pre-opset-13 Softmax (which flattens from axis).

The data inputs (those laid out like y) are re-laid out by the pass itself: sunk Transposes are
skipped, constants transposed here (relayout), anything else gets a Transpose of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

UNARY = {"Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "Mish",
         "Softplus", "Softsign", "ThresholdedRelu", "Shrink", "Clip", "Cast", "CastLike", "Identity", "Exp", "Log",
         "Abs", "Neg", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Tan", "Asin", "Acos",
         "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Erf", "Not", "IsNaN", "IsInf"}
BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal",
             "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "BitwiseAnd",
             "BitwiseOr", "BitwiseXor"}
REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
          "ReduceLogSumExp", "ReduceSumSquare"}


@dataclass
class Plan:
    out_perms: list[tuple[int, ...] | None]
    attrs: dict[str, Any] = field(default_factory=dict)
    consts: dict[int, np.ndarray] = field(default_factory=dict)  # input index -> new constant


def inverse(p: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(p)
    for i, a in enumerate(p):
        inv[a] = i
    return tuple(inv)


def data_inputs(node) -> range | list[int]:
    """Indices of the inputs laid out like the op's output."""
    if node.op_type in BROADCAST or node.op_type == "Concat":
        return range(len(node.inputs))
    return [0]


def relayout(c: np.ndarray, p: tuple[int, ...], broadcast: bool) -> np.ndarray | None:
    """Constant c, read alongside y = transpose(x, p), as it must be read alongside x. A broadcast
    operand is first aligned to the right (NumPy rules), so NHWC's per-channel [C] becomes [C,1,1];
    a one-element constant is the same either way."""
    n = len(p)
    if c.ndim > n or (not broadcast and c.ndim != n):
        return None
    if broadcast and c.size == 1:
        return c
    out = np.transpose(c.reshape((1,) * (n - c.ndim) + c.shape), inverse(p))
    if broadcast:
        while out.ndim and out.shape[0] == 1:
            out = out[0]
    return np.ascontiguousarray(out)


def _axis(a, n: int) -> int | None:
    a = int(a)
    return a + n if -n <= a < 0 else a if 0 <= a < n else None


def _axes(values, p) -> list[int] | None:
    axes = [_axis(a, len(p)) for a in values]
    return None if None in axes else axes


def _reduced_perm(p, axes: list[int], keepdims: bool) -> tuple[int, ...] | None:
    """Perm taking reduce(x, p[axes]) to reduce(y, axes). Without keepdims the kept axes of x stay in
    x's order; when that is y's order too, no Transpose is needed."""
    n = len(p)
    if keepdims:
        return p
    kept = [i for i in range(n) if i not in axes]
    order = sorted(p[i] for i in kept)
    q = tuple(order.index(p[i]) for i in kept)
    return None if q == tuple(range(len(q))) else q


def _same(st, node, p) -> Plan:
    return Plan([p] * len(node.outputs))


def _with_axis(st, node, p, default: int | None, name: str = "axis") -> Plan | None:
    given = node.attrs.get(name, default)
    a = None if given is None else _axis(given, len(p))
    return None if a is None else Plan([p] * len(node.outputs), {name: p[a]})


def _softmax(st, node, p) -> Plan | None:
    return None if st.g.opset < 13 else _with_axis(st, node, p, -1)


def _quantize(st, node, p) -> Plan | None:
    """QuantizeLinear / DequantizeLinear: per-tensor as is, per-axis with the axis remapped (its
    1-D scale and zero point stay as they are); blocked quantization is left alone."""
    scale = st.constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None or node.attrs.get("block_size") or scale.ndim > 1:
        return None
    return Plan([p]) if scale.size == 1 else _with_axis(st, node, p, 1)


def _pad(st, node, p) -> Plan | None:
    n, inv = len(p), inverse(p)
    if "pads" in node.attrs or len(node.inputs) < 2:
        pads = node.attrs.get("pads")
        if pads is None or len(pads) != 2 * n:
            return None
        return Plan([p], {"pads": [int(pads[inv[j]]) for j in range(n)] + [int(pads[n + inv[j]]) for j in range(n)]})
    if len(node.inputs) > 3 and node.inputs[3]:
        axes = st.constant(node.inputs[3])
        axes = None if axes is None else _axes(axes.reshape(-1), p)
        return None if axes is None else Plan([p], consts={3: np.array([p[a] for a in axes], np.int64)})
    pads = st.constant(node.inputs[1])
    if pads is None or pads.size != 2 * n:
        return None
    pads = pads.reshape(-1)
    return Plan([p], consts={1: np.concatenate([pads[:n][list(inv)], pads[n:][list(inv)]]).astype(pads.dtype)})


def _reduce(st, node, p) -> Plan | None:
    keep = bool(node.attrs.get("keepdims", 1))
    attrs, consts = {}, {}
    if "axes" in node.attrs:
        axes = _axes(node.attrs["axes"], p)
        if axes is not None:
            attrs["axes"] = [p[a] for a in axes]
    elif len(node.inputs) > 1 and node.inputs[1]:
        given = st.constant(node.inputs[1])
        axes = None if given is None else _axes(given.reshape(-1), p)
        if axes is not None and axes:
            consts[1] = np.array([p[a] for a in axes], np.int64)
    else:
        axes = []
    if axes is None or (not axes and node.attrs.get("noop_with_empty_axes", 0)):
        return None
    axes = axes or list(range(len(p)))
    return Plan([_reduced_perm(p, axes, keep)], attrs, consts)


def _argmax(st, node, p) -> Plan | None:
    a = _axis(node.attrs.get("axis", 0), len(p))
    if a is None:
        return None
    return Plan([_reduced_perm(p, [a], bool(node.attrs.get("keepdims", 1)))], {"axis": p[a]})


def _slice(st, node, p) -> Plan | None:
    if st.g.opset < 10:
        starts = node.attrs.get("starts")
        axes = _axes(node.attrs.get("axes", range(len(starts or []))), p)
        return None if not starts or axes is None else Plan([p], {"axes": [p[a] for a in axes]})
    if len(node.inputs) > 3 and node.inputs[3]:
        given = st.constant(node.inputs[3])
    else:
        starts = st.constant(node.inputs[1]) if len(node.inputs) > 1 else None
        given = None if starts is None else np.arange(starts.size)
    axes = None if given is None else _axes(given.reshape(-1), p)
    return None if axes is None else Plan([p], consts={3: np.array([p[a] for a in axes], np.int64)})


RULES: dict[str, Callable] = {op: _same for op in UNARY | BROADCAST}
RULES.update({op: _reduce for op in REDUCE})
RULES.update({
    "Concat": lambda st, node, p: _with_axis(st, node, p, None),
    "Split": lambda st, node, p: _with_axis(st, node, p, 0),
    "Softmax": _softmax, "LogSoftmax": _softmax, "Hardmax": _softmax,
    "ArgMax": _argmax, "ArgMin": _argmax,
    "Pad": _pad, "Slice": _slice, "QuantizeLinear": _quantize, "DequantizeLinear": _quantize,
})

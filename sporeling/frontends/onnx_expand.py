"""Standard-ONNX spellings of the ops sporeling writes that onnxruntime (or the model's opset) lacks.

Two tables, each entry one function `(node, ctx) -> list[Node]` that returns replacement nodes:

- EXPANSIONS, by (domain, op_type): our own ai.sporeling ops, which the graph passes create by fusing
  standard ops, written back out as the standard ops they fused (FusedConv -> Conv [+ Add Z]
  [+ activation], FusedMatMul -> MatMul [+ Add bias], Gelu -> Gelu).
- LOWERINGS, by op_type: standard ops that are not in the model's opset (the passes create
  HardSwish and Gelu whatever the opset; ONNX has them from 14 and 20), as older standard ops.

The replacements may themselves need a table (FusedConv's HardSwish activation below opset 14): the
exporter feeds them back through both tables until only ops of the opset remain. A new fused op is
one function and one entry here. Every expansion checks the attributes it understands, so none is
ever dropped silently. `ctx` (ExportContext in onnx_export.py) gives fresh names, scalar constants
of a tensor's dtype, the opset, and the rank of a tensor.
"""

from __future__ import annotations

import math
from typing import Callable

from ..errors import SporelingError
from ..ir import Node

DOMAIN = "ai.sporeling"
EXPANDED_DOMAINS = {DOMAIN}  # a node of these domains with no entry below cannot be exported


def _check_attrs(n: Node, allowed: set[str]) -> None:
    extra = sorted(set(n.attrs) - allowed)
    if extra:
        raise SporelingError(f"cannot export {n.label()} ({n.domain}) to ONNX: attribute(s) {', '.join(extra)} "
                             "have no standard ONNX spelling")


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


# ---- FusedConv: act(conv(X, W) + B + Z) --------------------------------------------------------------
def _clip(x: str, out: str, params: list[float], ctx, like: tuple[str, ...]) -> list[Node]:
    lo = params[0] if len(params) > 0 else -math.inf
    hi = params[1] if len(params) > 1 else math.inf
    if ctx.opset < 11:  # bounds were attributes until opset 11
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if math.isfinite(v)}
        return [Node("Clip", [x], [out], attrs)]
    bound = lambda v: ctx.const(v, like[0], also=like[1:]) if math.isfinite(v) else ""  # noqa: E731
    ins = [x, bound(lo), bound(hi)]
    while ins[-1] == "":
        ins.pop()
    return [Node("Clip", ins, [out])]


def _act_node(op: str, **defaults) -> Callable:
    """An activation that is one ONNX node whose float attributes are the params, in this order."""

    def emit(x: str, out: str, params: list[float], ctx, like: tuple[str, ...]) -> list[Node]:
        attrs = {k: float(params[i]) if i < len(params) else d for i, (k, d) in enumerate(defaults.items())}
        return [Node(op, [x], [out], attrs)]

    return emit


# One entry per activation FusedConv's kernel knows (sporeling.ops.conv.ACTIVATIONS; a test checks). An
# activation gets its input, its output, its params, and `like`: names of the conv's dtype (the first
# computed before the conv) for the constants it needs.
ACTIVATION_SPELLINGS: dict[str, Callable] = {
    "Relu": _act_node("Relu"),
    "Clip": _clip,
    "LeakyRelu": _act_node("LeakyRelu", alpha=0.01),
    "HardSigmoid": _act_node("HardSigmoid", alpha=0.2, beta=0.5),
    "HardSwish": _act_node("HardSwish"),
    "Sigmoid": _act_node("Sigmoid"),
    "Tanh": _act_node("Tanh"),
}

_CONV_ATTRS = {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}


def fused_conv(n: Node, ctx) -> list[Node]:
    _check_attrs(n, _CONV_ATTRS | {"activation", "activation_params"})
    x, w, b, z = (list(n.inputs) + [""] * 4)[:4]
    act = _text(n.attrs.get("activation"))
    if act and act not in ACTIVATION_SPELLINGS:
        raise SporelingError(f"cannot export {n.label()}: unknown activation '{act}'")
    params = [float(p) for p in (n.attrs.get("activation_params") or [])]
    out = n.outputs[0]
    conv_attrs = {k: v for k, v in n.attrs.items() if k in _CONV_ATTRS and v is not None}
    y = out if not (z or act) else ctx.fresh(f"{out}.conv")
    nodes = [Node("Conv", [x, w] + ([b] if b else []), [y], conv_attrs, n.name)]
    if z:
        added = out if not act else ctx.fresh(f"{out}.residual")
        nodes.append(Node("Add", [y, z], [added]))
        y = added
    if act:
        nodes += ACTIVATION_SPELLINGS[act](y, out, params, ctx, (x, w, out))
    return nodes


# ---- FusedMatMul: alpha * (A' @ B') + bias ---------------------------------------------------------
def _swap_last_two(name: str, n: Node, ctx) -> tuple[str, Node]:
    rank = ctx.rank(name)
    if rank is None or rank < 2:
        raise SporelingError(f"cannot export {n.label()}: transposing '{name}' needs its rank, which is not recorded")
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    t = ctx.fresh(f"{name}.T")
    return t, Node("Transpose", [name], [t], {"perm": perm})


def fused_matmul(n: Node, ctx) -> list[Node]:
    _check_attrs(n, {"transA", "transB", "alpha"})
    a, b, bias = (list(n.inputs) + [""] * 3)[:3]
    a0, out = a, n.outputs[0]
    nodes = []
    if n.attrs.get("transA"):
        a, t = _swap_last_two(a, n, ctx)
        nodes.append(t)
    if n.attrs.get("transB"):
        b, t = _swap_last_two(b, n, ctx)
        nodes.append(t)
    alpha = float(n.attrs.get("alpha", 1.0))
    y = out if not bias and alpha == 1.0 else ctx.fresh(f"{out}.matmul")
    nodes.append(Node("MatMul", [a, b], [y], {}, n.name))
    if alpha != 1.0:
        scaled = out if not bias else ctx.fresh(f"{out}.scaled")
        nodes.append(Node("Mul", [y, ctx.const(alpha, a0, also=(out,))], [scaled]))
        y = scaled
    if bias:
        nodes.append(Node("Add", [y, bias], [out]))
    return nodes


# ---- Gelu ------------------------------------------------------------------------------------------
def gelu(n: Node, ctx) -> list[Node]:
    """Our Gelu is exact (erf) GELU: the standard op, lowered below opset 20 by the table under it."""
    _check_attrs(n, set())
    return [Node("Gelu", list(n.inputs), list(n.outputs), {}, n.name)]


EXPANSIONS: dict[tuple[str, str], Callable] = {
    (DOMAIN, "FusedConv"): fused_conv,
    (DOMAIN, "FusedMatMul"): fused_matmul,
    (DOMAIN, "Gelu"): gelu,
}


# ---- standard ops newer than the model's opset -----------------------------------------------------
def lower_hardswish(n: Node, ctx) -> list[Node]:
    """x * HardSigmoid(x, 1/6, 1/2), which is HardSwish's definition."""
    x, out = n.inputs[0], n.outputs[0]
    hs = ctx.fresh(f"{out}.hardsigmoid")
    return [Node("HardSigmoid", [x], [hs], {"alpha": 1 / 6, "beta": 0.5}, n.name), Node("Mul", [x, hs], [out])]


def lower_gelu(n: Node, ctx) -> list[Node]:
    """exact: x * 0.5 * (1 + erf(x / sqrt 2)) in the order our kernel evaluates it; tanh:
    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))."""
    x, out = n.inputs[0], n.outputs[0]
    approx = _text(n.attrs.get("approximate", "none"))
    if approx not in ("none", "tanh"):
        raise SporelingError(f"cannot export {n.label()}: unknown approximate='{approx}'")
    f = ctx.fresh
    c = lambda v: ctx.const(v, x, also=(out,))  # noqa: E731
    if approx == "none":
        s, e, p, m = f(f"{out}.scaled"), f(f"{out}.erf"), f(f"{out}.plus1"), f(f"{out}.times_x")
        return [Node("Mul", [x, c(math.sqrt(0.5))], [s], {}, n.name), Node("Erf", [s], [e]),
                Node("Add", [e, c(1.0)], [p]), Node("Mul", [p, x], [m]), Node("Mul", [m, c(0.5)], [out])]
    x2, x3, k, inner, arg, t, p, h = (f(f"{out}.{s}") for s in ("x2", "x3", "cubic", "inner", "arg", "tanh", "plus1",
                                                                 "half_x"))
    return [Node("Mul", [x, x], [x2], {}, n.name), Node("Mul", [x2, x], [x3]), Node("Mul", [x3, c(0.044715)], [k]),
            Node("Add", [x, k], [inner]), Node("Mul", [inner, c(math.sqrt(2 / math.pi))], [arg]),
            Node("Tanh", [arg], [t]), Node("Add", [t, c(1.0)], [p]), Node("Mul", [x, c(0.5)], [h]),
            Node("Mul", [h, p], [out])]


LOWERINGS: dict[str, Callable] = {
    "HardSwish": lower_hardswish,
    "Gelu": lower_gelu,
}

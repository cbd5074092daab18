"""Backward rules: for each op, the vector-Jacobian product that turns its outputs' gradients into its inputs'.

The rules live in a table apart from the forward kernels (sporeling/ops), keyed by ONNX op type, so the
training runtime can differentiate any graph whose ops all have a rule, and say which lack one. A rule
is a function of a VJPContext (the node's attributes, its forward inputs and outputs, the gradients of
its outputs, which input gradients are wanted) returning one gradient per input, or None where none is
wanted or the input is not differentiable (a shape, an index, an omitted optional input). Gradients
have their input's shape and dtype. The output gradients in ctx.grads belong to the rule: the training
runtime hands each over once and keeps no other reference, so a rule may write into one (Relu masks its
gradient in place) or take it out of ctx.grads once used, so it is freed before the rule allocates its
results (Conv does). A rule may return arrays sharing memory for two inputs (Add: views of its one
gradient); the runtime copies one of them. Rules are NumPy, vectorised; they are checked against
torch.autograd in tests/train.

The training runtime plans the gradients of the graph's values in the arena with the activations, so
ctx.out may offer, for input k, the arena buffer its gradient goes to: a rule may write the gradient
there and return that buffer (no copy follows), or ignore it and return its own array, which is then
copied in. An offered buffer never overlaps anything the rule reads. An op listed in GRAD_IN_PLACE gets
no buffer for that input: its gradient is planned over the output's own gradient, which the rule hands on.
A rule listed in WORKSPACE states, from shapes alone, the scratch bytes it takes for its temporaries; the
runtime plans that much arena for the rule's step and hands it over as ctx.work, a Workspace the rule takes its
buffers from (other rules' temporaries are ordinary arrays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import SporelingError
from ..memory.planner import align


@dataclass
class VJPContext:
    op_type: str
    attrs: dict[str, Any]
    inputs: list[np.ndarray | None]
    outputs: list[np.ndarray]
    grads: list[np.ndarray | None]
    needs: list[bool] = field(default_factory=list)
    opset: int = 17
    out: list = field(default_factory=list)  # per input: the arena buffer its gradient goes to, or None
    work: "Workspace | None" = None  # the step's planned scratch, for rules listed in WORKSPACE

    def __post_init__(self):
        if not self.needs:
            self.needs = [x is not None for x in self.inputs]


VJPRule = Callable[[VJPContext], list]
VJPS: dict[str, VJPRule] = {}


def register_vjp(*op_types: str) -> Callable[[VJPRule], VJPRule]:
    def add(fn: VJPRule) -> VJPRule:
        for op in op_types:
            if op in VJPS:
                raise ValueError(f"a backward rule for {op} is already registered")
            VJPS[op] = fn
        return fn

    return add


def vjp_for(op_type: str) -> VJPRule:
    if op_type not in VJPS:
        raise SporelingError(f"no backward rule for {op_type}: it cannot be trained through")
    return VJPS[op_type]


# Which forward values each rule reads: (input positions, output positions). A rule not listed reads them
# all. The training runtime keeps only these alive for the backward pass; the others reach the rule as
# zero-cost stand-ins of the right shape and dtype, so a rule listed here must read nothing else but shapes.
_NONE, _X, _Y = (), (0,), (0,)
SAVES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    **dict.fromkeys(("Add", "Sub", "Neg", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
                     "Concat", "Split", "GlobalAveragePool", "AveragePool"), (_NONE, _NONE)),
    **dict.fromkeys(("Exp", "Sqrt", "Sigmoid", "Tanh", "Relu", "Softmax", "LogSoftmax"), (_NONE, _Y)),
    **dict.fromkeys(("Log", "LeakyRelu", "HardSigmoid", "HardSwish", "Gelu"), (_X, _NONE)),
    "MaxPool": (_X, _Y),
    "LayerNormalization": ((0, 1), _NONE),
    **dict.fromkeys(("Mul", "MatMul", "Gemm", "Conv", "ConvTranspose"), ((0, 1), _NONE)),
    "Div": ((1,), _Y),
    "Clip": ((1, 2), _Y),
    "Slice": ((1, 2, 3, 4), _NONE),
    "Gather": ((1,), _NONE),
    **dict.fromkeys(("ReduceSum", "ReduceMean"), ((1,), _NONE)),
    "Dropout": ((1, 2), (1,)),
    "BatchNormalization": ((0, 1, 3, 4), _NONE),
}


# Ops whose rule usually hands input k its output's own gradient array, masked in place or reshaped (a view):
# the planner puts that input's gradient in the output gradient's buffer, so nothing is copied. A hint only:
# a rule that returns another array has it copied in.
GRAD_IN_PLACE: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(("Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Neg", "LeakyRelu", "HardSigmoid",
                     "HardSwish", "Gelu", "Identity", "Clip", "BatchNormalization", "Reshape", "Flatten",
                     "Squeeze", "Unsqueeze", "Sub"), (0,)),
    "Add": (0, 1),
}


def array_bytes(shape, dtype) -> int:
    """What an array of shape and dtype takes of a Workspace (its bytes, aligned)."""
    return align(math.prod(shape) * np.dtype(dtype).itemsize)


class Workspace:
    """A backward step's scratch: the arena buffer the runtime planned for it, handed out front to back as a
    stack (a rule gives back what it took since a mark, and takes the space again for its next phase). Without
    a buffer, or past its end, arrays come from the heap, so a rule works the same either way."""

    def __init__(self, buf: np.ndarray | None = None):
        self.buf, self.top = buf, 0
        self.high = 0  # the most bytes held at once
        self.missed = 0  # bytes that did not fit and came from the heap

    def empty(self, shape, dtype) -> np.ndarray:
        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        if self.buf is not None and self.top + n <= self.buf.nbytes:
            a = self.buf[self.top:self.top + n].view(dtype).reshape(shape)
            self.top += align(n)
            self.high = max(self.high, self.top)
            return a
        self.missed += n
        return np.empty(shape, dtype)

    def zeros(self, shape, dtype) -> np.ndarray:
        a = self.empty(shape, dtype)
        a.fill(0)
        return a

    def mark(self) -> int:
        return self.top

    def release(self, mark: int) -> None:
        self.top = mark


def workspace(ctx: VJPContext) -> Workspace:
    """The step's planned scratch, or one that takes everything from the heap."""
    return ctx.work if ctx.work is not None else Workspace()


# op type -> fn(input specs, output specs, attrs, needs) -> scratch bytes its rule takes from ctx.work; a spec
# is (dtype, shape) or None where unknown
WORKSPACE: dict[str, Callable[[list, list, dict, tuple], int]] = {}


def out_buffer(ctx: VJPContext, i: int, like: np.ndarray) -> np.ndarray | None:
    """The arena buffer offered for input i's gradient, if any and if it has `like`'s shape and dtype."""
    b = ctx.out[i] if i < len(ctx.out) else None
    return b if b is not None and b.shape == like.shape and b.dtype == like.dtype else None


def saved_positions(op_type: str, n_inputs: int, n_outputs: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The input and output positions whose values op_type's backward rule reads."""
    if op_type in SAVES:
        return SAVES[op_type]
    return tuple(range(n_inputs)), tuple(range(n_outputs))


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """g summed over the axes NumPy broadcasting added or stretched to reach g's shape from `shape`."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def wanted(ctx: VJPContext, i: int) -> bool:
    """Whether input i is present and its gradient is asked for."""
    return i < len(ctx.inputs) and ctx.inputs[i] is not None and i < len(ctx.needs) and ctx.needs[i]


def as_gradient(g, like: np.ndarray):
    """g as the gradient of input `like`: its dtype and shape, contiguous (None stays None)."""
    return None if g is None else np.ascontiguousarray(g, dtype=like.dtype).reshape(like.shape)

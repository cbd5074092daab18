"""The op registry: one table from (domain, op_type) to versioned OpDefs.

A kernel is a plain function. Its positional parameters are the op's inputs in ONNX order (an
omitted optional input arrives as None) and its keyword parameters are the ONNX attributes with the
ONNX defaults, so the signature is the attribute schema. A kernel returns an array, or a tuple of
arrays for several outputs.

Capabilities the runtime and the memory planner rely on are declared at registration:

- ``infer(ins, **attrs)``: output dtypes and shapes from the inputs' ``Info`` (dtype, shape, and
  ``value`` when the input is a known constant, e.g. a folded shape tensor). Returns a list of
  ``(dtype, shape)`` or None when the shapes depend on data. An entry ``(dtype, shape, value)``
  with a value says the output is known at prepare time (Shape of a known shape): the node folds. Without it the op's outputs are
  allocated by the kernel at run time instead of being placed in the arena.
- ``out=True``: the kernel accepts ``out=`` (an array, or a tuple for several outputs) and writes
  its results there. Only such kernels get planned buffers.
- ``inplace={out_index: in_index}``: the output may share the input's buffer when that input dies
  at this node.
- ``make(ins, **attrs) -> callable``: builds a kernel specialised for the given input infos
  (pre-transformed weights, precomputed indices). Called once per plan.
- ``scratch(ins, **attrs) -> int``: bytes of workspace the kernel needs (im2col columns, a
  transposed copy). The planner places it in the arena for that one step and the kernel receives it
  as ``scratch=`` (a flat uint8 array); only for ``out=True`` kernels.
- ``shape_inputs``: indices of inputs whose values (not just shapes) decide the output shapes.
- ``pure=False``: the op draws random numbers, so it is never evaluated at prepare time even when
  its inputs are constant.
- ``context=True``: control flow; the kernel receives ``ctx=`` to run subgraphs.

Lookup by opset picks the newest registration whose ``since`` is <= the model's opset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np


class Info(NamedTuple):
    """What is known about a tensor at prepare time."""

    dtype: np.dtype
    shape: tuple[int, ...] | None
    value: np.ndarray | None = None


@dataclass
class OpDef:
    op_type: str
    domain: str
    since: int
    kernel: Callable[..., Any]
    infer: Callable[..., list | None] | None = None
    out: bool = False
    inplace: dict[int, int] = field(default_factory=dict)
    make: Callable[..., Callable[..., Any]] | None = None
    shape_inputs: tuple[int, ...] = ()
    context: bool = False
    scratch: Callable[..., int] | None = None
    pure: bool = True


_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}
_DOMAIN_ALIASES = {"ai.onnx": ""}


def register_op(op_type: str | list[str], *, since: int = 1, domain: str = "", **caps):
    """Decorator: registers the function as the kernel of op_type (or each of several op types)."""

    def wrap(fn):
        for name in [op_type] if isinstance(op_type, str) else op_type:
            defs = _REGISTRY.setdefault((domain, name), [])
            defs[:] = [d for d in defs if d.since != since]
            defs.append(OpDef(name, domain, since, fn, **caps))
            defs.sort(key=lambda d: d.since)
        return fn

    return wrap


def lookup(op_type: str, opset: int, domain: str = "") -> OpDef | None:
    domain = _DOMAIN_ALIASES.get(domain, domain)
    defs = _REGISTRY.get((domain, op_type))
    if not defs:
        return None
    best = None
    for d in defs:
        if d.since <= opset:
            best = d
    return best or defs[0]


def registered_ops() -> list[tuple[str, str]]:
    return sorted(_REGISTRY)

"""Lazy weights: quantized tensors stay compressed in memory and are decoded just before the node that reads them.

`sporeling.load(path, lazy=True)` (format.load_spore(..., lazy=True)) leaves every float tensor stored with a
decoding codec (qpack, qfse) as a LazyTensor: its dtype and shape, for planning, and a decode() that turns the
payload, a view of the file's mapping, into the float array (the codec's decode, which is the dequantization).
Raw tensors stay zero-copy views of the mapping, as without lazy.

LazySession, the Session such a graph gets, keeps every float copy of a lazy weight out of what it holds:
- Nodes that eager prepare would fold because all their inputs are constants, and that read a lazy weight
  (face landmark's Cast of each float16 weight to float32), are taken out of the graph it plans; each output
  becomes a LazyNode, the node re-run on its decoded inputs whenever a consumer needs it.
- Lazy values enter prepare as if they were inputs of known dtype and shape (a zero-stride placeholder), so
  nothing folds them and no kernel's make() pre-packs them (Winograd transforms, transposed GEMM operands).
  The plan's template holds the lazy objects themselves.
- A step that reads one gets a LazyCall: at run it decodes the lazy inputs, binds the kernel as eager
  binding does (the decoded array as the constant input's value, so the same algorithm and the same
  pre-packing run, and outputs are bit-identical to eager), calls it, and lets the decoded array and the
  packed copy go when the step returns.
What stays resident is the file's mapped pages (the compressed payload), the arena, and one decoded weight
(and its packed copy) at a time. The price is paid on every run: each weight is decoded and re-packed, and each
such step re-binds its kernel; a weight read by two nodes is decoded twice. A lazy tensor that is a graph
output, that a feed may override (an initializer that is also an input), or that lives in a subgraph body or
a node attribute is decoded once up front instead. One case is not carried over: a node reading a lazy weight
and a constant that only prepare computes from the feeds' shapes (eager folds it) runs as a step, and its
consumers are bound with a run-time input where eager had a constant; no model here has one.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import KernelError
from ..ir import Graph, Node
from ..ops.registry import Info, OpDef, lookup
from .session import Session, bind_kernel


class LazyTensor:
    """A weight kept encoded: dtype and shape for planning, decode() -> the float array (raises a
    SporeFormatError naming the file and tensor when the payload is bad). nbytes is the decoded size."""

    def __init__(self, dtype: np.dtype, shape: tuple[int, ...], decode: Callable[[], np.ndarray], stored_bytes: int):
        self.dtype, self.shape, self.stored_bytes = np.dtype(dtype), tuple(shape), stored_bytes
        self._decode = decode

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape, dtype=np.int64)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def materialize(self) -> np.ndarray:
        return self._decode()

    def __repr__(self) -> str:
        return f"<LazyTensor {self.dtype.name}{list(self.shape)}, {self.stored_bytes} bytes stored>"


class LazyNode(LazyTensor):
    """Output `index` of a node whose inputs are constants and lazy values: what eager prepare would have folded,
    recomputed on demand by the same kernel bound the same way."""

    def __init__(self, node: Node, op: OpDef, args: list, index: int, dtype, shape):
        super().__init__(dtype, shape, self._compute, sum(a.stored_bytes for a in args if isinstance(a, LazyTensor)))
        self.node, self.op, self.args, self.index = node, op, args, index

    def _compute(self) -> np.ndarray:
        values = [a.materialize() if isinstance(a, LazyTensor) else a for a in self.args]
        fn = bind_kernel(self.op, [None if v is None else Info(v.dtype, v.shape, v) for v in values],
                         dict(self.node.attrs))
        result = fn(*values)
        result = result[self.index] if type(result) is tuple else result
        if not isinstance(result, np.ndarray) or result.dtype != self.dtype or result.shape != self.shape:
            raise KernelError(f"{self.node.label()} gave {_describe(result)} for a lazy weight declared "
                              f"{self.dtype.name}{list(self.shape)}")
        return result


def has_lazy(graph: Graph) -> bool:
    """Whether graph holds a LazyTensor anywhere: initializers, node attributes, subgraphs."""
    return any(isinstance(v, LazyTensor) for v in _values(graph))


def _values(graph: Graph):
    yield from graph.initializers.values()
    for n in graph.nodes:
        for v in n.attrs.values():
            yield from v if isinstance(v, list) else (v,)
        for g in n.subgraphs():
            yield from _values(g)


def materialize_all(graph: Graph, initializers: bool = True) -> None:
    """Decodes in place the lazy tensors of graph's node attributes and subgraphs, and with initializers its
    initializers too: what eager loading gives."""
    if initializers:
        for name, a in graph.initializers.items():
            if isinstance(a, LazyTensor):
                graph.initializers[name] = a.materialize()
    for n in graph.nodes:
        for key, v in n.attrs.items():
            if isinstance(v, LazyTensor):
                n.attrs[key] = v.materialize()
            elif isinstance(v, list) and any(isinstance(x, LazyTensor) for x in v):
                n.attrs[key] = [x.materialize() if isinstance(x, LazyTensor) else x for x in v]
        for g in n.subgraphs():
            materialize_all(g)


class LazySession(Session):
    """A Session over a graph whose initializers include LazyTensors (see the module docstring)."""

    def __init__(self, graph: Graph, source: str = "model", strict: bool = True):
        materialize_all(graph, initializers=False)  # attributes; subgraph bodies run in plain Sessions
        keep = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
        for name, a in graph.initializers.items():
            if isinstance(a, LazyTensor) and name in keep:
                graph.initializers[name] = a.materialize()
        self.lazy: dict[str, LazyTensor] = {}
        super().__init__(self._fold_lazy(graph), source, strict)

    def _fold_lazy(self, graph: Graph) -> Graph:
        """A copy of graph without the nodes that only derive constants from lazy weights; their outputs
        become LazyNode initializers (and self.lazy lists every lazy value by name)."""
        known = {name: a for name, a in graph.initializers.items() if name not in {v.name for v in graph.inputs}}
        self.lazy = {n: a for n, a in known.items() if isinstance(a, LazyTensor)}
        outputs = {v.name for v in graph.outputs}
        nodes, derived_values = [], {}
        for node in graph.nodes:
            derived = self._derive(node, graph.opsets, known, outputs) if any(i in self.lazy for i in node.inputs) \
                else None
            if derived is None:
                nodes.append(node)
                continue
            for name, value in zip(node.outputs, derived):
                if name:
                    known[name] = derived_values[name] = value
                    if isinstance(value, LazyTensor):
                        self.lazy[name] = value
        initializers = {**graph.initializers, **derived_values}
        return Graph(nodes, graph.inputs, graph.outputs, initializers, graph.value_info, graph.opsets,
                     graph.metadata, graph.name)

    @staticmethod
    def _derive(node: Node, opsets: dict, known: dict, outputs: set) -> list | None:
        """The node's outputs as lazy values (or constants, for Shape-like nodes), or None to keep the node."""
        op = lookup(node.op_type, opsets.get(node.domain or "", 1), node.domain)
        if (op is None or not op.pure or op.context or node.subgraphs() or op.infer is None
                or not all(not i or i in known for i in node.inputs) or any(o in outputs for o in node.outputs)):
            return None
        args = [known[i] if i else None for i in node.inputs]
        infos = [None if a is None else Info(a.dtype, a.shape, None if isinstance(a, LazyTensor) else a)
                 for a in args]
        try:
            out = op.infer(infos, **node.attrs)
        except Exception:  # infer cannot say: the node stays a step, which decodes its inputs at run
            return None
        if not out or len(out) < len([o for o in node.outputs if o]) or any(None in o[:2] for o in out):
            return None
        if all(len(o) == 3 and o[2] is not None for o in out):
            return [o[2] for o in out]  # known from shapes alone (Shape, Size): a constant, as eager has it
        return [LazyNode(node, op, args, k, np.dtype(o[0]), tuple(int(d) for d in o[1])) for k, o in enumerate(out)]

    def prepare(self, feeds: dict[str, Any]):
        lazy = {n: a for n, a in self.lazy.items() if n not in feeds}
        # Known dtype and shape, unknown value: nothing folds a lazy weight or pre-packs it at make()
        stand_ins = {n: np.broadcast_to(np.zeros((), a.dtype), a.shape) for n, a in lazy.items()}
        plan = super().prepare({**feeds, **stand_ins})
        plan.feed_slots = [(n, s) for n, s in plan.feed_slots if n not in lazy]
        for name, a in lazy.items():
            if name in plan.slots:
                plan.template[plan.slots[name]] = a
        return plan

    def _bind(self, node: Node, op: OpDef, ins: list, attrs: dict[str, Any]) -> Callable[..., Any]:
        fn = super()._bind(node, op, ins, attrs)  # checks at prepare that the node can run on these shapes
        outer = {x for sg in node.subgraphs() for x in sg.outer_names()}
        if not any(i in self.lazy for i in node.inputs) and not outer & self.lazy.keys():
            return fn
        return LazyCall(op, ins, attrs)


class LazyCall:
    """A step reading lazy values: decode them, bind the kernel with them as constants (as eager binds it), run."""

    def __init__(self, op: OpDef, ins: list, attrs: dict[str, Any]):
        self.op, self.ins, self.attrs = op, ins, attrs

    def __call__(self, *args, **kwargs):
        args, ins = list(args), list(self.ins)
        for k, a in enumerate(args):
            if isinstance(a, LazyTensor):
                args[k] = a.materialize()
                ins[k] = Info(args[k].dtype, args[k].shape, args[k])
        ctx = kwargs.get("ctx")
        if ctx is not None:  # control flow reading a lazy weight from its bodies: Context was built per call
            ctx.outer = {k: v.materialize() if isinstance(v, LazyTensor) else v for k, v in ctx.outer.items()}
        return bind_kernel(self.op, ins, self.attrs)(*args, **kwargs)


def _describe(x) -> str:
    return f"{x.dtype.name}{list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__

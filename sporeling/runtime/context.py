"""Running subgraphs (If, Loop, Scan bodies) for control-flow kernels.

A control-flow kernel receives ``ctx``: the values of the enclosing scope that its subgraphs read,
and ``ctx.run(graph, feeds)`` to execute a body. Bodies run in a plain interpreter: each is
compiled once into bound kernels and run with a name -> value environment that falls back to the
enclosing scope. Bodies are small and their shapes often change per iteration, so they are not
memory-planned.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import KernelError, SporelingError
from ..ir import Graph
from ..ops.registry import Info, lookup

_COMPILED: dict[int, tuple[Graph, list]] = {}


def _compile(graph: Graph, opsets: dict[str, int]) -> list:
    hit = _COMPILED.get(id(graph))
    if hit is not None and hit[0] is graph:
        return hit[1]
    steps = []
    for node in graph.nodes:
        op = lookup(node.op_type, opsets.get(node.domain or "", 1), node.domain)
        if op is None:
            raise KernelError(f"subgraph '{graph.name}': no kernel for {node.op_type}")
        if op.make is not None:
            fn = None  # specialised per call, since input shapes may change between iterations
        else:
            fn = functools.partial(op.kernel, **node.attrs) if node.attrs else op.kernel
        outer = sorted({x for g in node.subgraphs() for x in g.outer_names()}) if op.context else []
        steps.append((node, op, fn, outer, {}))
    _COMPILED[id(graph)] = (graph, steps)
    return steps


class Context:
    def __init__(self, outer: dict[str, Any], opsets: dict[str, int]):
        self.outer = outer
        self.opsets = opsets

    def run(self, graph: Graph, feeds: dict[str, Any] | list) -> list:
        """Executes graph with the given inputs (a dict, or a list in graph.inputs order) and returns
        its outputs in order."""
        if not isinstance(feeds, dict):
            feeds = {v.name: x for v, x in zip(graph.inputs, feeds)}
        env = dict(self.outer)
        env.update(graph.initializers)
        env.update(feeds)
        for node, op, fn, outer, made in _compile(graph, self.opsets):
            args = [env[i] if i else None for i in node.inputs]
            try:
                call = fn if fn is not None else _specialised(graph, node, op, args, made)
                if op.context:
                    result = call(*args, ctx=Context({x: env[x] for x in outer}, self.opsets))
                else:
                    result = call(*args)
            except SporelingError:
                raise
            except Exception as e:
                raise KernelError(f"subgraph '{graph.name}': {node.label()} failed: {type(e).__name__}: {e}") from e
            if len(node.outputs) == 1:
                env[node.outputs[0]] = result[0] if type(result) is tuple else result
            else:
                for name, r in zip(node.outputs, result):
                    if name:
                        env[name] = r
        return [env[v.name] for v in graph.outputs]


def _specialised(graph: Graph, node, op, args: list, made: dict):
    """The kernel op.make() builds for these argument shapes, cached per shape signature. Only the
    body's own initializers are passed as known values: everything else may change between calls."""
    key = tuple((a.dtype.str, a.shape) if isinstance(a, np.ndarray) else None for a in args)
    call = made.get(key)
    if call is None:
        infos = [
            None if a is None else Info(getattr(a, "dtype", None), getattr(a, "shape", None),
                                        a if name in graph.initializers else None)
            for name, a in zip(node.inputs, args)
        ]
        call = made[key] = op.make(infos, **node.attrs)
    return call


def as_bool(x) -> bool:
    return bool(np.asarray(x).reshape(-1)[0])

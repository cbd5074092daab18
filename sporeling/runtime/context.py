"""Running subgraphs (If, Loop, Scan bodies) for control-flow kernels.

A control-flow kernel receives ``ctx``: the values of the enclosing scope that its subgraphs read,
and ``ctx.run(graph, feeds)`` to execute a body. A body runs in a Session of its own, built once per
body graph, whose inputs are the body's declared inputs plus the outer-scope names it reads. So a
body gets what a model gets: shape subgraphs folded, a memory plan per input signature, kernels
specialised once per plan.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ..ir import Graph, ValueInfo

# Body graph id -> (weak reference to the body, its Session). An entry goes when its body is
# collected, so dropping a model frees its bodies' sessions and arenas too.
_SESSIONS: dict[int, tuple[weakref.ref, Any]] = {}


def _session_for(graph: Graph, opsets: dict[str, int]):
    hit = _SESSIONS.get(id(graph))
    if hit is not None and hit[0]() is graph:
        return hit[1]
    from .session import Session

    declared = {v.name for v in graph.inputs}
    outer = sorted(graph.outer_names() - declared)
    body = Graph(
        nodes=graph.nodes,
        inputs=list(graph.inputs) + [ValueInfo(name) for name in outer],
        outputs=graph.outputs,
        initializers=graph.initializers,
        value_info=graph.value_info,
        opsets=opsets,
        name=graph.name,
    )
    session = Session(body, f"subgraph '{graph.name}'", strict=False)
    session.outer_names = outer
    _SESSIONS[id(graph)] = (weakref.ref(graph), session)
    weakref.finalize(graph, _SESSIONS.pop, id(graph), None)
    return session


class Context:
    def __init__(self, outer: dict[str, Any], opsets: dict[str, int]):
        self.outer = outer
        self.opsets = opsets

    def run(self, graph: Graph, feeds: dict[str, Any] | list) -> list:
        """Executes graph with the given inputs (a dict, or a list in graph.inputs order) and returns
        its outputs in order."""
        if not isinstance(feeds, dict):
            feeds = {v.name: x for v, x in zip(graph.inputs, feeds)}
        session = _session_for(graph, self.opsets)
        values = {name: self.outer[name] for name in session.outer_names}
        values.update(feeds)
        results = session.run(values)
        return [results[v.name] for v in graph.outputs]


def as_bool(x) -> bool:
    return bool(np.asarray(x).reshape(-1)[0])

"""Dead-code elimination: drops nodes none of whose outputs reach a graph output, and initializers
no node reads."""

from __future__ import annotations

from ..ir import Graph


def run(graph: Graph) -> int:
    needed = {v.name for v in graph.outputs}
    kept = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs if o):
            kept.append(n)
            needed.update(i for i in n.inputs if i)
            for g in n.subgraphs():
                needed |= g.outer_names()
    removed = len(graph.nodes) - len(kept)
    graph.nodes[:] = reversed(kept)
    inputs = {v.name for v in graph.inputs}
    for name in [k for k in graph.initializers if k not in needed and k not in inputs]:
        del graph.initializers[name]
    return removed

"""Dead-code elimination: drops nodes none of whose outputs reach a graph output, initializers no node
reads, and the recorded types (value_info) of values that no longer exist, which would otherwise be
stored in a converted file and could mislead a later pass that reuses the name."""

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
    alive = needed | {o for n in graph.nodes for o in n.outputs} | inputs
    for name in [k for k in graph.value_info if k not in alive]:
        del graph.value_info[name]
    return removed

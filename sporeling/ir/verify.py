"""Structural checks of a Graph: every name read is defined before it is read (so the node list is
a topological order), no name is defined twice, and every graph output exists. Subgraphs are
checked with the enclosing scope visible."""

from __future__ import annotations

from ..errors import GraphError
from .graph import Graph


def verify(graph: Graph, outer: frozenset[str] = frozenset()) -> None:
    defined: set[str] = set(outer)
    own: set[str] = set()
    for v in graph.inputs:
        if v.name in own:
            raise GraphError(f"graph '{graph.name}': input '{v.name}' is declared twice")
        own.add(v.name)
    for name in graph.initializers:
        own.add(name)
    defined |= own
    for n in graph.nodes:
        for i in n.inputs:
            if i and i not in defined:
                raise GraphError(f"{n.label()} reads '{i}', which is not defined before it")
        for g in n.subgraphs():
            verify(g, frozenset(defined))
        for o in n.outputs:
            if not o:
                continue
            if o in own:
                raise GraphError(f"{n.label()} writes '{o}', which is already defined")
            own.add(o)
            defined.add(o)
    for v in graph.outputs:
        if v.name not in defined:
            raise GraphError(f"graph '{graph.name}': output '{v.name}' is never produced")


def toposort(graph: Graph) -> None:
    """Reorders graph.nodes in place into a topological order (stable for an already sorted list).
    Raises GraphError on a cycle."""
    produced = {o for n in graph.nodes for o in n.outputs if o}
    available = {v.name for v in graph.inputs} | set(graph.initializers) | (graph.outer_names() - produced)
    pending = list(graph.nodes)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            needs = [i for i in n.inputs if i] + [x for g in n.subgraphs() for x in g.outer_names()]
            if all(i in available for i in needs):
                ordered.append(n)
                available.update(o for o in n.outputs if o)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.inputs if i and i not in available})
            raise GraphError(f"graph '{graph.name}' has a cycle or undefined inputs: {', '.join(missing[:8])}")
        pending = rest
    graph.nodes[:] = ordered

"""Small queries the passes share."""

from __future__ import annotations

from ..ir import Graph, Node


def single_consumer(graph: Graph, name: str, consumers: dict[str, list[Node]]) -> Node | None:
    """The only node reading `name`, if exactly one does and `name` is not a graph output."""
    users = consumers.get(name, [])
    if len(users) != 1 or name in {v.name for v in graph.outputs}:
        return None
    return users[0]


def const(graph: Graph, name: str):
    return graph.initializers.get(name) if name else None


def rename_uses(graph: Graph, old: str, new: str) -> None:
    """Makes every reader of `old` (nodes, subgraph bodies, graph outputs) read `new` instead."""
    for n in graph.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
        for g in n.subgraphs():
            if old in g.outer_names():
                rename_uses(g, old, new)
    for v in graph.outputs:
        if v.name == old:
            v.name = new

"""Small queries the passes share."""

from __future__ import annotations

import math

from ..ir import Graph, Node, ValueInfo


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


def shape_of(graph: Graph, name: str) -> tuple | None:
    """The static shape recorded for `name` (value_info, graph inputs/outputs, initializers)."""
    if name in graph.initializers:
        return tuple(graph.initializers[name].shape)
    info: ValueInfo | None = graph.value_info.get(name)
    if info is None:
        info = next((v for v in graph.inputs + graph.outputs if v.name == name), None)
    return None if info is None or info.shape is None else tuple(info.shape)


def scalar(graph: Graph, name: str) -> float | None:
    """The value of a one-element constant, or None."""
    v = const(graph, name)
    if v is None or v.size != 1:
        return None
    return float(v.reshape(-1)[0])


def clip_bounds(graph: Graph, clip: Node) -> tuple[float, float] | None:
    """(min, max) of a Clip: attributes before opset 11, constant inputs after; an omitted bound is
    -inf or inf. None when a bound is computed at run time."""
    if "min" in clip.attrs or "max" in clip.attrs:
        return float(clip.attrs.get("min", -math.inf)), float(clip.attrs.get("max", math.inf))
    bounds = []
    for k, default in ((1, -math.inf), (2, math.inf)):
        name = clip.inputs[k] if len(clip.inputs) > k else ""
        value = scalar(graph, name) if name else default
        if value is None:
            return None
        bounds.append(value)
    return bounds[0], bounds[1]

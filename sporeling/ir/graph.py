"""sporeling's graph IR.

A Graph is a list of Nodes in topological order over named Values. Initializers are NumPy arrays
held by the graph; subgraphs (If/Loop/Scan bodies) are Graphs stored as node attributes and may read
names of the enclosing graph (outer scope). Shapes hold ints for known dimensions and strings (or
None) for symbolic ones, as ONNX does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Dim = int | str | None


def unique_name(base: str, taken: set[str], sep: str = "_") -> str:
    """`base`, or `base<sep>1`, `base<sep>2`... the first not in `taken`; it is added to `taken`."""
    name, k = base, 1
    while name in taken:
        name, k = f"{base}{sep}{k}", k + 1
    taken.add(name)
    return name


@dataclass
class ValueInfo:
    """A named tensor's declared type: dtype (a NumPy dtype, or None if unknown) and shape."""

    name: str
    dtype: np.dtype | None = None
    shape: tuple[Dim, ...] | None = None

    def __repr__(self) -> str:
        dt = self.dtype.name if self.dtype is not None else "?"
        shp = "?" if self.shape is None else "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {dt}{shp}"


@dataclass
class Node:
    """One operation. Empty strings in inputs mean an omitted optional input, as in ONNX."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""

    def subgraphs(self) -> list[Graph]:
        found = []
        for v in self.attrs.values():
            if isinstance(v, Graph):
                found.append(v)
            elif isinstance(v, list):
                found.extend(g for g in v if isinstance(g, Graph))
        return found

    def label(self) -> str:
        name = self.name or (self.outputs[0] if self.outputs else "?")
        return f"{self.op_type} node '{name}'"


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    value_info: dict[str, ValueInfo] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=lambda: {"": 17})
    metadata: dict[str, str] = field(default_factory=dict)
    name: str = "graph"

    @property
    def opset(self) -> int:
        return self.opsets.get("", self.opsets.get("ai.onnx", 1))

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
            for g in n.subgraphs():
                for name in g.outer_names():
                    users.setdefault(name, []).append(n)
        return users

    def outer_names(self) -> set[str]:
        """Names this graph (or its nested subgraphs) reads but does not define: its outer scope."""
        defined = {v.name for v in self.inputs} | set(self.initializers)
        needed: set[str] = set()
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in defined:
                    needed.add(i)
            for g in n.subgraphs():
                needed |= {x for x in g.outer_names() if x not in defined}
            defined.update(o for o in n.outputs if o)
        for o in self.outputs:
            if o.name not in defined:
                needed.add(o.name)
        return needed

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
            for g in n.subgraphs():
                for k, c in g.op_counts().items():
                    counts[k] = counts.get(k, 0) + c
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def all_initializers(self) -> list[np.ndarray]:
        """The initializers of this graph and of every subgraph inside it."""
        found = list(self.initializers.values())
        for n in self.nodes:
            for g in n.subgraphs():
                found += g.all_initializers()
        return found

    def named_initializers(self) -> dict[str, np.ndarray]:
        """The initializers of this graph and of every subgraph inside it, by name; a name that occurs
        more than once (two bodies may each have a "const_1") is left out, as it names no one tensor."""
        found: dict[str, np.ndarray | None] = {}

        def walk(g: Graph) -> None:
            for k, v in g.initializers.items():
                found[k] = None if k in found else v
            for n in g.nodes:
                for sg in n.subgraphs():
                    walk(sg)

        walk(self)
        return {k: v for k, v in found.items() if v is not None}

    def parameter_count(self) -> int:
        return int(sum(a.size for a in self.all_initializers()))

    def __str__(self) -> str:
        lines = [f"graph {self.name} (opsets {self.opsets})"]
        lines += [f"  input  {v!r}" for v in self.inputs]
        lines += [f"  init   {k}: {a.dtype}{list(a.shape)}" for k, a in self.initializers.items()]
        for n in self.nodes:
            attrs = ", ".join(f"{k}={v!r}" for k, v in n.attrs.items() if not isinstance(v, Graph))
            lines.append(f"  {','.join(n.outputs)} = {n.op_type}({', '.join(n.inputs)}){' {' + attrs + '}' if attrs else ''}")
        lines += [f"  output {v!r}" for v in self.outputs]
        return "\n".join(lines)

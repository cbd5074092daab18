"""Layout pass: cancels Transposes by moving them through the ops that do not care about layout.

A TFLite model (NHWC) imported onto ONNX kernels (NCHW), or an ONNX model from tf2onnx, wraps every
layout-sensitive op in Transpose(0,3,1,2) -> op -> Transpose(0,2,3,1) and runs everything else in
NHWC. Between two convolutions that leaves Transpose pairs around each Relu, Add, Pad or Concat.
This pass sinks a Transpose below such an op, rewriting the op for the other layout (its axes,
pads, or a constant operand re-laid out: a per-channel [C] in NHWC becomes [C,1,1] in NCHW), until it
meets its inverse; two adjacent Transposes merge into one (composed perms), and an identity
disappears. So Conv -> T -> Relu -> Add(residual) -> T^-1 -> Conv ends up with no Transpose at all.

A move is made only when it does not increase the number of Transposes: those it frees upstream
(an input Transpose that this op alone reads) against those it adds: one on each input that is
neither transposed the same way nor a constant, and one after each output, less the ones that
Transpose will cancel, whether right after (an inverse Transpose reading the output) or a few
layout-agnostic ops further down (a Split whose two halves each meet their inverse). So a Transpose
feeding several ops is copied below them only where the copies cancel, and a move that adds one on
an input must win outright, which keeps the pass from trading a Transpose back and forth. A constant
operand is one also behind the Cast or DequantizeLinear that an imported fp16 or int8 weight has.

Graph inputs and outputs keep their names and layouts: the Transpose placed after an op takes over
the op's output name, so what the graph hands out and what later nodes read is unchanged; only the
op's own output, now in the other layout, gets a new name, and its recorded shape is permuted (the
fusion passes read shapes)."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, ValueInfo
from . import _layout_rules as rules
from ._util import rename_uses


def _perm(node: Node | None) -> tuple[int, ...] | None:
    if node is None or node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
        return None
    perm = node.attrs.get("perm")
    return None if perm is None else tuple(int(a) for a in perm)


def _index(nodes: list[Node], node: Node) -> int | None:
    return next((i for i, n in enumerate(nodes) if n is node), None)


class _Layout:
    def __init__(self, graph: Graph):
        self.g = graph
        self.taken = ({v.name for v in graph.inputs + graph.outputs} | set(graph.initializers)
                      | set(graph.value_info) | {o for n in graph.nodes for o in n.outputs})
        self.with_bodies = {id(n) for n in graph.nodes if n.subgraphs()}
        self.refresh()

    def refresh(self) -> None:
        """Producer and reader maps, as Graph.producers/consumers give them, rebuilt after every change;
        only the nodes found with subgraph bodies at the start (this pass makes none) are asked for
        the outer names their bodies read, which keeps a rebuild cheap."""
        self.producers, self.consumers = {}, {}
        for n in self.g.nodes:
            for o in n.outputs:
                if o:
                    self.producers[o] = n
            for i in n.inputs:
                if i:
                    self.consumers.setdefault(i, []).append(n)
            if id(n) in self.with_bodies:
                for name in {x for body in n.subgraphs() for x in body.outer_names()}:
                    self.consumers.setdefault(name, []).append(n)
        self.outputs = {v.name for v in self.g.outputs}
        self.graph_inputs = {v.name for v in self.g.inputs}
        self.costs: dict[tuple, int] = {}  # _output_cost answers, valid until the graph changes

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def constant(self, name: str) -> np.ndarray | None:
        return None if name in self.graph_inputs else self.g.initializers.get(name)

    def constant_source(self, name: str) -> tuple[np.ndarray, Node | None] | None:
        """A constant, or one that a Cast or per-tensor DequantizeLinear turns into the value `name`
        (how imported fp16 and int8 weights arrive) with that node: re-laid out the same way."""
        if (c := self.constant(name)) is not None:
            return c, None
        node = self.producers.get(name)
        if node is None or node.domain not in ("", "ai.onnx") or not node.inputs:
            return None
        c = self.constant(node.inputs[0])
        if c is None or node.op_type not in ("Cast", "DequantizeLinear"):
            return None
        params = [self.constant(i) for i in node.inputs[1:] if i]
        return (c, node) if all(q is not None and q.size == 1 for q in params) else None

    def rank(self, name: str) -> int | None:
        perm = _perm(self.producers.get(name))
        if perm is not None:
            return len(perm)
        if name in self.g.initializers:
            return self.g.initializers[name].ndim
        info = self.g.value_info.get(name) or next((v for v in self.g.inputs if v.name == name), None)
        return None if info is None or info.shape is None else len(info.shape)

    def record(self, new: str, old: str, perm: tuple[int, ...]) -> None:
        """value_info for `new`, which holds `old` with its axes taken through `perm` (np.transpose)."""
        info = self.g.value_info.get(old) or next((v for v in self.g.inputs + self.g.outputs if v.name == old), None)
        if info is not None and info.shape is not None and len(info.shape) == len(perm):
            self.g.value_info[new] = ValueInfo(new, info.dtype, tuple(info.shape[a] for a in perm))

    def remove(self, *nodes: Node) -> None:
        """Takes nodes out of the graph (by identity: Node compares by value, and slowly)."""
        gone = {id(n) for n in nodes}
        if gone:
            self.g.nodes[:] = [n for n in self.g.nodes if id(n) not in gone]

    def drop_if_dead(self, *nodes: Node) -> None:
        """Removes those of nodes whose output nothing reads any more. The maps must be current."""
        dead = [n for n in nodes if n is not None and not self.consumers.get(n.outputs[0])
                and n.outputs[0] not in self.outputs]
        self.remove(*dead)
        for n in dead:  # a dead node is read by nobody: updating the maps in place is enough
            for o in n.outputs:
                self.producers.pop(o, None)
            for i in set(n.inputs):
                self.consumers[i] = [c for c in self.consumers.get(i, []) if c is not n]
            self.costs.clear()

    # ---- Transpose rules ----

    def transpose(self, node: Node) -> bool:
        perm = _perm(node)
        if perm is None:
            return False
        src, out = node.inputs[0], node.outputs[0]
        identity, is_output = tuple(range(len(perm))), out in self.outputs
        if (c := self.constant(src)) is not None and c.ndim == len(perm) and not is_output:
            self.remove(node)
            self.g.initializers[out] = np.ascontiguousarray(np.transpose(c, perm))
            self.refresh()
            return True
        if perm == identity:
            return self._bypass(node, src)
        first = self.producers.get(src)
        inner = _perm(first)
        if inner is None or len(inner) != len(perm):
            return False
        merged = tuple(inner[a] for a in perm)
        if merged != identity:
            node.inputs, node.attrs = [first.inputs[0]], dict(node.attrs, perm=list(merged))
        elif not self._bypass(node, first.inputs[0]):
            node.op_type, node.attrs, node.inputs = "Identity", {}, [first.inputs[0]]
        self.refresh()
        self.drop_if_dead(first)
        return True

    def _bypass(self, node: Node, src: str) -> bool:
        """Removes node, whose output equals src: its readers read src. A graph output keeps its name,
        so there src is renamed instead, when a node of this graph makes it; else False."""
        out = node.outputs[0]
        if out in self.outputs:
            maker = self.producers.get(src)
            if maker is None or src in self.outputs:
                return False
            self.remove(node)
            maker.outputs = [out if o == src else o for o in maker.outputs]
            rename_uses(self.g, src, out)
            self.g.value_info.pop(src, None)
        else:
            self.remove(node)
            rename_uses(self.g, out, src)
            self.g.value_info.pop(out, None)
        self.refresh()
        return True

    # ---- sinking a Transpose below an op ----

    def sink(self, node: Node) -> bool:
        rule = rules.RULES.get(node.op_type)
        if rule is None or node.domain not in ("", "ai.onnx") or node.subgraphs():
            return False
        data = [k for k in rules.data_inputs(node) if k < len(node.inputs) and node.inputs[k]]
        perm = next((p for k in data if (p := _perm(self.producers.get(node.inputs[k]))) is not None), None)
        plan = None if perm is None else rule(self, node, perm)
        if plan is None:
            return False
        relaid: dict[int, str | tuple] = {}
        feeding: dict[int, Node] = {}
        freed: set[int] = set()
        inserted: set[str] = set()
        for k in data:
            name = node.inputs[k]
            producer = self.producers.get(name)
            if _perm(producer) == perm:
                relaid[k] = producer.inputs[0]
                feeding[id(producer)] = producer
                if all(c is node for c in self.consumers.get(name, [])) and name not in self.outputs:
                    freed.add(id(producer))
            elif (src := self.constant_source(name)) is not None:
                arr = rules.relayout(src[0], perm, broadcast=node.op_type != "Concat")
                if arr is None:
                    return False
                relaid[k] = name if arr is src[0] else (arr, src[1])
            elif self.rank(name) == len(perm):
                relaid[k] = ""  # gets a Transpose(inverse perm) of its own
                inserted.add(name)
            else:
                return False
        added = len(inserted) + sum(self._output_cost(o, q) for o, q in zip(node.outputs, plan.out_perms) if o)
        if added > len(freed) or (inserted and added == len(freed)):
            return False
        self._apply(node, rules.inverse(perm), plan, relaid)
        self.drop_if_dead(*feeding.values(), *(new[1] for new in relaid.values() if isinstance(new, tuple)))
        return True

    def _output_cost(self, out: str, q: tuple[int, ...] | None, depth: int = 0) -> int:
        """Transposes that putting Transpose(q) after `out` adds in the end, counting those it will
        cancel: a reader that is the inverse Transpose, or, a few ops further down, one that the
        Transpose reaches by sinking through readers whose only non-constant input is `out`. Each
        reader either takes the new Transpose (shared, so it costs 1 in all) or passes it on."""
        if q is None:
            return 0
        if (out, q, depth) in self.costs:
            return self.costs[out, q, depth]
        must_keep = out in self.outputs
        passed, passed_all = 0, 0
        for reader in self.consumers.get(out, []):
            cost = self._reader_cost(reader, out, q, depth)
            if cost is None:
                must_keep = True
            else:
                passed, passed_all = passed + min(cost, 0), passed_all + cost
        cost = self.costs[out, q, depth] = 1 + passed if must_keep else min(1 + passed, passed_all)
        return cost

    def _reader_cost(self, reader: Node, out: str, q: tuple[int, ...], depth: int) -> int | None:
        """What Transpose(q) costs if it goes on past `reader` instead of stopping before it; None
        when it cannot."""
        if (p := _perm(reader)) is not None:
            return -1 if len(p) == len(q) and tuple(q[a] for a in p) == tuple(range(len(q))) else 0
        rule = rules.RULES.get(reader.op_type)
        if depth >= 6 or rule is None or reader.domain not in ("", "ai.onnx") or reader.subgraphs():
            return None
        data = [k for k in rules.data_inputs(reader) if k < len(reader.inputs)]
        if any(name == out and k not in data for k, name in enumerate(reader.inputs)):
            return None
        for k in data:
            name = reader.inputs[k]
            if name and name != out and ((src := self.constant_source(name)) is None or rules.relayout(
                    src[0], q, reader.op_type != "Concat") is None):
                return None
        plan = rule(self, reader, q)
        if plan is None:
            return None
        return sum(self._output_cost(o, qo, depth + 1) for o, qo in zip(reader.outputs, plan.out_perms) if o)

    def _apply(self, node: Node, inv: tuple[int, ...], plan: rules.Plan, relaid: dict) -> None:
        before, after, turned = [], [], {}
        for k, new in relaid.items():
            name = node.inputs[k]
            if isinstance(new, tuple):
                arr, maker = new
                node.inputs[k] = self.fresh(f"{name}_relaid")
                if maker is None:
                    self.g.initializers[node.inputs[k]] = arr
                else:  # a relaid copy of the constant, and of the Cast/DequantizeLinear that reads it
                    const = self.fresh(f"{maker.inputs[0]}_relaid")
                    self.g.initializers[const] = arr
                    before.append(Node(maker.op_type, [const] + maker.inputs[1:], [node.inputs[k]],
                                       dict(maker.attrs), f"{node.inputs[k]}_layout"))
            elif new:
                node.inputs[k] = new
            else:
                if name not in turned:
                    t_out = turned[name] = self.fresh(f"{name}_t")
                    before.append(Node("Transpose", [name], [t_out], {"perm": list(inv)}, f"{t_out}_layout"))
                    self.record(t_out, name, inv)
                node.inputs[k] = turned[name]
        for k, value in plan.consts.items():
            const_name = self.fresh(f"{node.outputs[0]}_{k}")
            self.g.initializers[const_name] = value
            node.inputs += [""] * (k + 1 - len(node.inputs))
            node.inputs[k] = const_name
        node.attrs.update(plan.attrs)
        for k, q in enumerate(plan.out_perms):
            out = node.outputs[k]
            if q is None or not out:
                continue
            if out not in self.outputs and not self.consumers.get(out):
                self.record(out, out, rules.inverse(q))  # nothing reads it: no Transpose needed
                continue
            inner = self.fresh(f"{out}_relaid")
            self.record(inner, out, rules.inverse(q))
            node.outputs[k] = inner
            after.append(Node("Transpose", [inner], [out], {"perm": list(q)}, f"{out}_layout"))
        at = _index(self.g.nodes, node)
        self.g.nodes[at:at + 1] = before + [node] + after
        self.refresh()


def run(graph: Graph) -> int:
    state = _Layout(graph)
    rewrites = 0
    # Every rewrite either removes a Transpose or moves one strictly downstream, so this ends; the
    # cap only guards against a rule that breaks that promise.
    for _ in range(4 * len(graph.nodes) + 8):
        changed = 0
        i = 0
        while i < len(graph.nodes):
            node = graph.nodes[i]
            if state.transpose(node) if node.op_type == "Transpose" else state.sink(node):
                changed += 1
                at = _index(graph.nodes, node)
                i = i if at is None else at + 1  # gone: the next node has taken its place
            else:
                i += 1
        rewrites += changed
        if not changed:
            break
    return rewrites

"""Constant folding: a node whose inputs are all constants is run once, here, and its outputs become
initializers; so is a node whose outputs shape inference can tell without running it (Shape, Size of a
tensor whose shape is static), which folds whole shape subgraphs (Shape -> Gather -> Concat ->
Reshape) away when the graph's input shapes are known (`sporeling convert --input-shape` fixes them).

What is not folded: nodes with subgraph bodies or run-time context, impure ones (random
generators), graph outputs, and folds that would grow the file: the outputs may take at most the bytes
of the constants they consume plus FOLD_SLACK, so Cast(float16 weights -> float32) or a ConstantOfShape
of more than a KiB stay as nodes and are folded at load time instead, where memory is not a file size.

Along the way the static shapes it infers are recorded in graph.value_info (where the graph had none),
which later passes use to check that fusions are shape-preserving. The constants the folded nodes read
are left for dead-code elimination to drop."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, ValueInfo
from ..ops.registry import Info, OpDef, lookup
from ..runtime.session import bind_kernel

FOLD_SLACK = 1024  # bytes a fold may add: enough for shape computations, not for re-typed weights


def _static(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _known_inputs(graph: Graph) -> dict[str, Info]:
    infos: dict[str, Info] = {}
    for v in graph.inputs:
        if v.name not in graph.initializers and v.dtype is not None and _static(v.shape):
            infos[v.name] = Info(v.dtype, tuple(v.shape), None)
    for name, arr in graph.initializers.items():
        if name not in {v.name for v in graph.inputs}:  # an input may override it: not a constant
            infos[name] = Info(arr.dtype, arr.shape, arr)
    return infos


def _evaluate(node, op: OpDef, ins: list[Info | None]) -> list[Any] | None:
    """The node's output values, by shape inference or by running its kernel; None if unknown."""
    attrs = dict(node.attrs)
    out_infos = None
    if op.infer is not None:
        try:
            out_infos = op.infer(ins, **attrs)
        except Exception:  # the kernel will report real problems with the node named, at prepare
            return None
    if out_infos and all(len(o) == 3 and o[2] is not None for o in out_infos):
        return [o[2] for o in out_infos]
    if not (op.pure and node.inputs and all(i is None or i.value is not None for i in ins)):
        return out_infos  # shapes only (or None)
    try:
        with np.errstate(all="ignore"):
            results = bind_kernel(op, ins, attrs)(*[None if i is None else i.value for i in ins])
    except Exception:
        return None
    results = [np.asarray(r) if isinstance(r, np.generic) else r
               for r in (results if isinstance(results, tuple) else (results,))]
    if not all(isinstance(r, np.ndarray) and r.dtype != object for r in results):
        return None
    return [np.array(r, order="C") for r in results]  # a copy: never a view of another constant


def run(graph: Graph) -> int:
    infos = _known_inputs(graph)
    outputs = {v.name for v in graph.outputs}
    keep = []
    folded = 0
    for node in graph.nodes:
        op = lookup(node.op_type, graph.opsets.get(node.domain or "", 1), node.domain)
        if op is None or op.context or node.subgraphs():
            keep.append(node)
            continue
        if any(i and i not in infos for i in node.inputs):  # None must mean "omitted", never "unknown"
            keep.append(node)
            continue
        ins = [infos[i] if i else None for i in node.inputs]
        result = _evaluate(node, op, ins)
        values = result if result and all(isinstance(r, np.ndarray) for r in result) else None
        consumed = sum(i.value.nbytes for i in ins if i is not None and i.value is not None)
        if (values is not None and len(values) == len(node.outputs) and not outputs & set(node.outputs)
                and sum(v.nbytes for v in values) <= consumed + FOLD_SLACK):
            for name, value in zip(node.outputs, values):
                if name:
                    graph.initializers[name] = value
                    graph.value_info.pop(name, None)
                    infos[name] = Info(value.dtype, value.shape, value)
            folded += 1
            continue
        keep.append(node)
        for k, name in enumerate(node.outputs):
            if not name or not result or k >= len(result):
                continue
            r = result[k]
            dt, shp = (r.dtype, r.shape) if isinstance(r, np.ndarray) else (r[0], r[1])
            if dt is None or not _static(shp):
                continue
            infos[name] = Info(np.dtype(dt), tuple(int(d) for d in shp), None)
            if name not in graph.value_info and name not in outputs:
                graph.value_info[name] = ValueInfo(name, np.dtype(dt), tuple(int(d) for d in shp))
    graph.nodes[:] = keep
    return folded

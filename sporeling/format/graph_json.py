"""The graph section: a sporeling Graph as a JSON document, and back, checking every field on the way in.

Attributes are tagged objects, {"type": T, "value": V}, so that 1 and 1.0, a list of ints and a list of
floats, a tensor and a list, stay apart. Floats are JSON numbers when finite (Python writes the shortest
repr that reads back to the same double) and strings otherwise: "inf", "-inf", "nan:<16 hex digits>" (the
double's bits, so NaN payloads survive). Tensors, initializers and tensor attributes alike, are indices
into the file's tensor table; the writer stores an array object once however often it is referenced.

Decoding assumes nothing: every value is type-checked, every index range-checked, names must be strings,
subgraph nesting is bounded, and each failure is a FormatProblem naming where in the graph it is.
docs/format.md lists the schema.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir import Graph, ValueInfo
from .dtypes import dtype_name

MAX_DEPTH = 64  # subgraphs inside subgraphs; real models use two or three
INT64 = (-(1 << 63), (1 << 63) - 1)


class FormatProblem(ValueError):
    """What is wrong and where; the reader prefixes the file's path."""


# ---- floats --------------------------------------------------------------------------------------
def encode_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"nan:{struct.unpack('<Q', struct.pack('<d', x))[0]:016x}"


def decode_float(v: Any, where: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            return float(v)
        except OverflowError:
            raise FormatProblem(f"{where}: number {v} is out of range") from None
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    if isinstance(v, str) and v.startswith("nan:") and len(v) == 20:
        try:
            return struct.unpack("<d", struct.pack("<Q", int(v[4:], 16)))[0]
        except ValueError:
            pass
    raise FormatProblem(f"{where}: expected a float, got {show_value(v)}")


# ---- writing -------------------------------------------------------------------------------------
# The writer's collector: takes an array and a name for messages, returns the array's tensor-table index.
TensorSink = Callable[[np.ndarray, str], int]


def encode_graph(g: Graph, sink: TensorSink, where: str = "graph", depth: int = 0) -> dict:
    if depth > MAX_DEPTH:
        raise FormatProblem(f"{where}: subgraphs nest deeper than {MAX_DEPTH}")
    where = f"{where} '{g.name}'" if depth == 0 else where
    _need_str(g.name, f"{where}: name")
    for key, value in list(g.opsets.items()) + list(g.metadata.items()):
        _need_str(key, f"{where}: opset/metadata key")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in g.opsets.values()):
        raise FormatProblem(f"{where}: opset versions must be ints")
    if not all(isinstance(v, str) for v in g.metadata.values()):
        raise FormatProblem(f"{where}: metadata values must be strings")
    out = {
        "name": g.name,
        "opsets": dict(g.opsets),
        "metadata": dict(g.metadata),
        "inputs": [_encode_vi(v, where) for v in g.inputs],
        "outputs": [_encode_vi(v, where) for v in g.outputs],
        "value_info": [],
        "initializers": [],
        "nodes": [],
    }
    for key, v in g.value_info.items():
        vi = _encode_vi(v, where)
        if key != v.name:
            vi["key"] = _need_str(key, f"{where}: value_info key")
        out["value_info"].append(vi)
    for name, arr in g.initializers.items():
        _need_str(name, f"{where}: initializer name")
        out["initializers"].append({"name": name, "tensor": sink(_as_array(arr, f"{where} initializer"), name)})
    for k, n in enumerate(g.nodes):
        at = f"{where} node {k} '{n.name}'"
        for s in [n.op_type, n.domain, n.name, *n.inputs, *n.outputs]:
            _need_str(s, f"{at}: op_type, domain, name, inputs and outputs")
        attrs = {}
        for key, value in n.attrs.items():
            attrs[_need_str(key, f"{at}: attribute name")] = encode_attr(value, sink, f"{at} attribute '{key}'", depth)
        out["nodes"].append({"op_type": n.op_type, "domain": n.domain, "name": n.name, "inputs": list(n.inputs),
                             "outputs": list(n.outputs), "attrs": attrs})
    return out


def encode_attr(v: Any, sink: TensorSink, where: str, depth: int) -> dict:
    if depth > MAX_DEPTH:
        raise FormatProblem(f"{where}: nests deeper than {MAX_DEPTH}")
    if v is None:
        return {"type": "none"}
    if isinstance(v, (bool, np.bool_)):
        return {"type": "bool", "value": bool(v)}
    if isinstance(v, (int, np.integer)):
        return {"type": "int", "value": _int64(int(v), where)}
    if isinstance(v, (float, np.floating)):
        return {"type": "float", "value": encode_float(float(v))}
    if isinstance(v, str):
        return {"type": "string", "value": v}
    if isinstance(v, np.ndarray):
        return {"type": "tensor", "value": sink(v, where)}
    if isinstance(v, Graph):
        return {"type": "graph", "value": encode_graph(v, sink, f"{where} graph '{v.name}'", depth + 1)}
    if type(v).__name__ == "TypeProto" and hasattr(v, "SerializeToString"):  # onnx, for Optional's `type`
        return {"type": "type_proto", "value": base64.b64encode(v.SerializeToString()).decode("ascii")}
    if isinstance(v, (list, tuple)):
        items = list(v)
        kinds = {_list_kind(x) for x in items}
        if len(kinds) == 1 and None not in kinds:
            kind = kinds.pop()
            if kind == "ints":
                return {"type": "ints", "value": [_int64(int(x), where) for x in items]}
            if kind == "floats":
                return {"type": "floats", "value": [encode_float(float(x)) for x in items]}
            if kind == "strings":
                return {"type": "strings", "value": items}
            if kind == "tensors":
                return {"type": "tensors", "value": [sink(x, f"{where}[{i}]") for i, x in enumerate(items)]}
            return {"type": "graphs", "value": [encode_graph(x, sink, f"{where}[{i}] graph '{x.name}'", depth + 1)
                                                for i, x in enumerate(items)]}
        # empty, or mixed: each element tagged on its own (the IR cannot say an empty list's type)
        return {"type": "list",
                "value": [encode_attr(x, sink, f"{where}[{i}]", depth + 1) for i, x in enumerate(items)]}
    raise FormatProblem(f"{where}: a {type(v).__name__} attribute cannot be stored")


def _list_kind(x: Any) -> str | None:
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, (int, np.integer)):
        return "ints"
    if isinstance(x, (float, np.floating)):
        return "floats"
    return {str: "strings", np.ndarray: "tensors", Graph: "graphs"}.get(type(x))


def _encode_vi(v: ValueInfo, where: str) -> dict:
    _need_str(v.name, f"{where}: value name")
    out: dict[str, Any] = {"name": v.name, "dtype": None, "shape": None}
    if v.dtype is not None:
        out["dtype"] = dtype_name(v.dtype)
        if out["dtype"] is None:
            raise FormatProblem(f"{where}: value '{v.name}' has dtype {v.dtype}, which .spore cannot hold")
    if v.shape is not None:
        dims = []
        for d in v.shape:
            if isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)):
                dims.append(_int64(int(d), f"{where}: value '{v.name}' shape"))
            elif d is None or isinstance(d, str):
                dims.append(d)
            else:
                raise FormatProblem(f"{where}: value '{v.name}' has a {type(d).__name__} dimension")
        out["shape"] = dims
    return out


def _as_array(a: Any, where: str) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, np.generic):
        return np.asarray(a)
    raise FormatProblem(f"{where}: a {type(a).__name__}, not a NumPy array")


def _need_str(s: Any, where: str) -> str:
    if not isinstance(s, str):
        raise FormatProblem(f"{where}: expected a string, got {show_value(s)}")
    return s


def _int64(x: int, where: str) -> int:
    if not INT64[0] <= x <= INT64[1]:
        raise FormatProblem(f"{where}: {x} does not fit in int64")
    return x


def show_value(v: Any) -> str:
    text = repr(v) if isinstance(v, (int, float, str, type(None))) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."

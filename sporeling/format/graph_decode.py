"""Reading the graph section back into a Graph, trusting nothing in it.

The JSON document may come from anyone. Each field is type-checked before use (a number where a name
should be, a float where an int should be, a bool where an int should be: all refused), indices into
the tensor table are range-checked by the caller's `tensor` function, names may not repeat where the IR
keys them, and nesting is bounded. Unknown keys are ignored, so a newer minor version may add fields.
Every failure is a FormatProblem that says where in the graph it is.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir import Graph, Node, ValueInfo
from .dtypes import dtype_from_name
from .graph_json import INT64, MAX_DEPTH, FormatProblem, decode_float, show_value

TensorSource = Callable[[Any, str], np.ndarray]  # (index from the file, where) -> the loaded array


def _need(v: Any, kind: type, what: str, where: str):
    if type(v) is kind:  # the common case, first: json only makes exact dict/list/str/int/bool
        return v
    if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
        raise FormatProblem(f"{where}: expected {what}, got {show_value(v)}")
    return v


def need_obj(v: Any, where: str) -> dict:
    return _need(v, dict, "an object", where)


def need_list(v: Any, where: str) -> list:
    return _need(v, list, "a list", where)


def need_str(v: Any, where: str) -> str:
    return _need(v, str, "a string", where)


def need_int(v: Any, where: str, lo: int = INT64[0], hi: int = INT64[1]) -> int:
    _need(v, int, "an integer", where)
    if not lo <= v <= hi:
        raise FormatProblem(f"{where}: {v} is out of range [{lo}, {hi}]")
    return v


def need_bool(v: Any, where: str) -> bool:
    return _need(v, bool, "true or false", where)


def decode_dtype(v: Any, where: str) -> np.dtype:
    try:
        return dtype_from_name(need_str(v, where))
    except FormatProblem:
        raise
    except ValueError as e:
        raise FormatProblem(f"{where}: {e}") from None


def decode_graph(d: Any, tensor: TensorSource, where: str = "graph", depth: int = 0) -> Graph:
    if depth > MAX_DEPTH:
        raise FormatProblem(f"{where}: subgraphs nest deeper than {MAX_DEPTH}")
    d = need_obj(d, where)
    name = need_str(d.get("name", "graph"), f"{where}: name")
    where = f"{where} '{name}'" if depth == 0 else where
    g = Graph(name=name)
    if "opsets" in d:
        g.opsets = {need_str(k, f"{where}: opset domain"): need_int(v, f"{where}: opset '{k}'")
                    for k, v in need_obj(d["opsets"], f"{where}: opsets").items()}
    g.metadata = {need_str(k, f"{where}: metadata key"): need_str(v, f"{where}: metadata '{k}'")
                  for k, v in need_obj(d.get("metadata", {}), f"{where}: metadata").items()}
    g.inputs = [_vi(x, f"{where} input {k}") for k, x in enumerate(need_list(d.get("inputs", []), f"{where}: inputs"))]
    g.outputs = [_vi(x, f"{where} output {k}")
                 for k, x in enumerate(need_list(d.get("outputs", []), f"{where}: outputs"))]
    for k, x in enumerate(need_list(d.get("value_info", []), f"{where}: value_info")):
        vi = _vi(x, f"{where} value_info {k}")
        key = need_str(x.get("key", vi.name), f"{where} value_info {k}: key")
        if key in g.value_info:
            raise FormatProblem(f"{where}: value_info '{key}' appears twice")
        g.value_info[key] = vi
    for k, x in enumerate(need_list(d.get("initializers", []), f"{where}: initializers")):
        at = f"{where} initializer {k}"
        x = need_obj(x, at)
        iname = need_str(x.get("name"), f"{at}: name")
        if iname in g.initializers:
            raise FormatProblem(f"{where}: initializer '{iname}' appears twice")
        g.initializers[iname] = tensor(x.get("tensor"), f"{where} initializer '{iname}'")
    for k, x in enumerate(need_list(d.get("nodes", []), f"{where}: nodes")):
        g.nodes.append(_node(x, tensor, f"{where} node {k}", depth))
    return g


def _node(x: Any, tensor: TensorSource, where: str, depth: int) -> Node:
    x = need_obj(x, where)
    op_type = need_str(x.get("op_type"), f"{where}: op_type")
    name = need_str(x.get("name", ""), f"{where}: name")
    where = f"{where} '{name or op_type}'"
    domain = need_str(x.get("domain", ""), f"{where}: domain")
    inputs = [need_str(i, f"{where}: input") for i in need_list(x.get("inputs", []), f"{where}: inputs")]
    outputs = [need_str(o, f"{where}: output") for o in need_list(x.get("outputs", []), f"{where}: outputs")]
    attrs = {}
    for key, value in need_obj(x.get("attrs", {}), f"{where}: attrs").items():
        attrs[key] = decode_attr(value, tensor, f"{where} attribute '{key}'", depth)
    return Node(op_type, inputs, outputs, attrs, name, domain)


def _vi(x: Any, where: str) -> ValueInfo:
    x = need_obj(x, where)
    name = need_str(x.get("name"), f"{where}: name")
    where = f"{where} '{name}'"
    dtype = None if x.get("dtype") is None else decode_dtype(x["dtype"], f"{where}: dtype")
    shape = None
    if x.get("shape") is not None:
        dims = []
        for d in need_list(x["shape"], f"{where}: shape"):
            if d is None or isinstance(d, str):
                dims.append(d)
            else:
                dims.append(need_int(d, f"{where}: shape"))
        shape = tuple(dims)
    return ValueInfo(name, dtype, shape)


def decode_attr(a: Any, tensor: TensorSource, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise FormatProblem(f"{where}: nests deeper than {MAX_DEPTH}")
    a = need_obj(a, where)
    kind, v = a.get("type"), a.get("value")
    if kind == "none":
        return None
    if kind == "bool":
        return need_bool(v, where)
    if kind == "int":
        return need_int(v, where)
    if kind == "float":
        return decode_float(v, where)
    if kind == "string":
        return need_str(v, where)
    if kind == "tensor":
        return tensor(v, where)
    if kind == "graph":
        return decode_graph(v, tensor, f"{where} graph", depth + 1)
    if kind == "type_proto":
        return _type_proto(v, where)
    items = need_list(v, where) if kind in ("ints", "floats", "strings", "tensors", "graphs", "list") else None
    if kind == "ints":
        return [need_int(x, where) for x in items]
    if kind == "floats":
        return [decode_float(x, where) for x in items]
    if kind == "strings":
        return [need_str(x, where) for x in items]
    if kind == "tensors":
        return [tensor(x, f"{where}[{i}]") for i, x in enumerate(items)]
    if kind == "graphs":
        return [decode_graph(x, tensor, f"{where}[{i}] graph", depth + 1) for i, x in enumerate(items)]
    if kind == "list":
        return [decode_attr(x, tensor, f"{where}[{i}]", depth + 1) for i, x in enumerate(items)]
    raise FormatProblem(f"{where}: unknown attribute type {show_value(kind)}")


def _type_proto(v: Any, where: str) -> Any:
    """An ONNX TypeProto (the `type` of an Optional node), kept as its protobuf bytes in base64."""
    try:
        raw = base64.b64decode(need_str(v, where), validate=True)
    except binascii.Error:
        raise FormatProblem(f"{where}: a TypeProto attribute that is not valid base64") from None
    try:
        import onnx
    except ImportError:
        raise FormatProblem(f"{where}: an ONNX TypeProto attribute needs the onnx package to be read") from None
    try:
        return onnx.TypeProto.FromString(raw)
    except Exception as e:  # protobuf's DecodeError
        raise FormatProblem(f"{where}: a TypeProto attribute that does not parse ({type(e).__name__})") from None

"""ONNX -> sporeling Graph. Uses the `onnx` package (the [onnx] extra) to parse the protobuf.

Constant nodes become initializers; attributes become Python values (ints, floats, str, lists,
NumPy arrays, nested Graphs); external tensor data is read relative to the model's folder; the
model's metadata_props, producer and doc string are kept in Graph.metadata.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from ..ir import Graph, Node, ValueInfo
from ._extras import import_extra


def _onnx():
    return import_extra("onnx", "onnx", "reading .onnx files")


def load_onnx(path: str | os.PathLike) -> Graph:
    onnx = _onnx()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path}: is a directory, not a model file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({type(e).__name__}: {str(e)[:120]})") from e
    if not model.HasField("graph"):
        raise ModelLoadError(f"{path}: not a valid ONNX model (no graph)")
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot read external tensor data ({type(e).__name__}: {e})") from e
    return from_model_proto(model, source=path, owned=True)


def _inferred_value_info(model, owned: bool) -> dict[str, ValueInfo]:
    """ONNX's own shape inference, for the value_info the fusion passes read; a model it cannot
    handle gets none (our runtime infers shapes again at prepare time). Inference serialises the
    whole model, weights included, though it needs only their dims: large weights are left out
    while it runs (a 54 MB model: 430 ms down to ~25 ms). When the proto is ours (read from a file,
    already converted), their bytes are simply dropped; a caller's proto gets them back."""
    import onnx

    aside = []
    for init in model.graph.initializer:
        if init.ByteSize() > _KEEP_FOR_INFERENCE and init.HasField("raw_data"):
            aside.append((init, None if owned else init.raw_data))
            init.ClearField("raw_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        return {vi.name: _value_info(vi) for vi in inferred.graph.value_info}
    except Exception:
        return {}
    finally:
        for init, data in aside:
            if data is not None:
                init.raw_data = data


_KEEP_FOR_INFERENCE = 4096  # bytes: shape tensors and scalars stay, for ONNX's data propagation


def from_model_proto(model, source: str = "model", owned: bool = False) -> Graph:
    """Converts a ModelProto. With owned=True the proto may be changed (its weights' bytes dropped
    once converted): for a proto read just for this."""
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in model.opset_import}
    opsets.setdefault("", 1)
    try:
        graph = _convert_graph(model.graph, source)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{source}: cannot convert the ONNX graph ({type(e).__name__}: {e})") from e
    for name, info in _inferred_value_info(model, owned).items():
        graph.value_info.setdefault(name, info)
    graph.opsets = opsets
    graph.metadata = {p.key: p.value for p in model.metadata_props}
    for key in ("producer_name", "producer_version", "domain", "doc_string"):
        value = getattr(model, key, "")
        if value:
            graph.metadata.setdefault(f"onnx.{key}", value)
    graph.metadata.setdefault("onnx.ir_version", str(model.ir_version))
    return graph


def _dtype(elem_type: int):
    onnx = _onnx()
    if elem_type == 0:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def _value_info(vi) -> ValueInfo:
    t = vi.type
    if t.HasField("tensor_type"):
        tt = t.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
            )
        return ValueInfo(vi.name, _dtype(tt.elem_type), shape)
    return ValueInfo(vi.name, None, None)  # sequences, maps, optionals


def to_array(tensor) -> np.ndarray:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    return np.asarray(arr, order="C")  # (ascontiguousarray would turn a 0-d scalar into shape (1,))


def _attr_value(attr, source: str) -> Any:
    onnx = _onnx()
    A = onnx.AttributeProto
    t = attr.type
    if t == A.FLOAT:
        return float(attr.f)
    if t == A.INT:
        return int(attr.i)
    if t == A.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if t == A.TENSOR:
        return to_array(attr.t)
    if t == A.GRAPH:
        return _convert_graph(attr.g, source)
    if t == A.FLOATS:
        return [float(x) for x in attr.floats]
    if t == A.INTS:
        return [int(x) for x in attr.ints]
    if t == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in attr.strings]
    if t == A.TENSORS:
        return [to_array(x) for x in attr.tensors]
    if t == A.GRAPHS:
        return [_convert_graph(g, source) for g in attr.graphs]
    if t == A.SPARSE_TENSOR:
        return _sparse_to_dense(attr.sparse_tensor)
    if t == A.TYPE_PROTO:
        return attr.tp
    raise ModelLoadError(f"{source}: attribute '{attr.name}' has an unsupported type {t}")


def _sparse_to_dense(sp) -> np.ndarray:
    values = to_array(sp.values)
    idx = to_array(sp.indices)
    dense = np.zeros(int(np.prod(sp.dims)), values.dtype)
    if idx.ndim == 2:
        idx = np.ravel_multi_index(idx.T, tuple(sp.dims))
    dense[idx.reshape(-1)] = values.reshape(-1)
    return dense.reshape(tuple(sp.dims))


_CONSTANT_KEYS = {
    "value": lambda v: v,
    "value_float": lambda v: np.array(v, np.float32),
    "value_floats": lambda v: np.array(v, np.float32),
    "value_int": lambda v: np.array(v, np.int64),
    "value_ints": lambda v: np.array(v, np.int64),
    "value_string": lambda v: np.array(v, object),
    "value_strings": lambda v: np.array(v, object),
    "sparse_value": lambda v: v,
}


def _convert_graph(g, source: str) -> Graph:
    graph = Graph(name=g.name or "graph")
    for init in g.initializer:
        graph.initializers[init.name] = to_array(init)
    for sp in g.sparse_initializer:
        graph.initializers[sp.values.name] = _sparse_to_dense(sp)
    graph.inputs = [_value_info(v) for v in g.input]
    graph.outputs = [_value_info(v) for v in g.output]
    graph.value_info = {v.name: _value_info(v) for v in g.value_info}
    for k, n in enumerate(g.node):
        attrs = {a.name: _attr_value(a, source) for a in n.attribute}
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(attrs) == 1:
            key, value = next(iter(attrs.items()))
            if key in _CONSTANT_KEYS:
                graph.initializers[n.output[0]] = np.asarray(_CONSTANT_KEYS[key](value), order="C")
                continue
        if n.op_type == "Split" and "num_outputs" not in attrs and "split" not in attrs and len(n.input) < 2:
            attrs["num_outputs"] = len(n.output)  # an equal split before opset 18 counts the node's outputs
        graph.nodes.append(
            Node(n.op_type, list(n.input), list(n.output), attrs, n.name or f"{n.op_type}_{k}", n.domain)
        )
    return graph

"""sporeling Graph -> ONNX, so a converted model opens in the tools people know (Netron) and runs in
onnxruntime with the same results. Uses the `onnx` package (the [onnx] extra), imported lazily.

Everything of the IR is written: nodes with attributes of every type (typed by the ONNX schema of the
op where there is one, since a Python list does not say whether it holds ints or floats), If/Loop/Scan
bodies, inputs, outputs and value_info with dtypes and symbolic dimensions, initializers of every
dtype, opsets and metadata (Graph.metadata -> metadata_props; the importer's onnx.domain and
onnx.doc_string go back to the model's own fields, its record of the file it read is dropped: the
producer is sporeling now). Our ai.sporeling ops, and standard ops newer than the model's opset, are
rewritten through the tables of onnx_expand; a node of our domain with no entry there is an error
naming it, as is a file past protobuf's 2 GiB (external data is not written).

The model is written at the graph's own opset; `opset=` asks for another, which onnx's version
converter then produces. The Graph is never changed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import SporelingError
from ..ir import Graph, Node, ValueInfo, unique_name, verify
from ._extras import import_extra
from .onnx_expand import EXPANDED_DOMAINS, EXPANSIONS, LOWERINGS

PROTOBUF_LIMIT = 2**31 - 1
# ONNX's own data types that need a newer IR than the opsets alone ask for (float8, int4, float4, ...)
_IR_FOR_DTYPE = {17: 9, 18: 9, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11}
# metadata the importer took from the model's fields: put back there, not into metadata_props
_MODEL_FIELDS = {"onnx.domain": "domain", "onnx.doc_string": "doc_string"}
# the importer's record of the file it read, which the file written replaces
_DROPPED_METADATA = {"onnx.ir_version", "onnx.producer_name", "onnx.producer_version"}


def _onnx():
    return import_extra("onnx", "onnx", "exporting to ONNX", SporelingError)


def export_onnx(graph: Graph, path: str | os.PathLike) -> None:
    """Writes `graph` (or a Model's graph) to an .onnx file, atomically."""
    from ..tools import atomic_write

    path = os.fspath(path)
    graph = getattr(graph, "graph", graph)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SporelingError(f"{path}: cannot write the ONNX model: folder {folder} does not exist")
    model = to_model_proto(graph)
    size = model.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise SporelingError(f"{path}: the ONNX model would be {size / 2**30:.2f} GiB; files over 2 GiB need "
                             "external tensor data, which sporeling's exporter does not write")
    data = model.SerializeToString()
    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as e:
        raise SporelingError(f"{path}: cannot write the ONNX model ({e.strerror or e})") from e


def to_model_proto(graph: Graph, *, opset: int | None = None):
    """The graph as an onnx.ModelProto in standard ONNX (plus whatever other domains it used)."""
    onnx = _onnx()
    from .. import __version__

    verify(graph)
    weights = sum(int(a.nbytes) for a in graph.all_initializers())
    if weights > PROTOBUF_LIMIT:
        raise SporelingError(f"graph '{graph.name}': {weights / 2**30:.2f} GiB of weights; ONNX files over 2 GiB "
                             "need external tensor data, which sporeling's exporter does not write")
    opsets = dict(graph.opsets)
    _merge_sub_opsets(graph, opsets)
    base = graph.opset
    writer = _Writer(onnx, graph, base, opsets)
    gproto = writer.graph(graph, None)
    if writer.missing:
        raise SporelingError(f"graph '{graph.name}' cannot be exported to ONNX: " + "; ".join(writer.missing))
    used = writer.domains
    opset_import = [onnx.helper.make_opsetid("", base)]
    for domain, version in sorted(opsets.items()):
        if domain in ("", "ai.onnx") or (domain in EXPANDED_DOMAINS and domain not in used):
            continue
        opset_import.append(onnx.helper.make_opsetid(domain, int(version)))
    opset_import += [onnx.helper.make_opsetid(d, 1) for d in sorted(used - set(opsets) - {""})]
    ir = max([onnx.helper.find_min_ir_version_for(opset_import, True), 4]
             + [_IR_FOR_DTYPE.get(t, onnx.IR_VERSION if t > 23 else 4) for t in writer.tensor_types])
    model = onnx.helper.make_model(gproto, opset_imports=opset_import, producer_name="sporeling",
                                   producer_version=__version__, ir_version=min(ir, onnx.IR_VERSION))
    props = {}
    for key, value in graph.metadata.items():
        if key in _MODEL_FIELDS:
            setattr(model, _MODEL_FIELDS[key], str(value))
        elif key not in _DROPPED_METADATA:
            props[str(key)] = str(value)
    onnx.helper.set_model_props(model, props)
    if opset is not None and opset != base:
        try:
            model = onnx.version_converter.convert_version(model, int(opset))
        except Exception as e:
            raise SporelingError(f"graph '{graph.name}': cannot convert from opset {base} to {opset} "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return model


def _merge_sub_opsets(graph: Graph, opsets: dict[str, int]) -> None:
    for n in graph.nodes:
        for g in n.subgraphs():
            for domain, version in g.opsets.items():
                opsets.setdefault(domain, version)
            _merge_sub_opsets(g, opsets)


def _all_names(graph: Graph, names: set[str]) -> set[str]:
    names.update(v.name for v in graph.inputs + graph.outputs)
    names.update(graph.initializers)
    names.update(graph.value_info)
    for n in graph.nodes:
        names.update(n.inputs)
        names.update(n.outputs)
        names.add(n.name)
        for g in n.subgraphs():
            _all_names(g, names)
    return names


class ExportContext:
    """What the tables of onnx_expand may ask while rewriting one node of one (sub)graph."""

    def __init__(self, writer: _Writer, graph: Graph, parent: ExportContext | None):
        self.writer, self.graph, self.parent = writer, graph, parent
        self.opset = writer.opset
        self.extra_initializers: dict[str, np.ndarray] = {}
        self.pending: list[Node] = []  # CastLike nodes that constants of an unknown dtype need first
        self._consts: dict[tuple, str] = {}
        self._io = {v.name: v for v in graph.inputs + graph.outputs}

    def fresh(self, base: str) -> str:
        return self.writer.fresh(base)

    def _info(self, name: str) -> tuple[Any, tuple | None] | None:
        g = self.graph
        if name in g.initializers:
            a = g.initializers[name]
            return a.dtype, a.shape
        v = g.value_info.get(name) or self._io.get(name)
        if v is not None and v.dtype is not None:
            return v.dtype, v.shape
        return self.parent._info(name) if self.parent is not None else None

    def dtype(self, name: str) -> np.dtype | None:
        info = self._info(name) if name else None
        return None if info is None else np.dtype(info[0])

    def rank(self, name: str) -> int | None:
        info = self._info(name)
        return None if info is None or info[1] is None else len(info[1])

    def const(self, value: float, like: str, also: tuple[str, ...] = ()) -> str:
        """A scalar initializer holding `value` in the dtype of `like` (or of a name in `also`). When none
        has a recorded dtype: from opset 15 on (CastLike), a float64 scalar cast like `like`, which must
        be computed before the node being rewritten; before that float32 is assumed."""
        dtype = next((d for d in map(self.dtype, (like, *also)) if d is not None), None)
        key = (float(value), like if dtype is None else dtype.str)
        if key in self._consts:
            return self._consts[key]
        name = self.fresh(f"const_{value:g}")
        cast = dtype is None and self.opset >= 15
        # float64 before a cast rounds once, to the dtype it is cast to
        self.extra_initializers[name] = np.array(value, dtype if dtype is not None else np.float64 if cast
                                                 else np.float32)
        if cast:
            cast = self.fresh(f"{name}.like_{like}")
            self.pending.append(Node("CastLike", [name, like], [cast], {}, cast))
            name = cast
        self._consts[key] = name
        return name


class _Writer:
    def __init__(self, onnx, graph: Graph, opset: int, opsets: dict[str, int]):
        self.onnx, self.opset, self.opsets = onnx, opset, opsets
        self.names = _all_names(graph, set())
        self.missing: list[str] = []
        self.domains: set[str] = set()
        self.tensor_types: set[int] = set()

    def fresh(self, base: str) -> str:
        return unique_name(base, self.names)

    def graph(self, g: Graph, parent: ExportContext | None):
        helper = self.onnx.helper
        ctx = ExportContext(self, g, parent)
        nodes = []
        for n in g.nodes:
            nodes += self._emit(n, ctx, 0)
        produced = {o for n in nodes for o in n.output if o}
        io = {v.name for v in g.inputs + g.outputs} | set(g.initializers)
        inits = dict(g.initializers, **ctx.extra_initializers)
        return helper.make_graph(
            nodes, g.name or "graph",
            [self.value_info(v) for v in g.inputs], [self.value_info(v) for v in g.outputs],
            initializer=[self.tensor(a, k) for k, a in inits.items()],
            value_info=[self.value_info(v) for k, v in g.value_info.items() if k in produced and k not in io])

    def _emit(self, n: Node, ctx: ExportContext, depth: int) -> list:
        """NodeProtos for n, through the rewrite tables until only ops of the opset remain."""
        domain = "" if n.domain in ("", "ai.onnx") else n.domain
        rewrite = None
        if domain == "" and not self.onnx.defs.has(n.op_type, self.opset, ""):
            rewrite = LOWERINGS.get(n.op_type)
            if rewrite is None:
                self.missing.append(f"{n.label()}: {n.op_type} is not in ONNX opset {self.opset}")
                return []
        elif domain:
            rewrite = EXPANSIONS.get((domain, n.op_type))
            if rewrite is None and domain in EXPANDED_DOMAINS:
                self.missing.append(f"{n.label()}: {domain} op {n.op_type} has no ONNX expansion")
                return []
        if rewrite is None:
            return [self.node(n, ctx)]
        if depth > 8:  # pragma: no cover - a table entry that rewrites into itself
            raise SporelingError(f"cannot export {n.label()}: its ONNX expansion does not terminate")
        replaced = rewrite(n, ctx)
        replaced, ctx.pending = ctx.pending + replaced, []
        return [p for m in replaced for p in self._emit(m, ctx, depth + 1)]

    def node(self, n: Node, ctx: ExportContext):
        domain = "" if n.domain in ("", "ai.onnx") else n.domain
        self.domains.add(domain)
        types = {}
        version = self.opset if not domain else int(self.opsets.get(domain, 1))
        if self.onnx.defs.has(n.op_type, version, domain):
            schema = self.onnx.defs.get_schema(n.op_type, version, domain)
            types = {k: a.type.name for k, a in schema.attributes.items()}
        attrs = []
        for key, value in n.attrs.items():
            # the importer records facts as attributes ONNX's schema lacks (Split's output count before
            # opset 18); a checker and onnxruntime reject those, and the node means the same without
            if value is None or (types and key not in types):
                continue
            attrs.append(self.attribute(key, value, types.get(key), ctx))
        proto = self.onnx.helper.make_node(n.op_type, list(n.inputs), list(n.outputs), name=n.name or None,
                                           domain=domain or None)
        proto.attribute.extend(attrs)
        return proto

    def attribute(self, key: str, value: Any, kind: str | None, ctx: ExportContext):
        A = self.onnx.AttributeProto
        kind = kind or _kind_of(value)
        try:
            if kind == "GRAPH":
                return self.onnx.helper.make_attribute(key, self.graph(value, ctx))
            if kind == "GRAPHS":
                return self.onnx.helper.make_attribute(key, [self.graph(g, ctx) for g in value], attr_type=A.GRAPHS)
            if kind == "TENSOR":
                return self.onnx.helper.make_attribute(key, self.tensor(np.asarray(value), ""))
            if kind == "TENSORS":
                return self.onnx.helper.make_attribute(key, [self.tensor(np.asarray(t), "") for t in value],
                                                       attr_type=A.TENSORS)
            convert = _SCALARS.get(kind)
            if convert is not None:
                return self.onnx.helper.make_attribute(key, convert(value), attr_type=getattr(A, kind))
            items = _SCALARS[kind[:-1]] if kind in ("INTS", "FLOATS", "STRINGS") else None
            if items is not None:
                return self.onnx.helper.make_attribute(key, [items(v) for v in np.asarray(value).reshape(-1)]
                                                       if isinstance(value, np.ndarray) else [items(v) for v in value],
                                                       attr_type=getattr(A, kind))
            return self.onnx.helper.make_attribute(key, value)  # TYPE_PROTO(S) as the importer kept them
        except (TypeError, ValueError) as e:
            raise SporelingError(f"attribute '{key}' = {str(value)[:60]} cannot be written as ONNX {kind} ({e})") from e

    def tensor(self, a: np.ndarray, name: str):
        from onnx import numpy_helper

        if a.dtype.kind in "OUS":  # strings; from_array wants them as an object array
            a = a.astype(object)
        t = numpy_helper.from_array(np.asarray(a), name)
        self.tensor_types.add(t.data_type)
        return t

    def value_info(self, v: ValueInfo):
        helper = self.onnx.helper
        if v.dtype is None and v.shape is None:
            return self.onnx.ValueInfoProto(name=v.name)  # a sequence, map or unknown type
        elem = 0 if v.dtype is None else _elem_type(self.onnx, v.dtype)
        shape = None if v.shape is None else [d if isinstance(d, str) or d is None or d >= 0 else None
                                              for d in v.shape]
        return helper.make_tensor_value_info(v.name, elem, shape)


def _elem_type(onnx, dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return onnx.TensorProto.STRING
    return onnx.helper.np_dtype_to_tensor_dtype(dtype)


def _text(v) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode("utf-8")


_SCALARS = {"INT": lambda v: int(v), "FLOAT": lambda v: float(v), "STRING": _text}


def _kind_of(value: Any) -> str:
    """The ONNX attribute type of a value whose op has no schema (another domain)."""
    if isinstance(value, Graph):
        return "GRAPH"
    if isinstance(value, np.ndarray):
        return "TENSOR"
    if isinstance(value, (bool, int, np.integer)):
        return "INT"
    if isinstance(value, (float, np.floating)):
        return "FLOAT"
    if isinstance(value, (str, bytes)):
        return "STRING"
    if isinstance(value, (list, tuple)):
        kinds = {_kind_of(v) for v in value}
        if kinds <= {"INT", "FLOAT"} and kinds:
            return "FLOATS" if "FLOAT" in kinds else "INTS"
        if len(kinds) == 1 and next(iter(kinds)) in ("GRAPH", "TENSOR", "STRING"):
            return next(iter(kinds)) + "S"
        return "INTS" if not value else "OTHER"
    return "OTHER"

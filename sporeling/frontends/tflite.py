"""TFLite -> sporeling Graph. Uses the `tflite` package (the [tflite] extra: the FlatBuffers schema that
TensorFlow publishes, generated for Python) to read the file; nothing here decodes FlatBuffers by hand.

Subgraph 0 (the main one) becomes the Graph; control flow (WHILE, IF, CALL_ONCE bodies in other
subgraphs) is refused with the other unsupported ops. Its inputs and outputs keep their TFLite names,
NHWC layout and dtypes (a -1 in the shape signature becomes a free dimension), so a model is fed the
same arrays as LiteRT. Each operator becomes standard ONNX nodes (opset 20) through the tables in
tflite_ops.py and tflite_ops_tensor.py, which see it through an OpContext (tflite_context.py).
Layout-sensitive ops (convolutions, pools, resizes) run in NCHW between Transpose(0,3,1,2) and
Transpose(0,2,3,1), which the layout pass cancels; their weights are laid out for the NCHW op here.

Constants that a DEQUANTIZE turns into float weights (fp16 weights in mediapipe's models, int8
weights) are not expanded: the graph keeps the small initializer, already laid out, followed by a
Cast or DequantizeLinear, which the Session folds at prepare. Quantized tensors follow the usual
fake-quantized reading: an op reads DequantizeLinear(input), computes in float, and its quantized
output is QuantizeLinear(result) with the output tensor's scale and zero point (per channel where
the tensor says so). Ops that only move data keep the integers when every scale agrees.

Hostile files: the identifier is checked, every vector length and buffer range is bounded by the
file's size, and anything the schema reader raises on garbage becomes a ModelLoadError naming the
file. Ops without a mapping are reported all at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import GraphError, ModelLoadError, SporelingError, UnsupportedOpError
from ..ir import Graph, Node, ValueInfo, unique_name, verify
from ..tools import read_bytes
from ._extras import import_extra
from .tflite_context import ONNX_TYPES, OpContext, Unsupported

OPSET = 20  # Gelu (20), axes as inputs of the reductions (18)
MAX_TENSOR_BYTES = 1 << 34  # a declared tensor larger than 16 GiB is a corrupt file, not a model

TENSOR_TYPES = {
    0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16, 9: np.int8,
    10: np.float64, 12: np.uint64, 15: np.uint32, 16: np.uint16,
}
CONTROL_FLOW = {"WHILE", "IF", "CALL", "CALL_ONCE", "STABLEHLO_WHILE", "STABLEHLO_CASE"}


def _schema():
    return import_extra("tflite.utils", "tflite", "reading .tflite files")


def load_tflite(path: str | os.PathLike) -> Graph:
    """Reads a .tflite file into a Graph (no passes run)."""
    path = os.fspath(path)
    return from_buffer(read_bytes(path, ModelLoadError, "model file"), source=path)


def from_buffer(data: bytes, source: str = "model") -> Graph:
    """Converts the bytes of a .tflite file; `source` names it in errors."""
    tfl = _schema()
    data = bytes(data)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelLoadError(f"{source}: not a TFLite model (no 'TFL3' file identifier)")
    try:
        return _Importer(tfl, data, source).run()
    except SporelingError:
        raise
    except Exception as e:  # what the schema reader raises on garbage: struct.error, IndexError, ...
        raise ModelLoadError(f"{source}: not a valid TFLite model ({type(e).__name__}: {str(e)[:160]})") from e


@dataclass
class Quant:
    scale: np.ndarray  # float32, one per channel (or one)
    zero_point: np.ndarray  # of the tensor's dtype, same length as scale
    axis: int

    def same(self, other: Quant | None) -> bool:
        return (other is not None and self.scale.shape == other.scale.shape and self.axis == other.axis
                and np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point))


@dataclass
class Tensor:
    index: int
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # static, as LiteRT allocates it
    signature: tuple[int, ...]  # -1 where the dimension is dynamic
    quant: Quant | None
    data: np.ndarray | None  # constant value


class _Importer:
    def __init__(self, tfl, data: bytes, source: str):
        self.tfl, self.data, self.source = tfl, data, source
        self.graph = Graph(opsets={"": OPSET}, name=os.path.splitext(os.path.basename(source))[0] or "graph")
        self.used: set[str] = set()
        self.cache: dict[tuple, str] = {}  # (kind, key...) -> value name
        self.deferred: dict[int, int] = {}  # DEQUANTIZE output -> the constant it reads
        self.n_nodes = 0

    def bounded(self, n: int, elem_bytes: int, what: str) -> int:
        if n < 0 or n * elem_bytes > len(self.data):
            raise ModelLoadError(f"{self.source}: {what} declares {n} entries, more than the file holds")
        return n

    # ---- reading ------------------------------------------------------------------------------
    def run(self) -> Graph:
        tfl = self.tfl
        model = tfl.Model.GetRootAs(self.data, 0)
        if self.bounded(model.SubgraphsLength(), 4, "the model's subgraph list") == 0:
            raise ModelLoadError(f"{self.source}: the model has no subgraph")
        sg = model.Subgraphs(0)
        codes = self._opcodes(model)
        self.tensors = [self._tensor(model, sg.Tensors(i), i)
                        for i in range(self.bounded(sg.TensorsLength(), 4, "subgraph 0's tensor list"))]
        ops = []
        for k in range(self.bounded(sg.OperatorsLength(), 4, "subgraph 0's operator list")):
            op = sg.Operators(k)
            idx = op.OpcodeIndex()
            if not 0 <= idx < len(codes):
                raise ModelLoadError(f"{self.source}: operator {k} uses operator code {idx}, which does not exist")
            ops.append((k, codes[idx], op))
        self._check_supported(ops)
        inputs = self._indices(sg.InputsAsNumpy(), "subgraph input")
        outputs = self._indices(sg.OutputsAsNumpy(), "subgraph output")
        for t in (self.tensors[i] for i in inputs):
            self.graph.inputs.append(ValueInfo(t.name, t.dtype, _dims(t.signature)))
        for t in self.tensors:
            self.graph.value_info[t.name] = ValueInfo(t.name, t.dtype, _dims(t.signature))
        for k, name, op in ops:  # constant weights behind DEQUANTIZE stay small until an op asks for them
            if name == "DEQUANTIZE" and op.InputsLength() == 1 and op.OutputsLength() == 1:
                src, dst = int(op.Inputs(0)), int(op.Outputs(0))
                if 0 <= src < len(self.tensors) and 0 <= dst < len(self.tensors) and self.tensors[src].data is not None:
                    self.deferred[dst] = src
        from .tflite_ops import BUILTINS, CUSTOM

        problems = []
        for k, name, op in ops:
            if name == "DEQUANTIZE" and op.OutputsLength() == 1 and int(op.Outputs(0)) in self.deferred:
                continue
            ctx = OpContext(self, k, name, op)
            try:
                (CUSTOM if name.startswith("custom:") else BUILTINS)[name.removeprefix("custom:")](ctx)
                ctx.finish()
            except Unsupported as e:
                problems.append(f"operator {k} ({name}, output '{ctx.base}'): {e}")
            except SporelingError:
                raise
            except Exception as e:
                raise ModelLoadError(f"{self.source}: operator {k} ({name}, output '{ctx.base}') cannot be read: "
                                     f"{type(e).__name__}: {str(e)[:160]}") from e
        if problems:
            raise ModelLoadError(f"{self.source}: {len(problems)} operator(s) cannot be converted: "
                                 + "; ".join(problems[:20]))
        for t in (self.tensors[i] for i in outputs):
            name = self.value(t.index) if t.index in self.deferred else self.raw(t.index)
            if name != t.name:
                self.node("Identity", [name], [t.name])
            self.graph.outputs.append(ValueInfo(t.name, t.dtype, _dims(t.signature)))
        self.graph.metadata = _metadata(self, model)
        try:
            verify(self.graph)
        except GraphError as e:
            raise ModelLoadError(f"{self.source}: the operators do not form a valid graph: {e}") from e
        return self.graph

    def _opcodes(self, model) -> list[str]:
        names = self.tfl.utils.BUILTIN_OPCODE2NAME
        codes = []
        for i in range(self.bounded(model.OperatorCodesLength(), 4, "the operator code list")):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == 32:  # CUSTOM
                codes.append("custom:" + (oc.CustomCode() or b"").decode("utf-8", "replace"))
            else:
                codes.append(names.get(code, f"BUILTIN_{code}"))
        return codes

    def _check_supported(self, ops) -> None:
        from .tflite_ops import BUILTINS, CUSTOM

        missing: dict[str, int] = {}
        for _, name, _ in ops:
            known = name.removeprefix("custom:") in CUSTOM if name.startswith("custom:") else name in BUILTINS
            if not known:
                missing[name] = missing.get(name, 0) + 1
        if missing:
            listed = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in sorted(missing.items()))
            note = ""
            if CONTROL_FLOW & set(missing):
                note = " (control flow: only subgraph 0 is imported, and WHILE/IF/CALL bodies are not)"
            raise UnsupportedOpError(f"{self.source}: unsupported TFLite ops ({len(missing)}): {listed}{note}")

    def _indices(self, arr, what: str) -> list[int]:
        idx = [] if isinstance(arr, int) else [int(i) for i in arr]
        for i in idx:
            if not 0 <= i < len(self.tensors):
                raise ModelLoadError(f"{self.source}: {what} refers to tensor {i}, which does not exist")
        return idx

    def _tensor(self, model, t, i: int) -> Tensor:
        raw_name = (t.Name() or b"").decode("utf-8", "replace")
        name = self.fresh(raw_name or f"tensor_{i}")
        ttype = t.Type()
        if ttype not in TENSOR_TYPES:
            raise ModelLoadError(f"{self.source}: tensor '{name}' has type {ttype}, which sporeling does not read")
        if t.Sparsity() is not None:
            raise ModelLoadError(f"{self.source}: tensor '{name}' is sparse; sparse tensors are not supported")
        dtype = np.dtype(TENSOR_TYPES[ttype])
        shape = tuple(int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else []))
        sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        if len(sig) != len(shape):
            sig = shape
        if any(d < 0 for d in shape) or np.prod(shape, dtype=np.float64) * dtype.itemsize > MAX_TENSOR_BYTES:
            raise ModelLoadError(f"{self.source}: tensor '{name}' declares the shape {list(shape)}")
        data = self._buffer(model, t.Buffer(), name, dtype, shape)
        return Tensor(i, name, dtype, shape, sig, self._quant(t, name, dtype, shape), data)

    def _buffer(self, model, b: int, name: str, dtype: np.dtype, shape) -> np.ndarray | None:
        if b == 0:
            return None  # buffer 0 is the empty sentinel
        if not 0 < b < self.bounded(model.BuffersLength(), 4, "the buffer list"):
            raise ModelLoadError(f"{self.source}: tensor '{name}' refers to buffer {b}, which does not exist")
        buf = model.Buffers(b)
        off, size = buf.Offset(), buf.Size()
        if off > 1:  # data stored after the FlatBuffer (models over 2 GB)
            if off + size > len(self.data):
                raise ModelLoadError(f"{self.source}: tensor '{name}': its data ({size} bytes at {off}) lies past "
                                     f"the end of the file ({len(self.data)} bytes)")
            raw = np.frombuffer(self.data, np.uint8, size, off)
        else:
            raw = buf.DataAsNumpy() if buf.DataLength() else None
            if raw is None or isinstance(raw, int):
                return None
        if dtype == object:
            raise ModelLoadError(f"{self.source}: tensor '{name}' is a constant string tensor (not supported)")
        want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if raw.size != want:
            raise ModelLoadError(f"{self.source}: tensor '{name}' of shape {list(shape)} and type {dtype} needs "
                                 f"{want} bytes but its buffer holds {raw.size}")
        return raw.view(dtype.newbyteorder("<")).astype(dtype).reshape(shape)  # an aligned, native copy

    def _quant(self, t, name: str, dtype: np.dtype, shape) -> Quant | None:
        q = t.Quantization()
        if q is None or q.ScaleLength() == 0 or dtype.kind not in "iu":
            return None
        if q.DetailsType() != 0:
            raise ModelLoadError(f"{self.source}: tensor '{name}' uses custom quantization (not supported)")
        scale = np.asarray(q.ScaleAsNumpy(), np.float32).reshape(-1)
        zp = np.asarray(q.ZeroPointAsNumpy(), np.int64).reshape(-1) if q.ZeroPointLength() else np.zeros(1, np.int64)
        axis = int(q.QuantizedDimension())
        if scale.size > 1 and not (0 <= axis < len(shape) and shape[axis] == scale.size):
            raise ModelLoadError(f"{self.source}: tensor '{name}' has {scale.size} scales along axis {axis} of "
                                 f"shape {list(shape)}")
        if zp.size not in (1, scale.size):
            raise ModelLoadError(f"{self.source}: tensor '{name}' has {zp.size} zero points for {scale.size} scales")
        if scale.size == 1:
            return Quant(scale.reshape(()), zp[:1].reshape(()).astype(dtype), 0)
        return Quant(scale, np.broadcast_to(zp, scale.shape).astype(dtype), axis)

    # ---- building ------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        return unique_name(hint, self.used, "#")

    def node(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.n_nodes += 1
        self.graph.nodes.append(Node(op_type, list(inputs), list(outputs), attrs, f"{op_type}_{self.n_nodes}"))

    def init(self, arr: np.ndarray, hint: str) -> str:
        arr = np.asarray(arr, order="C")
        small = arr.size <= 16
        key = ("init", arr.dtype.str, arr.shape, arr.tobytes()) if small else None
        if key is not None and key in self.cache:
            return self.cache[key]
        name = self.fresh(hint)
        self.graph.initializers[name] = arr
        if key is not None:
            self.cache[key] = name
        return name

    def quant_params(self, t: Tensor, perm: tuple[int, ...] | None = None) -> tuple[str, str, int]:
        """Initializer names of t's scale and zero point, and the axis they apply along (after perm)."""
        key = ("qparams", t.index)
        if key not in self.cache:
            s = self.init(t.quant.scale, t.name + "::scale")
            z = self.init(t.quant.zero_point, t.name + "::zero_point")
            self.cache[key] = (s, z)
        s, z = self.cache[key]
        axis = t.quant.axis if perm is None else list(perm).index(t.quant.axis)
        return s, z, axis

    def raw(self, tid: int) -> str:
        """The tensor's name as stored (integers stay integers); constants become initializers."""
        t = self.tensors[tid]
        if t.data is not None and ("raw", tid) not in self.cache:
            self.graph.initializers[t.name] = t.data
            self.cache[("raw", tid)] = t.name
        return t.name

    def value(self, tid: int, perm: tuple[int, ...] | None = None) -> str:
        """The tensor as float when it is quantized (as stored otherwise), transposed by perm. Constants
        are laid out here; a constant read through DEQUANTIZE keeps its small type in the graph."""
        key = ("value", tid, perm)
        if key in self.cache:
            return self.cache[key]
        t = self.tensors[tid]
        src = self.tensors[self.deferred[tid]] if tid in self.deferred else t
        suffix = "" if perm is None else "::" + "".join(map(str, perm))
        if src.data is not None:
            arr = src.data if perm is None else np.ascontiguousarray(src.data.transpose(perm))
            own = t.name if perm is None else self.fresh(t.name + suffix)  # DEQUANTIZE's output: no one else writes it
            if src is not t and src.dtype == np.float16 and t.dtype != np.float16:
                name = own
                self.node("Cast", [self.init(arr, src.name + suffix)], [name], to=ONNX_TYPES[t.dtype])
            elif src.quant is not None:
                name = own if src is not t else self.fresh(t.name + "::dq" + suffix)
                s, z, axis = self.quant_params(src, perm)
                self.node("DequantizeLinear", [self.init(arr, src.name + suffix), s, z], [name], axis=axis)
            elif src is not t:
                name = own
                self.node("Cast", [self.init(arr, src.name + suffix)], [name], to=ONNX_TYPES[t.dtype])
            elif perm is None:
                name = self.raw(tid)
            else:
                name = self.init(arr, t.name + suffix)
        else:
            name = t.name
            if t.quant is not None:
                name = self.fresh(t.name + "::dq")
                s, z, axis = self.quant_params(t)
                self.node("DequantizeLinear", [t.name, s, z], [name], axis=axis)
            if perm is not None:
                moved = self.fresh(t.name + suffix)
                self.node("Transpose", [name], [moved], perm=list(perm))
                name = moved
        self.cache[key] = name
        return name

    def constant(self, tid: int) -> np.ndarray | None:
        t = self.tensors[tid]
        src = self.tensors[self.deferred[tid]] if tid in self.deferred else t
        if src.data is None:
            return None
        if src.quant is not None:
            scale = src.quant.scale if src.quant.scale.ndim == 0 else _along(src.quant.scale, src.data.ndim,
                                                                            src.quant.axis)
            zp = src.quant.zero_point if src.quant.scale.ndim == 0 else _along(src.quant.zero_point, src.data.ndim,
                                                                              src.quant.axis)
            return ((src.data.astype(np.float64) - zp) * scale).astype(np.float32)
        return src.data.astype(t.dtype, copy=False)


def _along(v: np.ndarray, rank: int, axis: int) -> np.ndarray:
    shape = [1] * rank
    shape[axis] = v.size
    return v.reshape(shape)


def _dims(sig) -> tuple:
    return tuple(d if d >= 0 else None for d in sig)


# ---- metadata ------------------------------------------------------------------------------------
_MODEL_METADATA_FIELDS = {4: "name", 6: "description", 8: "version", 12: "author", 14: "license",
                          18: "min_parser_version"}  # string fields of tflite_support's ModelMetadata


def _metadata(imp: _Importer, model) -> dict[str, str]:
    """The model's description, schema version and metadata entries that are text. TFLITE_METADATA
    (tflite_support's ModelMetadata FlatBuffer) contributes its string fields, read through the
    flatbuffers runtime's Table."""
    meta = {"tflite.source": os.path.basename(imp.source), "tflite.schema_version": str(model.Version())}
    if model.SubgraphsLength() > 1:  # signature or control-flow bodies; subgraph 0 is what runs
        meta["tflite.subgraphs"] = str(model.SubgraphsLength())
    desc = model.Description()
    if desc:
        meta["tflite.description"] = desc.decode("utf-8", "replace")
    for i in range(imp.bounded(model.MetadataLength(), 4, "the metadata list")):
        entry = model.Metadata(i)
        name = (entry.Name() or b"").decode("utf-8", "replace")
        b = entry.Buffer()
        if not name or not 0 < b < model.BuffersLength():
            continue
        buf = model.Buffers(b)
        raw = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
        if name == "TFLITE_METADATA" and raw[4:8] == b"M001":
            meta.update(_model_metadata(raw))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        text = text.rstrip("\0")
        if text.isprintable():
            meta[f"tflite.metadata.{name}"] = text
    for i in range(imp.bounded(model.SignatureDefsLength(), 4, "the signature list")):
        key = model.SignatureDefs(i).SignatureKey()
        if key:
            meta.setdefault("tflite.signatures", "")
            meta["tflite.signatures"] += ("," if meta["tflite.signatures"] else "") + key.decode("utf-8", "replace")
    return meta


def _model_metadata(raw: bytes) -> dict[str, str]:
    import flatbuffers
    from flatbuffers import encode, packer

    out = {}
    try:
        table = flatbuffers.table.Table(raw, encode.Get(packer.uoffset, raw, 0))
        for slot, key in _MODEL_METADATA_FIELDS.items():
            o = table.Offset(slot)
            if o:
                out[f"tflite.model.{key}"] = table.String(o + table.Pos).decode("utf-8", "replace")
    except Exception:  # metadata is informative only: a damaged block is skipped, the model still loads
        return {}
    return out

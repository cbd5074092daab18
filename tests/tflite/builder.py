"""A tiny TFLite model builder for the tests, written with the schema package's generated FlatBuffers
functions (tflite.ModelStart, tflite.OperatorStart, ...) and a flatbuffers.Builder.

    b = ModelBuilder()
    x = b.input([1, 8, 8, 3])
    w = b.const(weights)
    y = b.tensor([1, 8, 8, 4])
    b.op("CONV_2D", [x, w, -1], [y], "Conv2DOptions", Padding=0, StrideW=1, StrideH=1)
    b.output(y)
    data = b.finish()  # the bytes of a .tflite file

Option fields are the schema's names in CamelCase (the generated `<Options>Add<Field>` functions);
a list value becomes an int32 vector (SqueezeDims, NewShape).
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import tflite

# Op versions where LiteRT registers no version 1.
VERSIONS = {"BROADCAST_TO": 2}

TYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.int32): 2, np.dtype(np.uint8): 3,
         np.dtype(np.int64): 4, np.dtype(np.bool_): 6, np.dtype(np.int16): 7, np.dtype(np.int8): 9}


class ModelBuilder:
    def __init__(self, description: str = "sporeling test model"):
        self.tensors: list[dict] = []
        self.buffers: list[bytes | None] = [None]  # buffer 0: the empty sentinel
        self.ops: list[dict] = []
        self.codes: list[tuple[int, str | None, int]] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.metadata: list[tuple[str, bytes]] = []
        self.description = description
        self.buffer_ranges: dict[int, tuple[int, int]] = {}  # buffer -> (offset, size) of data outside the FlatBuffer

    def tensor(self, shape, dtype=np.float32, data=None, name=None, quant=None, signature=None) -> int:
        """quant: dict(scale=[...], zero_point=[...], axis=0)."""
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data, dtype).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append({"shape": [int(d) for d in shape], "dtype": np.dtype(dtype), "buffer": buf,
                             "name": name or f"t{len(self.tensors)}", "quant": quant, "signature": signature})
        return len(self.tensors) - 1

    def input(self, shape, dtype=np.float32, name=None, quant=None, signature=None) -> int:
        t = self.tensor(shape, dtype, name=name or f"input_{len(self.inputs)}", quant=quant, signature=signature)
        self.inputs.append(t)
        return t

    def const(self, arr, dtype=None, name=None, quant=None) -> int:
        arr = np.asarray(arr, dtype)
        return self.tensor(arr.shape, arr.dtype, data=arr, name=name, quant=quant)

    def output(self, t: int) -> int:
        self.outputs.append(t)
        return t

    def op(self, name: str, inputs, outputs, options: str | None = None, custom_options: bytes | None = None,
           **fields) -> None:
        code = (tflite.BuiltinOperator.CUSTOM, name[len("custom:"):], 1) if name.startswith("custom:") else \
            (getattr(tflite.BuiltinOperator, name), None, VERSIONS.get(name, 1))
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append({"code": self.codes.index(code), "inputs": list(inputs), "outputs": list(outputs),
                         "options": options, "fields": fields, "custom": custom_options})

    def unary(self, name: str, x: int, shape, options: str | None = None, dtype=np.float32, quant=None, **fields):
        """Adds op `name` on x with one output of the given shape (made an output of the model)."""
        y = self.tensor(shape, dtype, quant=quant, name=f"{name.lower()}_out")
        self.op(name, [x], [y], options, **fields)
        return self.output(y)

    # ---- serialisation ----
    def finish(self) -> bytes:
        b = flatbuffers.Builder(1024)
        buffers = []
        for i, data in enumerate(self.buffers):
            inline = data is not None and i not in self.buffer_ranges
            vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if inline else None
            tflite.BufferStart(b)
            if vec is not None:
                tflite.BufferAddData(b, vec)
            if i in self.buffer_ranges:
                tflite.BufferAddOffset(b, self.buffer_ranges[i][0])
                tflite.BufferAddSize(b, self.buffer_ranges[i][1])
            buffers.append(tflite.BufferEnd(b))
        tensors = [self._tensor(b, t) for t in self.tensors]
        ops = [self._operator(b, op) for op in self.ops]
        sg_tensors = _vector(b, tflite.SubGraphStartTensorsVector, tensors)
        sg_ops = _vector(b, tflite.SubGraphStartOperatorsVector, ops)
        sg_in = b.CreateNumpyVector(np.asarray(self.inputs, np.int32))
        sg_out = b.CreateNumpyVector(np.asarray(self.outputs, np.int32))
        sg_name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, sg_tensors)
        tflite.SubGraphAddInputs(b, sg_in)
        tflite.SubGraphAddOutputs(b, sg_out)
        tflite.SubGraphAddOperators(b, sg_ops)
        tflite.SubGraphAddName(b, sg_name)
        subgraph = tflite.SubGraphEnd(b)
        codes = []
        for code, custom, version in self.codes:
            custom_name = b.CreateString(custom) if custom else None
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, version)
            if custom_name is not None:
                tflite.OperatorCodeAddCustomCode(b, custom_name)
            codes.append(tflite.OperatorCodeEnd(b))
        metadata = []
        for name, data in self.metadata:
            self_buf = len(buffers)
            vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8))
            tflite.BufferStart(b)
            tflite.BufferAddData(b, vec)
            buffers.append(tflite.BufferEnd(b))
            n = b.CreateString(name)
            tflite.MetadataStart(b)
            tflite.MetadataAddName(b, n)
            tflite.MetadataAddBuffer(b, self_buf)
            metadata.append(tflite.MetadataEnd(b))
        codes_vec = _vector(b, tflite.ModelStartOperatorCodesVector, codes)
        subgraphs_vec = _vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
        buffers_vec = _vector(b, tflite.ModelStartBuffersVector, buffers)
        metadata_vec = _vector(b, tflite.ModelStartMetadataVector, metadata) if metadata else None
        desc = b.CreateString(self.description)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs_vec)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, buffers_vec)
        if metadata_vec is not None:
            tflite.ModelAddMetadata(b, metadata_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def _tensor(self, b, t: dict) -> int:
        name = b.CreateString(t["name"])
        shape = b.CreateNumpyVector(np.asarray(t["shape"], np.int32))
        sig = None if t["signature"] is None else b.CreateNumpyVector(np.asarray(t["signature"], np.int32))
        quant = None
        if t["quant"] is not None:
            q = t["quant"]
            scale = b.CreateNumpyVector(np.asarray(q["scale"], np.float32).reshape(-1))
            zp = b.CreateNumpyVector(np.asarray(q.get("zero_point", [0]), np.int64).reshape(-1))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, int(q.get("axis", 0)))
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        if sig is not None:
            tflite.TensorAddShapeSignature(b, sig)
        tflite.TensorAddType(b, TYPES[t["dtype"]])
        tflite.TensorAddBuffer(b, t["buffer"])
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    def _operator(self, b, op: dict) -> int:
        options = None
        if op["options"]:
            cls = op["options"]
            vectors = {k: b.CreateNumpyVector(np.asarray(v, np.int32)) for k, v in op["fields"].items()
                       if isinstance(v, (list, tuple))}
            getattr(tflite, cls + "Start")(b)
            for k, v in op["fields"].items():
                getattr(tflite, f"{cls}Add{k}")(b, vectors.get(k, v))
            options = getattr(tflite, cls + "End")(b)
        custom = None if op["custom"] is None else b.CreateNumpyVector(np.frombuffer(op["custom"], np.uint8))
        ins = b.CreateNumpyVector(np.asarray(op["inputs"], np.int32))
        outs = b.CreateNumpyVector(np.asarray(op["outputs"], np.int32))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, op["code"])
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, op["options"]))
            tflite.OperatorAddBuiltinOptions(b, options)
        if custom is not None:
            tflite.OperatorAddCustomOptions(b, custom)
        return tflite.OperatorEnd(b)


def _vector(b, start, offsets: list[int]) -> int:
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()

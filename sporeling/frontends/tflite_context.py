"""The OpContext: what one converter of tflite_ops.py sees of its operator. Inputs are graph names (float
when the tensor is quantized, laid out by `perm` when asked), constant inputs are arrays, the builtin
options are the schema's class, and `y(k)` says where output k goes (a quantized output is quantized
after the op). `chain` strings nodes together so that the last one writes the output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from .tflite import Tensor, _Importer

ONNX_TYPES = {  # TensorProto codes, for Cast
    np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.uint16): 4,
    np.dtype(np.int16): 5, np.dtype(np.int32): 6, np.dtype(np.int64): 7, np.dtype(np.bool_): 9,
    np.dtype(np.float16): 10, np.dtype(np.float64): 11, np.dtype(np.uint32): 12, np.dtype(np.uint64): 13,
}


class Unsupported(Exception):
    """A converter cannot map this use of an op (a non-constant shape, an unknown mode)."""


class OpContext:
    """What one converter sees of its operator: its inputs as graph names (float when quantized), its
    constant inputs as arrays, its options, and where to write each output."""

    def __init__(self, imp: _Importer, index: int, name: str, op):
        self.imp, self.index, self.name, self.op = imp, index, name, op
        n_in = imp.bounded(op.InputsLength(), 4, f"operator {index}'s inputs")
        n_out = imp.bounded(op.OutputsLength(), 4, f"operator {index}'s outputs")
        self.ins = [int(op.Inputs(i)) for i in range(n_in)]  # -1: an omitted optional input
        self.outs = [int(op.Outputs(i)) for i in range(n_out)]
        for i in [i for i in self.ins if i != -1] + self.outs:
            if not 0 <= i < len(imp.tensors):
                raise ModelLoadError(f"{imp.source}: operator {index} ({name}) refers to tensor {i}, "
                                     "which does not exist")
        self.base = imp.tensors[self.outs[0]].name if self.outs else f"op{index}"
        self.keep = False  # set by keep_ints(): read and write the stored integers
        self.pending: list[tuple[str, int]] = []  # (float result, output tensor) to quantize

    # inputs
    def has(self, k: int) -> bool:
        return k < len(self.ins) and self.ins[k] != -1

    def tensor(self, k: int) -> Tensor:
        if not self.has(k):
            raise Unsupported(f"input {k} is missing")
        return self.imp.tensors[self.ins[k]]

    def x(self, k: int, perm: tuple[int, ...] | None = None) -> str:
        if self.keep and perm is None:
            return self.raw(k)
        return self.imp.value(self.tensor(k).index, perm)

    def raw(self, k: int) -> str:
        return self.imp.raw(self.tensor(k).index)

    def const(self, k: int, what: str = "") -> np.ndarray:
        """Input k's constant value (dequantized); Unsupported when it is computed at run time."""
        v = self.imp.constant(self.tensor(k).index) if self.has(k) else None
        if v is None:
            raise Unsupported(f"the {what or f'input {k}'} must be a constant")
        return v

    def maybe_const(self, k: int) -> np.ndarray | None:
        return self.imp.constant(self.tensor(k).index) if self.has(k) else None

    def shape(self, k: int) -> tuple[int, ...]:
        return self.tensor(k).signature

    def out_tensor(self, k: int = 0) -> Tensor:
        return self.imp.tensors[self.outs[k]]

    def keep_ints(self) -> bool:
        """For ops that only move data: when the outputs and every input of their type are quantized with
        one scale and zero point, work on the stored integers, with no dequantize/quantize around the op.
        Inputs of other types (indices, shapes) do not count."""
        outs = [self.imp.tensors[i] for i in self.outs]
        q = outs[0].quant if outs else None
        if q is None or any(t.dtype != outs[0].dtype or not q.same(t.quant) for t in outs):
            return False
        for i in (i for i in self.ins if i != -1):
            t = self.imp.tensors[i]
            if i in self.imp.deferred or (t.dtype == outs[0].dtype and not q.same(t.quant)):
                return False
        self.keep = True
        return True

    def act_steps(self, act: int) -> list:
        """A fused activation (tflite.ActivationFunctionType) as chain steps. LiteRT's kernels turn the
        fused activation into an output range (CalculateActivationRange), which knows only the ReLU
        family: a fused TANH or SIGN_BIT leaves the output unchanged there, and so it does here."""
        if act == 1:
            return [("Relu", [], {})]
        if act in (2, 3):  # RELU_N1_TO_1, RELU6
            lo, hi = (-1.0, 1.0) if act == 2 else (0.0, 6.0)
            return [("Clip", [self.scalar(lo), self.scalar(hi)], {})]
        if act in (0, 4, 5):
            return []
        raise Unsupported(f"fused activation {act}")

    def chain(self, x: str, steps: list, k: int = 0) -> str:
        """Applies steps [(op_type, more inputs, attrs)] to x in turn, each reading the previous result
        as its first input; the last one writes output k."""
        steps = steps or [("Identity", [], {})]
        for i, (op_type, more, attrs) in enumerate(steps):
            x = self.node(op_type, [x] + list(more), out=self.y(k) if i == len(steps) - 1 else None, **attrs)
        return x

    # outputs
    def y(self, k: int = 0) -> str:
        """Where to write output k's float value; a quantized output is quantized after the op."""
        t = self.out_tensor(k)
        if t.quant is None or self.keep:
            return t.name
        tmp = self.imp.fresh(t.name + "::float")
        self.pending.append((tmp, t.index))
        return tmp

    def raw_y(self, k: int = 0) -> str:
        return self.out_tensor(k).name

    def finish(self) -> None:
        for tmp, tid in self.pending:
            t = self.imp.tensors[tid]
            s, z, axis = self.imp.quant_params(t)
            self.imp.node("QuantizeLinear", [tmp, s, z], [t.name], axis=axis)
        self.pending = []

    # building
    def node(self, op_type: str, inputs: list[str], out: str | list[str] | None = None, n_out: int = 1, **attrs):
        """Appends a node; returns its output name (a list when it has several)."""
        if out is None:
            outs = [self.imp.fresh(f"{self.base}::{op_type}") for _ in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.imp.node(op_type, inputs, outs, **attrs)
        return outs[0] if len(outs) == 1 and isinstance(out, (str, type(None))) else outs

    def init(self, arr, hint: str = "const") -> str:
        return self.imp.init(np.asarray(arr), f"{self.base}::{hint}")

    def ints(self, values, hint: str = "ints") -> str:
        return self.init(np.asarray(values, np.int64).reshape(-1), hint)

    def scalar(self, v: float, dtype=np.float32) -> str:
        return self.imp.init(np.asarray(v, dtype), f"scalar_{v}")

    def options(self, cls_name: str):
        """The operator's builtin options as the schema's class, or that class's defaults when absent."""
        tfl = self.imp.tfl
        want = getattr(tfl.BuiltinOptions, cls_name)
        got = self.op.BuiltinOptionsType()
        table = self.op.BuiltinOptions()
        cls = getattr(tfl, cls_name)
        if got == 0 or table is None:
            return _defaults(tfl, cls_name)
        if got != want:
            raise ModelLoadError(f"{self.imp.source}: operator {self.index} ({self.name}) carries options of union "
                                 f"type {got}, expected {cls_name}")
        obj = cls()
        obj.Init(table.Bytes, table.Pos)
        return obj

    def custom_options(self) -> bytes:
        n = self.imp.bounded(self.op.CustomOptionsLength(), 1, f"operator {self.index}'s custom options")
        return self.op.CustomOptionsAsNumpy().tobytes() if n else b""


_DEFAULTS: dict[str, object] = {}


def _defaults(tfl, cls_name: str):
    """An options table with no fields set: its getters return the schema's defaults."""
    if cls_name not in _DEFAULTS:
        import flatbuffers

        b = flatbuffers.Builder(16)
        getattr(tfl, cls_name + "Start")(b)
        b.Finish(getattr(tfl, cls_name + "End")(b))
        _DEFAULTS[cls_name] = getattr(tfl, cls_name).GetRootAs(b.Output(), 0)
    return _DEFAULTS[cls_name]



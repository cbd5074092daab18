"""TFLite builtin ops -> ONNX nodes: elementwise math, reductions and the ops that move data (reshape,
slice, gather, split, pad, ...). These are layout-agnostic, so they stay in NHWC with their axes as
TFLite gives them. See tflite_ops.py for the conventions; its BUILTINS table includes this one.

Ops that only move data call `c.keep_ints()` first: with one scale and zero point on every quantized
tensor they work on the stored integers instead of dequantizing and quantizing around the op.
"""

from __future__ import annotations

import numpy as np

from .tflite_context import ONNX_TYPES, OpContext, Unsupported

INT_MAX, INT_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def _act(c: OpContext, options: str) -> list:
    return c.act_steps(c.options(options).FusedActivationFunction())


def _int64(c: OpContext, k: int) -> str:
    """Input k as int64 (ONNX index and shape inputs): a constant directly, else a Cast."""
    v = c.maybe_const(k)
    if v is not None:
        return c.init(v.astype(np.int64), f"in{k}")
    return c.node("Cast", [c.raw(k)], to=7)


def _axis(c: OpContext, k: int) -> int:
    v = c.const(k, "axis").reshape(-1)
    if v.size != 1:
        raise Unsupported(f"axis {v.tolist()}")
    return int(v[0])


# ---- elementwise ----------------------------------------------------------------------------------
def _binary(op_type: str, options: str | None = None):
    def convert(c: OpContext) -> None:
        c.chain(c.x(0), [(op_type, [c.x(1)], {})] + (_act(c, options) if options else []))

    return convert


def _unary(*op_types: str):
    def convert(c: OpContext) -> None:
        c.chain(c.x(0), [(op, [], {}) for op in op_types])

    return convert


def square(c: OpContext) -> None:
    x = c.x(0)
    c.node("Mul", [x, x], out=c.y())


def squared_difference(c: OpContext) -> None:
    d = c.node("Sub", [c.x(0), c.x(1)])
    c.node("Mul", [d, d], out=c.y())


def not_equal(c: OpContext) -> None:
    c.chain(c.x(0), [("Equal", [c.x(1)], {}), ("Not", [], {})])


def floor_div(c: OpContext) -> None:
    if c.tensor(0).dtype.kind != "f":
        raise Unsupported("integer FLOOR_DIV")
    c.chain(c.x(0), [("Div", [c.x(1)], {}), ("Floor", [], {})])


def floor_mod(c: OpContext) -> None:
    if c.tensor(0).dtype.kind not in "iu":
        raise Unsupported("float FLOOR_MOD")
    c.chain(c.x(0), [("Mod", [c.x(1)], {"fmod": 0})])


def select(c: OpContext) -> None:
    """SELECT (v1) picks whole rows with a rank-1 condition; SELECT_V2 broadcasts."""
    cond, rank = c.x(0), len(c.shape(1))
    if c.name == "SELECT" and len(c.shape(0)) == 1 and rank > 1:
        cond = c.node("Reshape", [cond, c.ints([-1] + [1] * (rank - 1), "rows")])
    c.node("Where", [cond, c.x(1), c.x(2)], out=c.y())


def add_n(c: OpContext) -> None:
    c.node("Sum", [c.x(k) for k in range(len(c.ins))], out=c.y())


# ---- reductions and index ops -------------------------------------------------------------------------
def _reduce(op_type: str):
    def convert(c: OpContext) -> None:
        rank = len(c.shape(0))
        axes = sorted({int(a) % rank for a in c.const(1, "axes").reshape(-1)}) if rank else []
        keep = int(c.options("ReducerOptions").KeepDims())
        c.chain(c.x(0), [(op_type, [c.ints(axes, "axes")], {"keepdims": keep,
                                                              "noop_with_empty_axes": int(not axes)})])

    return convert


def _arg(op_type: str):
    def convert(c: OpContext) -> None:
        out = c.out_tensor().dtype
        steps = [(op_type, [], {"axis": _axis(c, 1), "keepdims": 0})]
        if out != np.int64:
            steps.append(("Cast", [], {"to": ONNX_TYPES[out]}))
        c.chain(c.x(0), steps)

    return convert


def cumsum(c: OpContext) -> None:
    o = c.options("CumsumOptions")
    c.node("CumSum", [c.x(0), c.ints([_axis(c, 1)], "axis")], out=c.y(), exclusive=int(o.Exclusive()),
           reverse=int(o.Reverse()))


def topk_v2(c: OpContext) -> None:
    k = c.const(1, "k").astype(np.int64).reshape(-1)
    values, idx = c.node("TopK", [c.x(0), c.ints(k, "k")], out=[c.y(0), c.imp.fresh(c.base + "::indices")],
                         axis=-1, largest=1, sorted=1)
    c.node("Cast", [idx], out=c.raw_y(1), to=ONNX_TYPES[c.out_tensor(1).dtype])


# ---- data movement -----------------------------------------------------------------------------------
def reshape(c: OpContext) -> None:
    c.keep_ints()
    sig = c.out_tensor().signature
    if sum(d < 0 for d in sig) <= 1:
        shape = c.ints(sig, "shape")
    elif c.has(1):
        shape = _int64(c, 1)
    else:
        raise Unsupported(f"output shape {list(sig)} has several unknown dimensions")
    c.node("Reshape", [c.x(0), shape], out=c.y(), allowzero=int(0 in sig))


def squeeze(c: OpContext) -> None:
    c.keep_ints()
    dims = c.options("SqueezeOptions").SqueezeDimsAsNumpy()
    axes = [int(a) for a in dims] if not isinstance(dims, int) else []
    if not axes:
        axes = [k for k, d in enumerate(c.shape(0)) if d == 1]
    c.node("Squeeze", [c.x(0), c.ints(axes, "axes")], out=c.y())


def expand_dims(c: OpContext) -> None:
    c.keep_ints()
    c.node("Unsqueeze", [c.x(0), c.ints([_axis(c, 1)], "axes")], out=c.y())


def transpose(c: OpContext) -> None:
    c.keep_ints()
    perm = [int(p) for p in c.const(1, "permutation").reshape(-1)]
    c.node("Transpose", [c.x(0)], out=c.y(), perm=perm)


def concatenation(c: OpContext) -> None:
    o = c.options("ConcatenationOptions")
    if o.FusedActivationFunction() == 0:
        c.keep_ints()
    xs = [c.x(k) for k in range(len(c.ins))]
    c.chain(xs[0], [("Concat", xs[1:], {"axis": o.Axis()})] + _act(c, "ConcatenationOptions"))


def pack(c: OpContext) -> None:
    c.keep_ints()
    axis = c.options("PackOptions").Axis()
    parts = [c.node("Unsqueeze", [c.x(k), c.ints([axis], "axis")]) for k in range(len(c.ins))]
    c.node("Concat", parts, out=c.y(), axis=axis)


def unpack(c: OpContext) -> None:
    c.keep_ints()
    axis = c.options("UnpackOptions").Axis()
    n, axes = len(c.outs), c.ints([axis], "axis")
    parts = [c.x(0)] if n == 1 else c.node("Split", [c.x(0)], n_out=n, axis=axis, num_outputs=n)
    for k, part in enumerate(parts):
        c.node("Squeeze", [part, axes], out=c.y(k))


def split(c: OpContext) -> None:
    c.keep_ints()
    n = len(c.outs)
    c.node("Split", [c.x(1)], out=[c.y(k) for k in range(n)], axis=_axis(c, 0), num_outputs=n)


def split_v(c: OpContext) -> None:
    c.keep_ints()
    axis = _axis(c, 2)
    sizes = [int(s) for s in c.const(1, "split sizes").reshape(-1)]
    if sizes.count(-1) == 1:
        dim = c.shape(0)[axis]
        if dim < 0:
            raise Unsupported("a -1 split size along a dynamic axis")
        sizes[sizes.index(-1)] = dim - sum(s for s in sizes if s != -1)
    c.node("Split", [c.x(0), c.ints(sizes, "split")], out=[c.y(k) for k in range(len(c.outs))], axis=axis)


def slice_(c: OpContext) -> None:
    c.keep_ints()
    begin = c.const(1, "begin").astype(np.int64).reshape(-1)
    size = c.const(2, "size").astype(np.int64).reshape(-1)
    ends = np.where(size < 0, INT_MAX, begin + size)
    c.node("Slice", [c.x(0), c.ints(begin, "starts"), c.ints(ends, "ends")], out=c.y())


def strided_slice(c: OpContext) -> None:
    """TensorFlow's sparse slice spec (begin/end/ellipsis/new-axis/shrink masks) as Slice, then
    Squeeze of the shrunk axes and Unsqueeze of the new ones."""
    c.keep_ints()
    o = c.options("StridedSliceOptions")
    begin, end = c.const(1, "begin").astype(np.int64), c.const(2, "end").astype(np.int64)
    strides = c.const(3, "strides").astype(np.int64) if c.has(3) else np.ones_like(begin)
    rank = len(c.shape(0))
    bm, em, ellipsis, new, shrink = (o.BeginMask(), o.EndMask(), o.EllipsisMask(), o.NewAxisMask(),
                                     o.ShrinkAxisMask())
    starts, ends, axes, steps, squeezed, added = [], [], [], [], [], []
    dim = out = 0  # the input axis and the final output axis the next entry refers to
    for i in range(len(begin)):
        bit = 1 << i
        if ellipsis & bit:
            real_after = sum(1 for j in range(i + 1, len(begin)) if not (new >> j) & 1)
            fill = rank - dim - real_after
            dim, out = dim + fill, out + fill
            continue
        if new & bit:
            added.append(out)
            out += 1
            continue
        b, e, s = int(begin[i]), int(end[i]), int(strides[i])
        if s == 0:
            raise Unsupported("a zero stride")
        if o.Offset():
            e = b + e
        if shrink & bit:
            b, e, s = b, (b + 1 if b != -1 else INT_MAX), 1
            squeezed.append(dim)
        else:
            if bm & bit:
                b = 0 if s > 0 else INT_MAX
            if em & bit:
                e = INT_MAX if s > 0 else INT_MIN
            out += 1
        starts.append(b), ends.append(e), axes.append(dim), steps.append(s)
        dim += 1
    x = c.x(0)
    steps_list = [("Slice", [c.ints(starts, "starts"), c.ints(ends, "ends"), c.ints(axes, "axes"),
                             c.ints(steps, "steps")], {})] if axes else []
    if squeezed:
        steps_list.append(("Squeeze", [c.ints(squeezed, "squeeze")], {}))
    if added:
        steps_list.append(("Unsqueeze", [c.ints(added, "unsqueeze")], {}))
    c.chain(x, steps_list)


def gather(c: OpContext) -> None:
    c.keep_ints()
    o = c.options("GatherOptions")
    if o.BatchDims() != 0:
        raise Unsupported(f"batch_dims {o.BatchDims()}")
    c.node("Gather", [c.x(0), c.x(1)], out=c.y(), axis=o.Axis())


def gather_nd(c: OpContext) -> None:
    c.keep_ints()
    c.node("GatherND", [c.x(0), _int64(c, 1)], out=c.y())


def embedding_lookup(c: OpContext) -> None:
    c.node("Gather", [c.x(1), c.x(0)], out=c.y(), axis=0)


def tile(c: OpContext) -> None:
    c.keep_ints()
    c.node("Tile", [c.x(0), _int64(c, 1)], out=c.y())


def broadcast_to(c: OpContext) -> None:
    c.keep_ints()
    c.node("Expand", [c.x(0), _int64(c, 1)], out=c.y())


def reverse_v2(c: OpContext) -> None:
    c.keep_ints()
    axes = [int(a) for a in c.const(1, "axes").reshape(-1)]
    n = len(axes)
    c.node("Slice", [c.x(0), c.ints([-1] * n, "starts"), c.ints([INT_MIN] * n, "ends"), c.ints(axes, "axes"),
                     c.ints([-1] * n, "steps")], out=c.y())


def _onnx_pads(c: OpContext) -> tuple[np.ndarray, str]:
    pads = c.const(1, "paddings").astype(np.int64).reshape(-1, 2)
    return pads, c.ints(np.concatenate([pads[:, 0], pads[:, 1]]), "pads")


def pad(c: OpContext) -> None:
    """PAD fills with real zero (the zero point, when kept as integers); PADV2 with its third input."""
    keep = c.keep_ints()
    _, pads = _onnx_pads(c)
    dtype = c.tensor(0).dtype if keep or c.tensor(0).quant is None else np.dtype(np.float32)
    if c.has(2):
        value = c.imp.tensors[c.ins[2]].data if keep else c.const(2, "padding value")
        if value is None:
            raise Unsupported("the padding value must be a constant")
        fill = np.asarray(value).reshape(-1)[0]
    else:
        fill = c.tensor(0).quant.zero_point.reshape(-1)[0] if keep else 0
    c.node("Pad", [c.x(0), pads, c.init(np.asarray(fill, dtype), "fill")], out=c.y(), mode="constant")


def mirror_pad(c: OpContext) -> None:
    """REFLECT is ONNX's reflect; SYMMETRIC (the edge repeated) is built from reversed slices."""
    c.keep_ints()
    mode = c.options("MirrorPadOptions").Mode()
    pads, onnx_pads = _onnx_pads(c)
    if mode == 0:
        c.node("Pad", [c.x(0), onnx_pads], out=c.y(), mode="reflect")
        return
    x = c.x(0)
    todo = [(a, int(b), int(e)) for a, (b, e) in enumerate(pads) if b or e]
    if not todo:
        c.node("Identity", [x], out=c.y())
    for i, (a, b, e) in enumerate(todo):
        parts, axis, step = [], c.ints([a], "axis"), c.ints([-1], "step")
        if b:
            parts.append(c.node("Slice", [x, c.ints([b - 1], "start"), c.ints([INT_MIN], "end"), axis, step]))
        parts.append(x)
        if e:
            parts.append(c.node("Slice", [x, c.ints([-1], "start"), c.ints([-e - 1], "end"), axis, step]))
        x = c.node("Concat", parts, out=c.y() if i == len(todo) - 1 else None, axis=a)


# ---- types and shapes ----------------------------------------------------------------------------------
def cast(c: OpContext) -> None:
    """CAST converts the stored values (a quantized input's integers, not their real values)."""
    c.node("Cast", [c.raw(0)], out=c.raw_y(), to=ONNX_TYPES[c.out_tensor().dtype])


def shape(c: OpContext) -> None:
    out = c.out_tensor().dtype
    if out == np.int64:
        c.node("Shape", [c.raw(0)], out=c.raw_y())
    else:
        c.node("Cast", [c.node("Shape", [c.raw(0)])], out=c.raw_y(), to=ONNX_TYPES[out])


def fill(c: OpContext) -> None:
    c.node("Expand", [c.x(1), _int64(c, 0)], out=c.y())


def zeros_like(c: OpContext) -> None:
    dims = c.node("Shape", [c.raw(0)])
    c.node("ConstantOfShape", [dims], out=c.raw_y(), value=np.zeros(1, c.out_tensor().dtype))


def range_(c: OpContext) -> None:
    c.node("Range", [c.x(0), c.x(1), c.x(2)], out=c.y())


TENSOR_OPS = {
    "ADD": _binary("Add", "AddOptions"),
    "SUB": _binary("Sub", "SubOptions"),
    "MUL": _binary("Mul", "MulOptions"),
    "DIV": _binary("Div", "DivOptions"),
    "POW": _binary("Pow"),
    "MAXIMUM": _binary("Max"),
    "MINIMUM": _binary("Min"),
    "SQUARED_DIFFERENCE": squared_difference,
    "FLOOR_DIV": floor_div,
    "FLOOR_MOD": floor_mod,
    "LESS": _binary("Less"),
    "LESS_EQUAL": _binary("LessOrEqual"),
    "GREATER": _binary("Greater"),
    "GREATER_EQUAL": _binary("GreaterOrEqual"),
    "EQUAL": _binary("Equal"),
    "NOT_EQUAL": not_equal,
    "LOGICAL_AND": _binary("And"),
    "LOGICAL_OR": _binary("Or"),
    "LOGICAL_NOT": _unary("Not"),
    "SELECT": select,
    "SELECT_V2": select,
    "ADD_N": add_n,
    "EXP": _unary("Exp"),
    "LOG": _unary("Log"),
    "SQRT": _unary("Sqrt"),
    "RSQRT": _unary("Sqrt", "Reciprocal"),
    "SQUARE": square,
    "ABS": _unary("Abs"),
    "NEG": _unary("Neg"),
    "SIN": _unary("Sin"),
    "COS": _unary("Cos"),
    "FLOOR": _unary("Floor"),
    "CEIL": _unary("Ceil"),
    "ROUND": _unary("Round"),
    "SIGN": _unary("Sign"),
    "MEAN": _reduce("ReduceMean"),
    "SUM": _reduce("ReduceSum"),
    "REDUCE_MAX": _reduce("ReduceMax"),
    "REDUCE_MIN": _reduce("ReduceMin"),
    "REDUCE_PROD": _reduce("ReduceProd"),
    "ARG_MAX": _arg("ArgMax"),
    "ARG_MIN": _arg("ArgMin"),
    "CUMSUM": cumsum,
    "TOPK_V2": topk_v2,
    "RESHAPE": reshape,
    "SQUEEZE": squeeze,
    "EXPAND_DIMS": expand_dims,
    "TRANSPOSE": transpose,
    "CONCATENATION": concatenation,
    "PACK": pack,
    "UNPACK": unpack,
    "SPLIT": split,
    "SPLIT_V": split_v,
    "SLICE": slice_,
    "STRIDED_SLICE": strided_slice,
    "GATHER": gather,
    "GATHER_ND": gather_nd,
    "EMBEDDING_LOOKUP": embedding_lookup,
    "TILE": tile,
    "BROADCAST_TO": broadcast_to,
    "REVERSE_V2": reverse_v2,
    "PAD": pad,
    "PADV2": pad,
    "MIRROR_PAD": mirror_pad,
    "CAST": cast,
    "SHAPE": shape,
    "FILL": fill,
    "ZEROS_LIKE": zeros_like,
    "RANGE": range_,
}

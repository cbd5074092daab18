"""Layout ops: reshaping, transposing, joining, splitting and generating tensors.

Pure view ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity) are registered without `out`: they
return NumPy views of their input at no cost, and the session keeps the viewed buffer alive as long as
the view. They still have infer functions so that downstream shapes are known at prepare time. Ops
that must move data (Transpose, Concat, Split, Expand, Tile...) write straight into the planned
buffer. Slicing and padding live in shape_slice, gathers, scatters and sorting in shape_index.
"""

from __future__ import annotations

import math

import numpy as np

from . import shape_index, shape_slice  # noqa: F401  (registers their kernels)
from .infer import const_ints, norm_axis, same_as_first
from .registry import register_op
from .shape_util import ONNX_DTYPES, UNKNOWN, input_or_attr, ints, norm_axes, plannable, resolve_ints, write

# ---- Reshape / Flatten / Squeeze / Unsqueeze / Identity: zero-copy views ----------------------------


def reshape_target(in_shape: tuple[int, ...], shape: list[int], allowzero: int) -> tuple[int, ...]:
    """ONNX Reshape's target: 0 copies the input dimension (unless allowzero), -1 takes the rest."""
    dims = [in_shape[k] if d == 0 and not allowzero else d for k, d in enumerate(shape)]
    if -1 in dims:
        k = dims.index(-1)
        rest = math.prod(d for j, d in enumerate(dims) if j != k)
        dims[k] = math.prod(in_shape) // rest if rest else 0
    return tuple(dims)


def _reshape_infer(ins, allowzero=0, **_):
    x, shape = ins[0], const_ints(ins[1])
    if x.shape is None or shape is None:
        return None
    return [(x.dtype, reshape_target(x.shape, shape, allowzero))]


@register_op("Reshape", since=5, infer=_reshape_infer, shape_inputs=(1,))
def reshape(data, shape, *, allowzero=0):
    return np.reshape(data, reshape_target(np.shape(data), ints(shape), allowzero))


def _reshape_v1_infer(ins, shape=(), **_):
    x = ins[0]
    return None if x.shape is None else [(x.dtype, reshape_target(x.shape, list(shape), 0))]


@register_op("Reshape", since=1, infer=_reshape_v1_infer)
def reshape_v1(data, *, shape=(), consumed_inputs=None):
    return np.reshape(data, reshape_target(np.shape(data), list(shape), 0))


def flatten_shape(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    axis = norm_axis(axis, len(shape))
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def _flatten_infer(ins, axis=1, **_):
    x = ins[0]
    return None if x.shape is None else [(x.dtype, flatten_shape(x.shape, axis))]


@register_op("Flatten", since=1, infer=_flatten_infer)
def flatten(x, *, axis=1):
    return np.reshape(x, flatten_shape(np.shape(x), axis))


def squeeze_shape(shape: tuple[int, ...], axes: list[int] | None) -> tuple[int, ...]:
    if axes is None or len(axes) == 0:
        return tuple(d for d in shape if d != 1)
    drop = set(norm_axes(axes, len(shape)))
    return tuple(d for k, d in enumerate(shape) if k not in drop)


def _squeeze_infer(ins, axes=None, **_):
    x, want = ins[0], resolve_ints(ins[1] if len(ins) > 1 else None, axes)
    if x.shape is None or want is UNKNOWN:
        return None
    return [(x.dtype, squeeze_shape(x.shape, want))]


@register_op("Squeeze", since=1, infer=_squeeze_infer, shape_inputs=(1,))
def squeeze(data, axes_input=None, *, axes=None):
    """Axes are an attribute before opset 13 and an input from 13 on; none means every 1-sized dim."""
    return np.reshape(data, squeeze_shape(np.shape(data), input_or_attr(axes_input, axes)))


def unsqueeze_shape(shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    rank = len(shape) + len(axes)
    new = set(norm_axes(axes, rank))
    rest = iter(shape)
    return tuple(1 if k in new else next(rest) for k in range(rank))


def _unsqueeze_infer(ins, axes=None, **_):
    x, want = ins[0], resolve_ints(ins[1] if len(ins) > 1 else None, axes)
    if x.shape is None or want is UNKNOWN or want is None:
        return None
    return [(x.dtype, unsqueeze_shape(x.shape, want))]


@register_op("Unsqueeze", since=1, infer=_unsqueeze_infer, shape_inputs=(1,))
def unsqueeze(data, axes_input=None, *, axes=None):
    return np.reshape(data, unsqueeze_shape(np.shape(data), input_or_attr(axes_input, axes)))


def _identity_infer(ins, **_):
    return None if ins[0].dtype is None else same_as_first(ins)


@register_op("Identity", since=1, infer=_identity_infer)
def identity(x):
    """Tensors, sequences and optionals alike pass through untouched."""
    return x


# ---- Transpose / Concat / Split: data movement into planned buffers ---------------------------------


def _perm(rank: int, perm) -> list[int]:
    return list(range(rank))[::-1] if perm is None or len(perm) == 0 else [norm_axis(p, rank) for p in perm]


@plannable
def _transpose_infer(ins, perm=None, **_):
    x = ins[0]
    if x.shape is None:
        return None
    return [(x.dtype, tuple(x.shape[p] for p in _perm(len(x.shape), perm)))]


@register_op("Transpose", since=1, infer=_transpose_infer, out=True)
def transpose(data, *, perm=None, out=None):
    view = np.transpose(data, _perm(np.ndim(data), perm))
    return view.copy() if out is None else write(out, view)


@plannable
def _concat_infer(ins, axis=1, **_):
    xs = [i for i in ins if i is not None]
    if not xs or any(i.shape is None for i in xs):
        return None
    first = xs[0].shape
    axis = norm_axis(axis, len(first))
    total = sum(i.shape[axis] for i in xs)
    return [(xs[0].dtype, first[:axis] + (total,) + first[axis + 1 :])]


@register_op("Concat", since=4, infer=_concat_infer, out=True)
def concat(*xs, axis=0, out=None):
    xs = [x for x in xs if x is not None]
    return np.concatenate(xs, axis=norm_axis(axis, np.ndim(xs[0])), out=out)


@register_op("Concat", since=1, infer=_concat_infer, out=True)
def concat_v1(*xs, axis=1, out=None):
    return concat(*xs, axis=axis, out=out)


def split_sizes(dim: int, split: list[int] | None, num_outputs: int | None) -> list[int]:
    """Explicit sizes, else `num_outputs` chunks of ceil(dim / n) with a smaller last one (opset 18),
    which for divisible dims is the older opsets' equal split."""
    if split is not None and len(split) > 0:
        return list(split)
    if not num_outputs:
        raise ValueError("Split without `split` needs the number of outputs (num_outputs)")
    chunk = -(-dim // num_outputs)
    sizes = [min(chunk, max(dim - k * chunk, 0)) for k in range(num_outputs)]
    return sizes


@plannable
def _split_infer(ins, axis=0, split=None, num_outputs=None, **_):
    x = ins[0]
    sizes = resolve_ints(ins[1] if len(ins) > 1 else None, split)
    if x.shape is None or sizes is UNKNOWN or (not sizes and not num_outputs):
        return None
    axis = norm_axis(axis, len(x.shape))
    shapes = [x.shape[:axis] + (s,) + x.shape[axis + 1 :] for s in split_sizes(x.shape[axis], sizes, num_outputs)]
    return [(x.dtype, s) for s in shapes]


@register_op("Split", since=1, infer=_split_infer, out=True, shape_inputs=(1,))
def split(x, split_input=None, *, axis=0, split=None, num_outputs=None, out=None):
    """`split` is an attribute (opsets 1-11) or an input (13+); without it the outputs are equal chunks,
    their count from `num_outputs` (18+) or, before 18, from the planned outputs."""
    axis = norm_axis(axis, x.ndim)
    if isinstance(out, np.ndarray):  # a single-output node gets its buffer bare, not in a tuple
        out = (out,)
    count = num_outputs or (len(out) if out is not None else None)
    sizes = split_sizes(x.shape[axis], input_or_attr(split_input, split), count)
    bounds = np.cumsum([0] + sizes)
    index = [slice(None)] * x.ndim
    parts = []
    for k in range(len(sizes)):
        index[axis] = slice(int(bounds[k]), int(bounds[k + 1]))
        parts.append(x[tuple(index)])
    if out is None:
        return tuple(p.copy() for p in parts) if len(parts) > 1 else parts[0].copy()
    for o, p in zip(out, parts):
        if o is not None:
            np.copyto(o, p)
    return out if len(out) > 1 else out[0]


# ---- Expand / Tile ----------------------------------------------------------------------------------


@plannable
def _expand_infer(ins, **_):
    x, shape = ins[0], const_ints(ins[1])
    if x.shape is None or shape is None:
        return None
    return [(x.dtype, tuple(np.broadcast_shapes(x.shape, tuple(shape))))]


@register_op("Expand", since=8, infer=_expand_infer, out=True, shape_inputs=(1,))
def expand(x, shape, *, out=None):
    if out is None:
        target = np.broadcast_shapes(np.shape(x), tuple(ints(shape)))
        return np.array(np.broadcast_to(x, target))
    np.copyto(out, x)  # copyto broadcasts, so the expansion costs one pass over out
    return out


@plannable
def _tile_infer(ins, **_):
    x, reps = ins[0], const_ints(ins[1])
    if x.shape is None or reps is None:
        return None
    return [(x.dtype, tuple(d * r for d, r in zip(x.shape, reps)))]


@register_op("Tile", since=6, infer=_tile_infer, out=True, shape_inputs=(1,))
def tile(x, repeats, *, out=None):
    reps = ints(repeats)
    if out is None:
        return np.tile(x, reps)
    # Viewing out as (r0, d0, r1, d1, ...) lets one broadcasting copy write every repetition.
    interleaved = [v for r, d in zip(reps, x.shape) for v in (r, d)]
    spread = [v for d in x.shape for v in (1, d)]
    np.copyto(out.reshape(interleaved), x.reshape(spread))
    return out


@register_op("Tile", since=1)
def tile_v1(x, tiles, axis):
    reps = [1] * x.ndim
    reps[norm_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim)] = int(np.asarray(tiles).reshape(-1)[0])
    return np.tile(x, reps)


# ---- Shape / Size / ConstantOfShape / Range / EyeLike / Trilu / OneHot -------------------------------


def _shape_range(rank: int, start: int, end: int | None) -> slice:
    def clamp(v):
        return min(max(v + rank if v < 0 else v, 0), rank)

    return slice(clamp(start), rank if end is None else clamp(end))


def _shape_infer(ins, start=0, end=None, **_):
    x = ins[0]
    if x.shape is None:
        return None
    dims = np.array(x.shape[_shape_range(len(x.shape), start, end)], np.int64)
    return [(dims.dtype, dims.shape, dims)]  # the value is known once the shape is: the node folds


@register_op("Shape", since=1, infer=_shape_infer, out=True)
def shape(data, *, start=0, end=None, out=None):
    dims = np.shape(data)
    return write(out, np.array(dims[_shape_range(len(dims), start, end)], np.int64))


def _size_infer(ins, **_):
    if ins[0].shape is None:
        return None
    n = np.array(int(np.prod(ins[0].shape, dtype=np.int64)), np.int64)
    return [(n.dtype, (), n)]


@register_op("Size", since=1, infer=_size_infer, out=True)
def size(data, *, out=None):
    return write(out, np.array(np.size(data), np.int64))


def _fill_value(value) -> np.ndarray:
    return np.zeros((), np.float32) if value is None else np.asarray(value).reshape(-1)[0:1].reshape(())


@plannable
def _constant_of_shape_infer(ins, value=None, **_):
    dims = const_ints(ins[0])
    return None if dims is None else [(_fill_value(value).dtype, tuple(dims))]


@register_op("ConstantOfShape", since=9, infer=_constant_of_shape_infer, out=True, shape_inputs=(0,))
def constant_of_shape(input, *, value=None, out=None):
    fill = _fill_value(value)
    if out is None:
        return np.full(tuple(ints(input)), fill, fill.dtype)
    out.fill(fill)
    return out


def range_length(start, limit, delta) -> int:
    """max(ceil((limit - start) / delta), 0), exactly for integers, in the tensor's precision for floats."""
    if np.asarray(start).dtype.kind in "iu":
        a, b, d = int(start), int(limit), int(delta)
        return max(-((a - b) // d), 0)
    return max(int(np.ceil((limit - start) / delta)), 0)


def _range_work_dtype(dtype: np.dtype, stash_type: int) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 and stash_type == 1 else dtype


@plannable
def _range_infer(ins, stash_type=1, **_):
    if any(i is None or i.value is None for i in ins[:3]):
        return None
    dtype = ins[0].dtype
    work = _range_work_dtype(np.dtype(dtype), stash_type)
    vals = [np.asarray(i.value).reshape(()).astype(work) for i in ins[:3]]
    return [(dtype, (range_length(*vals),))]


@register_op("Range", since=11, infer=_range_infer, out=True)
def range_(start, limit, delta, *, stash_type=1, out=None):
    """start + i * delta; float16 works in float32 when stash_type says so (opset 27), which is also
    the better choice for older opsets, whose float16 results it matches to rounding."""
    dtype = np.asarray(start).dtype
    work = _range_work_dtype(dtype, stash_type)
    start, limit, delta = (np.asarray(v).reshape(()).astype(work) for v in (start, limit, delta))
    n = range_length(start, limit, delta)
    if dtype.kind in "iu":
        values = int(start) + np.arange(n, dtype=np.int64) * int(delta)
    else:
        values = start + np.arange(n, dtype=work) * delta
    return write(out, values.astype(dtype, copy=False))


def _eyelike_dtype(x_dtype, dtype):
    return np.dtype(x_dtype if dtype is None else ONNX_DTYPES[int(dtype)])


@plannable
def _eyelike_infer(ins, dtype=None, k=0, **_):
    x = ins[0]
    return None if x.shape is None else [(_eyelike_dtype(x.dtype, dtype), tuple(x.shape))]


@register_op("EyeLike", since=9, infer=_eyelike_infer, out=True)
def eye_like(input, *, dtype=None, k=0, out=None):
    rows, cols = input.shape
    return write(out, np.eye(rows, cols, k, dtype=_eyelike_dtype(input.dtype, dtype)))


@plannable
def _trilu_infer(ins, **_):
    return same_as_first(ins)


@register_op("Trilu", since=14, infer=_trilu_infer, out=True, inplace={0: 0})
def trilu(input, k=None, *, upper=1, out=None):
    """Keeps the upper (j - i >= k) or lower (j - i <= k) triangle of the last two dims, zeroing the rest."""
    diag = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    rows, cols = input.shape[-2:]
    offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = offset >= diag if upper else offset <= diag
    out = write(out, input) if out is not None else input.copy()
    np.copyto(out, 0, where=~keep)  # only reads `keep`, so out may be input's own buffer
    return out


def _onehot_depth(depth) -> int:
    return int(np.asarray(depth).reshape(-1)[0])


@plannable
def _onehot_infer(ins, axis=-1, **_):
    idx, depth, values = ins[0], ins[1], ins[2]
    if idx.shape is None or depth.value is None:
        return None
    rank = len(idx.shape) + 1
    axis = norm_axis(axis, rank)
    shape = idx.shape[:axis] + (_onehot_depth(depth.value),) + idx.shape[axis:]
    return [(values.dtype, shape)]


@register_op("OneHot", since=9, infer=_onehot_infer, out=True, shape_inputs=(1,))
def one_hot(indices, depth, values, *, axis=-1, out=None):
    """Negative indices count from the back (opset 11); indices outside [-depth, depth) give all-off rows."""
    depth = _onehot_depth(depth)
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    axis = norm_axis(axis, idx.ndim + 1)
    classes = np.arange(depth).reshape([depth if k == axis else 1 for k in range(idx.ndim + 1)])
    hot = np.expand_dims(idx, axis) == classes
    off, on = values.reshape(-1)[0], values.reshape(-1)[1]
    if out is None:
        return np.where(hot, on, off).astype(values.dtype)
    out.fill(off)
    np.copyto(out, on, where=hot)
    return out


# ---- DepthToSpace / SpaceToDepth ----------------------------------------------------------------------


@plannable
def _depth_to_space_infer(ins, blocksize=1, **_):
    x = ins[0]
    if x.shape is None:
        return None
    n, c, h, w = x.shape
    b = blocksize
    return [(x.dtype, (n, c // (b * b), h * b, w * b))]


@register_op("DepthToSpace", since=1, infer=_depth_to_space_infer, out=True)
def depth_to_space(input, *, blocksize, mode="DCR", out=None):
    """DCR reads channels as (block_row, block_col, depth), CRD as (depth, block_row, block_col)."""
    n, c, h, w = input.shape
    b = blocksize
    depth = c // (b * b)
    if mode == "DCR":
        blocks = input.reshape(n, b, b, depth, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        blocks = input.reshape(n, depth, b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    if out is None:
        return blocks.reshape(n, depth, h * b, w * b)
    np.copyto(out.reshape(n, depth, h, b, w, b), blocks)
    return out


@plannable
def _space_to_depth_infer(ins, blocksize=1, **_):
    x = ins[0]
    if x.shape is None:
        return None
    n, c, h, w = x.shape
    b = blocksize
    return [(x.dtype, (n, c * b * b, h // b, w // b))]


@register_op("SpaceToDepth", since=1, infer=_space_to_depth_infer, out=True)
def space_to_depth(input, *, blocksize, out=None):
    n, c, h, w = input.shape
    b = blocksize
    blocks = input.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    if out is None:
        return blocks.reshape(n, c * b * b, h // b, w // b)
    np.copyto(out.reshape(n, b, b, c, h // b, w // b), blocks)
    return out


"""Windows onto a tensor: Slice, Pad, CenterCropPad, ReverseSequence, Compress.

Slice follows ONNX's clamping rules, which differ from Python's for out-of-range starts and for
negative steps: starts clamp to [0, dim] (to [0, dim - 1] when stepping backwards) and ends to
[0, dim] (to [-1, dim - 1] backwards, -1 meaning "past the first element"). Ends like INT64_MAX are
plain Python ints here, so nothing overflows.

Pad applies negative pads first, as a crop, then pads the cropped tensor; for constant mode it fills
the planned buffer and copies the input into its interior, the other modes go through np.pad.
"""

from __future__ import annotations

import functools

import numpy as np

from .infer import const_ints, norm_axis
from .registry import register_op
from .shape_util import UNKNOWN, input_or_attr, ints, plannable, resolve_ints, write

# ---- Slice ---------------------------------------------------------------------------------------


def slice_bounds(dim: int, start: int, end: int, step: int) -> tuple[int, int, int]:
    """(start, end, step) clamped by ONNX's rules; `end == -1` with a negative step means 'before 0'."""
    if step == 0:
        raise ValueError("Slice step cannot be 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim), step
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step


def slice_plan(shape: tuple[int, ...], starts, ends, axes, steps) -> list[tuple[int, int, int]]:
    """Per dimension (start, end, step) for the whole tensor, untouched dims taking everything."""
    rank = len(shape)
    plan = [(0, d, 1) for d in shape]
    axes = range(len(starts)) if axes is None or len(axes) == 0 else axes
    steps = [1] * len(starts) if steps is None or len(steps) == 0 else steps
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = norm_axis(a, rank)
        plan[a] = slice_bounds(shape[a], s, e, st)
    return plan


def _as_slice(start: int, end: int, step: int) -> slice:
    return slice(start, None if end < 0 else end, step)


def _slice_infer(ins, starts=None, ends=None, axes=None, **_):
    x = ins[0]
    got = [resolve_ints(ins[k] if len(ins) > k else None, attr)
           for k, attr in ((1, starts), (2, ends), (3, axes), (4, None))]
    if x.shape is None or any(g is UNKNOWN for g in got) or got[0] is None:
        return None
    plan = slice_plan(x.shape, *got)
    return [(x.dtype, tuple(len(range(*p)) for p in plan))]


def _make_slice(ins, starts=None, ends=None, axes=None):
    """With a known input shape and constant bounds, the index tuple is computed once per plan."""
    x = ins[0]
    got = [resolve_ints(ins[k] if len(ins) > k else None, attr)
           for k, attr in ((1, starts), (2, ends), (3, axes), (4, None))]
    if x is None or x.shape is None or any(g is UNKNOWN for g in got) or got[0] is None:
        return functools.partial(slice_, starts=starts, ends=ends, axes=axes)
    index = tuple(_as_slice(*p) for p in slice_plan(x.shape, *got))

    def slice_bound(data, *_bounds, out=None):
        view = data[index]
        return view if out is None else write(out, view)

    return slice_bound


@register_op("Slice", since=1, infer=plannable(_slice_infer), out=True, shape_inputs=(1, 2, 3, 4), make=_make_slice)
def slice_(data, starts_input=None, ends_input=None, axes_input=None, steps_input=None, *,
           starts=None, ends=None, axes=None, out=None):
    """starts/ends/axes are attributes in opset 1 and inputs (with steps) from opset 10."""
    plan = slice_plan(
        data.shape, input_or_attr(starts_input, starts), input_or_attr(ends_input, ends),
        input_or_attr(axes_input, axes), input_or_attr(steps_input, None),
    )
    view = data[tuple(_as_slice(*p) for p in plan)]
    return view if out is None else write(out, view)


# ---- Pad -----------------------------------------------------------------------------------------


def pad_amounts(rank: int, pads: list[int], axes: list[int] | None) -> list[tuple[int, int]]:
    """(before, after) per dimension from ONNX's [b_0, b_1, ..., e_0, e_1, ...] over `axes`."""
    axes = list(range(rank)) if axes is None else [norm_axis(a, rank) for a in axes]
    amounts = [(0, 0)] * rank
    for k, a in enumerate(axes):
        amounts[a] = (pads[k], pads[k + len(axes)])
    return amounts


def _pad_args(rank, pads_input, axes_input, pads, paddings):
    return pad_amounts(rank, input_or_attr(pads_input, pads if pads is not None else paddings),
                       None if axes_input is None else ints(axes_input))


def _pad_infer(ins, pads=None, paddings=None, **_):
    x = ins[0]
    amounts = resolve_ints(ins[1] if len(ins) > 1 else None, pads if pads is not None else paddings)
    axes = resolve_ints(ins[3] if len(ins) > 3 else None, None)
    if x.shape is None or amounts is UNKNOWN or axes is UNKNOWN:
        return None
    per_dim = pad_amounts(len(x.shape), amounts, axes)
    return [(x.dtype, tuple(d + b + a for d, (b, a) in zip(x.shape, per_dim)))]


_NUMPY_PAD_MODES = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@register_op("Pad", since=1, infer=plannable(_pad_infer), out=True, shape_inputs=(1, 3))
def pad(data, pads_input=None, constant_value=None, axes_input=None, *,
        mode="constant", pads=None, paddings=None, value=0.0, out=None):
    """pads/value are attributes before opset 11 (`paddings` in opset 1); axes is an input from 18."""
    amounts = _pad_args(data.ndim, pads_input, axes_input, pads, paddings)
    cropped = data[tuple(slice(max(-b, 0), d - max(-a, 0)) for d, (b, a) in zip(data.shape, amounts))]
    grow = [(max(b, 0), max(a, 0)) for b, a in amounts]
    if mode != "constant":
        return write(out, np.pad(cropped, grow, mode=_NUMPY_PAD_MODES[mode]))
    given = constant_value is not None and np.size(constant_value) > 0
    fill = np.asarray(constant_value).reshape(-1)[0] if given else value
    if out is None:
        out = np.empty(tuple(d + b + a for d, (b, a) in zip(cropped.shape, grow)), data.dtype)
    out.fill(fill)
    out[tuple(slice(b, b + d) for d, (b, _) in zip(cropped.shape, grow))] = cropped
    return out


# ---- CenterCropPad -------------------------------------------------------------------------------


def _crop_pad_axes(rank: int, axes) -> list[int]:
    return list(range(rank)) if axes is None else [norm_axis(a, rank) for a in axes]


@plannable
def _center_crop_pad_infer(ins, axes=None, **_):
    x, target = ins[0], const_ints(ins[1])
    if x.shape is None or target is None:
        return None
    shape = list(x.shape)
    for a, t in zip(_crop_pad_axes(len(shape), axes), target):
        shape[a] = t
    return [(x.dtype, tuple(shape))]


@register_op("CenterCropPad", since=18, infer=_center_crop_pad_infer, out=True, shape_inputs=(1,))
def center_crop_pad(input_data, shape, *, axes=None, out=None):
    """A larger input is cropped from offset floor(diff / 2); a smaller one is zero-padded with the odd
    pixel going to the end."""
    src = [slice(None)] * input_data.ndim
    dst = [slice(None)] * input_data.ndim
    out_shape = list(input_data.shape)
    for a, t in zip(_crop_pad_axes(input_data.ndim, axes), ints(shape)):
        d = input_data.shape[a]
        out_shape[a] = t
        if d >= t:
            src[a] = slice((d - t) // 2, (d - t) // 2 + t)
        else:
            dst[a] = slice((t - d) // 2, (t - d) // 2 + d)
    if out is None:
        out = np.empty(tuple(out_shape), input_data.dtype)
    out.fill(0)
    out[tuple(dst)] = input_data[tuple(src)]
    return out


# ---- ReverseSequence / Compress ------------------------------------------------------------------


@plannable
def _reverse_sequence_infer(ins, **_):
    x = ins[0]
    return None if x.shape is None else [(x.dtype, x.shape)]


@register_op("ReverseSequence", since=10, infer=_reverse_sequence_infer, out=True)
def reverse_sequence(input, sequence_lens, *, batch_axis=1, time_axis=0, out=None):
    """Per batch entry b, the first sequence_lens[b] steps along the time axis are reversed: a gather
    whose source index is lens - 1 - t inside the prefix and t after it."""
    steps = input.shape[time_axis]
    lens = np.asarray(sequence_lens, np.int64)[:, None]
    t = np.arange(steps)[None, :]
    source = np.where(t < lens, lens - 1 - t, t)  # (batch, time)
    if batch_axis > time_axis:
        source = source.T
    index_shape = [1] * input.ndim
    index_shape[batch_axis], index_shape[time_axis] = input.shape[batch_axis], steps
    index = np.broadcast_to(source.reshape(index_shape), input.shape)
    return write(out, np.take_along_axis(input, index, axis=time_axis))


def _compress_infer(ins, axis=None, **_):
    x, cond = ins[0], ins[1]
    if x.shape is None or cond.value is None:
        return None
    kept = int(np.count_nonzero(np.asarray(cond.value).reshape(-1)))
    if axis is None:
        return [(x.dtype, (kept,))]
    axis = norm_axis(axis, len(x.shape))
    return [(x.dtype, x.shape[:axis] + (kept,) + x.shape[axis + 1 :])]


@register_op("Compress", since=9, infer=plannable(_compress_infer), out=True)
def compress(input, condition, *, axis=None, out=None):
    """Keeps the slices where condition is true; a condition shorter than the axis drops the rest."""
    cond = np.asarray(condition).reshape(-1).astype(bool)
    if axis is None:
        return write(out, np.compress(cond, np.ravel(input)))
    return write(out, np.compress(cond, input, axis=norm_axis(axis, input.ndim)))

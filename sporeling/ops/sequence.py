"""Sequence and optional ops.

A sequence value is a Python list of np.ndarray; an optional value is its element (a tensor or a
sequence), or None when empty. Kernels never mutate a list they receive: SequenceInsert and
SequenceErase build a new list, because the input list may still be read elsewhere (a loop-carried
value, a graph feed).

A tensor stored into a sequence is copied when it is a view (``base is not None``): planned buffers
are views of the session's arena, which later steps and later runs overwrite, and a sequence may
outlive the step that produced the tensor (it can be a graph output).

SequenceLength and OptionalHasElement produce scalars whose shape is known, and OptionalGetElement of
a known tensor passes its shape on, so they have infer functions; the other ops' results are
sequences, whose element shapes are not tracked.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from .infer import norm_axis
from .registry import register_op


def _owned(x) -> np.ndarray:
    x = np.asarray(x)
    return x.copy() if x.base is not None else x


def _position(position, length: int, inserting: bool = False) -> int:
    """A sequence position from an index tensor; negative counts from the end. For insertion the
    valid range is [-n, n], otherwise [-n, n-1]."""
    pos = int(np.asarray(position).reshape(-1)[0])
    upper = length if inserting else length - 1
    if not -length <= pos <= upper:
        raise IndexError(f"sequence position {pos} out of range for a sequence of length {length}")
    return pos + length if pos < 0 else pos


def is_empty_optional(x) -> bool:
    """True for an empty optional: None, or the 0-d object array holding None that np.asarray(None)
    makes when an empty optional is fed to a session."""
    if x is None:
        return True
    return isinstance(x, np.ndarray) and x.dtype == object and x.shape == () and x.item() is None


def _scalar_info(dtype):
    return lambda ins, **_attrs: [(np.dtype(dtype), ())]


# ---- sequences ---------------------------------------------------------------------------------


@register_op("SequenceConstruct", since=11)
def sequence_construct(*inputs):
    return [_owned(x) for x in inputs]


@register_op("SequenceEmpty", since=11)
def sequence_empty(*, dtype: int = 1):
    return []


@register_op("SequenceAt", since=11)
def sequence_at(sequence, position):
    return sequence[_position(position, len(sequence))]


@register_op("SequenceInsert", since=11)
def sequence_insert(sequence, tensor, position=None):
    pos = len(sequence) if position is None else _position(position, len(sequence), inserting=True)
    return [*sequence[:pos], _owned(tensor), *sequence[pos:]]


@register_op("SequenceErase", since=11)
def sequence_erase(sequence, position=None):
    pos = len(sequence) - 1 if position is None else _position(position, len(sequence))
    return [*sequence[:pos], *sequence[pos + 1 :]]


@register_op("SequenceLength", since=11, infer=_scalar_info(np.int64), out=True)
def sequence_length(sequence, *, out=None):
    if out is None:
        return np.array(len(sequence), np.int64)
    out[...] = len(sequence)
    return out


@register_op("SplitToSequence", since=11)
def split_to_sequence(data, split=None, *, axis: int = 0, keepdims: int = 1):
    axis = norm_axis(axis, data.ndim)
    dim = data.shape[axis]
    if split is None:
        parts = np.split(data, dim, axis=axis) if dim else []
        if not keepdims:
            parts = [np.squeeze(p, axis=axis) for p in parts]
    else:
        split = np.asarray(split)
        if split.ndim == 0:  # equal chunks of this size, the last one possibly smaller
            size = int(split)
            bounds = list(range(size, dim, size))
        else:
            if int(split.sum()) != dim:
                raise ValueError(f"SplitToSequence: split sizes {split.tolist()} do not add up to {dim}")
            bounds = np.cumsum(split)[:-1].tolist()
        parts = np.split(data, bounds, axis=axis)
    return [np.array(p) for p in parts]  # own contiguous copies, never views of the input


@register_op("ConcatFromSequence", since=11)
def concat_from_sequence(input_sequence, *, axis: int, new_axis: int = 0):
    if not input_sequence:
        raise ValueError("ConcatFromSequence: the sequence is empty")
    if new_axis:
        return np.stack(input_sequence, axis=norm_axis(axis, input_sequence[0].ndim + 1))
    return np.concatenate(input_sequence, axis=norm_axis(axis, input_sequence[0].ndim))


@register_op("SequenceMap", since=17, context=True)
def sequence_map(input_sequence, *additional_inputs, body: Graph, ctx):
    """Runs body once per element of input_sequence. Additional sequence inputs are walked in step
    with it; additional tensors are passed whole to every iteration."""
    n = len(input_sequence)
    extras = list(additional_inputs)
    for x in extras:
        if isinstance(x, list) and len(x) != n:
            raise ValueError(f"SequenceMap: sequences of different lengths ({n} and {len(x)})")
    results: list[list] = [[] for _ in body.outputs]
    for i in range(n):
        args = [input_sequence[i]] + [x[i] if isinstance(x, list) else x for x in extras]
        for k, value in enumerate(ctx.run(body, args)):
            results[k].append(_owned(value))
    return results[0] if len(results) == 1 else tuple(results)


# ---- optionals ---------------------------------------------------------------------------------


@register_op("Optional", since=15)
def optional(input=None, *, type=None):
    return None if is_empty_optional(input) else input


@register_op("OptionalHasElement", since=15, infer=_scalar_info(np.bool_), out=True)
def optional_has_element(input=None, *, out=None):
    has = not is_empty_optional(input)
    if out is None:
        return np.array(has)
    out[...] = has
    return out


def _get_element_info(ins, **_attrs):
    x = ins[0]
    return None if x is None or x.dtype is None or x.shape is None else [(x.dtype, x.shape)]


@register_op("OptionalGetElement", since=15, infer=_get_element_info)
def optional_get_element(input):
    """Opset 18 also accepts a plain tensor or sequence, which is returned as is."""
    if is_empty_optional(input):
        raise ValueError("OptionalGetElement: the optional is empty")
    return input

"""Indexing ops: gathers, scatters, NonZero, Unique and TopK.

Element-wise gathers and scatters (GatherElements, ScatterElements) address every position of the
indices tensor; they are turned into one NumPy advanced index: `indices` along the op's axis and an
open arange grid along every other axis. ScatterND's index tuple is the last dim of `indices`
unpacked. Reductions of duplicate indices use the unbuffered ufunc.at, so repeated targets accumulate
instead of the last write winning. Negative indices count from the back, which NumPy's indexing
already does.
"""

from __future__ import annotations

import math

import numpy as np

from .infer import const_ints, norm_axis
from .registry import register_op
from .shape_util import plannable, write

# ---- Gather / GatherElements / GatherND ------------------------------------------------------------


@plannable
def _gather_infer(ins, axis=0, **_):
    x, idx = ins[0], ins[1]
    if x.shape is None or idx.shape is None:
        return None
    axis = norm_axis(axis, len(x.shape))
    return [(x.dtype, x.shape[:axis] + tuple(idx.shape) + x.shape[axis + 1 :])]


@register_op("Gather", since=1, infer=_gather_infer, out=True)
def gather(data, indices, *, axis=0, out=None):
    axis = norm_axis(axis, data.ndim)
    n = data.shape[axis]
    indices = np.asarray(indices)
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise IndexError(f"Gather: indices must lie in [{-n}, {n - 1}]")
    # With the range checked, 'wrap' only maps negative indices; NumPy's default 'raise' mode would
    # also buffer the whole output before copying it to `out` (3-4x slower for embedding lookups).
    return np.take(data, indices, axis=axis, out=out, mode="wrap")


def element_index(indices: np.ndarray, axis: int) -> tuple:
    """The advanced index that reads position p of `indices` from (p[0], ..., indices[p], ..., p[-1])."""
    rank = indices.ndim
    grid = [np.arange(n).reshape([n if j == k else 1 for j in range(rank)]) for k, n in enumerate(indices.shape)]
    grid[axis] = indices
    return tuple(grid)


@plannable
def _gather_elements_infer(ins, **_):
    x, idx = ins[0], ins[1]
    return None if idx.shape is None else [(x.dtype, tuple(idx.shape))]


@register_op("GatherElements", since=11, infer=_gather_elements_infer, out=True)
def gather_elements(data, indices, *, axis=0, out=None):
    return write(out, data[element_index(indices, norm_axis(axis, data.ndim))])


def _gathernd_shape(data_shape, idx_shape, batch_dims):
    k = idx_shape[-1]
    return tuple(idx_shape[:-1]) + tuple(data_shape[batch_dims + k :])


@plannable
def _gathernd_infer(ins, batch_dims=0, **_):
    x, idx = ins[0], ins[1]
    if x.shape is None or idx.shape is None:
        return None
    return [(x.dtype, _gathernd_shape(x.shape, idx.shape, batch_dims))]


@register_op("GatherND", since=11, infer=_gathernd_infer, out=True)
def gather_nd(data, indices, *, batch_dims=0, out=None):
    """The leading batch_dims of data and indices are merged into one batch axis B; each batch then
    gathers slices data[b][i_0, ..., i_{k-1}] for the M index tuples of that batch."""
    k = indices.shape[-1]
    batch = math.prod(data.shape[:batch_dims])
    flat_data = data.reshape((batch,) + data.shape[batch_dims:])
    flat_idx = indices.reshape(batch, -1, k)
    b = np.arange(batch)[:, None]
    picked = flat_data[(b,) + tuple(flat_idx[..., j] for j in range(k))]
    return write(out, picked.reshape(_gathernd_shape(data.shape, indices.shape, batch_dims)))


# ---- Scatter / ScatterElements / ScatterND / TensorScatter -----------------------------------------

_REDUCE_AT = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_into(target: np.ndarray, index: tuple, updates: np.ndarray, reduction: str) -> None:
    if reduction == "none":
        target[index] = updates
    else:
        _REDUCE_AT[reduction].at(target, index, updates)


@plannable
def _like_first(ins, **_):
    x = ins[0]
    return None if x.shape is None else [(x.dtype, tuple(x.shape))]


def _fresh_copy(data, out):
    """The scatter target starts as data. Scatters declare inplace={0: 0}: when the planner hands them
    data's own dying buffer (a KV cache updated step after step), this copy is a no-op."""
    if out is None:
        return np.array(data, copy=True)
    if out is not data:
        np.copyto(out, data)
    return out


@register_op(["ScatterElements", "Scatter"], since=9, infer=_like_first, out=True, inplace={0: 0})
def scatter_elements(data, indices, updates, *, axis=0, reduction="none", out=None):
    """Scatter (opsets 9-10) is ScatterElements without reduction."""
    out = _fresh_copy(data, out)
    _scatter_into(out, element_index(indices, norm_axis(axis, data.ndim)), updates, reduction)
    return out


@register_op("ScatterND", since=11, infer=_like_first, out=True, inplace={0: 0})
def scatter_nd(data, indices, updates, *, reduction="none", out=None):
    out = _fresh_copy(data, out)
    _scatter_into(out, tuple(np.moveaxis(indices, -1, 0)), updates, reduction)
    return out


@register_op("TensorScatter", since=24, infer=_like_first, out=True, inplace={0: 0})
def tensor_scatter(past_cache, update, write_indices=None, *, mode="linear", axis=-2, out=None):
    """Writes update's sequence_length steps into the cache at write_indices[b] onwards for each batch
    entry b (wrapping around max_sequence_length in circular mode)."""
    out = _fresh_copy(past_cache, out)
    axis = norm_axis(axis, past_cache.ndim)
    batch, steps, capacity = update.shape[0], update.shape[axis], past_cache.shape[axis]
    starts = np.zeros(batch, np.int64) if write_indices is None else np.asarray(write_indices, np.int64)
    positions = starts[:, None] + np.arange(steps)[None, :]
    if mode == "circular":
        positions %= capacity
    # With the sequence axis moved next to the batch axis, (batch, positions) addresses whole rows.
    np.moveaxis(out, axis, 1)[np.arange(batch)[:, None], positions] = np.moveaxis(update, axis, 1)
    return out


# ---- NonZero / Unique ------------------------------------------------------------------------------


@register_op("NonZero", since=9)
def non_zero(x):
    if np.ndim(x) == 0:
        return np.zeros((0, int(bool(x))), np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(np.ndim(x), -1)


@register_op("Unique", since=11)
def unique(x, *, axis=None, sorted=1):
    """Y, first-occurrence indices, inverse indices and counts; unsorted output keeps the order in which
    values first appear, obtained by reordering the sorted result by first-occurrence index."""
    data = np.ravel(x) if axis is None else x
    kw = {} if axis is None else {"axis": norm_axis(axis, x.ndim)}
    values, first, inverse, counts = np.unique(data, return_index=True, return_inverse=True, return_counts=True,
                                               **kw)
    inverse = inverse.reshape(-1)
    if not sorted:
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        values = np.take(values, order, axis=kw.get("axis", 0))
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return values, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)


# ---- TopK ------------------------------------------------------------------------------------------


def _topk_k(k_input, k_attr) -> int | None:
    if k_input is not None:
        return int(np.asarray(k_input).reshape(-1)[0])
    return k_attr


@plannable
def _topk_infer(ins, axis=-1, k=None, **_):
    x = ins[0]
    k_info = ins[1] if len(ins) > 1 else None
    if k_info is not None:
        vals = const_ints(k_info)
        if vals is None:
            return None
        k = vals[0]
    if x.shape is None or k is None:
        return None
    axis = norm_axis(axis, len(x.shape))
    shape = x.shape[:axis] + (k,) + x.shape[axis + 1 :]
    return [(x.dtype, shape), (np.dtype(np.int64), shape)]


def topk_order(x: np.ndarray, axis: int, largest: int) -> np.ndarray:
    """Positions along axis in TopK order: by value (descending if largest), ties by lower index.

    Descending with ascending tie order is a stable ascending sort of the reversed axis, read
    backwards; that avoids negating values, which would wrap for unsigned integers."""
    if not largest:
        return np.argsort(x, axis=axis, kind="stable")
    n = x.shape[axis]
    flipped = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
    return (n - 1) - np.flip(flipped, axis)


def _select_rows(rows: np.ndarray, k: int, largest: int) -> np.ndarray:
    """Column indices, ascending, of each row's k best entries, without sorting the rows.

    np.partition finds the k-th best value v of each row; every entry better than v is taken, and the
    remaining places go to the entries equal to v with the lowest indices, as TopK's tie rule asks.
    Each row then holds exactly k chosen entries, so nonzero() yields them row by row."""
    n = rows.shape[1]
    kth = n - k if largest else k - 1
    v = np.partition(rows, kth, axis=1)[:, kth : kth + 1]
    better = rows > v if largest else rows < v
    tied = rows == v
    room = k - np.count_nonzero(better, axis=1)[:, None]
    chosen = better | (tied & (np.cumsum(tied, axis=1) <= room))
    return np.nonzero(chosen)[1].reshape(rows.shape[0], k)


def topk_indices(x: np.ndarray, axis: int, k: int, largest: int) -> np.ndarray:
    """Indices along axis of the k best entries in TopK order. A small k out of a long axis (vocabulary
    logits) partitions first and sorts only the k survivors; otherwise the whole axis is sorted."""
    n = x.shape[axis]
    has_nan = x.dtype.kind in "fc" and bool(np.isnan(x).any())
    if k == 0 or 8 * k > n or has_nan:
        return np.take(topk_order(x, axis, largest), np.arange(k), axis=axis)
    moved = np.moveaxis(x, axis, -1)
    rows = moved.reshape(-1, n)
    cols = _select_rows(rows, k, largest)
    # The survivors sit in ascending index order, so a stable sort of them keeps the tie rule.
    cols = np.take_along_axis(cols, topk_order(np.take_along_axis(rows, cols, 1), 1, largest), 1)
    return np.moveaxis(cols.reshape(moved.shape[:-1] + (k,)), -1, axis)


@register_op("TopK", since=1, infer=_topk_infer, out=True, shape_inputs=(1,))
def top_k(x, k_input=None, *, axis=-1, largest=1, sorted=1, k=None, out=None):
    """k is an attribute in opset 1 and an input from 10; unsorted requests still get sorted output."""
    axis = norm_axis(axis, x.ndim)
    index = topk_indices(x, axis, _topk_k(k_input, k), largest).astype(np.int64, copy=False)
    values = np.take_along_axis(x, index, axis=axis)
    if out is None:
        return values, index
    if isinstance(out, np.ndarray):  # only the values output is used
        return write(out, values)
    np.copyto(out[0], values)
    np.copyto(out[1], index)
    return out

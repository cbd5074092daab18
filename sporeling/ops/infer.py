"""Shared shape-inference helpers for OpDef.infer functions."""

from __future__ import annotations

import numpy as np

from .registry import Info


def broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(*shapes))


def known(*ins: Info | None) -> bool:
    """True when every given (non-omitted) input has a known shape."""
    return all(i is None or i.shape is not None for i in ins)


def same_as_first(ins: list[Info | None], **_attrs) -> list | None:
    """Output has the first input's dtype and shape (unary elementwise ops)."""
    x = ins[0]
    return None if x.shape is None else [(x.dtype, x.shape)]


def broadcast_like_first(ins: list[Info | None], **_attrs) -> list | None:
    """Output has the first input's dtype and the broadcast shape of all inputs."""
    present = [i for i in ins if i is not None]
    if not known(*present):
        return None
    return [(present[0].dtype, broadcast(*(i.shape for i in present)))]


def broadcast_bool(ins: list[Info | None], **_attrs) -> list | None:
    """Comparison ops: bool output of the broadcast shape."""
    present = [i for i in ins if i is not None]
    if not known(*present):
        return None
    return [(np.dtype(bool), broadcast(*(i.shape for i in present)))]


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def const_ints(info: Info | None) -> list[int] | None:
    """The integer values of a constant input (e.g. a shape or axes tensor), or None if unknown."""
    if info is None or info.value is None:
        return None
    return [int(v) for v in np.asarray(info.value).reshape(-1)]

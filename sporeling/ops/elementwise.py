"""Elementwise arithmetic, math and logic ops."""

from __future__ import annotations

import numpy as np

from .infer import broadcast_like_first
from .registry import register_op


@register_op("Add", since=7, infer=broadcast_like_first, out=True, inplace={0: 0})
def add(a, b, *, out=None):
    return np.add(a, b, out=out)

"""Window geometry shared by the convolution and pooling kernels.

A sliding window along one spatial axis is described by its kernel size k, stride s, dilation d
and the padding added before and after the axis. The window's extent is (k - 1) * d + 1. These
helpers turn ONNX attributes (explicit `pads`, or `auto_pad` SAME_UPPER/SAME_LOWER/VALID, and for
pooling `ceil_mode`) into per-axis begin/end padding and the output size, so that every kernel in
the family agrees on them, and carve aligned views out of a flat scratch buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..memory.planner import ALIGN, align  # every carved workspace array on its own cache line


@dataclass(frozen=True)
class Window:
    """Resolved geometry of an N-D sliding window."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pad_begin: tuple[int, ...]
    pad_end: tuple[int, ...]
    in_sizes: tuple[int, ...]
    out_sizes: tuple[int, ...]

    @property
    def nd(self) -> int:
        return len(self.kernel)


def _ints(value, n: int, default: int) -> tuple[int, ...]:
    if value is None or len(value) == 0:
        return (default,) * n
    return tuple(int(v) for v in value)


def _auto_pad_name(auto_pad) -> str:
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    return (auto_pad or "NOTSET").upper()


def _same_pads(total: int, mode: str) -> tuple[int, int]:
    small = total // 2
    return (small, total - small) if mode == "SAME_UPPER" else (total - small, small)


def conv_window(in_sizes, kernel, strides=None, dilations=None, pads=None, auto_pad="NOTSET") -> Window:
    """Geometry of a convolution: floor division, SAME pads so that out = ceil(in / stride)."""
    return pool_window(in_sizes, kernel, strides, dilations, pads, auto_pad, ceil_mode=0)


def pool_window(in_sizes, kernel, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
                ceil_mode=0) -> Window:
    """Geometry of a pooling (or, with ceil_mode=0, convolution) window. With ceil_mode the last
    window may hang over the end, but a window that would start inside the end padding is dropped
    (the PyTorch/ONNX rule)."""
    nd = len(kernel)
    kernel = tuple(int(k) for k in kernel)
    strides, dilations = _ints(strides, nd, 1), _ints(dilations, nd, 1)
    mode = _auto_pad_name(auto_pad)
    begin, end, out = [], [], []
    for a in range(nd):
        n, k, s, d = int(in_sizes[a]), kernel[a], strides[a], dilations[a]
        extent = (k - 1) * d + 1
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-n // s)
            pb, pe = _same_pads(max(0, (o - 1) * s + extent - n), mode)
        else:
            if mode == "VALID":
                pb = pe = 0
            else:
                p = _ints(pads, 2 * nd, 0)
                pb, pe = p[a], p[a + nd]
            span = n + pb + pe - extent
            if ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= n + pb:
                    o -= 1
            else:
                o = span // s + 1
        begin.append(pb)
        end.append(pe)
        out.append(max(o, 0))
    return Window(kernel, strides, dilations, tuple(begin), tuple(end), tuple(int(v) for v in in_sizes), tuple(out))


def tap_range(out_size: int, in_size: int, offset: int, stride: int) -> tuple[int, int]:
    """Output positions o in [lo, hi) whose input position o * stride + offset lies in [0, in_size)."""
    lo = -(offset // stride) if offset < 0 else 0
    top = in_size - 1 - offset
    hi = min(out_size, top // stride + 1) if top >= 0 else 0
    return lo, max(lo, hi)


# ---- scratch carving ----------------------------------------------------------------------------
def workspace_bytes(specs) -> int:
    """Bytes needed to carve the arrays described by specs: a list of (shape, dtype)."""
    return sum(align(math.prod(shape) * np.dtype(dt).itemsize) for shape, dt in specs) + ALIGN


def carve(scratch: np.ndarray | None, specs) -> list[np.ndarray]:
    """Aligned, non-overlapping arrays of the given (shape, dtype) out of a flat uint8 buffer
    (allocated here when the caller got no scratch, e.g. outside a memory plan)."""
    need = workspace_bytes(specs)
    if scratch is None or scratch.nbytes < need:
        scratch = np.empty(need, np.uint8)
    start = (-scratch.ctypes.data) % ALIGN
    arrays = []
    for shape, dt in specs:
        dt = np.dtype(dt)
        n = math.prod(shape) * dt.itemsize  # (math.prod: this runs every call, np.prod costs ~5 us)
        arrays.append(scratch[start : start + n].view(dt).reshape(shape))
        start += align(n)
    return arrays

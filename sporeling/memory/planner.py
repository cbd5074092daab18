"""Static memory planning: place every planned tensor in one arena.

Each buffer has a size in bytes and a lifetime [first, last] in step indices (both inclusive: it is
written at step `first` and read for the last time at step `last`). Two buffers may overlap in the
arena only if their lifetimes are disjoint.

The placement is TFLite Micro's greedy-by-size: take buffers from largest to smallest; for each,
collect the already placed buffers whose lifetimes intersect it, sorted by offset, and put the new
buffer in the first gap between them that is large enough (or after the last one). Offsets are
aligned to ALIGN bytes so every view is SIMD-aligned.

The lower bound on any arena is the largest total of live bytes at one step; `Plan.lower_bound`
reports it so the quality of a plan can be read off.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGN = 64


def align(n: int) -> int:
    """n rounded up to a multiple of ALIGN: where the next buffer (or carved array) may start."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Buffer:
    size: int
    first: int
    last: int
    offset: int = -1


@dataclass
class ArenaPlan:
    buffers: list[Buffer]
    arena_size: int
    total_size: int  # sum of every buffer: what allocating each tensor on its own would cost
    lower_bound: int  # most bytes live at any one step


def plan_arena(buffers: list[Buffer]) -> ArenaPlan:
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].first, i))
    placed: list[Buffer] = []
    end = 0
    for i in order:
        b = buffers[i]
        size = align(b.size)
        live = sorted((p for p in placed if p.first <= b.last and b.first <= p.last), key=lambda p: p.offset)
        offset = 0
        for p in live:
            if p.offset - offset >= size:
                break
            offset = max(offset, p.offset + align(p.size))
        b.offset = offset
        placed.append(b)
        end = max(end, offset + size)
    return ArenaPlan(buffers, end, sum(b.size for b in buffers), live_lower_bound(buffers))


def live_lower_bound(buffers: list[Buffer]) -> int:
    if not buffers:
        return 0
    steps = max(b.last for b in buffers) + 1
    delta = [0] * (steps + 1)
    for b in buffers:
        delta[b.first] += b.size
        delta[b.last + 1] -= b.size
    best = live = 0
    for d in delta:
        live += d
        best = max(best, live)
    return best

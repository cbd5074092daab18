"""Transform coding of dense weights that read a flattened feature map: quantize their DCT, not the weights.

A Gemm or MatMul after a Flatten of an (N, C, H, W) map has one weight per output, channel and position;
neighbouring positions see neighbouring pixels, and a trained layer's weights are smooth over them. The
orthonormal DCT-II over those axes gathers that smoothness into few coefficients (Fashion-MNIST's classifier,
9216 = 64 x 12 x 12 inputs: the lowest frequencies carry ten times the mean energy, the highest a tenth), so
on the same step the coefficients' codes take fewer bits than the weights' (0.99 against 1.19 bits a weight
at two levels there, at a relative error of 0.50 against 0.54; benchmarks/README.md). The transform is
orthonormal and stays within each output channel, so a channel's coefficients have its weights' norm and their
rounding error is the weights' error: the searches' errors, steps and bias correction are unchanged, applied
to the coefficients (bias correction keeps the coefficients' mean and variance per channel, which keeps the
weights' norm per channel).

The file stores the coefficients' codes with {"dct": {"view": [...], "axes": [...]}} in the codec's params:
decoding is the affine dequantization, then the inverse DCT along `axes` of the tensor seen as `view` (a
reshape, C order). Which axes, if any: measured per tensor (choose), since a view's axes may be positions in
either layout (NCHW or NHWC before the flatten) or channels, where no transform helps.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from ..ir import Graph

MIN_SIZE = 4  # a view axis shorter than this is not transformed: too few neighbours to gather
MAX_SIZE = 256  # nor one longer: a reader builds an (n, n) matrix per length (at most 512 KiB each, cached)
MAX_AXES = 3  # axes of one view that may be transformed together
MAX_VIEW = 8  # dimensions of a view
CHOICE_LEVELS = (2, 4)  # the levels at which choose() compares the coefficients' codes with the weights'
MIN_GAIN = 0.02  # the coded size a transform must save at each of them


@functools.lru_cache(maxsize=64)
def matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II of length n as an (n, n) float64 matrix: coefficients = matrix @ signal."""
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    m.setflags(write=False)
    return m


def apply(x: np.ndarray, view: tuple[int, ...], axes: tuple[int, ...], inverse: bool = False) -> np.ndarray:
    """The DCT (or its inverse) of x seen as `view`, along `axes`, back in x's shape, in float64."""
    y = np.asarray(x, np.float64).reshape(view)
    for a in axes:
        m = matrix(view[a])
        y = np.moveaxis(np.tensordot(m.T if inverse else m, y, axes=([1], [a])), 0, a)
    return y.reshape(np.shape(x))


def check(spec, shape: tuple[int, ...], axis: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(view, axes) of a codec's "dct" params, or ValueError: view a reshape of shape, axes distinct axes of
    it, each MIN_SIZE..MAX_SIZE long, none holding more than one of the tensor's channels (along `axis`)."""
    if not isinstance(spec, dict) or set(spec) != {"view", "axes"}:
        raise ValueError(f"dct must be an object with view and axes, not {spec!r}")
    view, axes = spec["view"], spec["axes"]
    if (not isinstance(view, list) or not 1 <= len(view) <= MAX_VIEW
            or not all(type(d) is int and d >= 1 for d in view)):
        raise ValueError(f"dct view must be a list of 1 to {MAX_VIEW} positive integers, not {view!r}")
    if math.prod(view) != math.prod(shape):
        raise ValueError(f"dct view {view} does not hold the {math.prod(shape)} elements of shape {list(shape)}")
    if (not isinstance(axes, list) or not 1 <= len(axes) <= MAX_AXES
            or not all(type(a) is int and 0 <= a < len(view) for a in axes) or len(set(axes)) != len(axes)):
        raise ValueError(f"dct axes must be 1 to {MAX_AXES} distinct axes of view {view}, not {axes!r}")
    if any(not MIN_SIZE <= view[a] <= MAX_SIZE for a in axes):
        raise ValueError(f"dct axes {axes} of view {view}: each must be {MIN_SIZE} to {MAX_SIZE} long")
    if axis is not None:
        channel = _channel_axis(tuple(shape), axis, tuple(view))
        if channel is None or channel in axes:
            raise ValueError(f"dct view {view} must keep the {shape[axis]} channels along axis {axis} of "
                             f"{list(shape)} as one axis, and axes {axes} must leave it out")
    return tuple(view), tuple(axes)


def _channel_axis(shape: tuple[int, ...], axis: int, view: tuple[int, ...]) -> int | None:
    """The axis of `view` that is `shape`'s channel axis (the same elements before, along and after it), or
    None: then a transform along any view axis might mix channels."""
    before = math.prod(shape[:axis])
    for j, d in enumerate(view):
        if d == shape[axis] and math.prod(view[:j]) == before:
            return j
    return None


def views(graph: Graph, axes: dict[str, int | None], feed: dict) -> dict[str, tuple[tuple[int, ...],
                                                                                  list[tuple[int, ...]]]]:
    """For each 2-D weight of `axes` (name -> its output channels' axis) that a Gemm/MatMul reads (as its right
    operand) from a Flatten, or a Reshape to (batch, -1), of a map of rank 3 or more: (its view, the candidate
    axis sets). The map's shape comes from one run of the model on `feed`; the view splits the weight's input
    axis into the map's dimensions (batch left out) beside its output channels, and the candidates are the sets
    of those dimensions, up to MAX_AXES, each MIN_SIZE..MAX_SIZE long."""
    from .gptq import weight_readers
    from .mixed import inner_values

    readers = weight_readers(graph, axes)
    producer = {o: n for n in graph.nodes for o in n.outputs}
    flat: dict[str, tuple[str, str]] = {}  # weight -> (the flattened map, the flat value)
    for name, (_, users) in readers.items():
        w = graph.initializers[name]
        sources = {u.inputs[0] for u in users if u.op_type in ("Gemm", "MatMul", "FusedMatMul")}
        if w.ndim != 2 or len(sources) != 1 or any(u.op_type == "Gemm" and u.attrs.get("transA", 0) for u in users):
            continue
        src = sources.pop()
        p = producer.get(src)
        if p is not None and p.op_type in ("Flatten", "Reshape") and p.inputs[0] not in graph.initializers:
            if p.op_type == "Reshape" or int(p.attrs.get("axis", 1)) == 1:
                flat[name] = (p.inputs[0], src)
    if not flat:
        return {}
    got = inner_values(graph, {v for pair in flat.values() for v in pair}, feed)
    found = {}
    for name, (mapped, src) in flat.items():
        m, f = np.shape(got[mapped]), np.shape(got[src])
        if len(m) < 3 or len(f) != 2 or f[0] != m[0] or f[1] != math.prod(m[1:]):
            continue
        w = graph.initializers[name]
        dims = tuple(int(d) for d in m[1:])
        out = axes.get(name)
        if out is None or w.shape[1 - out] != math.prod(dims):
            continue
        view = (w.shape[0],) + dims if out == 0 else dims + (w.shape[1],)
        first = 1 if out == 0 else 0
        eligible = [first + i for i, d in enumerate(dims) if MIN_SIZE <= d <= MAX_SIZE]
        cands = [c for r in range(1, min(MAX_AXES, len(eligible)) + 1) for c in itertools.combinations(eligible, r)]
        if cands:
            found[name] = (view, cands)
    return found


def choose(w: np.ndarray, axis: int, view: tuple[int, ...], candidates: list[tuple[int, ...]],
           bias_correction: bool = True) -> tuple[int, ...] | None:
    """The candidate axes whose coefficients code smallest at every level of CHOICE_LEVELS, if they save at
    least MIN_GAIN of the weights' own coded size there at no more error; else None (keep the weights)."""
    from .allocate import entropy_bytes
    from .mixed import quantize_step

    plain = [quantize_step(w, lv, axis, bias_correction) for lv in CHOICE_LEVELS]
    best, best_size = None, [entropy_bytes(q.codes) for q in plain]
    for axes in candidates:
        qs = [quantize_step(w, lv, axis, bias_correction, dct=(view, axes)) for lv in CHOICE_LEVELS]
        sizes = [entropy_bytes(q.codes) for q in qs]
        if all(s <= (1 - MIN_GAIN) * b and q.error <= p.error * (1 + MIN_GAIN)
               for s, b, q, p in zip(sizes, best_size, qs, plain)):
            best, best_size = axes, sizes
    return best

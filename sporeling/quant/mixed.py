"""The original's mixed-bit search: an error target per tensor, the step found by binary search, the bits
left to the entropy coder, and a model-level target tuned on sample inputs.

Per tensor, quantization is symmetric per output channel with L positive levels (codes 0..2L, zero at
L, scale_c = max|w_c| / L): L is the quantization step in disguise. For a target t, the binary search
finds the smallest L whose mean over channels of the relative RMS error ||w_c - deq_c|| / ||w_c|| (bias
correction applied inside the loop, as the stored weights will have it) is at most t. The codes then
go to the FSE coder, which spends on each the bits its frequency deserves: a tensor at L = 20 needs
6-bit codes but codes to about 3-4 bits per weight. Errors are memoised per (tensor, L), so tuning the
model-level target costs little beyond the first search.

Model level: tune() bisects the target on a log scale for the largest t whose outputs keep a cosine
similarity of at least `target_cosine` to the float model's on every sample input and output (random
inputs when no data is given). Evaluation rebuilds the weights exactly as the file will decode them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Callable

import numpy as np

from ..format.codecs_quant import dequantize_coded
from ..ir import Graph, ValueInfo
from .bias_correction import bias_correct, mean_relative_rms_error
from .encode import Quantized, affine
from .quantize import QuantParams, _rows, _unrows, dequantize

MAX_LEVELS = (1 << 15) - 1  # codes 0..2L fit 16 bits
DEFAULT_TARGET = 0.02


CLIP_RATIOS = np.linspace(0.6, 1.0, 9)  # clip search grid of quantize_levels(clip=True)
CLIP_MAX_LEVELS = 31  # above this, clipping the range barely lowers the error


def quantize_levels(w: np.ndarray, levels: int, axis: int | None, bias_correction: bool = True,
                    clip: bool = False) -> Quantized:
    """Symmetric quantization with `levels` positive levels per channel (codes 0..2*levels). clip: per
    channel, the range max|w_c| * r (r in CLIP_RATIOS) with the least squared error, for levels up to
    CLIP_MAX_LEVELS (the original's search takes max|w|: clip=False)."""
    rows = _rows(np.asarray(w), axis).astype(np.result_type(w.dtype, np.float32), copy=False)
    peak = np.abs(rows).max(axis=1, initial=0).astype(np.float64)
    scale = _level_scale(peak, levels)
    if clip and levels <= CLIP_MAX_LEVELS and rows.size:
        best = _level_errors(rows, scale, levels)
        for r in CLIP_RATIOS[:-1]:
            s_r = _level_scale(peak * r, levels)
            err = _level_errors(rows, s_r, levels)
            better = err < best
            best[better], scale[better] = err[better], s_r[better]
    return _symmetric(w, np.rint(rows / scale[:, None].astype(rows.dtype)), scale, levels, axis, bias_correction)


STEP_PEAK = 4.0  # quantize_step's step is STEP_PEAK * rms_c / L: L levels reach STEP_PEAK RMS from zero
MAX_ZERO = (1 << 15) - 1  # quantize_step's codes 0..2 * zero fit 16 bits; rarer outliers clip there


def quantize_step(w: np.ndarray, levels: int, axis: int | None, bias_correction: bool = True,
                  dct: tuple | None = None, window: int = 1) -> Quantized:
    """Symmetric quantization with a step proportional to each channel's RMS, the mixed search's grid:
    step_c = STEP_PEAK * rms_c / levels, codes not clipped to a range but as wide as the weights need
    (one zero code for the tensor, at most MAX_ZERO), left to the entropy coder.

    Why not quantize_levels' max|w_c| / L: a channel with one outlier gets a coarse step for all its
    weights. For entropy-coded codes at a rate of a few bits, a channel's bits go as -log2 of its
    relative error r_c, so the mean of r_c (the error the search allocates by) costs the fewest bits for
    its value when every r_c is equal: a step proportional to the channel's spread. Outliers then cost a
    few rare long codes instead of every weight's precision. On the real models the output error at one
    size moves both ways (benchmarks/step_grid.py: every tensor at one L, 13 of 32 model-levels better,
    1 - cosine 1.24x lower in geometric mean; PP-OCR rec, Silero and face detection gain most, landmark
    and selfie at coarse L lose); the mixed search, which picks L per tensor, ends smaller on the step
    grid (benchmarks/README.md).

    dct: (view, axes): quantize the weight's DCT coefficients instead (quant/dct.py); the error is the same
    in both domains, since the transform is orthonormal within each channel.

    window > 1: each run of `window` consecutive weights of a channel (one input channel's convolution kernel,
    encode.conv_windows) is rounded keeping its sum (kept_sums), and no bias correction follows: its gain would
    scale the kept sums away, and keeping every kernel's sum already keeps the channel's mean."""
    if dct is not None:
        from .dct import apply

        q = quantize_step(apply(w, *dct).astype(np.result_type(w.dtype, np.float32)), levels, axis, bias_correction)
        return Quantized(q.codes, q.params, q.error, dct)
    rows = _rows(np.asarray(w), axis).astype(np.float64)
    rms = np.sqrt(np.einsum("ij,ij->i", rows, rows) / max(rows.shape[1], 1))
    scale = (STEP_PEAK * rms / levels).astype(np.float32)
    scale[~(scale >= np.finfo(np.float32).tiny) | ~np.isfinite(scale)] = 1.0
    q = rows / scale[:, None].astype(np.float64)
    if window > 1:
        q, bias_correction = kept_sums(q.reshape(-1, window)).reshape(q.shape), False
    else:
        q = np.rint(q)
    return _symmetric(w, q, scale, int(min(MAX_ZERO, max(1, np.abs(q).max(initial=0)))), axis, bias_correction)


def kept_sums(t: np.ndarray) -> np.ndarray:
    """Each row of t rounded to integers whose sum is the nearest integer to the row's own sum: rounding to
    nearest, then the entries nearest to rounding the other way go that way, one step each, until the sum is
    met. A convolution kernel rounded so responds to a flat input (a uniform patch of one channel, common in
    real images, absent from white noise) as the float kernel does, to half a step; each weight moves at most
    one step past its nearest."""
    r = np.rint(t)
    frac = t - r
    need = (np.rint(t.sum(axis=1)) - r.sum(axis=1))[:, None]
    up = np.argsort(np.argsort(-frac, axis=1, kind="stable"), axis=1, kind="stable") < need
    down = np.argsort(np.argsort(frac, axis=1, kind="stable"), axis=1, kind="stable") < -need
    return r + up - down


def _symmetric(w: np.ndarray, q: np.ndarray, scale: np.ndarray, zero: int, axis: int | None,
               bias_correction: bool) -> Quantized:
    """The Quantized of rounded rows q (steps from zero, one row per channel of scale): codes q + zero,
    clipped to 0..2 * zero, bias-corrected, with their error."""
    q = np.clip(q + zero, 0, 2 * zero)
    bits = max(1, math.ceil(math.log2(2 * zero + 1)))
    codes = np.ascontiguousarray(_unrows(q.astype(np.uint8 if bits <= 8 else np.uint16), w.shape, axis))
    zp = np.full(scale.shape, zero, np.int32)
    if axis is None:
        scale, zp = scale.reshape(()), zp.reshape(())
    params = QuantParams(bits, True, axis, scale, zp)
    if bias_correction:
        params = bias_correct(w, codes, params)
    return Quantized(codes, params, mean_relative_rms_error(w, dequantize(codes, params, np.float64), axis))


def _level_scale(peak: np.ndarray, levels: int) -> np.ndarray:
    scale = (peak / levels).astype(np.float32)
    scale[~(scale >= np.finfo(np.float32).tiny) | ~np.isfinite(scale)] = 1.0
    return scale


def _level_errors(rows: np.ndarray, scale: np.ndarray, levels: int) -> np.ndarray:
    s = scale[:, None].astype(rows.dtype)
    q = np.clip(np.rint(rows / s), -levels, levels)
    diff = np.subtract(q * s, rows, dtype=np.float64)
    return np.einsum("ij,ij->i", diff, diff)


class TensorSearch:
    """One weight's binary search over L, with every error it measured remembered."""

    def __init__(self, w: np.ndarray, axis: int | None, bias_correction: bool = True):
        self.w, self.axis, self.bias_correction = w, axis, bias_correction
        self.errors: dict[int, float] = {}

    def error(self, levels: int) -> float:
        if levels not in self.errors:
            self.errors[levels] = quantize_levels(self.w, levels, self.axis, self.bias_correction).error
        return self.errors[levels]

    def levels_for(self, target: float) -> int:
        """The smallest L with error <= target (MAX_LEVELS if none is)."""
        lo, hi = 1, MAX_LEVELS
        if self.error(lo) <= target:
            return lo
        while hi - lo > 1:  # invariant: error(lo) > target, and hi is the best candidate so far
            mid = (lo + hi) // 2
            if self.error(mid) <= target:
                hi = mid
            else:
                lo = mid
        return hi

    def quantize(self, target: float) -> Quantized:
        return quantize_levels(self.w, self.levels_for(target), self.axis, self.bias_correction)


def decoded(q: Quantized, dtype: np.dtype) -> np.ndarray:
    """The weight as the file will give it back: code * A + B in float32 (then the inverse DCT of coefficients),
    then the stored dtype."""
    a, b = affine(q.params, q.codes)
    return dequantize_coded(q.codes, a, b, q.params.axis, dtype, q.dct)


def with_weights(graph: Graph, weights: dict[str, np.ndarray]) -> Graph:
    """A copy of graph (sharing every other array and every untouched node) with some initializers
    replaced, those of If/Loop/Scan bodies included (names as Graph.named_initializers gives them)."""
    g = copy.copy(graph)
    g.initializers = {k: weights.get(k, v) for k, v in graph.initializers.items()}
    if any(n.subgraphs() for n in graph.nodes):
        g.nodes = [_node_with_weights(n, weights) for n in graph.nodes]
    return g


def with_outputs(graph: Graph, names) -> Graph:
    """A copy of graph that also outputs the named values (those not already outputs, inputs or initializers),
    in sorted order: how the quantizers look inside a model as it runs."""
    have = {v.name for v in graph.outputs} | {v.name for v in graph.inputs} | set(graph.initializers)
    g = copy.copy(graph)
    g.outputs = list(graph.outputs) + [ValueInfo(v) for v in sorted(set(names) - have)]
    return g


def inner_values(graph: Graph, names, feed: dict) -> dict:
    """The values of one run of graph on feed, the named inner ones included, and the feed's own: what the
    quantizers read of a map's shape before they choose how to round (dct.views, encode.conv_windows)."""
    from ..model import Model

    return {**Model(with_outputs(graph, set(names) - set(feed)), "inner values").run(feed), **feed}


def _node_with_weights(node, weights: dict[str, np.ndarray]):
    subs = node.subgraphs()
    if not subs or not any(_holds(sg, weights) for sg in subs):
        return node
    attrs = {}
    for k, v in node.attrs.items():
        if isinstance(v, Graph):
            v = with_weights(v, weights)
        elif isinstance(v, list) and any(isinstance(x, Graph) for x in v):
            v = [with_weights(x, weights) if isinstance(x, Graph) else x for x in v]
        attrs[k] = v
    return dataclasses.replace(node, attrs=attrs)


def _holds(graph: Graph, weights: dict) -> bool:
    return any(k in weights for k in graph.initializers) or any(_holds(sg, weights) for n in graph.nodes
                                                               for sg in n.subgraphs())


def tune(searches: dict[str, TensorSearch], score: Callable[[dict[str, Quantized]], float], target_cosine: float,
         lo: float = 0.001, hi: float = 0.3, steps: int = 8,
         progress: Callable[[str], None] = lambda s: None) -> tuple[float, dict[str, Quantized], float]:
    """The largest per-tensor error target in [lo, hi] whose score (the worst output cosine) is at least
    target_cosine, by bisection on log(target). Returns (target, quantized tensors, score)."""

    def attempt(t: float) -> tuple[dict[str, Quantized], float]:
        qs = {name: s.quantize(t) for name, s in searches.items()}
        value = score(qs)
        progress(f"target error {t:.4f}: worst output cosine {value:.5f}")
        return qs, value

    best_qs, best_score = attempt(lo)
    best = lo
    if best_score < target_cosine:
        return best, best_qs, best_score  # even the finest target misses: the caller reports it
    qs, value = attempt(hi)
    if value >= target_cosine:
        return hi, qs, value
    a, b = math.log(lo), math.log(hi)
    for _ in range(steps):
        mid = math.exp((a + b) / 2)
        qs, value = attempt(mid)
        if value >= target_cosine:
            a, best, best_qs, best_score = math.log(mid), mid, qs, value
        else:
            b = math.log(mid)
    return best, best_qs, best_score

"""Our own mixed-bit search: one global allocation of levels per layer by measured sensitivity.

The original gives every tensor the same error target. But layers differ: an error in the first
convolution or the classifier moves the outputs far more than the same relative error in a wide middle
layer, and a large tensor costs more bytes per step of precision than a small one. So we:

1. measure each tensor's sensitivity once: quantize that tensor alone coarsely (PROBE_LEVELS), run the
   sample inputs, and take s_i = (1 - worst output cosine) / e_i^2, with e_i its relative weight error
   (output distortion grows with the square of a small weight error, so s_i holds across steps);
2. for each tensor and each candidate L (LEVEL_GRID), know e_i(L) and the coded size b_i(L) (from the
   codes' empirical entropy, which FSE reaches within about 1%);
3. for a Lagrange multiplier lam, let every tensor pick the L minimising s_i * e_i(L)^2 + lam * b_i(L):
   predicted distortion and size trade off at one price everywhere, which is the optimum of the
   additive model for that size;
4. bisect lam (on a log scale) for the smallest model whose measured worst output cosine on the sample
   inputs is still at least the target.

Measurements: len(tensors) probe evaluations plus about 10 for the bisection, each one model run per
sample input.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .encode import Quantized
from .mixed import quantize_levels

LEVEL_GRID = (1, 2, 3, 5, 7, 11, 15, 23, 31, 47, 63, 95, 127, 191, 255, 511, 1023, 4095)
PROBE_LEVELS = 7
HEADER_BYTES = 64  # FSE header and per-tensor overhead, roughly; per-channel scales are added exactly


def entropy_bytes(codes: np.ndarray) -> float:
    counts = np.bincount(codes.reshape(-1).astype(np.int64))
    p = counts[counts > 0] / codes.size
    return float(-(p * np.log2(p)).sum() * codes.size / 8)


class Candidates:
    """For one tensor: error and coded size at every level of LEVEL_GRID (computed on first use)."""

    def __init__(self, w: np.ndarray, axis: int | None, bias_correction: bool):
        self.w, self.axis, self.bias_correction = w, axis, bias_correction
        channels = 1 if axis is None else w.shape[axis]
        self.table: list[tuple[int, float, float]] = []
        for levels in LEVEL_GRID:
            q = quantize_levels(w, levels, axis, bias_correction)
            self.table.append((levels, q.error, entropy_bytes(q.codes) + 8 * channels + HEADER_BYTES))

    def error_at(self, levels: int) -> float:
        return next(e for lv, e, _ in self.table if lv == levels)

    def pick(self, sensitivity: float, lam: float) -> int:
        return min(self.table, key=lambda t: sensitivity * t[1] ** 2 + lam * t[2])[0]

    def quantize(self, levels: int) -> Quantized:
        return quantize_levels(self.w, levels, self.axis, self.bias_correction)


def allocate(candidates: dict[str, Candidates], score: Callable[[dict[str, Quantized]], float],
             target_cosine: float, progress: Callable[[str], None] = lambda s: None, steps: int = 12
             ) -> tuple[dict[str, Quantized], float, dict[str, float]]:
    """Returns (quantized tensors, their measured worst cosine, sensitivities)."""
    sens = {}
    for name, c in candidates.items():
        q = c.quantize(PROBE_LEVELS)
        loss = max(1.0 - score({name: q}), 1e-12)
        sens[name] = loss / max(q.error, 1e-12) ** 2
    progress(f"sensitivities measured for {len(sens)} tensors (max/min {max(sens.values()) / min(sens.values()):.3g})"
             if sens else "nothing to quantize")

    def build(lam: float) -> tuple[dict[str, Quantized], float]:
        qs = {n: c.quantize(c.pick(sens[n], lam)) for n, c in candidates.items()}
        value = score(qs)
        size = sum(entropy_bytes(q.codes) for q in qs.values())
        progress(f"price {lam:.3g}: ~{size / 1024:.0f} KiB of codes, worst output cosine {value:.5f}")
        return qs, value

    # The price of a byte in distortion units: from "every tensor at its finest level" to "coarsest".
    lo, hi = 1e-14, 1e2
    best = build(lo)
    if best[1] < target_cosine or not candidates:
        return best[0], best[1], sens
    a, b = math.log(lo), math.log(hi)
    for _ in range(steps):
        mid = math.exp((a + b) / 2)
        qs, value = build(mid)
        if value >= target_cosine:
            a, best = math.log(mid), (qs, value)
        else:
            b = math.log(mid)
    return best[0], best[1], sens

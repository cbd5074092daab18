"""Our own mixed-bit search: one global allocation of levels per layer by measured sensitivity.

The original gives every tensor the same error target. But layers differ: an error in the first
convolution or the classifier moves the outputs far more than the same relative error in a wide middle
layer, and a large tensor costs more bytes per step of precision than a small one. So we:

1. measure each tensor's sensitivity once: quantize that tensor alone, everything else float, run the
   sample inputs, and take s_i = (1 - worst output agreement) / e_i^2, with e_i its relative weight
   error. Output distortion
   grows with the square of a small weight error, but only while it is small: a probe that wrecks the
   outputs saturates (1 - cosine cannot pass 1) and would call the most sensitive layer tame. So the
   probe starts at PROBE_LADDER[0] levels and goes finer until the loss is below LINEAR_LOSS;
2. for each tensor and each candidate L (LEVEL_GRID), know e_i(L) and the coded size b_i(L) (the codes'
   empirical entropy, which FSE reaches within about 1%, plus the per-channel scales), on the grid of
   mixed.quantize_step: a step of STEP_PEAK * rms_c / L per channel, codes as wide as the weights need
   (GPTQ rounds on quantize_levels' max|w_c| / L grid instead, clipping searched for coarse L);
3. for a Lagrange multiplier lam, let every tensor pick the L minimising s_i * e_i(L)^2 + lam * b_i(L):
   predicted distortion and size trade off at one price everywhere, the optimum of the additive model
   for that size;
4. bisect lam (on a log scale) for the smallest model whose measured worst output agreement on the
   sample inputs is still at least the target; every allocation measured is remembered and the
   smallest one that met the target wins, whatever the bisection did after it;
5. refine: the additive model is only a model, so from the winner, coarsen the tensors whose next
   coarser level saves the most bytes per unit of predicted distortion, a batch at a time, keeping a
   batch only if the measured agreement still meets the target (the batch halves on a miss).

Measurements: one to three probes per tensor, up to `steps` for the bisection and `refine` more.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from .bitpack import packed_size
from .encode import Quantized, encode, scales_header, too_tight_for_fse
from .mixed import quantize_levels, quantize_step

# about 4 levels per doubling up to 255 (2 above, where few tensors land): a step coarser saves a tensor ~0.3 bits
# a weight, so the search can stop near its target (at 2 per doubling throughout, PP-OCRv4 rec's data-free
# searches missed on real text lines at 3 seeds of 3; at 4, none of 3 missed, at about the same size;
# benchmarks/README.md)
LEVEL_GRID = (1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 15, 19, 23, 27, 31, 39, 47, 55, 63, 79, 95, 111, 127, 159, 191, 223,
              255, 383, 511, 767, 1023, 2047, 4095)
# A DCT-coded layer's candidates (dct.py) go on between 1 and 2 levels at the same 4 per doubling: most of its
# coefficients round to zero there already, and from 2 levels to 1 its codes shrink 3x (Fashion-MNIST's classifier:
# 0.99 -> 0.30 bits a weight), a gap the search could only stop before. Not for the weights' own grid: given those
# levels too, MediaPipe face landmark's search ended 4-19% larger at every seed (its additive model misjudges
# tensors that coarse), and no other model's file changed.
DCT_LEVELS = (1.19, 1.41, 1.68)
PROBE_LADDER = (31, 127, 1023)
LINEAR_LOSS = 0.01
UNREACHED_LEVELS = 127  # a tensor the samples never reach is not judged insensitive: it keeps about 8-bit codes
HEADER_BYTES = 64  # FSE header and per-tensor overhead, roughly; per-channel scales are added exactly


def coded_bytes(q: Quantized) -> float:
    """What the search predicts a quantized tensor's codes and per-channel scales take (FSE reaches the codes'
    entropy within about 1%), before the per-tensor overhead."""
    coded = entropy_bytes(q.codes)
    if too_tight_for_fse(q.codes.size, coded):  # the file keeps these bit-packed
        coded = packed_size(q.codes.shape, q.params.bits)
    return coded + len(scales_header(q.params, q.codes)[0])


def entropy_bytes(codes: np.ndarray) -> float:
    counts = np.bincount(codes.reshape(-1).astype(np.int64))
    p = counts[counts > 0] / codes.size
    return float(-(p * np.log2(p)).sum() * codes.size / 8)


class Candidates:
    """For one tensor: error and coded size at every level of LEVEL_GRID (and DCT_LEVELS, DCT-coded)."""

    def __init__(self, w: np.ndarray, axis: int | None, bias_correction: bool,
                 rounder: Callable[[int], Quantized] | None = None, dct: tuple | None = None, window: int = 1):
        """rounder: how quantize() rounds at a level (GPTQ with calibration inputs; default to nearest).
        The table is always round-to-nearest's: its errors are the common unit the sensitivities are
        measured in, and its sizes hold for any rounding onto the same grid. dct: (view, axes) to round
        the weight's DCT coefficients to nearest instead (quant/dct.py; not with a rounder). window: round each
        run of that many weights keeping its sum (mixed.quantize_step; not with a rounder or dct)."""
        self.w, self.axis, self.bias_correction, self.rounder = w, axis, bias_correction, rounder
        self.dct = None if rounder is not None else dct
        self.window = 1 if rounder is not None or self.dct is not None else window
        self._rounded: dict[int, Quantized] = {}
        self.table: list[tuple[int, float, float]] = []
        for levels in LEVEL_GRID if self.dct is None else sorted(LEVEL_GRID + DCT_LEVELS):
            q = self.nearest(levels)
            self.table.append((levels, q.error, coded_bytes(q) + HEADER_BYTES))

    def error_at(self, levels: int) -> float:
        return next(e for lv, e, _ in self.table if lv == levels)

    def pick(self, sensitivity: float, lam: float) -> int:
        return min(self.table, key=lambda t: sensitivity * t[1] ** 2 + lam * t[2])[0]

    def coarser(self, levels: int) -> tuple[int, float, float] | None:
        """The next coarser entry after `levels` that is smaller, or None."""
        i = next(k for k, t in enumerate(self.table) if t[0] == levels)
        size = self.table[i][2]
        return next((t for t in reversed(self.table[:i]) if t[2] < size), None)

    def size_at(self, levels: int) -> float:
        return next(b for lv, _, b in self.table if lv == levels)

    def nearest(self, levels: int) -> Quantized:
        """Rounding to nearest on the search's grid: quantize_step's (step by each channel's RMS, codes as
        wide as the weights need), or, for GPTQ (a rounder), quantize_levels' (max|w_c| / L, clipped):
        GPTQ moves each rounding's error onto the weights not yet rounded, and needs a bounded code range."""
        if self.rounder is None:
            return quantize_step(self.w, levels, self.axis, self.bias_correction, self.dct, self.window)
        return quantize_levels(self.w, levels, self.axis, self.bias_correction, clip=True)

    def quantize(self, levels: int) -> Quantized:
        if self.rounder is None:
            return self.nearest(levels)
        if levels not in self._rounded:
            self._rounded[levels] = self.rounder(levels)
        return self._rounded[levels]


UNIFORM_REFERENCES = {"about 8-bit": 127, "about 6-bit": 31}  # uniform allocations measured too, for the report
# (and they may win); "about": on quantize_step's grid, L levels reach STEP_PEAK RMS and outliers go beyond


class Allocation(NamedTuple):
    quantized: dict[str, Quantized]
    value: float  # measured worst output agreement
    sensitivity: dict[str, float]
    curve: list[dict]  # every allocation measured: predicted bytes of codes, agreement, what it was
    unreached: list[str]  # tensors whose probes changed no output at all


def allocate(candidates: dict[str, Candidates], score: Callable[[dict[str, Quantized]], float],
             target_cosine: float, progress: Callable[[str], None] = lambda s: None, steps: int = 12,
             refine: int = 8, budget: float | None = None,
             probe: Callable[[dict[str, Quantized]], float] | None = None) -> Allocation:
    """The smallest allocation whose measured agreement meets target_cosine; or, with `budget` (bytes of
    coded weights), the allocation of the additive model's least predicted distortion within it.
    probe: how the sensitivity probes score one quantized tensor against the float model, nothing else
    changed (default: score). When score judges every candidate with something else changed too (float
    tensors rounded to float16), the probes must not: that change would count as every tensor's own loss,
    hiding the tensors no sample reaches; and measured from what score gives with nothing quantized, a
    probe whose error happens to cancel some of it comes out lossless, and its tensor would take the
    coarsest levels (PP-OCR rec: real cosine 0.977)."""
    probe = probe or score
    sens, unreached = {}, []
    for name, c in candidates.items():
        for levels in PROBE_LADDER:
            q = c.quantize(levels)
            loss = max(1.0 - probe({name: q}), 1e-12)
            if loss <= LINEAR_LOSS:
                break
        sens[name] = loss / max(q.error, 1e-12) ** 2
        if loss <= 1e-12 and _untouched(probe, name, c):
            unreached.append(name)
    progress(f"sensitivities measured for {len(sens)} tensors (max/min {max(sens.values()) / min(sens.values()):.3g})"
             if sens else "nothing to quantize")
    if not candidates:
        return Allocation({}, 1.0, sens, [], [])

    tried: dict[tuple, tuple[float, float]] = {}  # levels per tensor -> (predicted size, measured value)
    labels: dict[tuple, str] = {}

    def measure(levels: dict[str, int], what: str) -> float:
        key = tuple(levels[n] for n in candidates)
        if key not in tried:
            qs = {n: candidates[n].quantize(lv) for n, lv in levels.items()}
            tried[key], labels[key] = (predicted(levels), score(qs)), what
            progress(f"{what}: ~{tried[key][0] / 1024:.0f} KiB, worst output agreement {tried[key][1]:.5f}")
        return tried[key][1]

    def predicted(levels: dict[str, int]) -> float:
        return sum(candidates[n].size_at(lv) for n, lv in levels.items())

    def at_price(lam: float) -> dict[str, int]:
        return {n: UNREACHED_LEVELS if n in unreached else c.pick(sens[n], lam) for n, c in candidates.items()}

    for label, lv in UNIFORM_REFERENCES.items():
        measure({n: UNREACHED_LEVELS if n in unreached else lv for n in candidates}, f"uniform {label} ({lv} levels)")
    # The price of a byte in distortion units: from "every tensor at its finest level" to "coarsest".
    lo, hi = 1e-14, 1e2
    a, b = math.log(lo), math.log(hi)
    if budget is not None:  # the size is known without running anything: bisect it, then measure once
        levels, coded = _within(budget, at_price, predicted, lambda lv: _stored(candidates, lv), lo, hi)
        if coded > budget:
            progress(f"no allocation codes within {budget / 1024:.1f} KiB: the smallest takes {coded / 1024:.1f} KiB")
        value = measure(levels, f"within {budget / 1024:.0f} KiB")
        key = tuple(levels[n] for n in candidates)
        return Allocation({n: candidates[n].quantize(lv) for n, lv in levels.items()}, value, sens,
                          _curve(tried, labels, key), unreached)
    if measure(at_price(lo), f"price {lo:.3g}") >= target_cosine:
        for _ in range(steps):
            mid = math.exp((a + b) / 2)
            if measure(at_price(mid), f"price {mid:.3g}") >= target_cosine:
                a = math.log(mid)
            else:
                b = math.log(mid)
        _refine(candidates, sens, tried, measure, target_cosine, refine, set(unreached))
    met = [(size, key) for key, (size, value) in tried.items() if value >= target_cosine]
    if met:
        key = min(met)[1]
    else:  # nothing met the target: the best agreement seen, reported as missing it
        key = max(tried, key=lambda k: tried[k][1])
    levels = dict(zip(candidates, key))
    return Allocation({n: candidates[n].quantize(lv) for n, lv in levels.items()}, tried[key][1], sens,
                      _curve(tried, labels, key), unreached)


BUDGET_ROUNDS = 4  # bisections of the price within a size budget, each against the bytes the last one coded


def _within(budget: float, at_price, predicted, stored, lo: float, hi: float) -> tuple[dict[str, int], float]:
    """The levels at the lowest price whose predicted size is within `budget`, and their coded size. Since
    the entropy the prediction counts may undercount FSE's own overhead, the levels' coded size is measured
    (stored) and, where it is over, the bisection runs again against the levels' predicted size lowered by the
    excess (so never the same levels again: lowering only the budget, which may sit well above the prediction,
    can bisect back to them every round; a DCT-coded layer's coarse steps are big), until it fits or
    BUDGET_ROUNDS have run (or nothing smaller is left: the coarsest levels come back)."""
    target = budget
    for _ in range(BUDGET_ROUNDS):
        a, b = math.log(lo), math.log(hi)
        for _ in range(60):
            mid = (a + b) / 2
            a, b = (a, mid) if predicted(at_price(math.exp(mid))) <= target else (mid, b)
        levels = at_price(math.exp(b))
        coded = stored(levels)
        if coded <= budget or predicted(levels) > target:  # fits, or nothing smaller to bisect to
            break
        target = predicted(levels) - (coded - budget)
    return levels, coded


def _stored(candidates: dict[str, Candidates], levels: dict[str, int]) -> float:
    """What the file's codes and scales take at these levels, with the per-tensor overhead the tables count."""
    return sum(min(len(encode(candidates[n].quantize(lv)).payload), candidates[n].w.nbytes) + HEADER_BYTES
               for n, lv in levels.items())


def _curve(tried: dict, labels: dict, chosen: tuple) -> list[dict]:
    return sorted(({"code_bytes": round(size), "agreement": value, "what": labels[k], "chosen": k == chosen}
                   for k, (size, value) in tried.items()), key=lambda p: p["code_bytes"])


def _untouched(probe, name: str, c: Candidates) -> bool:
    """Whether even the coarsest quantization of the tensor leaves every output exactly as it was: the
    samples never reach it (the If branch of another sample rate), so the search cannot judge it."""
    return 1.0 - probe({name: c.quantize(LEVEL_GRID[0])}) <= 1e-15


def _refine(candidates, sens, tried, measure, target_cosine: float, budget: int, fixed: set) -> None:
    """Greedy coarsening of the smallest allocation that met the target, checked by measurement."""
    met = [(size, key) for key, (size, value) in tried.items() if value >= target_cosine]
    if not met or budget <= 0:
        return
    levels = dict(zip(candidates, min(met)[1]))
    batch = max(1, len(candidates) // 4)
    while budget > 0 and batch >= 1:
        moves = []
        for n, lv in levels.items():
            step = None if n in fixed else candidates[n].coarser(lv)
            if step is not None:
                saved = candidates[n].size_at(lv) - step[2]
                cost = sens[n] * (step[1] ** 2 - candidates[n].error_at(lv) ** 2)
                moves.append((max(cost, 0.0) / saved, n, step[0]))
        if not moves:
            return
        moves.sort()
        trial = {**levels, **{n: lv for _, n, lv in moves[:batch]}}
        budget -= 1
        if measure(trial, f"refine {min(batch, len(moves))} tensors") >= target_cosine:
            levels = trial
        else:
            batch //= 2

"""GPTQ rounding with calibration data: codes chosen for the layer's outputs, not for the weights alone.

Round-to-nearest (mixed.quantize_levels) makes every weight as close as it can be, each on its own.
What the model sees is a layer's output X W^T, and its error (W - Q) H (W - Q)^T per output channel,
with H = X^T X the second moment of the inputs as the weight meets them (Frantar et al. 2022, "GPTQ",
after Optimal Brain Quantization). GPTQ quantizes one input column at a time and moves that column's
rounding error onto the columns not yet quantized, weighted by the inverse Hessian, so that the next
roundings cancel what this one did to the outputs. The grid stays the one quantize_levels uses (codes
0..2L, zero at L, one scale per output channel), so `decoded`, `affine` and `encode` read the result
unchanged; only which code each weight gets differs (and codes may sit a step or two away from the
nearest one).

layer_inputs() runs the float model on the calibration feeds with the inputs of every weighted layer
as extra outputs, one feed at a time, and keeps only H (averaged over rows, float64): for Gemm, MatMul
and FusedMatMul the rows of the input matrix; for Conv and FusedConv the im2col patches under the
node's pads, strides, dilations and group, one H per group (a depthwise conv has one 1-channel window
Hessian per channel). Rows past `max_rows` per feed and layer are a seeded random subsample, so memory
is one feed's activations plus one patch matrix. ConvTranspose and other readers get no H, and gptq()
rounds those weights to nearest.

gptq_quantize() is the algorithm: 10% of the mean diagonal added to H (dampening), columns in order
of descending diag(H) ("act-order": the columns with the most signal go first, while there are still
many columns left to absorb their error), the upper Cholesky factor U of H^-1, and blocks of 128
columns whose error updates the rest of the matrix in one product. Inputs that were always zero in
the calibration data have a zero row in H: they are rounded to nearest and neither give nor take
error. clip="mse" (the default) tries a few shrunken scales per channel and keeps the one whose
rounded weights have the least output error e (H + damping) e^T, before the column pass.

GPTQ's 1% dampening assumes hundreds of calibration samples. With a few images (the usual case here)
H knows only the directions those images excite, and GPTQ pushes error into the others; dampening
is a pull back towards round-to-nearest in the directions H does not know. On PP-OCRv4 det, 3
calibration photos, every layer GPTQ handles, 4 ways to split 6 photos, the layer output error on the held-out
photos relative to round-to-nearest (geometric mean, L=7 / L=15): damp 0.01: 0.39 / 0.38, 0.03:
0.38 / 0.36, 0.1: 0.37 / 0.36, 0.3: 0.39 / 0.37; bias-corrected rounding to nearest 0.64 / 0.66.
The share of layers worse than round-to-nearest falls from 11% at 0.01 to 2-3% at 0.1. The
"mse" clip brings L=7 to 0.33 and leaves L=15 at 0.36. Without act-order each figure is ~0.02 worse.

Bias correction (bias_correction.py) is not applied: it rescales each channel so its weights keep
their mean and spread, which is the right fix for independent rounding noise, but GPTQ's errors are
deliberately correlated across columns to cancel in X W^T; rescaling them by the weight statistics
breaks that cancellation (PP-OCRv4 det, mean held-out output cosine over 4 splits: 0.65 -> 0.47 at
L=7, 0.90 -> 0.88 at L=15 when bias correction is added to GPTQ's codes).

gptq() ties them together for a plan {name: (levels, axis)}. A weight whose layer saw fewer rows
than it has inputs (a squeeze-excite FC after a global pool sees one row per image) gets rounding to
nearest instead: its H has too few directions to trust. With sequential=True each layer's H is taken
on the model whose earlier layers are already quantized (as the GPTQ paper does), in waves of layers
that do not depend on each other, at one model run per wave and feed; on PP-OCRv4 det it cost 5x the
time, and its mean held-out cosine was lower at L=7 and L=15 and higher at L=31, so it is off by
default. Calibrated measures the layer inputs once and quantizes any weight at any level with the same
rules, for searches over levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir import Graph, Node
from ..ops.conv_geometry import conv_window
from .bias_correction import mean_relative_rms_error
from .encode import Quantized, affine, read_through
from .mixed import decoded, quantize_levels, with_outputs, with_weights
from .quantize import QuantParams, _rows, _unrows, dequantize

SUPPORTED = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul")
MAX_ROWS = 16384  # rows of X kept per feed and layer: enough for H of layers with a few thousand inputs
DAMP = 0.1  # of the mean diagonal; see the module docstring for why not GPTQ's 0.01
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


@dataclass
class LayerInput:
    """What GPTQ needs of one weight's inputs: h (groups, K, K), the mean of x x^T over `rows` rows,
    K = the weight's inputs per output channel in _rows order; axis: the weight's output-channel axis."""

    h: np.ndarray
    rows: int
    axis: int


def weight_readers(graph: Graph, names) -> dict[str, tuple[str, list[Node]]]:
    """For each name whose every reader (through Cast/DequantizeLinear/Identity) is a supported op taking
    it as the weight operand (input 1): (the value those ops read, the ops). Others are left out."""
    consumers = graph.consumers()
    found = {}
    for name in names:
        value, users = read_through(name, consumers)
        w = graph.initializers.get(name)
        ok = w is not None and bool(users) and all(
            n.op_type in SUPPORTED and len(n.inputs) > 1 and n.inputs[1] == value and n.inputs[0] != value
            and (w.ndim >= 3 if n.op_type in ("Conv", "FusedConv") else w.ndim == 2) for n in users)
        if ok:
            found[name] = (value, users)
    return found


def _output_axis(node: Node) -> int:
    if node.op_type == "Gemm":
        return 0 if node.attrs.get("transB", 0) else 1
    return 1 if node.op_type in ("MatMul", "FusedMatMul") else 0


def _conv_patches(x: np.ndarray, w_shape: tuple, attrs: dict, max_rows: int, rng) -> np.ndarray:
    """im2col of x as the conv reads it: (rows, group, C/group * prod(kernel)), a subsample of positions."""
    kernel = tuple(int(k) for k in w_shape[2:])
    nd, group = len(kernel), int(attrs.get("group", 1) or 1)
    win = conv_window(x.shape[2:], kernel, attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"),
                      attrs.get("auto_pad", "NOTSET"))
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(win.pad_begin, win.pad_end)))
    extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, win.dilations))
    v = np.lib.stride_tricks.sliding_window_view(xp, extent, axis=tuple(range(2, 2 + nd)))
    v = v[(slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(win.out_sizes, win.strides))
          + tuple(slice(None, None, d) for d in win.dilations)]
    v = np.moveaxis(v, 1, 1 + nd)  # (N, *out, C, *kernel)
    lead = v.shape[:1 + nd]
    count = math.prod(lead)
    if count > max_rows:
        pick = np.sort(rng.choice(count, max_rows, replace=False))
        cols = v[np.unravel_index(pick, lead)]
    else:
        cols = v.reshape((count,) + v.shape[1 + nd:])
    return cols.reshape(len(cols), group, -1)


def _dense_rows(x: np.ndarray, node: Node, max_rows: int, rng) -> np.ndarray:
    """The rows the weight multiplies: (rows, 1, K)."""
    if node.op_type == "Gemm" and node.attrs.get("transA", 0):
        x = x.T
    x = x.reshape(-1, x.shape[-1])
    if len(x) > max_rows:
        x = x[np.sort(rng.choice(len(x), max_rows, replace=False))]
    return x[:, None, :]


def layer_inputs(graph: Graph, names, feeds: list[dict], *, max_rows: int = MAX_ROWS,
                 seed: int = 0) -> dict[str, LayerInput]:
    """H = mean x x^T of each named weight's layer inputs over the calibration feeds (see the module
    docstring); names with no supported reader are left out."""
    from ..model import Model

    readers = weight_readers(graph, names)
    model = Model(with_outputs(graph, {n.inputs[0] for _, users in readers.values() for n in users}), "calibration")
    rng = np.random.default_rng(seed)
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    for feed in feeds:
        got = model.run(feed) if readers else {}
        for name, (_, users) in readers.items():
            w_shape = graph.initializers[name].shape
            for node in users:
                src = node.inputs[0]
                x = np.asarray(feed[src] if src in feed else got[src] if src in got else graph.initializers[src],
                               np.float32)
                if node.op_type in ("Conv", "FusedConv"):
                    cols = _conv_patches(x, w_shape, node.attrs, max_rows, rng)
                else:
                    cols = _dense_rows(x, node, max_rows, rng)
                t = np.ascontiguousarray(cols.transpose(1, 0, 2))  # (group, rows, K)
                h = np.matmul(t.transpose(0, 2, 1), t).astype(np.float64)
                sums[name] = sums[name] + h if name in sums else h
                rows[name] = rows.get(name, 0) + len(cols)
        del got
    return {name: LayerInput(sums[name] / max(rows[name], 1), rows[name], _output_axis(readers[name][1][0]))
            for name in sums}


def _damped(h: np.ndarray, damp: float) -> np.ndarray:
    """H + damp * mean diag * I per group, with 1 on the diagonal of never-active inputs (which keeps them
    out of the error update: their row of H^-1 is theirs alone)."""
    idx = np.arange(h.shape[-1])
    diag = h[:, idx, idx]
    mean = np.maximum(diag.mean(axis=1), 1e-12)
    out = h.copy()
    out[:, idx, idx] += np.where(diag > 0, 0.0, 1.0) * mean[:, None] + damp * mean[:, None]
    return out


def _inverse_cholesky(h: np.ndarray, damp: float) -> np.ndarray:
    """Upper U with U^T U = _damped(H)^-1, per group; dampening grows until the matrix is definite."""
    for _ in range(6):
        try:
            return np.linalg.cholesky(np.linalg.inv(_damped(h, damp))).transpose(0, 2, 1)
        except np.linalg.LinAlgError:
            damp *= 10
    raise np.linalg.LinAlgError("the input Hessian stays singular after dampening")


def _round(w: np.ndarray, scale: np.ndarray, levels: int) -> np.ndarray:
    """Codes of w on the grid; a channel whose decoded step is 0 (a float16 scale that underflowed next
    to a much larger one) decodes to 0 whatever its code, and gets the zero code."""
    live = scale > 0
    return np.clip(np.where(live, np.rint(w / np.where(live, scale, 1.0)), 0.0) + levels, 0, 2 * levels)


def _clip_scales(w: np.ndarray, scale: np.ndarray, h: np.ndarray, levels: int, per_tensor: bool) -> np.ndarray:
    """Per output channel (or for the whole tensor) the shrunken scale whose rounded weights have the least
    output error e H e^T; w (groups, rows, K), scale (groups, rows)."""
    best, cost = scale, None
    for r in CLIP_RATIOS:
        s = (scale * r).astype(np.float32).astype(np.float64)
        e = w - (_round(w, s[..., None], levels) - levels) * s[..., None]
        c = np.einsum("grk,grk->gr", np.matmul(e, h), e)
        if per_tensor:
            c = np.full_like(c, c.sum())
        if cost is None:
            best, cost = s, c
        else:
            better = c < cost
            best, cost = np.where(better, s, best), np.where(better, c, cost)
    return best


def gptq_quantize(w: np.ndarray, levels: int, axis: int | None, h: np.ndarray, *, out_axis: int | None = None,
                  act_order: bool = True, block: int = 128, damp: float = DAMP, clip: str = "mse") -> Quantized:
    """w quantized symmetric with `levels` positive levels (codes 0..2L, one scale per slice along `axis`,
    or per tensor when axis is None) by GPTQ against the input Hessian h ((K, K) or (groups, K, K),
    K = inputs per output channel; see LayerInput). out_axis: the output-channel axis that h's columns
    belong to, needed when axis is None. clip: "max" (scale = max|w| / L) or "mse" (see module docs)."""
    w = np.asarray(w)
    if w.dtype.kind != "f" or not np.isfinite(w).all():
        raise ValueError("gptq_quantize takes finite float weights")
    if not 1 <= levels <= (1 << 15) - 1:
        raise ValueError(f"levels must be from 1 to 32767, not {levels}")
    if clip not in ("max", "mse"):
        raise ValueError(f"clip must be 'max' or 'mse', not {clip!r}")
    oa = axis if out_axis is None else out_axis
    if oa is None or (axis is not None and int(axis) % w.ndim != int(oa) % w.ndim):
        raise ValueError(f"axis {axis} does not match the output-channel axis {oa} that h belongs to")
    oa = int(oa) % w.ndim
    axis = None if axis is None else oa
    rows = _rows(w, oa).astype(np.float64)  # (C, K)
    h = np.asarray(h, np.float64)
    h = h[None] if h.ndim == 2 else h
    groups, k = h.shape[0], h.shape[-1]
    if h.shape != (groups, k, k) or rows.shape[1] != k or len(rows) % groups:
        raise ValueError(f"h of shape {list(h.shape)} does not fit a weight of shape {list(w.shape)} on axis {oa}")
    peak = np.abs(rows).max(axis=1, initial=0) if axis is not None else np.full(len(rows), np.abs(rows).max(initial=0))
    scale = (peak / levels).astype(np.float32)
    scale[~(scale >= np.finfo(np.float32).tiny) | ~np.isfinite(scale)] = 1.0
    W = rows.reshape(groups, -1, k).copy()
    s = scale.astype(np.float64).reshape(groups, -1)
    if clip == "mse":
        s = _clip_scales(W, s, _damped(h, damp), levels, axis is None)
        scale = s.reshape(-1).astype(np.float32)
    bits = max(1, math.ceil(math.log2(2 * levels + 1)))
    zp = np.full(scale.shape, levels, np.int32)
    params = QuantParams(bits, True, axis, scale if axis is not None else scale[:1].reshape(()),
                         zp if axis is not None else zp[:1].reshape(()))
    # Round and spread the error with the step the file will decode (its scales as stored: encode.affine).
    s = np.broadcast_to(affine(params, None)[0].astype(np.float64), scale.shape).reshape(groups, -1)
    if act_order:
        perm = np.argsort(-h[:, np.arange(k), np.arange(k)], axis=1, kind="stable")
        W = np.take_along_axis(W, perm[:, None, :], axis=2)
        h = np.take_along_axis(np.take_along_axis(h, perm[:, :, None], 1), perm[:, None, :], 2)
    u = _inverse_cholesky(h, damp)
    codes = np.empty_like(W)
    col_scale = s[..., None]
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb = W[:, :, b0:b1]
        err = np.empty_like(wb)
        for j in range(b1 - b0):
            i = b0 + j
            q = _round(wb[:, :, j:j + 1], col_scale, levels)
            codes[:, :, i:i + 1] = q
            e = (wb[:, :, j] - (q[:, :, 0] - levels) * s) / u[:, i, i][:, None]
            wb[:, :, j + 1:] -= e[:, :, None] * u[:, None, i, i + 1:b1]
            err[:, :, j] = e
        if b1 < k:
            W[:, :, b1:] -= np.matmul(err, u[:, b0:b1, b1:])
    if act_order:
        codes = np.take_along_axis(codes, np.argsort(perm, axis=1)[:, None, :], axis=2)
    codes = _unrows(codes.reshape(len(rows), k).astype(np.uint8 if bits <= 8 else np.uint16), w.shape, oa)
    codes = np.ascontiguousarray(codes)
    return Quantized(codes, params, mean_relative_rms_error(w, dequantize(codes, params, np.float64), axis))


def _waves(graph: Graph, readers: dict[str, tuple[str, list[Node]]]) -> list[list[str]]:
    """The weights in groups whose layer inputs depend on no weight of the same or a later group."""
    upstream: dict[str, set[str]] = {}
    for n in graph.nodes:
        above = set().union(*(upstream.get(i, set()) for i in n.inputs if i), {i for i in n.inputs if i in readers})
        for o in n.outputs:
            upstream[o] = above
    pending, waves = list(readers), []
    while pending:
        wave = [w for w in pending if not any(upstream.get(n.inputs[0], set()) & set(pending)
                                             for n in readers[w][1])]
        if not wave:  # a weight reading its own output (not in a DAG): take the rest together
            wave = pending
        waves.append(wave)
        pending = [w for w in pending if w not in wave]
    return waves


def _one(w: np.ndarray, levels: int, axis: int | None, st: LayerInput | None, bias_correction: bool,
         options: dict) -> tuple[Quantized, str]:
    """GPTQ where the layer's statistics allow it, else rounding to nearest; and a line saying which."""
    why = _why_not(w, axis, st)
    if why is None:
        q = gptq_quantize(w, levels, axis, st.h, out_axis=st.axis, **options)
        return q, f"gptq L={levels} error {q.error:.4f} ({st.rows} rows)"
    q = quantize_levels(w, levels, axis, bias_correction, clip=True)
    return q, f"nearest L={levels} error {q.error:.4f} ({why})"


def _why_not(w: np.ndarray, axis: int | None, st: LayerInput | None) -> str | None:
    """Why a weight rounds to nearest instead of by GPTQ, or None when GPTQ can take it."""
    if st is None:
        return "no Conv/Gemm/MatMul reader"
    if axis is not None and axis % w.ndim != st.axis:
        return "per-channel axis is not the layer's output axis"
    if st.rows < st.h.shape[-1]:  # e.g. a squeeze-excite FC sees one row per feed: H would be all noise
        return f"{st.rows} calibration rows for {st.h.shape[-1]} inputs"
    return None


class Calibrated:
    """The layer inputs of some weights, measured once; quantize(name, levels) then costs one GPTQ pass,
    for searches that try many levels per weight. axes: {name: per-channel axis or None}."""

    def __init__(self, graph: Graph, axes: dict[str, int | None], feeds: list[dict], *, bias_correction: bool = True,
                 max_rows: int = MAX_ROWS, **options):
        self.graph, self.axes, self.bias_correction, self.options = graph, dict(axes), bias_correction, options
        self.stats = layer_inputs(graph, list(axes), feeds, max_rows=max_rows)

    def quantize(self, name: str, levels: int) -> Quantized:
        return _one(self.graph.initializers[name], levels, self.axes[name], self.stats.get(name),
                    self.bias_correction, self.options)[0]

    def takes(self, name: str) -> bool:
        """Whether quantize() rounds this weight by GPTQ (else to nearest)."""
        return _why_not(self.graph.initializers[name], self.axes[name], self.stats.get(name)) is None


def gptq(graph: Graph, plan: dict[str, tuple[int, int | None]], feeds: list[dict],
         progress: Callable[[str], None] | None = None, *, sequential: bool = False, bias_correction: bool = True,
         max_rows: int = MAX_ROWS, **options) -> dict[str, Quantized]:
    """Every weight of plan {name: (levels, axis)} quantized: by GPTQ on its layer inputs over the
    calibration feeds where it has a supported reader that saw at least as many rows as the weight has
    inputs, else to nearest by quantize_levels (with bias_correction, and clip as the mixed search's
    Candidates round). options go to gptq_quantize
    (act_order, block, damp, clip)."""
    say = progress or (lambda s: None)
    readers = weight_readers(graph, plan)
    out: dict[str, Quantized] = {}
    waves = [[n for n in plan if n not in readers]]
    waves += _waves(graph, readers) if sequential else [list(readers)]
    for wave in waves:
        source = with_weights(graph, {n: decoded(q, graph.initializers[n].dtype) for n, q in out.items()}) \
            if sequential and out else graph
        wanted = [n for n in wave if n in readers]
        stats = layer_inputs(source, wanted, feeds, max_rows=max_rows) if wanted else {}
        for name in wave:
            levels, axis = plan[name]
            out[name], line = _one(graph.initializers[name], levels, axis, stats.get(name), bias_correction, options)
            say(f"{name}: {line}")
    return {name: out[name] for name in plan}

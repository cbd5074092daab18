"""From float weights to the bytes a .spore file stores: quantize, correct, code, keep the smallest.

quantize_tensor() quantizes one weight (per output channel unless told otherwise), applies bias
correction, and returns the codes, the parameters, and the relative RMS error of the result. encode()
turns codes and parameters into the candidates a file can hold (bit-packed codes, FSE-coded codes) and
keeps the smallest; the caller compares that with the float tensor's own size. channel_axes() finds,
for each initializer, the axis of its output channels from the op that reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..format.codecs_quant import (MAX_EXPONENT, MAX_MANTISSA_BITS, MAX_RATIO, MAX_WIDTH, Encoded, affine_header,
                                   grid_affine, grid_header, half_affine, half_affine_header, to_half_affine)
from ..ir import Graph
from .bias_correction import bias_correct, mean_relative_rms_error
from .bitpack import pack
from .quantize import QuantParams, _rows, dequantize, quantize

# Ops that pass a weight through unchanged on its way to the op that uses it (imported fp16/int8 weights).
_PASS_THROUGH = {"Cast", "DequantizeLinear", "Identity"}


@dataclass
class Quantized:
    codes: np.ndarray
    params: QuantParams
    error: float  # mean over channels of ||w - deq|| / ||w||
    dct: tuple | None = None  # (view, axes): the codes are of the weight's DCT coefficients (quant/dct.py)


def channel_axes(graph: Graph) -> dict[str, int]:
    """Initializer name -> the axis of its output channels, from the op that consumes it (through Cast /
    DequantizeLinear): 0 for Conv kernels and Gather tables, 1 for ConvTranspose, the last for a
    MatMul's right operand, by transB for Gemm; 0 where nothing says otherwise. The initializers of
    If/Loop/Scan bodies are included, judged by their own body's consumers."""
    consumers = graph.consumers()
    axes: dict[str, int] = {}
    for n in graph.nodes:
        for sg in n.subgraphs():
            axes.update(channel_axes(sg))
    for name, arr in graph.initializers.items():
        value, users = read_through(name, consumers)
        axis = 0
        for n in users:
            if value not in n.inputs:  # read inside one of the node's bodies, from the outer scope
                continue
            slot = n.inputs.index(value)
            if n.op_type == "ConvTranspose" and slot == 1:
                axis = 1
            elif n.op_type in ("MatMul", "FusedMatMul") and slot == 1:
                axis = arr.ndim - 1
            elif n.op_type == "Gemm" and slot == 1:
                axis = 0 if n.attrs.get("transB", 0) else 1
        axes[name] = axis
    return axes


def read_through(name: str, consumers: dict) -> tuple[str, list]:
    """The value an initializer reaches through a chain of single Cast / DequantizeLinear / Identity readers
    (a float16 weight's Cast, a dequantized one), and that value's readers (graph.consumers())."""
    value, users = name, consumers.get(name, [])
    while len(users) == 1 and users[0].op_type in _PASS_THROUGH:
        value = users[0].outputs[0]
        users = consumers.get(value, [])
    return value, users


def conv_windows(graph: Graph, feed: dict | None = None) -> dict[str, int]:
    """Initializer name -> positions of one input channel's window (kh * kw), for the 2-D kernels of Conv and
    FusedConv (O, I / group, kh, kw; read directly or through a Cast or DequantizeLinear) that mix more than one
    input channel over a window at least 2 wide both ways and, with `feed` (one run of the model on it), slide
    over a map at least 2 outputs wide both ways: the tensors rounding="sums" rounds keeping each kernel's sum
    (mixed.kept_sums), its response to a flat patch. Left out:
    - a depthwise kernel: bias correction keeps its one kernel's sum already, as its channel's mean;
    - a 1 x k or k x 1 kernel, a sequence's 1-D convolution in a 4-D layout (PP-OCR rec's 1 x 3 kernels over a
      map one row high), which, like Silero's Conv1d, reads no flat patches and loses more to the sums than it
      gains (rec's two such kernels rounded that way alone: 1 - cosine 4.8e-3 -> 5.7e-3 and 1.8e-3 -> 8.8e-3
      on its real inputs);
    - a kernel as large as its map, which is a dense layer (MediaPipe face landmark's 1404 x 32 x 3 x 3 head
      over a 3 x 3 map: with the sums its file grew 13%, 5.12x -> 4.51x, and the landmarks moved 6.5 px, not
      4.9).
    If/Loop/Scan bodies' kernels are judged by the first two rules alone."""
    from .gptq import weight_readers

    windows: dict[str, int] = {}
    for n in graph.nodes:
        for sg in n.subgraphs():
            windows.update(conv_windows(sg))
    kernels = [name for name, arr in graph.initializers.items()
               if np.ndim(arr) == 4 and arr.shape[1] >= 2 and min(arr.shape[2], arr.shape[3]) >= 2]
    found = {name: users for name, (_, users) in weight_readers(graph, kernels).items()
             if all(u.op_type in ("Conv", "FusedConv") for u in users)}
    if feed is not None and found:
        from .mixed import inner_values

        got = inner_values(graph, {u.outputs[0] for users in found.values() for u in users}, feed)
        found = {name: users for name, users in found.items()
                 if all(min(np.shape(got[u.outputs[0]])[2:], default=0) >= 2 for u in users)}
    windows.update({name: int(graph.initializers[name].shape[2] * graph.initializers[name].shape[3])
                    for name in found})
    return windows


# Ops whose float initializers are arithmetic operands (weights, biases, slopes, normalization
# parameters): rounding them to float16 moves the outputs by about as much as float16 rounding of the
# operand, which the searches then measure. Any other reader (Resize scales, Pad values, Range bounds,
# shape arithmetic, an If body reading it from outside) keeps the tensor exact.
_ARITHMETIC = {"Conv", "FusedConv", "ConvTranspose", "Gemm", "MatMul", "FusedMatMul", "Add", "Sub", "Mul",
               "PRelu", "BatchNormalization", "LayerNormalization", "InstanceNormalization", "LSTM", "GRU", "RNN"}
HALF_MAX = 65504.0


def half_candidates(graph: Graph, skip) -> dict[str, np.ndarray]:
    """Name -> the tensor rounded to float16 values (still float32), for each float32 initializer of the
    graph or its bodies that is not in `skip` (the quantized ones), not already exact in float16, within
    float16's range, and read only as an arithmetic operand (_ARITHMETIC, through Cast/Identity). The
    file then stores it in half the bytes (the lossless "half" codec of float16-exact float32 tensors)."""
    found: dict[str, np.ndarray] = {}
    seen: set[str] = set()

    def walk(g: Graph) -> None:
        consumers = g.consumers()
        for name, arr in g.initializers.items():
            if name in seen:  # a name two bodies share names no one tensor (named_initializers drops it)
                found.pop(name, None)
                continue
            seen.add(name)
            if name in skip or arr.dtype != np.float32 or arr.ndim == 0 or not _arithmetic(name, consumers):
                continue
            if not np.isfinite(arr).all() or np.abs(arr).max(initial=0.0) > HALF_MAX:
                continue
            half = arr.astype(np.float16).astype(np.float32)
            if not np.array_equal(half, arr):
                found[name] = half
        for n in g.nodes:
            for sg in n.subgraphs():
                walk(sg)

    walk(graph)
    return found


def _arithmetic(name: str, consumers: dict) -> bool:
    value, users = name, consumers.get(name, [])
    while len(users) == 1 and users[0].op_type in ("Cast", "Identity"):
        value = users[0].outputs[0]
        users = consumers.get(value, [])
    return bool(users) and all(n.op_type in _ARITHMETIC and value in n.inputs for n in users)


def quantize_tensor(w: np.ndarray, bits: int, axis: int | None, *, bias_correction: bool = True,
                    method: str = "mse", symmetric: bool = True) -> Quantized:
    codes, params = quantize(w, bits, symmetric=symmetric, axis=axis, method=method)
    if bias_correction:
        params = bias_correct(w, codes, params)
    deq = dequantize(codes, params, dtype=np.float64)
    return Quantized(codes, params, mean_relative_rms_error(w, deq, axis))


COMPACT_MAX_BITS = 8  # up to here float16 scales (a 2**-12 gain error) are far below the rounding noise


def _exact_affine(params: QuantParams) -> tuple[np.ndarray, np.ndarray]:
    zp, scale, shift = params.effective()
    b = -zp * scale + (0.0 if shift is None else shift)
    return np.atleast_1d(scale), np.atleast_1d(b)


def compact_scales(params: QuantParams) -> tuple | None:
    """(base, a16, d16, zero) when the tensor's scales can be stored in float16 (per channel, symmetric,
    one zero code, at most COMPACT_MAX_BITS bits): 4 bytes per channel instead of 8."""
    zero = _one_zero(params)
    if zero is None or params.bits > COMPACT_MAX_BITS:
        return None
    found = to_half_affine(*_exact_affine(params), zero)
    return None if found is None else (*found, zero)


def _one_zero(params: QuantParams) -> int | None:
    """The zero code of per-channel symmetric codes of 2 bits or more that share one, else None."""
    if params.axis is None or not params.symmetric or not 2 <= params.bits:
        return None
    zp = np.atleast_1d(params.zero_point)
    return int(zp[0]) if (zp == zp[0]).all() and zp[0] >= 1 else None


GRID_SHIFT_BITS = 8  # q: B / A, the channel's shift in steps, kept to 1/256 of a step
GRID_MIN_MANTISSA = 6  # coarse codes still keep their scales (so bias correction's gain) to 2**-7


def grid_scales(params: QuantParams, codes: np.ndarray | None) -> tuple | None:
    """(e0, p, q, v, d, zero): the grid form of the per-channel scales (docs/format.md), about 2 bytes a
    channel instead of 4 (float16) or 8 (float32); None where it does not apply (per tensor, asymmetric,
    a scale that is not positive and finite, numbers too wide).
    Each A keeps a p-bit mantissa, p = ceil(log2(8 * zero)) and at least GRID_MIN_MANTISSA: its relative
    rounding is at most 2**-(p+1) <= 1 / (16 * zero), so even a channel whose codes all sit at the
    extreme +-zero gets a gain error of at most 1/16 of a step per weight, against the codes' own
    rounding of up to 1/2 step (a few percent more noise at worst; a fraction of a percent for codes
    spread as weights are). B is then set so that each channel keeps its mean (what bias correction
    made it) with A rounded, to 1/2**q of a step; that needs the codes (`codes`; None: B as if each
    channel's codes averaged the zero code, enough for A alone)."""
    zero = _one_zero(params)
    if zero is None:
        return None
    a, b = (np.asarray(x, np.float64) for x in _exact_affine(params))
    if not (np.isfinite(a).all() and (a > 0).all() and np.isfinite(b).all()):
        return None
    p = min(MAX_MANTISSA_BITS, max(GRID_MIN_MANTISSA, math.ceil(math.log2(8 * zero))))
    frac, ex = np.frexp(a)  # a = frac * 2**ex, 1/2 <= frac < 1
    m = np.rint((2 * frac - 1) * (1 << p)).astype(np.int64)
    carry = m == 1 << p
    m[carry], ex = 0, ex.astype(np.int64) + carry
    e0 = int(ex.max())
    v = ((e0 - ex) << p) | m
    if e0 > MAX_EXPONENT or int(v.max()).bit_length() > MAX_WIDTH:
        return None
    q = GRID_SHIFT_BITS
    a32 = grid_affine(e0, p, q, v, np.zeros_like(v), zero)[0].astype(np.float64)
    mean_code = float(zero) if codes is None else _rows(np.asarray(codes), params.axis).mean(axis=1, dtype=np.float64)
    with np.errstate(all="ignore"):  # mean_code * A' + B' = mean_code * A + B
        d = np.rint(np.ldexp((mean_code * a + b) / a32 - mean_code + zero, q))
    if not (np.isfinite(d).all() and np.abs(d).max() < 2**31) or int(d.max() - d.min()).bit_length() > MAX_WIDTH:
        return None
    return e0, p, q, v, d.astype(np.int64), zero


def _stored_scales(params: QuantParams, codes: np.ndarray | None) -> tuple[str, tuple | None]:
    """How the file stores the tensor's scales: ("grid", grid_scales), ("f16", compact_scales) or ("f32", None)."""
    grid = grid_scales(params, codes)
    if grid is not None:
        return "grid", grid
    compact = compact_scales(params)
    return ("f16", compact) if compact is not None else ("f32", None)


def affine(params: QuantParams, codes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) per channel with value = code * A + B, exactly as the file stores them for these codes (on
    the grid, or float16-rounded): what the searches evaluate is what loads. codes=None gives the A the
    file will store; its B then holds only for codes that average the zero code."""
    form, found = _stored_scales(params, codes)
    if form == "grid":
        return grid_affine(*found)
    if form == "f16":
        return half_affine(*found)
    a, b = _exact_affine(params)
    return a.astype(np.float32), b.astype(np.float32)


def scales_header(params: QuantParams, codes: np.ndarray) -> tuple[bytes, dict]:
    """The bytes of the tensor's scales as the file stores them, and the codec params that say which form."""
    form, found = _stored_scales(params, codes)
    if form == "grid":
        return grid_header(*found[:5]), {"scales": "grid", "zero": found[5]}
    if form == "f16":
        return half_affine_header(*found[:3]), {"scales": "f16", "zero": found[3]}
    return affine_header(*affine(params, codes)), {}


def too_tight_for_fse(count: int, coded_bytes: float) -> bool:
    """Whether `count` codes in `coded_bytes` would decode to more float32 bytes per stored byte than the
    format lets a qfse tensor (MAX_RATIO): encode() then keeps them bit-packed."""
    return count * 4 > MAX_RATIO * coded_bytes


def encode(q: Quantized, entropy: bool = True) -> Encoded:
    """The smaller of the bit-packed and the FSE-coded form of q (FSE only if `entropy`)."""
    channels = int(np.atleast_1d(q.params.scale).size)
    head, form = scales_header(q.params, q.codes)
    params = {"bits": q.params.bits, "axis": q.params.axis, "channels": channels, **form}
    if q.dct is not None:
        params["dct"] = {"view": [int(d) for d in q.dct[0]], "axes": [int(a) for a in q.dct[1]]}
    best = Encoded("qpack", head + pack(q.codes, q.params.bits).tobytes(), params)
    if entropy and q.codes.size:
        from .fse import encode as fse_encode

        coded = head + fse_encode(q.codes.reshape(-1))
        if len(coded) < len(best.payload) and not too_tight_for_fse(q.codes.size, len(coded)):
            best = Encoded("qfse", coded, params)
    return best

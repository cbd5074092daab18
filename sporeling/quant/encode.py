"""From float weights to the bytes a .spore file stores: quantize, correct, code, keep the smallest.

quantize_tensor() quantizes one weight (per output channel unless told otherwise), applies bias
correction, and returns the codes, the parameters, and the relative RMS error of the result. encode()
turns codes and parameters into the candidates a file can hold (bit-packed codes, FSE-coded codes) and
keeps the smallest; the caller compares that with the float tensor's own size. channel_axes() finds,
for each initializer, the axis of its output channels from the op that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.codecs_quant import MAX_RATIO, Encoded, affine_header, half_affine, half_affine_header, to_half_affine
from ..ir import Graph
from .bias_correction import bias_correct, mean_relative_rms_error
from .bitpack import pack
from .quantize import QuantParams, dequantize, quantize

# Ops that pass a weight through unchanged on its way to the op that uses it (imported fp16/int8 weights).
_PASS_THROUGH = {"Cast", "DequantizeLinear", "Identity"}


@dataclass
class Quantized:
    codes: np.ndarray
    params: QuantParams
    error: float  # mean over channels of ||w - deq|| / ||w||


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
        value, users = name, consumers.get(name, [])
        while len(users) == 1 and users[0].op_type in _PASS_THROUGH:
            value = users[0].outputs[0]
            users = consumers.get(value, [])
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
    if params.axis is None or not params.symmetric or not 2 <= params.bits <= COMPACT_MAX_BITS:
        return None
    zp = np.atleast_1d(params.zero_point)
    if not (zp == zp[0]).all():
        return None
    zero = int(zp[0])
    found = to_half_affine(*_exact_affine(params), zero)
    return None if found is None else (*found, zero)


def affine(params: QuantParams) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) per channel with value = code * A + B, exactly as the file stores them (float16-rounded
    where compact_scales applies): what the searches evaluate is what loads."""
    compact = compact_scales(params)
    if compact is not None:
        return half_affine(*compact)
    a, b = _exact_affine(params)
    return a.astype(np.float32), b.astype(np.float32)


def encode(q: Quantized, entropy: bool = True) -> Encoded:
    """The smaller of the bit-packed and the FSE-coded form of q (FSE only if `entropy`)."""
    channels = int(np.atleast_1d(q.params.scale).size)
    params = {"bits": q.params.bits, "axis": q.params.axis, "channels": channels}
    compact = compact_scales(q.params)
    if compact is not None:
        head = half_affine_header(*compact[:3])
        params.update(scales="f16", zero=compact[3])
    else:
        head = affine_header(*affine(q.params))
    best = Encoded("qpack", head + pack(q.codes, q.params.bits).tobytes(), params)
    if entropy and q.codes.size:
        from .fse import encode as fse_encode

        coded = head + fse_encode(q.codes.reshape(-1))
        decoded_bytes = q.codes.size * 4
        if len(coded) < len(best.payload) and decoded_bytes <= MAX_RATIO * len(coded):
            best = Encoded("qfse", coded, params)
    return best

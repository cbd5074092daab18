"""Codecs for quantized weights: integer codes that dequantize by a per-channel affine map.

A quantized tensor is stored as its codes (unsigned, `bits` wide) and, per channel along `axis` (or one
pair for the whole tensor), two float32 numbers A and B with value = code * A + B. Every quantizer
sporeling has fits this form: symmetric or asymmetric, with or without bias correction (for scale s,
zero point z, correction gain g and shift t: A = g * s and B = t - g * s * z), so the file does not need
to know which was used. The payload is A[C] and B[C] (little-endian float32), or one of two compact
forms of them (params "scales": "f16", 4 bytes a channel; "grid", about 2: docs/format.md), followed
by the codes:

  qpack  the codes bit-packed, LSB first, as one stream in C order (sporeling.quant.bitpack);
  qfse   the codes entropy-coded with Finite State Entropy (sporeling.quant.fse), a blob that
         describes itself.

Decoding is the dequantization: the codes come back and become floats in one affine pass, into the
tensor's declared dtype. params: {"bits": 1..16, "axis": int or null, "channels": C}. A writer gives
these codecs its codes already made (format.Encoded); they never encode a float array themselves.
params may add "dct": {"view": [...], "axes": [...]} (format 1.4, feature `quant-dct`): the codes are of
the tensor's DCT coefficients, and decoding ends with the inverse DCT along `axes` of the tensor seen as `view`
(sporeling.quant.dct). MAX_RATIO bounds decoded bytes per stored byte (float32 from 1-bit codes is 32; the
writer keeps a tensor that would code tighter than 1/64 of its float size bit-packed instead).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs import element_count, register_codec

MAX_RATIO = 64.0
DCT = "quant-dct"  # the format feature a file with a "dct" tensor requires (1.4)


@dataclass(frozen=True)
class Encoded:
    """A tensor the writer stores as given: codec name, payload bytes, params."""

    codec: str
    payload: Any
    params: dict


def affine_header(a: np.ndarray, b: np.ndarray) -> bytes:
    return np.asarray(a, "<f4").tobytes() + np.asarray(b, "<f4").tobytes()


SCALES_F16 = "quant-scales-f16"  # the format feature a file using {"scales": "f16"} requires


def half_affine(base: np.float32, a16: np.ndarray, d16: np.ndarray, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) in float32 from the compact form: A = a16 * base, B = (d16 - zero) * A, each one float32
    rounding: the one definition both the writer (which evaluates what it stores) and the reader use."""
    a = np.multiply(a16.astype(np.float32), np.float32(base), dtype=np.float32)
    b = np.multiply(np.subtract(d16.astype(np.float32), np.float32(zero), dtype=np.float32), a, dtype=np.float32)
    return a, b


def to_half_affine(a: np.ndarray, b: np.ndarray, zero: int) -> tuple[np.float32, np.ndarray, np.ndarray] | None:
    """The compact form of per-channel (A, B) around an integer zero code (B = (d - zero) * A): base =
    max A, a16 = A / base and d = B / A + zero as float16; None when it does not fit (an A that is not
    positive and finite, a d beyond float16's range)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    base = float(a.max(initial=0.0))
    if not (a > 0).all() or not np.isfinite(base) or base <= 0:
        return None
    d = b / a + zero
    if not np.isfinite(d).all() or np.abs(d).max(initial=0.0) > 60000:
        return None
    return np.float32(base), (a / base).astype(np.float16), d.astype(np.float16)


def half_affine_header(base: np.float32, a16: np.ndarray, d16: np.ndarray) -> bytes:
    return np.asarray(base, "<f4").tobytes() + np.asarray(a16, "<f2").tobytes() + np.asarray(d16, "<f2").tobytes()


def dequantize_coded(codes: np.ndarray, a: np.ndarray, b: np.ndarray, axis: int | None, dtype,
                     dct: tuple | None = None) -> np.ndarray:
    """What a quantized tensor decodes to: dequantize_affine, then, for codes of DCT coefficients (dct: view,
    axes), their inverse DCT, computed in float64 from the float32 coefficients, then cast to dtype."""
    if dct is None:
        return dequantize_affine(codes, a, b, axis, dtype)
    from ..quant.dct import apply

    return apply(dequantize_affine(codes, a, b, axis, np.float32), *dct, inverse=True).astype(dtype)


def dequantize_affine(codes: np.ndarray, a: np.ndarray, b: np.ndarray, axis: int | None, dtype) -> np.ndarray:
    """code * A[c] + B[c] per channel c along axis (one A, B per tensor when axis is None), computed in
    float32 and then cast to dtype: the one definition of what a quantized tensor decodes to."""
    out = codes.astype(np.float32)
    if out.size:
        where = [1] * out.ndim
        if axis is not None:
            where[axis] = a.size
        np.multiply(out, a.reshape(where), out=out)
        np.add(out, b.reshape(where), out=out)
    return out if np.dtype(dtype) == np.float32 else out.astype(dtype)


def _check_params(params: dict, shape: tuple[int, ...]) -> tuple[int, int | None, int]:
    bits, axis, channels = params.get("bits"), params.get("axis"), params.get("channels")
    if params.get("scales", "f32") not in ("f32", "f16", "grid"):
        raise ValueError(f"scales must be 'f32', 'f16' or 'grid', not {params.get('scales')!r}")
    if type(bits) is not int or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 1 to 16, not {bits!r}")
    if axis is not None and (type(axis) is not int or not 0 <= axis < len(shape)):
        raise ValueError(f"axis {axis!r} is not a dimension of shape {list(shape)}")
    expected = 1 if axis is None else shape[axis]
    if channels != expected:
        raise ValueError(f"channels is {channels!r}; axis {axis} of shape {list(shape)} has {expected}")
    return bits, axis, channels


SCALES_GRID = "quant-scales-grid"  # the format feature a file using {"scales": "grid"} requires (1.3)
GRID_HEAD = struct.Struct("<hBBBBi")  # e0, p, q, width of v, width of d, d_min: 10 bytes
MAX_MANTISSA_BITS = 23  # 2**p + m then fits float32's 24-bit significand: A is exact
MAX_SHIFT_BITS = 16
MAX_WIDTH = 32
MAX_EXPONENT = 128  # A < 2**e0: no A overflows float32


def grid_affine(e0: int, p: int, q: int, v: np.ndarray, d: np.ndarray, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) in float32 from the grid form (docs/format.md): per channel v = e * 2**p + m and
    A = (2**p + m) * 2**(e0 - p - 1 - e), a float with a p-bit mantissa, exact in float32; d an integer
    and B = (d / 2**q - zero) * A, computed in float64 and rounded once. The one definition both the
    writer (which evaluates what it stores) and the reader use; power-of-two scaling and IEEE products
    only, so every machine decodes the same bits."""
    v = np.asarray(v, np.int64)
    e, m = v >> p, v & ((1 << p) - 1)
    a = np.ldexp((m + (1 << p)).astype(np.float64), (e0 - p - 1 - e).astype(np.int32)).astype(np.float32)
    shift = np.ldexp(np.asarray(d, np.float64), -q) - float(zero)
    return a, (shift * a.astype(np.float64)).astype(np.float32)


def wide_size(count: int, width: int) -> int:
    """Bytes of `count` unsigned integers of `width` (1..32) bits: the low 16 bits of each packed as one
    stream, then, for a width over 16, the rest as a second stream."""
    return -(-count * min(width, 16) // 8) + (-(-count * (width - 16) // 8) if width > 16 else 0)


def pack_wide(values: np.ndarray, width: int) -> bytes:
    from ..quant.bitpack import pack

    values = np.asarray(values, np.int64)
    out = pack((values & 0xFFFF).astype(np.uint16 if width > 8 else np.uint8), min(width, 16)).tobytes()
    return out + (pack((values >> 16).astype(np.uint16), width - 16).tobytes() if width > 16 else b"")


def _unpack_wide(buf: memoryview, width: int, count: int) -> np.ndarray:
    from ..quant.bitpack import unpack

    low = -(-count * min(width, 16) // 8)
    values = unpack(buf[:low], min(width, 16), (count,)).astype(np.int64)
    if width > 16:
        values |= unpack(buf[low : wide_size(count, width)], width - 16, (count,)).astype(np.int64) << 16
    return values


def grid_header(e0: int, p: int, q: int, v: np.ndarray, d: np.ndarray) -> bytes:
    """The grid form's bytes: GRID_HEAD, then v and d - d_min as wide streams (widths as small as they fit)."""
    d_min = int(d.min(initial=0))
    wv, wd = max(1, int(v.max(initial=0)).bit_length()), max(1, int(d.max(initial=0) - d_min).bit_length())
    return GRID_HEAD.pack(e0, p, q, wv, wd, d_min) + pack_wide(v, wv) + pack_wide(d - d_min, wd)


def _grid_scales(buf: memoryview, channels: int, zero: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(A, B, header bytes) of a grid-form payload, every number checked against the file."""
    if len(buf) < GRID_HEAD.size:
        raise ValueError(f"grid scales need a {GRID_HEAD.size}-byte header; the data is {len(buf)} bytes")
    e0, p, q, wv, wd, d_min = GRID_HEAD.unpack_from(buf, 0)
    if e0 > MAX_EXPONENT or p > MAX_MANTISSA_BITS or q > MAX_SHIFT_BITS:
        raise ValueError(f"grid scales: exponent {e0}, mantissa bits {p} or shift bits {q} out of range "
                         f"(at most {MAX_EXPONENT}, {MAX_MANTISSA_BITS}, {MAX_SHIFT_BITS})")
    if not (1 <= wv <= MAX_WIDTH and 1 <= wd <= MAX_WIDTH):
        raise ValueError(f"grid scales: widths {wv} and {wd} must be 1 to {MAX_WIDTH} bits")
    nv = wide_size(channels, wv)
    head = GRID_HEAD.size + nv + wide_size(channels, wd)
    if len(buf) < head:
        raise ValueError(f"{channels} channels need {head} bytes of grid scales; the data is {len(buf)} bytes")
    v = _unpack_wide(buf[GRID_HEAD.size :], wv, channels)
    d = _unpack_wide(buf[GRID_HEAD.size + nv :], wd, channels) + d_min
    a, b = grid_affine(e0, p, q, v, d, zero)
    return a, b, head


class _AffineCodec:
    required = True
    max_ratio = MAX_RATIO
    in_place = False  # decodes into a new array: the payload may start at any byte

    def supports(self, dtype: np.dtype) -> bool:
        return False  # never chosen for a plain array: the quantizer hands over Encoded tensors

    def encode(self, array: np.ndarray):
        raise ValueError(f"codec {self.name} stores codes made by sporeling.quant, not a float array")

    def decode(self, buf: memoryview, dtype: np.dtype, shape: tuple[int, ...], params: dict) -> np.ndarray:
        if dtype.kind != "f":
            raise ValueError(f"codec {self.name} decodes to floats, not {dtype.name}")
        bits, axis, channels = _check_params(params, shape)
        form = params.get("scales", "f32")
        if form != "f32":
            zero = params.get("zero")
            if type(zero) is not int or not 0 <= zero < 1 << bits:
                raise ValueError(f"zero must be a code of {bits} bits, not {zero!r}")
        if form == "grid":
            a, b, head = _grid_scales(buf, channels, zero)
        else:
            head = 4 + 4 * channels if form == "f16" else 8 * channels
            if len(buf) < head:
                raise ValueError(f"{channels} channels need {head} bytes of scales; the data is {len(buf)} bytes")
            if form == "f16":
                a, b = half_affine(np.frombuffer(buf, "<f4", 1, 0)[0], np.frombuffer(buf, "<f2", channels, 4),
                                   np.frombuffer(buf, "<f2", channels, 4 + 2 * channels), zero)
            else:
                a = np.frombuffer(buf, "<f4", channels, 0)
                b = np.frombuffer(buf, "<f4", channels, 4 * channels)
        dct = None
        if "dct" in params:
            from ..quant.dct import check

            dct = check(params["dct"], shape, axis)
        count = element_count(shape)
        codes = self.codes(buf[head:], bits, count)
        if codes.size != count:
            raise ValueError(f"{codes.size} codes for {count} elements")
        return dequantize_coded(codes.reshape(shape), a, b, axis, dtype, dct)


class PackedCodec(_AffineCodec):
    name = "qpack"

    def codes(self, buf: memoryview, bits: int, count: int) -> np.ndarray:
        from ..quant.bitpack import packed_size, unpack

        need = packed_size((count,), bits)
        if len(buf) != need:
            raise ValueError(f"{count} codes of {bits} bits pack into {need} bytes; the data has {len(buf)}")
        return unpack(buf, bits, (count,))


class FSECodec(_AffineCodec):
    name = "qfse"

    def codes(self, buf: memoryview, bits: int, count: int) -> np.ndarray:
        from ..quant.fse import decode

        return decode(buf, max_count=count)


class HalfCodec:
    """float32 values that float16 holds exactly (weights a float16 model stores as float32 once a Cast
    is folded): their float16 bytes, half the size, decoded losslessly."""

    name = "half"
    required = True
    max_ratio = 2.0
    in_place = False

    def supports(self, dtype: np.dtype) -> bool:
        return False  # chosen by the compressor, which checks exactness

    def encode(self, array: np.ndarray):
        raise ValueError("codec half stores what sporeling.quant hands it")

    def decode(self, buf: memoryview, dtype: np.dtype, shape: tuple[int, ...], params: dict) -> np.ndarray:
        if dtype != np.float32:
            raise ValueError(f"codec half decodes to float32, not {dtype.name}")
        count = element_count(shape)
        if len(buf) != 2 * count:
            raise ValueError(f"{count} float16 values take {2 * count} bytes; the data has {len(buf)}")
        return np.frombuffer(buf, "<f2", count).astype(np.float32).reshape(shape)


def encode_half(array: np.ndarray) -> Encoded | None:
    """The half encoding of a float32 array if float16 holds every value exactly, else None."""
    if array.dtype != np.float32 or not array.size:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        half = array.astype("<f2")
    exact = np.array_equal(half.astype(np.float32).view(np.uint32), np.ascontiguousarray(array).view(np.uint32))
    return Encoded("half", half.tobytes(), {}) if exact else None


register_codec(PackedCodec())
register_codec(HalfCodec())
register_codec(FSECodec())

"""Codecs for quantized weights: integer codes that dequantize by a per-channel affine map.

A quantized tensor is stored as its codes (unsigned, `bits` wide) and, per channel along `axis` (or one
pair for the whole tensor), two float32 numbers A and B with value = code * A + B. Every quantizer
sporeling has fits this form: symmetric or asymmetric, with or without bias correction (for scale s,
zero point z, correction gain g and shift t: A = g * s and B = t - g * s * z), so the file does not need
to know which was used. The payload is A[C] and B[C] (little-endian float32) followed by the codes:

  qpack  the codes bit-packed, LSB first, as one stream in C order (sporeling.quant.bitpack);
  qfse   the codes entropy-coded with Finite State Entropy (sporeling.quant.fse), a blob that
         describes itself.

Decoding is the dequantization: the codes come back and become floats in one affine pass, into the
tensor's declared dtype. params: {"bits": 1..16, "axis": int or null, "channels": C}. A writer gives
these codecs its codes already made (format.Encoded); they never encode a float array themselves.
MAX_RATIO bounds decoded bytes per stored byte (float32 from 1-bit codes is 32; the writer keeps a
tensor that would code tighter than 1/64 of its float size bit-packed instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs import element_count, register_codec

MAX_RATIO = 64.0


@dataclass(frozen=True)
class Encoded:
    """A tensor the writer stores as given: codec name, payload bytes, params."""

    codec: str
    payload: Any
    params: dict


def affine_header(a: np.ndarray, b: np.ndarray) -> bytes:
    return np.asarray(a, "<f4").tobytes() + np.asarray(b, "<f4").tobytes()


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
    if type(bits) is not int or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 1 to 16, not {bits!r}")
    if axis is not None and (type(axis) is not int or not 0 <= axis < len(shape)):
        raise ValueError(f"axis {axis!r} is not a dimension of shape {list(shape)}")
    expected = 1 if axis is None else shape[axis]
    if channels != expected:
        raise ValueError(f"channels is {channels!r}; axis {axis} of shape {list(shape)} has {expected}")
    return bits, axis, channels


class _AffineCodec:
    required = True
    max_ratio = MAX_RATIO

    def supports(self, dtype: np.dtype) -> bool:
        return False  # never chosen for a plain array: the quantizer hands over Encoded tensors

    def encode(self, array: np.ndarray):
        raise ValueError(f"codec {self.name} stores codes made by sporeling.quant, not a float array")

    def decode(self, buf: memoryview, dtype: np.dtype, shape: tuple[int, ...], params: dict) -> np.ndarray:
        if dtype.kind != "f":
            raise ValueError(f"codec {self.name} decodes to floats, not {dtype.name}")
        bits, axis, channels = _check_params(params, shape)
        head = 8 * channels
        if len(buf) < head:
            raise ValueError(f"{channels} channels need {head} bytes of scales; the data is {len(buf)} bytes")
        a = np.frombuffer(buf, "<f4", channels, 0)
        b = np.frombuffer(buf, "<f4", channels, 4 * channels)
        count = element_count(shape)
        codes = self.codes(buf[head:], bits, count)
        if codes.size != count:
            raise ValueError(f"{codes.size} codes for {count} elements")
        return dequantize_affine(codes.reshape(shape), a, b, axis, dtype)


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


register_codec(PackedCodec())
register_codec(FSECodec())

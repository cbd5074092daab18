"""The codec table: how a tensor's values become bytes in a .spore file's data section, and back.

Every tensor entry names its codec. A codec is a small object with
  name        the string the file stores;
  required    whether a reader that does not know this codec must refuse the file (True for any codec
              whose bytes mean nothing without it; False only for an optional alternative encoding
              whose tensor entry also carries a `fallback` a plain reader can use);
  in_place    whether decoding views the file's bytes as the array (raw), so the payload must start on a
              multiple of 64 bytes; a codec that decodes into a new array (absent: True) may start anywhere;
  max_ratio   a bound on decoded bytes (elements * itemsize) per encoded byte: the reader checks a
              tensor's declared shape against its encoded length times this before it decodes or
              allocates anything, so a crafted shape cannot exhaust memory;
  supports(dtype) -> bool, encode(array) -> (bytes-like, params dict), and
  decode(buf: memoryview, dtype, shape, params) -> np.ndarray, raising ValueError on bad bytes.

"raw" is the array's bytes, little-endian and C order: decoding is np.frombuffer on the mapped file, no
copy. "strings" holds object arrays of str (or of bytes): a uint32 length per element, then the UTF-8
bytes. A new codec (bit-packing, entropy coding) is one class and one register_codec() call.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Protocol

import numpy as np


class Codec(Protocol):
    name: str
    required: bool
    in_place: bool
    max_ratio: float

    def supports(self, dtype: np.dtype) -> bool: ...

    def encode(self, array: np.ndarray) -> tuple[Any, dict]: ...

    def decode(self, buf: memoryview, dtype: np.dtype, shape: tuple[int, ...], params: dict) -> np.ndarray: ...


def in_place(codec) -> bool:
    """Whether a codec's payload must be aligned (see Codec.in_place); True for a codec that does not say."""
    return bool(getattr(codec, "in_place", True))


def element_count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)  # Python ints: a crafted shape cannot overflow


def _little(dtype: np.dtype) -> np.dtype:
    big = dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big")
    return dtype.newbyteorder("<") if big else dtype


class RawCodec:
    name = "raw"
    required = True
    in_place = True
    max_ratio = 1.0

    def supports(self, dtype: np.dtype) -> bool:
        return dtype.kind != "O"

    def encode(self, array: np.ndarray) -> tuple[memoryview, dict]:
        flat = np.ascontiguousarray(array).reshape(-1)
        if flat.dtype.kind in "iufcb" and _little(flat.dtype) != flat.dtype:
            flat = flat.astype(_little(flat.dtype))
        return memoryview(flat.view(np.uint8)), {}

    def decode(self, buf: memoryview, dtype: np.dtype, shape: tuple[int, ...], params: dict) -> np.ndarray:
        if dtype.kind == "O":
            raise ValueError("the raw codec cannot hold object (string) tensors")
        count = element_count(shape)
        if len(buf) != count * dtype.itemsize:
            raise ValueError(f"raw data is {len(buf)} bytes; {count} {dtype.name} elements need "
                             f"{count * dtype.itemsize}")
        if count == 0:
            empty = np.zeros(shape, dtype)
            empty.flags.writeable = False
            return empty
        return np.frombuffer(buf, _little(dtype) if dtype.kind in "iufc" else dtype, count).reshape(shape)


class StringsCodec:
    name = "strings"
    required = True
    in_place = True  # its lengths are read as a uint32 array
    max_ratio = 2.0  # >= 4 encoded bytes (a length) per element, 8 decoded (a pointer)

    def supports(self, dtype: np.dtype) -> bool:
        return dtype.kind == "O"

    def encode(self, array: np.ndarray) -> tuple[bytes, dict]:
        items = list(np.asarray(array, dtype=object).reshape(-1))
        if all(isinstance(s, str) for s in items):
            kind, encoded = "str", [s.encode("utf-8", "surrogatepass") for s in items]
        elif all(isinstance(s, bytes) for s in items):
            kind, encoded = "bytes", items
        else:
            odd = next(type(s).__name__ for s in items if not isinstance(s, (str, bytes)))
            raise ValueError(f"an object tensor may hold only str (or only bytes) elements, not {odd}")
        lengths = np.array([len(e) for e in encoded], np.int64)
        if lengths.size and int(lengths.max()) >= 1 << 32:
            raise ValueError("a string element is 4 GiB or longer")
        return lengths.astype("<u4").tobytes() + b"".join(encoded), ({"kind": "bytes"} if kind == "bytes" else {})

    def decode(self, buf: memoryview, dtype: np.dtype, shape: tuple[int, ...], params: dict) -> np.ndarray:
        kind = params.get("kind", "str")
        if dtype.kind != "O":
            raise ValueError(f"the strings codec holds object tensors, not {dtype.name}")
        if kind not in ("str", "bytes"):
            raise ValueError(f"the strings codec has no kind {kind!r}")
        count = element_count(shape)
        if count == 0:
            if len(buf):
                raise ValueError(f"an empty string tensor has {len(buf)} bytes of data")
            return np.empty(shape, object)
        head = 4 * count
        if head > len(buf):
            raise ValueError(f"{count} strings need at least {head} bytes of lengths; the data is {len(buf)} bytes")
        lengths = np.frombuffer(buf, "<u4", count).astype(np.int64)
        ends = np.cumsum(lengths) + head
        if int(ends[-1]) != len(buf):
            raise ValueError("the string lengths do not add up to the data's size")
        data = bytes(buf[head:])
        starts = (ends - lengths - head).tolist()
        out = np.empty(count, object)
        if kind == "str":
            out[:] = [data[a:a + n].decode("utf-8", "surrogatepass") for a, n in zip(starts, lengths.tolist())]
        else:
            out[:] = [data[a:a + n] for a, n in zip(starts, lengths.tolist())]
        return out.reshape(shape)


CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec, replace: bool = False) -> Codec:
    """Adds a codec to the table (the one place readers and writers look codecs up)."""
    name = getattr(codec, "name", None)
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError(f"a codec needs a name (a short non-empty str), got {name!r}")
    ratio = getattr(codec, "max_ratio", None)
    if not isinstance(ratio, (int, float)) or not 0 < ratio < math.inf:
        raise ValueError(f"codec {name}: max_ratio must be a positive finite number, got {ratio!r}")
    if not isinstance(getattr(codec, "required", None), bool):
        raise ValueError(f"codec {name}: required must be True or False")
    if not all(callable(getattr(codec, m, None)) for m in ("supports", "encode", "decode")):
        raise ValueError(f"codec {name}: needs supports(), encode() and decode()")
    if name in CODECS and not replace:
        raise ValueError(f"codec {name} is already registered")
    CODECS[name] = codec
    return codec


def codec_for(array: np.ndarray) -> Codec:
    """The codec the writer uses for an array: for now "raw", or "strings" for object arrays."""
    return CODECS["strings"] if array.dtype.kind == "O" else CODECS["raw"]


register_codec(RawCodec())
register_codec(StringsCodec())

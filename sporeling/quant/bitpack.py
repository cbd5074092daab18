"""Bit-packing of unsigned integer codes of any width from 1 to 16 bits: pure, vectorised, axis-aware.

Bit order (this is what docs/format.md states for packed tensors). The codes are laid out as one bit
stream, least significant bit first: code i occupies stream bits [i*bits, (i+1)*bits), its own bit 0
first, and stream bit j is bit (j % 8) of byte j // 8 (bit 0 = the byte's least significant bit). So
the packed bytes, read as one little-endian integer, equal sum(code[i] << (i * bits)). The last byte is
padded with zero bits. With bits=8 the stream is the codes themselves; with bits=16 it is the codes as
little-endian uint16.

axis=None packs the C-order flattened array as one stream: ceil(size * bits / 8) bytes. axis=k packs
each slice along k (for a weight, each output channel) as its own stream starting on a byte boundary,
slice after slice in index order; inside a slice the elements follow the C order of the other axes (the
order of np.moveaxis(codes, k, 0)[c].ravel()). Each slice takes ceil(n * bits / 8) bytes, n being the
slice's element count, so a channel can be found and decoded alone.

How it goes fast: 8 codes of b bits fill exactly b bytes. The codes of a group, as 8 uint8 (b <= 8)
or 8 uint16 fields, are viewed as one or two little-endian uint64 words, and neighbouring fields are
joined pairwise in log2 steps (SWAR: mask, shift, OR over the whole array) until each word holds its
codes back to back; the first b bytes of each group are the packed bytes. Unpacking runs the steps
backwards. Nothing loops over elements. Widths 1, 2, 4, 8 and 16 take shorter paths (packbits, lanes
of a byte, identity). Work goes in chunks of CHUNK codes so the uint64 temporaries stay small.
"""

from __future__ import annotations

import numpy as np

CHUNK = 1 << 18  # codes per chunk, a multiple of 8: the uint64 words of a chunk (<= 512 KiB) stay in cache


def code_dtype(bits: int) -> np.dtype:
    """The smallest unsigned dtype holding codes of `bits` bits: uint8 up to 8 bits, uint16 above."""
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def _check_bits(bits) -> int:
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an int from 1 to 16, got {bits!r}")
    return int(bits)


def _slices(shape: tuple[int, ...], axis: int | None) -> tuple[int, int]:
    """(number of independently packed slices, codes per slice) of an array of `shape`."""
    size = int(np.prod(shape, dtype=np.int64))
    if axis is None:
        return 1, size
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"axis {axis} is out of range for an array of shape {tuple(shape)}")
    count = shape[axis]
    return count, (size // count if count else 0)


def packed_size(shape, bits: int, axis: int | None = None) -> int:
    """Bytes that pack(codes of this shape, bits, axis) returns, without the codes."""
    bits = _check_bits(bits)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"shape {shape} has a negative dimension")
    count, n = _slices(shape, axis)
    return count * ((n * bits + 7) // 8)


def _check_codes(codes: np.ndarray, bits: int) -> None:
    if codes.dtype.kind not in "ui":
        raise ValueError(f"codes must be unsigned or signed integers, got dtype {codes.dtype}")
    if codes.size == 0:
        return
    limit = 1 << bits
    if (codes.dtype.kind == "i" and codes.min() < 0) or codes.max() >= limit:
        flat = codes.ravel()
        i = int(np.flatnonzero((flat < 0) | (flat >= limit))[0])
        raise ValueError(f"code {flat[i]} at flat index {i} does not fit in {bits} bits (0..{limit - 1})")


_U64 = np.uint64
_ALL = (1 << 64) - 1


def _blocks(field: int, width: int) -> np.uint64:
    """A uint64 mask with the low `width` bits of every 2*field-bit block set."""
    return _U64(sum(((1 << width) - 1) << i for i in range(0, 64, 2 * field)))


def _squeeze(x: np.ndarray, field: int, bits: int) -> np.ndarray:
    """In place: uint64 words of fields `field` bits wide, each holding a `bits`-bit code, become words
    holding the codes back to back from bit 0 (the packed layout). Each step joins neighbouring fields
    pairwise, halving the field count: log2(64 / field) steps of four whole-array operations."""
    tmp = np.empty_like(x)
    width = bits
    while field < 64:
        low = _blocks(field, field)
        np.bitwise_and(x, _U64(~int(low) & _ALL), out=tmp)
        tmp >>= _U64(field - width)
        x &= low
        x |= tmp
        field, width = 2 * field, 2 * width
    return x


def _spread(x: np.ndarray, field: int, bits: int) -> np.ndarray:
    """In place, the inverse of _squeeze: packed codes back into fields `field` bits wide."""
    tmp = np.empty_like(x)
    size, width = 32, bits * 32 // field
    while size >= field:
        np.left_shift(x, _U64(size - width), out=tmp)
        tmp &= _U64(~int(_blocks(size, size)) & _ALL)
        x &= _blocks(size, width)
        x |= tmp
        size, width = size // 2, width // 2
    return x


def _pack_stream(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packs a 1-D array of valid codes whose length is a multiple of 8 (the caller pads)."""
    n = codes.size
    if bits == 8:
        return codes.astype(np.uint8)
    if bits == 16:
        return codes.astype("<u2").view(np.uint8)
    if bits == 1:
        return np.packbits(codes.astype(np.uint8), bitorder="little")
    if bits in (2, 4):  # whole codes per byte: OR the 4 (or 2) lanes of each byte together
        lanes = codes.astype(np.uint8, copy=False).reshape(-1, 8 // bits)
        out = lanes[:, 0].copy()
        for k in range(1, 8 // bits):
            out |= lanes[:, k] << np.uint8(k * bits)
        return out
    # 8 codes of b bits are b bytes: as uint8 fields they fill one uint64 word, as uint16 fields two.
    out = np.empty(n * bits // 8, np.uint8).reshape(-1, bits)
    wide = bits > 8
    for start in range(0, n, CHUNK):
        group = codes[start:start + CHUNK]
        words = _squeeze(group.astype("<u2" if wide else np.uint8).view("<u8"), 16 if wide else 8, bits)
        rows = slice(start // 8, (start + group.size) // 8)
        if not wide:
            out[rows] = words.view(np.uint8).reshape(-1, 8)[:, :bits]
            continue
        # Each word holds 4 codes (4b <= 60 bits); join the pair of a group into one 128-bit value.
        pair = words.reshape(-1, 2)
        joined = np.empty_like(pair)
        joined[:, 0] = pair[:, 0] | (pair[:, 1] << _U64(4 * bits))
        joined[:, 1] = pair[:, 1] >> _U64(64 - 4 * bits)
        out[rows] = joined.view(np.uint8).reshape(-1, 16)[:, :bits]
    return out.reshape(-1)


def _unpack_stream(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of _pack_stream: n codes (a multiple of 8) from n * bits / 8 bytes."""
    if bits == 8:
        return data.copy()
    if bits == 16:
        return data.view("<u2").astype(np.uint16)
    if bits == 1:
        return np.unpackbits(data, bitorder="little")
    if bits in (2, 4):
        lanes = np.empty((data.size, 8 // bits), np.uint8)
        for k in range(8 // bits):
            np.bitwise_and(data >> np.uint8(k * bits), np.uint8((1 << bits) - 1), out=lanes[:, k])
        return lanes.reshape(-1)
    wide = bits > 8
    out = np.empty(n, "<u2" if wide else np.uint8)
    data = data.reshape(-1, bits)
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start) // 8
        lanes = np.zeros((count, 16 if wide else 8), np.uint8)
        lanes[:, :bits] = data[start // 8:start // 8 + count]
        words = lanes.view("<u8")
        dest = out[start:start + count * 8].view("<u8")
        if not wide:
            dest[:] = _spread(words.reshape(-1), 8, bits)
            continue
        mask = _U64((1 << (4 * bits)) - 1)
        pair = dest.reshape(-1, 2)
        pair[:, 0] = words[:, 0] & mask
        pair[:, 1] = ((words[:, 0] >> _U64(4 * bits)) | (words[:, 1] << _U64(64 - 4 * bits))) & mask
        _spread(dest, 16, bits)
    return out.astype(np.uint16, copy=False) if wide else out


def pack(codes: np.ndarray, bits: int, axis: int | None = None) -> np.ndarray:
    """Packs unsigned integer codes (each < 2**bits) into a uint8 buffer of packed_size(codes.shape,
    bits, axis) bytes; see the module docstring for the bit order. Raises ValueError naming the first
    code that does not fit."""
    bits = _check_bits(bits)
    codes = np.asarray(codes)
    _check_codes(codes, bits)
    count, n = _slices(codes.shape, axis)
    if codes.size == 0:
        return np.zeros(packed_size(codes.shape, bits, axis), np.uint8)
    if axis is None or count == 1 or n % 8 == 0:
        # Slices of a multiple of 8 codes end on a byte boundary: the whole array is one stream.
        flat = (np.moveaxis(codes, axis, 0) if axis is not None else codes).reshape(-1)
        head = flat.size - flat.size % 8
        if head == flat.size:
            return _pack_stream(flat, bits)
        # The last < 8 codes go apart, zero-padded, rather than copying the whole array to pad it.
        tail = np.zeros(8, flat.dtype)
        tail[:flat.size - head] = flat[head:]
        return np.concatenate([_pack_stream(flat[:head], bits),
                               _pack_stream(tail, bits)[:((flat.size - head) * bits + 7) // 8]])
    # Pad each slice with zero codes to a multiple of 8, pack, and drop the all-zero tail bytes
    # that padding added to each slice.
    n8 = n + (-n) % 8
    rows = np.zeros((count, n8), codes.dtype)
    rows[:, :n] = np.moveaxis(codes, axis, 0).reshape(count, n)
    packed = _pack_stream(rows.reshape(-1), bits).reshape(count, n8 * bits // 8)
    return np.ascontiguousarray(packed[:, :(n * bits + 7) // 8]).reshape(-1)


def unpack(packed, bits: int, shape: tuple[int, ...], axis: int | None = None) -> np.ndarray:
    """The codes pack(codes, bits, axis) was given, of `shape`, as uint8 (bits <= 8) or uint16.
    `packed` is a uint8 array or any bytes-like object of exactly packed_size(shape, bits, axis) bytes."""
    bits = _check_bits(bits)
    shape = tuple(int(d) for d in shape)
    need = packed_size(shape, bits, axis)
    if isinstance(packed, np.ndarray):
        if packed.dtype != np.uint8:
            raise ValueError(f"packed codes must be a uint8 array or bytes, got dtype {packed.dtype}")
        data = packed.reshape(-1)
    else:
        data = np.frombuffer(packed, np.uint8)
    if data.size != need:
        raise ValueError(f"packed buffer has {data.size} bytes; {bits}-bit codes of shape {list(shape)} "
                         f"packed {'as one stream' if axis is None else f'per slice along axis {axis}'} "
                         f"take {need}")
    count, n = _slices(shape, axis)
    dtype = code_dtype(bits)
    total = count * n
    if total == 0:
        return np.zeros(shape, dtype)
    if axis is None or count == 1 or n % 8 == 0:
        padded = total + (-total) % 8
        if padded != total:
            data = np.concatenate([data, np.zeros(padded * bits // 8 - data.size, np.uint8)])
        flat = _unpack_stream(data, bits, padded)[:total]
    else:
        n8 = n + (-n) % 8
        per = (n * bits + 7) // 8
        rows = np.zeros((count, n8 * bits // 8), np.uint8)
        rows[:, :per] = data.reshape(count, per)
        flat = _unpack_stream(rows.reshape(-1), bits, count * n8).reshape(count, n8)[:, :n]
    if axis is None:
        return flat.reshape(shape)
    moved = (shape[axis],) + shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    return np.ascontiguousarray(np.moveaxis(flat.reshape(moved), 0, axis))

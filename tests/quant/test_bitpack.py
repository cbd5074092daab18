"""Bit-packing: round trips for every width and layout, the exact bytes against a big-integer oracle
built from the documented bit order, hand-worked examples, sizes, bad input, and memory on big arrays."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sporeling.quant import code_dtype, pack, packed_size, unpack


def oracle(codes: np.ndarray, bits: int, axis: int | None) -> bytes:
    """The documented layout, computed with Python integers: per stream, the little-endian bytes of
    sum(code[i] << (i * bits)), ceil(n * bits / 8) of them; per-axis streams follow each other."""
    if axis is None:
        streams = [codes.reshape(-1)]
    else:
        moved = np.moveaxis(codes, axis, 0)
        streams = [moved[c].reshape(-1) for c in range(moved.shape[0])]
    out = b""
    for s in streams:
        value = sum(int(c) << (i * bits) for i, c in enumerate(s))
        out += value.to_bytes((len(s) * bits + 7) // 8, "little")
    return out


@st.composite
def packing_cases(draw):
    bits = draw(st.integers(1, 16))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=11))
    dtype = draw(st.sampled_from([code_dtype(bits), np.dtype(np.int32), np.dtype(np.uint32), np.dtype(np.int64)]))
    codes = draw(hnp.arrays(dtype, shape, elements=st.integers(0, (1 << bits) - 1)))
    if draw(st.booleans()):  # a non-contiguous view of a bigger array
        codes = np.repeat(codes, 2, axis=-1)[..., ::2].swapaxes(0, -1)
    axis = draw(st.sampled_from([None, *range(-codes.ndim, codes.ndim)]))
    return codes, bits, axis


@settings(max_examples=400, deadline=None)
@given(packing_cases())
def test_round_trip_and_layout(case):
    codes, bits, axis = case
    packed = pack(codes, bits, axis)
    assert packed.dtype == np.uint8 and packed.ndim == 1
    assert packed.size == packed_size(codes.shape, bits, axis)
    assert packed.tobytes() == oracle(codes, bits, axis)
    back = unpack(packed, bits, codes.shape, axis)
    assert back.dtype == code_dtype(bits) and back.shape == codes.shape
    np.testing.assert_array_equal(back, codes)
    # bytes and memoryview are accepted as well as arrays
    np.testing.assert_array_equal(unpack(memoryview(packed.tobytes()), bits, codes.shape, axis), codes)


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, (1 << 18) * 2 + 13])
def test_every_width_sizes(bits, n):
    rng = np.random.default_rng(bits * 1000 + n)
    codes = rng.integers(0, 1 << bits, size=n).astype(code_dtype(bits))
    packed = pack(codes, bits)
    assert packed.size == (n * bits + 7) // 8
    np.testing.assert_array_equal(unpack(packed, bits, (n,)), codes)
    if n and n < 100:
        assert packed.tobytes() == oracle(codes, bits, None)


@pytest.mark.parametrize("bits", [1, 3, 8, 11, 16])
def test_one_symbol_and_all_distinct(bits):
    one = np.full(1001, (1 << bits) - 1, code_dtype(bits))
    np.testing.assert_array_equal(unpack(pack(one, bits), bits, one.shape), one)
    distinct = np.random.default_rng(bits).permutation(1 << bits).astype(code_dtype(bits))
    np.testing.assert_array_equal(unpack(pack(distinct, bits, 0), bits, distinct.shape, 0), distinct)


def test_hand_worked_examples():
    # 3 bits, [1..7, 0]: 1 | 2<<3 | 3<<6 | 4<<9 | 5<<12 | 6<<15 | 7<<18 = 2054353 = 0x1F58D1 -> D1 58 1F
    assert pack(np.array([1, 2, 3, 4, 5, 6, 7, 0]), 3).tolist() == [0xD1, 0x58, 0x1F]
    two_rows = np.array([[7, 7, 7], [0, 0, 1]], np.uint8)
    # one stream: 511 | 1 << 15 = 0x81FF, 18 bits -> 3 bytes
    assert pack(two_rows, 3).tolist() == [0xFF, 0x81, 0x00]
    # per row: 511 -> FF 01; 1 << 6 = 0x40 -> 40 00; each row starts on its own byte
    assert pack(two_rows, 3, axis=0).tolist() == [0xFF, 0x01, 0x40, 0x00]
    # per column: [7, 0] -> 7; [7, 0] -> 7; [7, 1] -> 7 | 1 << 3 = 0x0F
    assert pack(two_rows, 3, axis=1).tolist() == [0x07, 0x07, 0x0F]
    # 10 bits: 1023 | 1 << 10 = 0x7FF, 20 bits -> 3 bytes
    assert pack(np.array([1023, 1], np.uint16), 10).tolist() == [0xFF, 0x07, 0x00]
    assert pack(np.array([1, 0, 1, 1, 0, 0, 0, 0, 1]), 1).tolist() == [0b1101, 0b1]
    assert pack(np.array([0x1234], np.uint16), 16).tolist() == [0x34, 0x12]


def test_a_channel_decodes_alone():
    codes = np.random.default_rng(0).integers(0, 32, size=(6, 3, 3), dtype=np.uint8)
    packed = pack(codes, 5, axis=0)
    per = packed_size((1, 3, 3), 5, axis=0)
    assert packed.size == 6 * per
    np.testing.assert_array_equal(unpack(packed[4 * per:5 * per], 5, (1, 3, 3), axis=0)[0], codes[4])


def test_packed_size_without_data():
    assert packed_size((), 5) == 1
    assert packed_size((0, 7), 3, axis=1) == 0
    assert packed_size((4, 0), 3, axis=0) == 0
    assert packed_size((4, 3), 3, axis=0) == 4 * 2
    assert packed_size((4, 3), 3, axis=1) == 3 * 2
    assert packed_size((4, 3), 3) == 5


def test_bad_codes_name_the_first_bad_value():
    with pytest.raises(ValueError, match=r"code 8 at flat index 3 does not fit in 3 bits"):
        pack(np.array([1, 2, 3, 8, 9]), 3)
    with pytest.raises(ValueError, match=r"code -1 at flat index 1"):
        pack(np.array([0, -1, 2]), 4)
    with pytest.raises(ValueError, match="dtype float32"):
        pack(np.zeros(3, np.float32), 4)
    for bits in (0, 17, 2.0, True):
        with pytest.raises(ValueError, match="bits must be an int"):
            pack(np.zeros(3, np.uint8), bits)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        pack(np.zeros((2, 2), np.uint8), 4, axis=2)


def test_bad_buffers():
    with pytest.raises(ValueError, match="has 2 bytes.*take 3"):
        unpack(b"\x00\x00", 3, (8,))
    with pytest.raises(ValueError, match="has 4 bytes.*take 3"):
        unpack(b"\x00" * 4, 3, (8,))
    with pytest.raises(ValueError, match="uint8"):
        unpack(np.zeros(3, np.int16), 3, (8,))


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("bits", [3, 8, 12])
def test_memory_stays_a_few_times_the_data(bits):
    codes = np.random.default_rng(1).integers(0, 1 << bits, size=(1 << 22) + 5).astype(code_dtype(bits))
    packed = pack(codes, bits)
    assert _peak_bytes(lambda: pack(codes, bits)) < 3 * codes.nbytes
    assert _peak_bytes(lambda: unpack(packed, bits, codes.shape)) < 3 * codes.nbytes


@pytest.mark.slow
def test_huge_array():
    n = (1 << 27) + 3
    codes = np.random.default_rng(2).integers(0, 8, size=n, dtype=np.uint8)
    packed = pack(codes, 3)
    assert packed.size == (3 * n + 7) // 8
    np.testing.assert_array_equal(unpack(packed, 3, (n,)), codes)
    assert _peak_bytes(lambda: unpack(packed, 3, (n,))) < 3 * codes.nbytes

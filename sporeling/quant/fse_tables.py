"""The pieces of Finite State Entropy (tANS) that do not depend on how lanes are laid out: normalizing
symbol counts to a table of 2**table_log slots, spreading the symbols over the table, the decode and
encode tables built from that spread, the compact header that stores the normalized counts, and the
vectorised bit I/O (packing variable-length codes LSB-first, reading fixed-width fields back).

Normalization keeps every present symbol at >= 1 slot and otherwise spends slots where they save the
most coded bits: start from floor(count * N / n), then move slots one at a time per symbol and round
by the marginal gain count / (f + 1/2) (a close, division-only stand-in for count * log2(1 + 1/f), so
the choice is bit-identical on every machine: no transcendental function decides anything).

The spread is FSE's: slot k of the sequence "each symbol repeated f times" goes to position
(k * step) mod N with step = N/2 + N/8 + 3, odd, so it visits every slot once. State u of the
decoder (0 <= u < N) decodes symbol table[u]; with next = f[s] + (number of earlier slots of s),
it reads nb = table_log - floor(log2(next)) bits and moves to (next << nb) - N + bits. The encoder is
the exact inverse (zstd's FSE_buildCTable, with 32-bit instead of 16-bit deltas so tables up to 2**17
work): from state x in [N, 2N) it emits the low nb = (x + delta_nb[s]) >> 32 bits and moves to
state_table[(x >> nb) + delta_find[s]].

The decoder table packs one int64 per state: the new-state base in the low 24 bits and -nb in the top
16 bits (arithmetic shift gives it back signed, ready for a running sum of negative bit counts).
"""

from __future__ import annotations

import numpy as np

MIN_TABLE_LOG, MAX_TABLE_LOG = 1, 17
BASE_MASK = (1 << 24) - 1


class FSEError(ValueError):
    """A blob that is not a valid FSE stream (truncated, corrupt, or claiming more than allowed), or
    symbols that cannot be coded. The message says what is wrong."""


# ---- normalization and tables ---------------------------------------------------------------------
def normalize(counts: np.ndarray, table_log: int) -> np.ndarray:
    """Normalized counts f (int64, same length as counts) with sum 2**table_log, f >= 1 where
    counts > 0 and 0 elsewhere. Needs 2**table_log >= number of present symbols."""
    counts = np.asarray(counts, np.int64)
    present = np.flatnonzero(counts)
    size = 1 << table_log
    if len(present) > size:
        raise FSEError(f"{len(present)} distinct symbols do not fit a table of 2**{table_log}")
    c = counts[present].astype(np.float64)
    f = np.maximum(1, np.floor(c * size / c.sum())).astype(np.int64)
    while True:
        diff = size - int(f.sum())
        if diff == 0:
            break
        if diff > 0:  # give a slot to the symbols that gain the most from one
            gain = c / (f + 0.5)
            pick = np.argsort(-gain, kind="stable")[:diff]
            f[pick] += 1
        else:  # take a slot from the symbols that lose the least, never below 1
            loss = np.where(f > 1, c / np.maximum(f - 0.5, 0.5), np.inf)
            pick = np.argsort(loss, kind="stable")[:min(-diff, int(np.count_nonzero(f > 1)))]
            f[pick] -= 1
    out = np.zeros(len(counts), np.int64)
    out[present] = f
    return out


def spread(freq: np.ndarray, table_log: int) -> np.ndarray:
    """The symbol index (into the dense list of present symbols) of every one of the 2**table_log slots."""
    size = 1 << table_log
    step = ((size >> 1) + (size >> 3) + 3) | 1   # odd, so a permutation (the | 1 matters below 2**4)
    table = np.empty(size, np.int64)
    table[(np.arange(size, dtype=np.int64) * step) & (size - 1)] = np.repeat(np.arange(len(freq)), freq)
    return table


def bit_length(v: np.ndarray) -> np.ndarray:
    """floor(log2(v)) + 1 for positive integers (exact: frexp does not round)."""
    return np.frexp(np.asarray(v, np.float64))[1].astype(np.int64)


class Tables:
    """Decode and encode tables for normalized counts `freq` (dense: present symbols only, all >= 1)."""

    def __init__(self, freq: np.ndarray, table_log: int):
        size = 1 << table_log
        self.table_log, self.size = table_log, size
        sym = spread(freq, table_log)
        self.symbol = sym                                       # state -> dense symbol index
        # States grouped by symbol, ascending. At most 2**16 symbols: stable argsort of 16-bit keys is a
        # radix sort, 8x faster than on int64.
        order = np.argsort(sym.astype(np.uint16), kind="stable")
        cumul = np.concatenate([[0], np.cumsum(freq)])
        rank = np.empty(size, np.int64)
        rank[order] = np.arange(size) - cumul[sym[order]]
        nxt = freq[sym] + rank
        nb = table_log - (bit_length(nxt) - 1)
        base = (nxt << nb) - size
        self.decode = base | ((-nb) << 48)                       # see the module docstring
        # Encoder (zstd FSE_buildCTable): states of symbol j are state_table[cumul[j]:cumul[j+1]].
        self.state_table = size + order
        max_out = table_log - (bit_length(np.maximum(freq - 1, 1)) - 1)
        max_out = np.where(freq == 1, table_log, max_out)
        min_plus = np.where(freq == 1, size, freq << max_out)
        self.delta_nb = (max_out << 32) - min_plus
        self.delta_find = cumul[:-1] - freq


# ---- bit I/O ----------------------------------------------------------------------------------------
_MASKS = np.array([(1 << k) - 1 for k in range(65)], np.uint64)


def pack_codes(values: np.ndarray, nbits: np.ndarray, masked: bool = False) -> tuple[bytes, int]:
    """Concatenates the low nbits[i] bits of values[i] (nbits <= 60), LSB first; returns (bytes, bits).
    masked=True promises values < 2**nbits already."""
    nb = np.asarray(nbits, np.int64)
    if len(nb) == 0:
        return b"", 0
    codes = np.asarray(values, np.int64).view(np.uint64)
    if not masked:
        codes = codes & _MASKS[nb]
    # Join neighbours into one code while two still fit 60 bits: each round halves the work below.
    width = int(nb.max())
    while len(codes) > 1 and 2 * width <= 60:
        if len(codes) & 1:
            codes, nb = np.append(codes, np.uint64(0)), np.append(nb, 0)
        low_nb = nb[0::2]
        codes = codes[0::2] | (codes[1::2] << low_nb.view(np.uint64))
        nb, width = low_nb + nb[1::2], 2 * width
    ends = np.cumsum(nb)
    total = int(ends[-1])
    starts = ends - nb
    word = starts >> 6
    shift = (starts & 63).view(np.uint64)
    words = np.zeros((total + 63) // 64 + 1, np.uint64)
    # Codes occupy disjoint bits, so OR-ing them per word is the sum; starts are sorted, so the codes
    # that start in one word are a contiguous run and reduceat ORs each run in one pass.
    first = np.flatnonzero(word[1:] != word[:-1]) + 1
    first = np.concatenate([[0], first])
    words[word[first]] = np.bitwise_or.reduceat(codes << shift, first)
    spill = np.flatnonzero(shift > np.uint64(64) - nb.view(np.uint64))
    if len(spill):
        words[word[spill] + 1] |= codes[spill] >> (np.uint64(64) - shift[spill])
    return words.astype("<u8").tobytes()[:(total + 7) // 8], total


def concat_bits(pieces: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    """One bit string from (bytes, bits) pieces whose bits past `bits` are zero."""
    total = sum(b for _, b in pieces)
    out = np.zeros((total + 63) // 64 + 2, np.uint64)
    pos = 0
    for data, bits in pieces:
        w = np.frombuffer(data + bytes(-len(data) % 8), "<u8").astype(np.uint64)
        i, sh = pos >> 6, pos & 63
        out[i:i + len(w)] |= w << np.uint64(sh)
        if sh:
            out[i + 1:i + 1 + len(w)] |= w >> np.uint64(64 - sh)
        pos += bits
    return out.astype("<u8").tobytes()[:(total + 7) // 8], total


def read_fields(data, count: int, width: int, bit_offset: int = 0) -> np.ndarray:
    """count fields of `width` bits (<= 57) each, LSB first, from bit_offset of data; int64. The caller
    has checked that data holds bit_offset + count * width bits."""
    if count == 0:
        return np.zeros(0, np.int64)
    buf = np.zeros(len(data) + 8, np.uint8)
    buf[:len(data)] = np.frombuffer(data, np.uint8)
    starts = bit_offset + np.arange(count, dtype=np.int64) * width
    win = np.ndarray((len(buf) - 7,), "<u8", buf, 0, (1,))[starts >> 3]
    return ((win >> (starts & 7).astype(np.uint64)) & np.uint64((1 << width) - 1)).astype(np.int64)


def windows_reversed(data, pad_bytes: int) -> tuple[np.ndarray, int]:
    """The 64-bit windows the lane decoder reads, reversed, and C (see fse._Step and fse._Segment): for a
    code ending at bit e of data, R[(C - e) >> 3] holds stream bits [8b - 64, 8b), b = ceil(e / 8), with
    bit e - 1 at position 63 - ((C - e) & 7). pad_bytes zero bytes follow data, so a lane that runs
    past the end reads zeros until the per-step check stops it."""
    m = len(data) + pad_bytes
    buf = np.zeros(m + 16, np.uint8)
    buf[8:8 + len(data)] = np.frombuffer(data, np.uint8)
    win = np.ndarray((m + 1,), "<u8", buf, 0, (1,))
    return np.ascontiguousarray(win[::-1]).view(np.uint64), 8 * m


# ---- the counts header --------------------------------------------------------------------------------
# Present symbols and their normalized counts, as two integer sequences: gaps between present symbols
# (the first from -1) minus 1, and counts minus 1. Each sequence is Rice coded with its own parameter
# k, the unary quotients of all values in one section and the k-bit remainders in the next, so the
# decoder finds every quotient with one flatnonzero over the bits instead of a loop.
def _rice_k(values: np.ndarray) -> int:
    costs = [int((values >> k).sum()) + len(values) * (k + 1) for k in range(24)]
    return int(np.argmin(costs))


def _rice_bits(values: np.ndarray, k: int) -> np.ndarray:
    """The unary section (q ones, then a zero, per value) and the k-bit remainders, as 0/1 bytes."""
    q = values >> k
    unary = np.ones(int(q.sum()) + len(values), np.uint8)
    unary[np.cumsum(q + 1) - 1] = 0
    rem = ((values[:, None] >> np.arange(k)) & 1).astype(np.uint8).ravel()
    return np.concatenate([unary, rem])


def encode_counts(present: np.ndarray, freq: np.ndarray) -> bytes:
    """present: ascending symbol values; freq: their normalized counts (>= 1)."""
    gaps = np.diff(present, prepend=-1) - 1
    kg, kf = _rice_k(gaps), _rice_k(freq - 1)
    bits = np.concatenate([_rice_bits(gaps, kg), _rice_bits(freq - 1, kf)])
    return bytes([kg, kf]) + np.packbits(bits, bitorder="little").tobytes()


def decode_counts(data, count: int, alphabet: int, table_log: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(present symbols, normalized counts) back from encode_counts' bytes; FSEError if they are not
    `count` ascending symbols below `alphabet` whose counts sum to 2**table_log."""
    if len(data) < 2:
        raise FSEError(f"{where}: counts header truncated")
    kg, kf = data[0], data[1]
    if kg > 23 or kf > 23:
        raise FSEError(f"{where}: counts header has Rice parameters {kg}, {kf} (at most 23)")
    bits = np.unpackbits(np.frombuffer(data, np.uint8, offset=2), bitorder="little")
    pos = 0
    seqs = []
    for k in (kg, kf):
        ends = np.flatnonzero(bits[pos:] == 0)[:count]
        if len(ends) < count or pos + int(ends[-1]) + 1 + count * k > len(bits):
            raise FSEError(f"{where}: counts header truncated")
        q = np.diff(ends, prepend=-1) - 1
        pos += int(ends[-1]) + 1
        rem = bits[pos:pos + count * k].reshape(count, k).astype(np.int64) << np.arange(k)
        pos += count * k
        seqs.append((q << k) | rem.sum(axis=1))
    if len(bits) - pos >= 8 or bits[pos:].any():
        raise FSEError(f"{where}: counts header has {len(bits) - pos} bits left over, or nonzero padding")
    if seqs[0].max() >= alphabet or seqs[1].max() >= 1 << table_log:  # before any sum can overflow
        raise FSEError(f"{where}: counts header holds a gap or count too large for its table")
    present = np.cumsum(seqs[0] + 1) - 1
    freq = seqs[1] + 1
    if present[-1] != alphabet - 1:  # the alphabet is the largest symbol + 1, nothing else
        raise FSEError(f"{where}: the largest symbol is {int(present[-1])}, the alphabet says {alphabet - 1}")
    if int(freq.sum()) != 1 << table_log:
        raise FSEError(f"{where}: normalized counts sum to {int(freq.sum())}, not 2**{table_log}")
    return present, freq

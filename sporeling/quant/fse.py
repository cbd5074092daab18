"""Finite State Entropy (tANS) coding of quantized weight codes, vectorised in NumPy.

    encode(symbols, *, table_log=None, lanes=None) -> bytes
    decode(blob, *, max_count=None) -> np.ndarray        (uint8 if the alphabet has <= 256 symbols, else uint16)
    decode_into(blob, out, lut=None)                     out[:] = symbols, or lut[symbols] (fused dequantization)
    decode_lut(blob, lut, *, max_count=None) -> lut[symbols]
    info(blob) -> dict; coded_size_bits(symbols), entropy_bits(symbols) for tests and reports

Lanes. tANS decoding is one table lookup and one bit read per symbol, each depending on the last, so
one stream cannot be vectorised. We interleave L lanes instead: symbol i belongs to lane i % L at
step i // L, every lane has its own state, and one NumPy call advances all lanes by a step. The
lanes share one bitstream: at each step lane 0 reads its bits first, then lane 1, ..., so a running
sum of the lanes' bit counts (one np.cumsum) gives every lane's read position and nothing is padded.
Bits are read with one gather of 64-bit windows (fse_tables.windows_reversed) and two shifts. The
decoder keeps states, not symbols, and turns a chunk of states into output with one gather from a
per-state table: the symbol, or lut[symbol], which is how dequantization is fused. The encoder runs
backwards over the steps (tANS encodes in reverse) and packs all codes of a chunk in one pass.

Bits back. Each lane's state costs table_log bits to store: at 8192 lanes about 4% of a 1M-symbol
4-bit tensor. But the decoder ends in the encoder's initial states, table_log free bits per lane,
and we fill them with data: the tensor's tail is coded by a second group of L/4 lanes whose start
states and bitstream become the first group's initial states (its payload), that group's tail by
L/16 lanes inside its own initial states, and so on, until a group whose wasted all-zero initial
states cost under 1/1024 of the data (or has 8 lanes). The decoder checks they come back to zero.
Stage 1 covers symbols [0, n1) in full steps and a last partial step of its first lanes; stage
k > 1 covers the r_k + T_k * L_k symbols after stage k-1: a first partial step of its *last* r_k
lanes, then T_k full steps, in at most L_{k-1} * table_log - L_k * table_log bits, the unused rest
zero. Lanes of stage 1: up to 2**14, at most n / 16, and few enough that the later stages hold
about 1/8 of the bits (they decode with fewer lanes, so more slowly).

Table size: 2**table_log slots with table_log = ceil(log2(distinct symbols)) + 6, kept within 12..13
(within 1..17 and at least ceil(log2(distinct)) + 1 when the data is small or the alphabet large);
tANS loses 0.1-0.4% to its normalized counts there, less with larger tables, which cost speed. The
encoder takes a smaller table where that codes the data smaller, counts header included (_smallest_table):
a few thousand weights over hundreds of distinct codes pay more for the header of a 2**13 table than
its finer counts save (up to 2% of a small compressed model's bytes).

Blob (integers little-endian; varint = unsigned LEB128; bit fields LSB first):
    0xF5, kind (0 empty, 1 one distinct symbol, 2 tANS), varint n, varint alphabet (largest symbol + 1)
    kinds 0 and 1 stop here (kind 1: every symbol is alphabet - 1).
    kind 2: table_log (1 byte), varint P (distinct symbols), varint K (stages), K varints L_k,
    K - 1 pairs of varints (T_k, r_k), varint size + counts header (fse_tables.encode_counts),
    ceil(L_1 * table_log / 8) bytes of stage 1 start states, varint stream bits, the stream bytes;
    nothing after it; unused bits of last bytes zero.

Guarantees. Same symbols, same bytes, on every machine (integer arithmetic; the few float decisions
use only IEEE-exact operations). decode(encode(x)) == x. A truncated or malformed blob raises
FSEError, as does one whose bitstreams do not end exactly on their declared bit, or leave nonzero
padding, or whose last stage does not return to its zero states. A bit flipped inside a bitstream
is then nearly always caught, but this is not a checksum: tANS lanes can resynchronize, most so on
flat, high-entropy data, and the result may be wrong symbols, always exactly n of them (every state
the decoder can reach is a valid table entry). The .spore container's CRC is the integrity check.
Work and memory are bounded by n, which is checked against max_count (default DEFAULT_MAX_COUNT)
and against what the blob could encode before anything is allocated (a lane reads at least one bit
per table size + 1 symbols: a zero-bit transition always moves to a smaller state).
"""

from __future__ import annotations

import numpy as np

from .fse_tables import (BASE_MASK, MAX_TABLE_LOG, MIN_TABLE_LOG, FSEError, Tables, bit_length, concat_bits,
                         decode_counts, encode_counts, normalize, pack_codes, read_fields, windows_reversed)

__all__ = ["FSEError", "coded_size_bits", "decode", "decode_into", "decode_lut", "encode", "entropy_bits", "info"]

TAG = 0xF5
KIND_EMPTY, KIND_CONSTANT, KIND_TANS = 0, 1, 2
MAX_ALPHABET = 1 << 16
MAX_LANES = 1 << 16
MAX_STAGES = 8
MAX_FIRST_LANES = 1 << 14        # stage 1 lanes: at most this, at most n / MIN_STEPS, and few enough that
MIN_STEPS = 16                   # the later stages (slower, fewer lanes) get about 1/PAYLOAD_SHARE of the
PAYLOAD_SHARE = 8                # bits
STAGE_RATIO = 4                  # lanes of stage k+1 = lanes of stage k / 4 ...
MIN_LAST_LANES = 8               # ... down to 8 lanes, or until the last stage wastes <= WASTE of the bits
WASTE = 1 / 1024
DEFAULT_MAX_COUNT = 1 << 28      # decode() without max_count refuses blobs claiming more symbols
CHUNK_SYMBOLS = 1 << 18          # steps are done in chunks of about this many symbols (bounded scratch)
SEGMENT_BYTES = 1 << 18          # stream bytes turned into read windows at a time


# ---- public API ------------------------------------------------------------------------------------------
def encode(symbols: np.ndarray, *, table_log: int | None = None, lanes: int | None = None) -> bytes:
    """The FSE blob of a 1-D array of unsigned integer symbols below 2**16 (see the module docstring)."""
    sym = _check_symbols(symbols)
    n = len(sym)
    if n == 0:
        return bytes([TAG, KIND_EMPTY]) + _varint(0) + _varint(0)
    alphabet = int(sym.max()) + 1
    counts = sum(np.bincount(sym[i:i + CHUNK_SYMBOLS].astype(np.intp), minlength=alphabet)
                 for i in range(0, n, CHUNK_SYMBOLS))
    present = np.flatnonzero(counts)
    head = bytes([TAG]) + bytes([KIND_CONSTANT if len(present) == 1 else KIND_TANS]) + _varint(n) + _varint(alphabet)
    if len(present) == 1:
        return head
    if table_log is None:
        tl, freq, counts_blob = _smallest_table(counts[present], present, n)
    else:
        tl = int(table_log)
        if not MIN_TABLE_LOG <= tl <= MAX_TABLE_LOG or (1 << tl) < len(present):
            raise FSEError(f"table_log {tl}: must be {MIN_TABLE_LOG}..{MAX_TABLE_LOG} with 2**table_log >= "
                           f"{len(present)} (the distinct symbols)")
        freq = normalize(counts[present], tl)
        counts_blob = encode_counts(present, freq)
    tables = Tables(freq, tl)
    lane_plan = _plan_lanes(n, _estimate_bits(counts[present], freq, tl), tl, lanes)
    states, stream, stream_bits, steps = _encode_stages(sym, present, alphabet, tables, lane_plan)
    parts = [head, bytes([tl]), _varint(len(present)), _varint(len(lane_plan))]
    parts += [_varint(v) for v in lane_plan] + [_varint(v) for pair in steps for v in pair]
    parts += [_varint(len(counts_blob)), counts_blob, states, _varint(stream_bits), stream]
    return b"".join(parts)


def decode(blob, *, max_count: int | None = None) -> np.ndarray:
    """The symbols of an FSE blob: uint8 when the alphabet has at most 256 symbols, else uint16."""
    hdr = _parse(blob, max_count)
    out = np.empty(hdr.n, np.uint8 if hdr.alphabet <= 256 else np.uint16)
    _decode_parsed(hdr, out, None)
    return out


def decode_into(blob, out: np.ndarray, lut: np.ndarray | None = None) -> None:
    """Decodes into out (1-D, contiguous, exactly the blob's count): out[i] = symbols[i], or
    lut[symbols[i]] when a lookup table (one entry per symbol value) is given."""
    if not isinstance(out, np.ndarray) or out.ndim != 1 or not out.flags.c_contiguous:
        raise FSEError("decode_into: out must be a 1-D contiguous array")
    hdr = _parse(blob, out.size)
    if hdr.n != out.size:
        raise FSEError(f"FSE blob: holds {hdr.n} symbols; the output has room for {out.size}")
    _decode_parsed(hdr, out, lut)


def decode_lut(blob, lut: np.ndarray, *, max_count: int | None = None) -> np.ndarray:
    """lut[symbols] for the symbols of the blob, with the lookup fused into the decoder's last gather."""
    lut = np.asarray(lut)
    hdr = _parse(blob, max_count)
    out = np.empty(hdr.n, lut.dtype)
    _decode_parsed(hdr, out, lut)
    return out


def info(blob) -> dict:
    """What a blob's header says (checked, nothing decoded): kind, count, alphabet and, for tANS blobs,
    table_log, distinct symbols, lanes per stage, later stages' (steps, partial) and stream bits."""
    h = _parse(blob, 1 << 62)
    out = {"kind": ("empty", "constant", "tans")[h.kind], "count": h.n, "alphabet": h.alphabet}
    if h.kind == KIND_TANS:
        out.update(table_log=h.table_log, distinct=h.present, lanes=list(h.lanes), later_steps=list(h.steps),
                   stream_bits=h.stream_bits)
    return out


def entropy_bits(symbols: np.ndarray) -> float:
    """n * H: the Shannon entropy of the symbols' empirical distribution, in bits, for the whole array."""
    counts = np.bincount(_check_symbols(symbols))
    counts = counts[counts > 0].astype(np.float64)
    n = counts.sum()
    return float(-(counts * np.log2(counts / n)).sum()) if n else 0.0


def coded_size_bits(symbols: np.ndarray, **options) -> float:
    """Size in bits of encode(symbols, **options), headers included."""
    return 8.0 * len(encode(symbols, **options))


# ---- choices ----------------------------------------------------------------------------------------------
def _check_symbols(symbols) -> np.ndarray:
    sym = np.asarray(symbols)
    if sym.ndim != 1:
        raise FSEError(f"FSE codes 1-D arrays; got shape {list(sym.shape)}")
    if sym.dtype.kind not in "ui" and not (sym.size == 0 and sym.dtype.kind == "f"):
        raise FSEError(f"FSE codes unsigned integer symbols, not {sym.dtype.name}")
    if sym.size == 0:
        return sym.astype(np.uint8)
    if sym.dtype.kind == "i" and int(sym.min()) < 0:
        raise FSEError(f"FSE codes unsigned symbols; the array holds {int(sym.min())}")
    if sym.dtype.itemsize > 2 and int(sym.max()) >= MAX_ALPHABET:
        raise FSEError(f"FSE codes symbols below 2**16; the array holds {int(sym.max())}")
    return sym if sym.dtype.itemsize <= 2 and sym.dtype.kind == "u" else sym.astype(np.uint16)


def _table_log(n: int, present: int) -> int:
    """See the module docstring: 64 slots per distinct symbol within 2**12..2**13, at least 2 per symbol,
    not much more than the data can fill, at most 2**17."""
    need = int(bit_length(present - 1))
    return int(min(MAX_TABLE_LOG, max(need + 1, min(max(need + 6, 12), 13, int(bit_length(n)) + 1))))


def _smallest_table(counts: np.ndarray, present: np.ndarray, n: int) -> tuple[int, np.ndarray, bytes]:
    """(table_log, normalized counts, counts header) of the table that codes the data smallest, header
    included, by _estimate_bits: _table_log's size or a smaller one. A small tensor over a wide alphabet
    pays more for the counts header of a large table than the table's finer counts save it."""
    best = None
    top = _table_log(n, len(present))
    for tl in range(top, max(MIN_TABLE_LOG, int(bit_length(len(present) - 1)) + 1) - 1, -1):
        freq = normalize(counts, tl)
        blob = encode_counts(present, freq)
        bits = 8 * len(blob) + _estimate_bits(counts, freq, tl)
        if best is not None and bits >= best[0]:
            break  # sizes fall, then rise, as the table shrinks: stop at the first rise (brute force found 0.1% more)
        best = (bits, tl, freq, blob)
    return best[1], best[2], best[3]


def _estimate_bits(counts: np.ndarray, freq: np.ndarray, table_log: int) -> float:
    """Roughly the coded size, sum of counts * log2(2**table_log / f), with log2 interpolated linearly
    between powers of two from frexp: only IEEE-exact operations, so the lane plan it decides is the
    same on every machine."""
    mant, expo = np.frexp(freq.astype(np.float64))
    return float((counts * (table_log - (expo - 2 + 2 * mant))).sum())


def _plan_lanes(n: int, bits: float, table_log: int, lanes: int | None) -> list[int]:
    """Lanes of each stage: see the constants above; each later stage has 1/4 of the lanes of the one
    before, down to one whose wasted initial states cost at most WASTE of the bits (or 8 lanes)."""
    if lanes is None:
        cap = min(n // MIN_STEPS, int(bits / (PAYLOAD_SHARE * table_log)), MAX_FIRST_LANES)
        first = 1 << max(0, int(bit_length(max(cap, 1))) - 1)
    else:
        first = int(lanes)
        if not 1 <= first <= MAX_LANES:
            raise FSEError(f"lanes must be 1..{MAX_LANES}, not {lanes}")
    plan = [first]
    while (plan[-1] * table_log > WASTE * bits and plan[-1] // STAGE_RATIO >= MIN_LAST_LANES
           and len(plan) < MAX_STAGES):
        plan.append(plan[-1] // STAGE_RATIO)
    return plan


# ---- header -----------------------------------------------------------------------------------------------
def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


class _Reader:
    def __init__(self, data: memoryview):
        self.data, self.pos = data, 0

    def need(self, k: int, what: str) -> memoryview:
        if k < 0 or self.pos + k > len(self.data):
            raise FSEError(f"FSE blob truncated: {what} needs {k} bytes at offset {self.pos}, "
                           f"{len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + k]
        self.pos += k
        return out

    def byte(self, what: str) -> int:
        return self.need(1, what)[0]

    def varint(self, what: str, limit: int) -> int:
        v = shift = 0
        while True:
            b = self.byte(what)
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 63:
                raise FSEError(f"FSE blob: {what} is not a valid varint")
        if v > limit:
            raise FSEError(f"FSE blob: {what} is {v}, more than {limit}")
        return v


class _Header:
    """A parsed, checked blob header: everything the lane decoder needs."""


def _as_bytes(blob) -> memoryview:
    if isinstance(blob, np.ndarray):
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise FSEError("FSE blob arrays must be 1-D uint8")
        blob = np.ascontiguousarray(blob)
    try:
        view = memoryview(blob).cast("B")
    except (TypeError, ValueError):
        raise FSEError(f"FSE blob must be bytes, a memoryview or a uint8 array, not {type(blob).__name__}") from None
    return view


def _parse(blob, max_count: int | None) -> _Header:
    data = _as_bytes(blob)
    rd = _Reader(data)
    limit = DEFAULT_MAX_COUNT if max_count is None else int(max_count)
    h = _Header()
    if rd.byte("tag") != TAG:
        raise FSEError("not an FSE blob (first byte is not 0xF5)")
    h.kind = rd.byte("kind")
    if h.kind not in (KIND_EMPTY, KIND_CONSTANT, KIND_TANS):
        raise FSEError(f"FSE blob: unknown kind {h.kind}")
    h.n = rd.varint("symbol count", 1 << 62)
    if h.n > limit:
        raise FSEError(f"FSE blob claims {h.n} symbols, more than the {limit} allowed")
    h.alphabet = rd.varint("alphabet", MAX_ALPHABET)
    if h.kind == KIND_EMPTY:
        if h.n or h.alphabet:
            raise FSEError("FSE blob: an empty blob must have count 0 and alphabet 0")
    elif h.alphabet == 0 or h.n == 0:
        raise FSEError(f"FSE blob: {h.n} symbols over an alphabet of {h.alphabet}")
    if h.kind != KIND_TANS:
        if rd.pos != len(data):
            raise FSEError(f"FSE blob: {len(data) - rd.pos} bytes after the end")
        return h
    tl = h.table_log = rd.byte("table_log")
    if not MIN_TABLE_LOG <= tl <= MAX_TABLE_LOG:
        raise FSEError(f"FSE blob: table_log {tl} outside {MIN_TABLE_LOG}..{MAX_TABLE_LOG}")
    h.present = rd.varint("distinct symbols", min(h.alphabet, 1 << tl))
    if h.present < 2:
        raise FSEError(f"FSE blob: {h.present} distinct symbols in a tANS blob (needs 2 or more)")
    k = rd.varint("stage count", MAX_STAGES)
    if k < 1:
        raise FSEError("FSE blob: no stages")
    h.lanes = [rd.varint("lanes", MAX_LANES) for _ in range(k)]
    h.steps = [(rd.varint("steps", 1 << 62), rd.varint("partial step", MAX_LANES)) for _ in range(k - 1)]
    if h.lanes[0] < 1 or any(not 1 <= b <= a for a, b in zip(h.lanes, h.lanes[1:])):
        raise FSEError(f"FSE blob: lanes {h.lanes} must be positive and not increasing")
    if any(r >= ln for (_, r), ln in zip(h.steps, h.lanes[1:])):
        raise FSEError(f"FSE blob: a partial step of a later stage is not smaller than its lanes {h.lanes}")
    tail = sum(t * ln + r for (t, r), ln in zip(h.steps, h.lanes[1:]))
    if tail > h.n:
        raise FSEError(f"FSE blob: the later stages claim {tail} symbols of {h.n}")
    h.n1 = h.n - tail
    counts_len = rd.varint("counts header size", len(data))
    h.present_syms, h.freq = decode_counts(rd.need(counts_len, "counts header"), h.present, h.alphabet, tl,
                                           "FSE blob")
    h.states = rd.need((h.lanes[0] * tl + 7) // 8, "start states")
    h.stream_bits = rd.varint("stream bits", 8 * len(data))
    h.stream = rd.need((h.stream_bits + 7) // 8, "stream")
    if rd.pos != len(data):
        raise FSEError(f"FSE blob: {len(data) - rd.pos} bytes after the end")
    for what, field, bits in (("start states", h.states, h.lanes[0] * tl), ("stream", h.stream, h.stream_bits)):
        if bits % 8 and field[-1] >> (bits % 8):
            raise FSEError(f"FSE blob: the unused bits after the {what} are not zero")
    # Every lane reads >= 1 bit per 2**tl + 1 symbols (see the module docstring); stage k reads at most
    # its payload, L_{k-1} * tl bits.
    bound = (h.stream_bits + h.lanes[0]) * ((1 << tl) + 1)
    for a, b, (t, _) in zip(h.lanes, h.lanes[1:], h.steps):
        if t > (a * tl + b) * ((1 << tl) + 1):
            raise FSEError(f"FSE blob: a stage of {b} lanes claims {t} steps, more than its bits allow")
    if h.n1 > bound:
        raise FSEError(f"FSE blob claims {h.n1} symbols in {h.stream_bits} bits, more than tANS can code")
    return h


def _decode_parsed(h: _Header, out: np.ndarray, lut: np.ndarray | None) -> None:
    if h.n == 0:
        return
    if lut is not None:
        lut = np.asarray(lut)
        if lut.ndim != 1 or len(lut) < h.alphabet:
            raise FSEError(f"lookup table has {lut.size} entries; the alphabet has {h.alphabet} symbols")
    elif out.dtype.kind in "ui" and h.alphabet - 1 > np.iinfo(out.dtype).max:
        raise FSEError(f"symbols up to {h.alphabet - 1} do not fit the output's {out.dtype.name}")
    if h.kind == KIND_CONSTANT:
        out[:] = h.alphabet - 1 if lut is None else lut[h.alphabet - 1]
        return
    tables = Tables(h.freq, h.table_log)
    state_values = h.present_syms[tables.symbol]      # symbol value of each decoder state
    per_state = state_values if lut is None else lut[state_values]
    _decode_stages(h, tables, per_state.astype(out.dtype, copy=False), out)


# ---- lanes: encoder ---------------------------------------------------------------------------------------
def _encode_stages(sym, present, alphabet, tables: Tables, plan: list[int]):
    """Codes the later stages first (they hold the tensor's tail), each inside the initial states of the
    stage before, then stage 1. Returns (stage 1 start states, stream bytes, stream bits, [(T_k, r_k)]
    for k = 2..K). A later stage takes full steps backwards from the end while they fit its payload,
    then one partial step of its last r_k lanes that still fit (decoded first), so little is left over."""
    size, tl = tables.size, tables.table_log
    dnb = np.zeros(alphabet, np.int64)
    dnb[present] = tables.delta_nb
    dfs = np.zeros(alphabet, np.int64)
    dfs[present] = tables.delta_find
    st = tables.state_table
    end = len(sym)
    payload = np.zeros(plan[-1], np.int64)          # the last stage starts from state 0 of every lane
    steps = []
    for k in range(len(plan) - 1, 0, -1):
        lanes, budget = plan[k], (plan[k - 1] - plan[k]) * tl
        x = size + payload
        rows = []
        while end >= lanes:
            s = sym[end - lanes:end]
            nb = (x + dnb[s]) >> 32
            b = int(nb.sum())
            if b > budget:
                break
            rows.append((x, nb))
            x = st[(x >> nb) + dfs[s]]
            budget, end = budget - b, end - lanes
        partial = min(lanes - 1, end)
        if partial:
            s = sym[end - partial:end]
            tail = x[lanes - partial:]
            nb = (tail + dnb[s]) >> 32
            fit = int(np.searchsorted(np.cumsum(nb[::-1]), budget, side="right"))
            tail, s, nb = tail[partial - fit:], s[partial - fit:], nb[partial - fit:]
            if fit:
                rows.append((tail, nb))
                x = x.copy()
                x[lanes - fit:] = st[(tail >> nb) + dfs[s]]
            partial, end = fit, end - fit
        steps.append((len(rows) - (partial > 0), partial))
        vals = np.concatenate([x - size] + [v for v, _ in rows[::-1]])
        nbits = np.concatenate([np.full(lanes, tl)] + [b for _, b in rows[::-1]])
        data, _ = pack_codes(vals, nbits)
        payload = read_fields(data + bytes(tl * plan[k - 1] // 8 + 1), plan[k - 1], tl)
    x = size + payload
    stream, bits = _encode_main(sym[:end], x, dnb, dfs, st, plan[0])
    states, _ = pack_codes(x - size, np.full(plan[0], tl))
    return states, stream, bits, steps[::-1]


def _encode_main(sym, x, dnb, dfs, st, lanes):
    """Stage 1, backwards in chunks of steps; x (initial states) is updated in place to the final ones.

    With lanes a multiple of 4 the lanes are kept in the order 0, 4, 8, ..., 2, 6, ..., 1, 5, ...,
    3, 7, ...: then the codes of neighbouring lanes, which pack_codes joins into one code in pairs and
    then in fours, sit in contiguous blocks of the rows instead of every other element."""
    n1 = len(sym)
    rows, partial = divmod(n1, lanes)
    pieces = []
    if partial:
        s = sym[rows * lanes:]
        xr = x[:partial]
        nb = (xr + dnb[s]) >> 32
        pieces.append(pack_codes(xr, nb))
        x[:partial] = st[(xr >> nb) + dfs[s]]
    quads = lanes % 4 == 0 and len(st) <= 1 << 15   # four codes of table_log bits fit 60
    groups = 4 if quads else 1
    order = np.arange(lanes).reshape(-1, groups)[:, [0, 2, 1, 3][:groups]].T.ravel()
    xp = x[order]
    per_chunk = max(1, CHUNK_SYMBOLS // lanes)
    tmp = np.empty(lanes, np.int64)
    for t1 in range(rows, 0, -per_chunk):
        t0 = max(0, t1 - per_chunk)
        s = np.empty((t1 - t0, lanes), np.intp)       # take() converts small ints slowly itself
        src = sym[t0 * lanes:t1 * lanes].reshape(t1 - t0, lanes // groups, groups)
        dst = s.reshape(t1 - t0, groups, lanes // groups)
        for k, j in enumerate((0, 2, 1, 3)[:groups]):  # the lane order above, as strided copies
            dst[:, k] = src[:, :, j]
        dn = dnb.take(s, mode="wrap")
        df = dfs.take(s, mode="wrap")
        codes = np.empty(dn.shape, np.int64)
        nbs = np.empty(dn.shape, np.int64)
        for i in range(t1 - t0 - 1, -1, -1):
            nb, code = nbs[i], codes[i]
            np.add(xp, dn[i], out=tmp)
            np.right_shift(tmp, 32, out=nb)
            np.right_shift(xp, nb, out=tmp)
            np.left_shift(tmp, nb, out=code)
            np.subtract(xp, code, out=code)             # the low nb bits of the state: what this step emits
            tmp += df[i]
            st.take(tmp, out=xp, mode="wrap")
        if quads:  # lanes 4i | 4i+1 and 4i+2 | 4i+3, then the two pairs
            c4, n4 = codes.reshape(-1, 4, lanes // 4), nbs.reshape(-1, 4, lanes // 4)
            c2 = c4[:, :2] | (c4[:, 2:] << n4[:, :2])
            n2 = n4[:, :2] + n4[:, 2:]
            codes, nbs = c2[:, 0] | (c2[:, 1] << n2[:, 0]), n2[:, 0] + n2[:, 1]
        pieces.append(pack_codes(codes.ravel(), nbs.ravel(), masked=True))
    x[order] = xp
    return concat_bits(pieces[::-1])


# ---- lanes: decoder ---------------------------------------------------------------------------------------
def _decode_stages(h: _Header, tables: Tables, per_state: np.ndarray, out: np.ndarray) -> None:
    tl = h.table_log
    x0 = read_fields(h.states, h.lanes[0], tl)
    x, pos = _decode_lanes(tables.decode, per_state, x0, h.stream, h.stream_bits, 0, out[:h.n1], tl)
    if pos != h.stream_bits:
        raise FSEError(f"FSE blob: the stream ends at bit {pos}, the header says {h.stream_bits}")
    start = h.n1
    for prev, lanes, (steps, partial) in zip(h.lanes, h.lanes[1:], h.steps):
        cap = prev * tl
        data, _ = pack_codes(x, np.full(prev, tl))
        x, pos = x[:lanes].copy(), lanes * tl           # the first fields of the payload: start states
        if partial:  # the first step moves only the last `partial` lanes
            seg = _Segment(data, cap, partial * tl)
            seg.load(pos)
            out[start:start + partial] = per_state[x[lanes - partial:]]
            pos = _Step(partial)(tables.decode, seg, x[lanes - partial:].copy(), x[lanes - partial:], pos)
            start += partial
        x, pos = _decode_lanes(tables.decode, per_state, x, data, cap, pos, out[start:start + steps * lanes], tl)
        if np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[pos:cap].any():
            raise FSEError(f"FSE blob: stage of {lanes} lanes leaves nonzero padding")
        start += steps * lanes
    if x.any():
        raise FSEError("FSE blob: the last stage does not end in its initial states (corrupt stream)")


def _decode_lanes(dec, per_state, x0, data, total_bits, pos, out, tl):
    """Decodes len(out) symbols with len(x0) lanes (a partial last step when it does not divide) from
    data starting at bit pos; returns (final states, bit position reached)."""
    lanes = len(x0)
    rows, partial = divmod(len(out), lanes)
    per_chunk = max(1, CHUNK_SYMBOLS // lanes)
    rec = np.empty((min(per_chunk, rows) + 1, lanes), np.int64)
    rec[0] = x0
    seg = _Segment(data, total_bits, lanes * tl)
    step = _Step(lanes)
    t = 0
    while t < rows:
        k = min(per_chunk, rows - t)
        for i in range(k):
            if pos > seg.limit:
                seg.load(pos)
            pos = step(dec, seg, rec[i], rec[i + 1], pos)
        per_state.take(rec[:k], out=out[t * lanes:(t + k) * lanes].reshape(k, lanes), mode="wrap")
        rec[0] = rec[k]
        t += k
    x = rec[0].copy()
    if partial:
        if pos > seg.limit:
            seg.load(pos)
        out[rows * lanes:] = per_state[x[:partial]]
        pos = _Step(partial)(dec, seg, x[:partial].copy(), x[:partial], pos)
    if pos > total_bits:
        raise FSEError(f"FSE blob: a stream needs more than its {total_bits} bits (corrupt or truncated)")
    return x, pos


class _Segment:
    """The read windows of part of a stream: stream bytes [base, base + m) as fse_tables.windows_reversed
    lays them out. `limit` is the last bit position from which one whole step (at most `maxread` bits)
    still reads inside the segment; past it the segment is reloaded, past the stream's end it is an error."""

    def __init__(self, data, total_bits: int, maxread: int):
        self.data, self.total, self.maxread = data, total_bits, maxread
        self.limit = -1

    def load(self, pos: int) -> None:
        if pos > self.total:
            raise FSEError(f"FSE blob: a stream needs more than its {self.total} bits (corrupt or truncated)")
        nbytes = (self.total + 7) // 8
        self.base = pos >> 3
        stop = min(nbytes, self.base + max(SEGMENT_BYTES, self.maxread // 2 + 64))
        pad = self.maxread // 8 + 16
        self.windows, self.c = windows_reversed(self.data[self.base:stop], pad)
        self.limit = self.total if stop == nbytes else 8 * stop - self.maxread


class _Step:
    """One step of all lanes: x_out = next state of x_in, reading each lane's bits (see the docstring of
    fse_tables.windows_reversed for the read windows). Scratch arrays are allocated once; gathers use
    mode="wrap" because it writes straight into out= (mode="raise" buffers it) and every index is in
    range by construction: states come from the table, read positions are kept inside the segment."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.nbx = np.zeros(lanes + 1, np.int64)      # [C - start bit, -nb of lane 0, -nb of lane 1, ...]
        self.cs = np.zeros(lanes + 1, np.int64)
        self.neg_nb, self.ends = self.nbx[1:], self.cs[1:]
        self.ends_u = self.ends.view(np.uint64)
        self.entry = np.empty(lanes, np.int64)
        self.idx = np.empty(lanes, np.int64)
        self.win = np.empty(lanes, np.uint64)
        self.win_i = self.win.view(np.int64)
        self.shift = np.empty(lanes, np.uint64)
        self.shift_i = self.shift.view(np.int64)

    def __call__(self, dec, seg: _Segment, x_in, x_out, pos: int) -> int:
        entry, win, shift = self.entry, self.win, self.shift
        dec.take(x_in, out=entry, mode="wrap")
        np.right_shift(entry, 48, out=self.neg_nb)
        self.nbx[0] = seg.c - (pos - 8 * seg.base)
        self.nbx.cumsum(out=self.cs)                    # C - (end bit of each lane's code)
        np.right_shift(self.ends, 3, out=self.idx)
        seg.windows.take(self.idx, out=win, mode="wrap")
        np.bitwise_and(self.ends_u, 7, out=shift)
        np.left_shift(win, shift, out=win)              # the code's last bit to bit 63
        np.add(self.neg_nb, 64, out=self.shift_i)
        np.right_shift(win, shift, out=win)             # the code alone (64 - nb: 0 bits when nb = 0)
        np.bitwise_and(entry, BASE_MASK, out=entry)
        np.add(entry, self.win_i, out=x_out)
        return 8 * seg.base + seg.c - int(self.cs[self.lanes])

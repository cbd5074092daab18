"""Writing a Graph as a .spore file.

The graph becomes a JSON document (graph_json) while its arrays are encoded through the codec table and
laid out one after another in the data section: each tensor the reader views in place (raw) at a multiple
of 64 bytes, each it decodes (quantized codes, float16) right after the one before. The file is then
written in one pass, atomically (temp file in the same folder, fsync, rename: tools.atomic_write): the
header's place first, zeros; the data section, its CRC-32 computed as it streams; the graph and
provenance sections; the section table; and last the header, over the zeros. Raw tensors are written
straight from the arrays' memory. The same graph and provenance always give the same bytes.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import numpy as np

from ..ir import Graph
from ..tools import atomic_write
from .codecs import CODECS, codec_for, in_place
from .codecs_quant import DCT, SCALES_F16, SCALES_GRID, Encoded
from .dtypes import dtype_name
from .graph_json import FormatProblem, encode_graph
from .layout import (ALIGN, HEADER_SIZE, PACKED_OFFSETS, REQUIRED, Section, SporeFormatError, crc32, pack_header,
                     pack_table, pad_to)


def _producer() -> str:
    from .. import __version__

    return f"sporeling {__version__}"


class _Tensors:
    """The tensor table being built: entries, encoded payloads, and the next free data offset."""

    def __init__(self, encoded: dict[int, Encoded] | None = None):
        self.encoded = encoded or {}  # id(array) -> the encoding the caller already made for it
        self.entries: list[dict] = []
        self.payloads: list[tuple[int, memoryview]] = []  # (zero bytes before it, payload)
        self.index: dict[int, int] = {}
        self.keep: list[np.ndarray] = []  # holds every array seen, so no id() is reused while we index by it
        self.size = 0
        self.packed = False  # whether some payload starts off a multiple of ALIGN (the format feature PACKED_OFFSETS)

    def add(self, array: np.ndarray, name: str) -> int:
        if id(array) in self.index:
            return self.index[id(array)]
        dname = dtype_name(array.dtype)
        if dname is None:
            raise FormatProblem(f"tensor '{name}' has dtype {array.dtype}, which .spore cannot hold")
        given = self.encoded.get(id(array))
        if given is not None:
            codec = CODECS.get(given.codec)
            if codec is None:
                raise FormatProblem(f"tensor '{name}': no codec {given.codec!r}")
            payload, params = given.payload, dict(given.params)
        else:
            codec = codec_for(array)
            try:
                payload, params = codec.encode(array)
            except ValueError as e:
                raise FormatProblem(f"tensor '{name}': {e}") from None
        data = memoryview(payload).cast("B")
        # A payload the reader views in place starts on a multiple of ALIGN; a decoded one (quantized codes,
        # float16) follows the one before it directly, which saves up to 63 bytes a tensor in a small model.
        offset = self.size + (pad_to(self.size) if in_place(codec) else 0)
        self.packed |= offset % ALIGN != 0
        entry: dict[str, Any] = {"name": name, "dtype": dname, "shape": [int(d) for d in array.shape],
                                 "codec": codec.name, "offset": offset, "length": data.nbytes}
        if params:
            entry["params"] = params
        self.keep.append(array)
        self.index[id(array)] = len(self.entries)
        self.entries.append(entry)
        self.payloads.append((offset - self.size, data))
        self.size = offset + data.nbytes
        return self.index[id(array)]

    @property
    def section_size(self) -> int:
        """The data section's length: the last payload's end, rounded up to ALIGN for the next section."""
        return self.size + pad_to(self.size)


def _json_bytes(doc: Any, what: str) -> bytes:
    try:
        # ASCII-only output keeps any str the IR holds (lone surrogates too) exact through \u escapes.
        return json.dumps(doc, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
    except (TypeError, ValueError, RecursionError) as e:
        raise FormatProblem(f"{what} cannot be stored as JSON ({type(e).__name__}: {e})") from None


def save_spore(graph: Graph, path: str | os.PathLike, *, provenance: dict | None = None,
               encoded: dict[str, Encoded] | None = None) -> int:
    """Writes graph to path as a .spore file; returns the number of bytes written. provenance (the source
    file's name and SHA-256, the passes applied, anything JSON) is stored with the producer filled in;
    graph.metadata holds the user's key/values. `encoded` maps names of initializers (the graph's own or
    its bodies', a name used once) to
    encodings already made (quantized codes: sporeling.quant); the others are stored raw. Raises
    SporeFormatError if the graph cannot be stored."""
    path = os.fspath(path)
    try:
        arrays = graph.named_initializers() if encoded else {}
        unknown = sorted(set(encoded or {}) - set(arrays))
        if unknown:
            raise FormatProblem(f"encodings given for {unknown[:3]}, which are not initializers of the graph "
                                f"(or name more than one)")
        tensors = _Tensors({id(arrays[k]): v for k, v in (encoded or {}).items()})
        doc = {"graph": encode_graph(graph, tensors.add), "tensors": tensors.entries}
        requires = []
        forms = {(e.params or {}).get("scales") for e in (encoded or {}).values()}
        # a reader that ignored the compact scales would misread the weights
        requires += [feature for form, feature in (("f16", SCALES_F16), ("grid", SCALES_GRID)) if form in forms]
        if any("dct" in (e.params or {}) for e in (encoded or {}).values()):
            requires.append(DCT)  # a reader that ignored it would give the coefficients for the weights
        if tensors.packed:
            requires.append(PACKED_OFFSETS)  # a 1.1 reader would refuse the offsets without saying why
        if requires:
            doc["requires"] = requires
        if provenance is not None and not isinstance(provenance, dict):
            raise FormatProblem(f"provenance must be a dict, not {type(provenance).__name__}")
        meta = {**(provenance or {}), "producer": _producer()}
        # The graph goes in zlib'd (GRAPHZ): its JSON repeats names and keys, and shrinks 5-10x, which
        # matters once the weights are compressed (a small model's graph can outweigh its codes).
        graph_bytes = zlib.compress(_json_bytes(doc, "the graph"), 9)
        meta_bytes = zlib.compress(_json_bytes(meta, "the provenance"), 9)  # METAZ: its pass log shrinks 2.5x
    except FormatProblem as e:
        raise SporeFormatError(f"{path}: cannot save: {e}") from None
    except RecursionError:
        raise SporeFormatError(f"{path}: cannot save: the graph nests too deeply") from None

    data_at = HEADER_SIZE
    data_size = tensors.section_size
    graph_at = data_at + data_size
    meta_at = graph_at + len(graph_bytes) + pad_to(len(graph_bytes))
    table_at = meta_at + len(meta_bytes) + pad_to(len(meta_bytes))
    sections = [Section("DATA", REQUIRED, 0, data_at, data_size),
                Section("GRAPHZ", REQUIRED, crc32(graph_bytes), graph_at, len(graph_bytes)),
                Section("METAZ", 0, crc32(meta_bytes), meta_at, len(meta_bytes))]
    file_size = table_at + len(sections) * 32

    def write(f) -> None:
        if hasattr(os, "fchmod"):  # the temporary file is 0600; a model file gets the mode open() would give
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        f.write(b"\0" * HEADER_SIZE)
        crc = 0
        for gap, data in tensors.payloads:
            pad = b"\0" * gap
            f.write(pad)
            f.write(data)
            crc = zlib.crc32(data, zlib.crc32(pad, crc))
        tail = b"\0" * (data_size - tensors.size)
        f.write(tail)
        crc = zlib.crc32(tail, crc)
        sections[0].crc = crc & 0xFFFFFFFF
        for blob in (graph_bytes, meta_bytes):
            f.write(blob + b"\0" * pad_to(len(blob)))
        table = pack_table(sections)
        f.write(table)
        if f.tell() != file_size:  # a bug in the layout arithmetic above, never the user's input
            raise RuntimeError(f"spore writer: wrote {f.tell()} bytes, planned {file_size}")
        f.seek(0)
        f.write(pack_header(file_size, table_at, len(sections), crc32(table)))

    assert data_at % ALIGN == 0 and graph_at % ALIGN == 0
    try:
        atomic_write(path, write)
    except OSError as e:
        raise SporeFormatError(f"{path}: cannot write ({e.strerror or e})") from e
    return file_size


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:  # Linux: read without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask

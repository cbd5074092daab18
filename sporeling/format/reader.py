"""Reading a .spore file: load_spore (the Graph, tensors mapped from the file) and read_info (what is in it).

The file is memory-mapped read-only. The header and section table are checked first (magic, major
version, checksums, every offset and length inside the file, no two sections overlapping), then the
JSON sections (checksum, size cap, strict UTF-8, no NaN literals), then each tensor entry: its codec
known or a fallback given, its dtype from the closed list, offset and length inside the data section,
and its declared shape no larger than its encoded length times the codec's bound, all before anything is
decoded or allocated. Raw tensors are then np.frombuffer views of the mapping: no copy, read-only, and
64-byte aligned in memory as they are in the file. The data section's CRC-32 is checked unless
verify=False (it reads every page once: about 20 ms for 45 MB; docs/format.md has the figures).

Every problem is a SporeFormatError whose message starts with the path. A guard around it all turns
anything unforeseen into one as well ("unexpected ..."), so the loader never leaks a raw IndexError.
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import stat
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir import Graph
from .codecs import CODECS, Codec, element_count, in_place
from .graph_decode import decode_dtype, decode_graph, need_bool, need_int, need_list, need_obj, need_str
from .graph_json import FormatProblem, show_value
from .layout import (ALIGN, FORMAT_VERSION, HEADER_SIZE, MAX_JSON_BYTES, PACKED_OFFSETS, Header, Section,
                     SporeFormatError, crc32, unpack_header, unpack_table)

KNOWN_SECTIONS = ("DATA", "GRAPH", "GRAPHZ", "META", "METAZ")
DEFLATED = ("GRAPHZ", "METAZ")  # sections holding their JSON as one zlib stream
# the names a document's "requires" may hold
KNOWN_FEATURES: frozenset[str] = frozenset({"quant-scales-f16", PACKED_OFFSETS, "quant-scales-grid",
                                            "quant-dct"})
MAX_NDIM = 64
MAX_DIM = 1 << 62
MAX_FALLBACKS = 4


@dataclass
class _Entry:
    where: str
    codec: Codec
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    length: int
    params: dict


class _File:
    """The mapped file and its checked header, section table and graph document."""

    def __init__(self, path: str):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise FormatProblem("no such file") from None
        except OSError as e:
            raise FormatProblem(f"cannot read ({e.strerror or e})") from None
        if not stat.S_ISREG(st.st_mode):
            raise FormatProblem("not a regular file")
        if st.st_size < HEADER_SIZE:
            raise FormatProblem(f"{st.st_size} bytes is too short for a .spore file")
        try:
            with open(path, "rb") as f:
                self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise FormatProblem(f"cannot read ({e.strerror or e})") from None
        self.view = memoryview(self.mm)
        self.size = len(self.mm)
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        try:
            with self.view[: min(self.size, 4096)] as head:
                self.head: Header = unpack_header(head, self.size)
            self.sections: dict[str, Section] = unpack_table(self.view, self.head)
        except ValueError as e:
            raise FormatProblem(str(e)) from None
        for tag, s in self.sections.items():
            if tag not in KNOWN_SECTIONS and s.required:
                raise FormatProblem(f"needs section {tag}, which this sporeling does not know: upgrade sporeling")
        graph_tag = self._one_of("GRAPH")
        if graph_tag is None:
            raise FormatProblem("has no GRAPH section")
        self.doc = need_obj(self.json(graph_tag), "graph section")
        meta_tag = self._one_of("META")
        self.meta = need_obj(self.json(meta_tag), f"{meta_tag} section") if meta_tag else {}
        for feature in need_list(self.doc.get("requires", []), "graph section: requires"):
            if need_str(feature, "graph section: requires") not in KNOWN_FEATURES:
                raise FormatProblem(f"needs the format feature {feature!r}, which this sporeling lacks: "
                                    f"upgrade sporeling")
        self.data = self.sections.get("DATA")
        if self.data is not None and self.data.offset % ALIGN:
            raise FormatProblem(f"the DATA section starts at {self.data.offset}, not a multiple of {ALIGN}")
        self.entries = [_entry(e, k, self.data) for k, e in
                        enumerate(need_list(self.doc.get("tensors", []), "graph section: tensors"))]

    def close(self) -> None:
        """Unmaps the file now rather than at garbage collection; a no-op while arrays still view it."""
        try:
            self.view.release()
            self.mm.close()
        except BufferError:
            pass

    def _one_of(self, tag: str) -> str | None:
        """Which of the sections `tag` (plain JSON) and `tag`Z (deflated) the file has; None for neither."""
        found = [t for t in (tag, tag + "Z") if t in self.sections]
        if len(found) > 1:
            raise FormatProblem(f"has both {tag} and {tag}Z sections")
        return found[0] if found else None

    def json(self, tag: str) -> Any:
        s = self.sections[tag]
        if s.length > MAX_JSON_BYTES:
            raise FormatProblem(f"section {tag} is {s.length} bytes, over the limit of {MAX_JSON_BYTES}")
        with self.view[s.offset : s.offset + s.length] as raw:
            if crc32(raw) != s.crc:
                raise FormatProblem(f"section {tag} checksum mismatch (the file is corrupt)")
            text = bytes(raw)
        if tag in DEFLATED:
            text = _inflate(text, tag)
        try:
            return json.loads(str(text, "utf-8"), parse_constant=_no_constants)
        except RecursionError:
            raise FormatProblem(f"section {tag} nests too deeply") from None
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, too many digits in an int
            raise FormatProblem(f"section {tag} is not valid JSON ({str(e)[:100]})") from None

    def verify_data(self) -> None:
        s = self.data
        if s is None:
            return
        with self.view[s.offset : s.offset + s.length] as raw:
            ok = crc32(raw) == s.crc
        if not ok:
            raise FormatProblem("data section checksum mismatch (the file is corrupt; verify=False skips this check)")

    def payload(self, e: _Entry) -> memoryview:
        start = self.data.offset + e.offset
        return self.view[start : start + e.length]

    def decode(self, e: _Entry) -> np.ndarray:
        return _decode(e, self.payload(e))


def _decode(e: _Entry, payload: memoryview) -> np.ndarray:
    try:
        arr = e.codec.decode(payload, e.dtype, e.shape, e.params)
    except (ValueError, TypeError, OverflowError) as err:
        raise FormatProblem(f"{e.where}: {err}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != e.dtype or arr.shape != e.shape:
        raise FormatProblem(f"{e.where}: codec {e.codec.name} did not give a {e.dtype} array of shape {e.shape}")
    return arr


def _inflate(data: bytes, tag: str) -> bytes:
    """A zlib stream, decompressed to at most MAX_JSON_BYTES: a small section cannot become a huge one."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_JSON_BYTES + 1)
    except zlib.error as e:
        raise FormatProblem(f"section {tag} is not a valid zlib stream ({e})") from None
    if len(text) > MAX_JSON_BYTES or inflater.unconsumed_tail:
        raise FormatProblem(f"section {tag} decompresses to more than the limit of {MAX_JSON_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise FormatProblem(f"section {tag} is a truncated zlib stream or has bytes after it")
    return text


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _entry(e: Any, k: int, data: Section | None, depth: int = 0) -> _Entry:
    where = f"tensor {k}"
    e = need_obj(e, where)
    where = f"tensor {k} '{need_str(e.get('name', ''), f'{where}: name')}'"
    codec_name = need_str(e.get("codec"), f"{where}: codec")
    required = need_bool(e.get("required", True), f"{where}: required")
    codec = CODECS.get(codec_name)
    if codec is None:
        if required or e.get("fallback") is None:
            raise FormatProblem(f"{where} is encoded with codec {codec_name!r}, which this sporeling does not know: "
                                f"upgrade sporeling")
        if depth >= MAX_FALLBACKS:
            raise FormatProblem(f"{where}: more than {MAX_FALLBACKS} nested fallbacks")
        return _entry(e["fallback"], k, data, depth + 1)
    if data is None:
        raise FormatProblem(f"{where}: the file has no DATA section")
    dtype = decode_dtype(e.get("dtype"), f"{where}: dtype")
    dims = need_list(e.get("shape"), f"{where}: shape")
    if len(dims) > MAX_NDIM:
        raise FormatProblem(f"{where}: {len(dims)} dimensions is more than {MAX_NDIM}")
    shape = tuple(need_int(d, f"{where}: shape", 0, MAX_DIM) for d in dims)
    offset = need_int(e.get("offset"), f"{where}: offset", 0, data.length)
    length = need_int(e.get("length"), f"{where}: length", 0, data.length - offset)
    if offset % ALIGN and in_place(codec):
        raise FormatProblem(f"{where}: offset {offset} is not a multiple of {ALIGN} (codec {codec.name} is read "
                            f"in place)")
    params = need_obj(e.get("params", {}), f"{where}: params")
    nbytes = element_count(shape) * dtype.itemsize
    if nbytes > codec.max_ratio * length:
        raise FormatProblem(f"{where}: shape {list(shape)} of {dtype.name} takes {nbytes} bytes; {length} bytes "
                            f"of codec {codec.name} can hold at most {int(codec.max_ratio * length)}")
    return _Entry(where, codec, dtype, shape, offset, length, params)


def _guarded(path: str, fn, *args):
    try:
        return fn(*args)
    except SporeFormatError:
        raise
    except FormatProblem as e:
        e.with_traceback(None)  # drops the frames, and with them the file's mapping, as soon as the error goes
        raise SporeFormatError(f"{path}: {e}") from None
    except RecursionError:
        raise SporeFormatError(f"{path}: the graph nests too deeply") from None
    except Exception as e:  # a check we have not thought of: still one clear error, never a raw trace
        raise SporeFormatError(f"{path}: unexpected {type(e).__name__} while reading: {str(e)[:200]}") from e


def load_spore(path: str | os.PathLike, *, verify: bool = True, with_provenance: bool = False, lazy: bool = False):
    """Reads a .spore file. Raw tensors are read-only views of the memory-mapped file (no copy). With verify
    (the default) the data section's checksum is checked too; the header, section table and JSON
    sections are always checked. Returns the Graph, or (Graph, provenance dict) with with_provenance.
    With lazy, float tensors of a decoding codec (the quantized qpack, qfse) are not decoded: each is a
    runtime.lazy.LazyTensor over its bytes in the mapping, decoded when a node needs it (see that module)."""
    path = os.fspath(path)
    graph, meta = _guarded(path, _load, path, verify, lazy)
    return (graph, meta) if with_provenance else graph


def _load(path: str, verify: bool, lazy: bool = False) -> tuple[Graph, dict]:
    f = _File(path)
    try:
        if verify:
            f.verify_data()
        arrays = [_lazy(path, f, e) if lazy and e.codec.name != "raw" and e.dtype.kind == "f" else f.decode(e)
                  for e in f.entries]
    except BaseException:
        f.close()
        raise

    def tensor(index: Any, where: str) -> np.ndarray:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(arrays):
            raise FormatProblem(f"{where}: tensor index {show_value(index)} is not in the tensor table "
                                f"(of {len(arrays)})")
        return arrays[index]

    return decode_graph(f.doc.get("graph"), tensor), f.meta if isinstance(f.meta, dict) else {}


def _lazy(path: str, f: _File, e: _Entry):
    from ..runtime.lazy import LazyTensor

    # holds the payload (a view of the mapping) and the entry, not the parsed file; decoded at run, its
    # errors are raised as load's are: a SporeFormatError naming the file and the tensor
    return LazyTensor(e.dtype, e.shape, functools.partial(_guarded, path, _decode, e, f.payload(e)), e.length)


def read_info(path: str | os.PathLike) -> dict:
    """What a .spore file holds, without reading its tensor data: format version, the format features it
    requires, sections, provenance, graph name and node count, tensor count and bytes by codec."""
    path = os.fspath(path)
    return _guarded(path, _info, path)


def _info(path: str) -> dict:
    f = _File(path)
    f.close()  # everything needed is parsed
    by_codec: dict[str, dict[str, int]] = {}
    for e in f.entries:
        c = by_codec.setdefault(e.codec.name, {"count": 0, "bytes": 0, "decoded_bytes": 0})
        c["count"] += 1
        c["bytes"] += e.length
        c["decoded_bytes"] += element_count(e.shape) * e.dtype.itemsize
    g = f.doc.get("graph")
    nodes = g.get("nodes") if isinstance(g, dict) else None
    return {
        "path": path,
        "format_version": f"{f.head.major}.{f.head.minor}",
        "reader_version": f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}",
        "requires": list(f.doc.get("requires", [])),
        "file_size": f.size,
        "sections": {s.tag: {"offset": s.offset, "length": s.length, "required": s.required}
                     for s in f.sections.values()},
        "provenance": f.meta,
        "graph_name": g.get("name") if isinstance(g, dict) else None,
        "nodes": len(nodes) if isinstance(nodes, list) else None,
        "tensors": {"count": len(f.entries), "bytes": sum(c["bytes"] for c in by_codec.values()),
                    "by_codec": by_codec},
    }

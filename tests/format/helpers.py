"""Shared by the .spore tests: exact graph equality, a graph exercising every IR feature, and a way to take
a file apart and put it back together (with fresh checksums) so that tests can craft hostile files."""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np

from sporeling.format import layout
from sporeling.ir import Graph, Node, ValueInfo


# ---- equality ------------------------------------------------------------------------------------
def _float_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def assert_arrays_identical(a, b, where: str) -> None:
    assert isinstance(b, np.ndarray), f"{where}: {type(b).__name__}, not an array"
    if a.dtype.byteorder == ">":  # stored little-endian: a big-endian array comes back in native order
        a = a.astype(a.dtype.newbyteorder("<"))
    assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
    if a.dtype == object:
        assert [type(x) for x in a.reshape(-1)] == [type(x) for x in b.reshape(-1)], f"{where}: element types"
        assert a.reshape(-1).tolist() == b.reshape(-1).tolist(), f"{where}: values"
    else:
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), f"{where}: bytes differ"


def assert_values_identical(a, b, where: str) -> None:
    """Attribute values: same type (int is not float is not bool), floats bit for bit, arrays byte for byte."""
    if isinstance(a, np.ndarray):
        assert_arrays_identical(a, b, where)
        return
    if isinstance(a, Graph):
        assert isinstance(b, Graph), f"{where}: {type(b).__name__}, not a Graph"
        assert_graphs_identical(a, b, where)
        return
    assert type(a) is type(b), f"{where}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, float):
        assert _float_bits(a) == _float_bits(b), f"{where}: {a!r} became {b!r}"
    elif isinstance(a, list):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_values_identical(x, y, f"{where}[{i}]")
    elif type(a).__name__ == "TypeProto":
        assert a.SerializeToString() == b.SerializeToString(), f"{where}: TypeProto differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _vi_key(v: ValueInfo):
    shape = None if v.shape is None else tuple((type(d).__name__, d) for d in v.shape)
    return (v.name, None if v.dtype is None else np.dtype(v.dtype).str, shape)


def assert_graphs_identical(a: Graph, b: Graph, where: str = "graph") -> None:
    assert a.name == b.name, f"{where}: name {a.name!r} != {b.name!r}"
    assert a.opsets == b.opsets and list(a.opsets) == list(b.opsets), f"{where}: opsets"
    assert a.metadata == b.metadata and list(a.metadata) == list(b.metadata), f"{where}: metadata"
    for part in ("inputs", "outputs"):
        assert [_vi_key(v) for v in getattr(a, part)] == [_vi_key(v) for v in getattr(b, part)], f"{where}: {part}"
    assert list(a.value_info) == list(b.value_info), f"{where}: value_info keys"
    assert [_vi_key(v) for v in a.value_info.values()] == [_vi_key(v) for v in b.value_info.values()]
    assert list(a.initializers) == list(b.initializers), f"{where}: initializer names"
    for name, arr in a.initializers.items():
        assert_arrays_identical(arr, b.initializers[name], f"{where} initializer {name!r}")
    assert len(a.nodes) == len(b.nodes), f"{where}: {len(a.nodes)} nodes != {len(b.nodes)}"
    for k, (n, m) in enumerate(zip(a.nodes, b.nodes)):
        at = f"{where} node {k} {n.name!r}"
        assert (n.op_type, n.domain, n.name, n.inputs, n.outputs) == (m.op_type, m.domain, m.name, m.inputs,
                                                                      m.outputs), at
        assert list(n.attrs) == list(m.attrs), f"{at}: attribute names"
        for key, value in n.attrs.items():
            assert_values_identical(value, m.attrs[key], f"{at} attr {key!r}")


# ---- a graph with everything ---------------------------------------------------------------------
def every_feature_graph() -> Graph:
    """Not runnable: a graph that uses every attribute type, dtype and nesting the IR can hold."""
    import ml_dtypes

    rng = np.random.default_rng(7)
    inits = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "f64": np.array([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324]),
        "nan_payload": np.array([0x7FF8000000000123, 0xFFF0000000000001], np.uint64).view(np.float64),
        "bool": np.array([[True, False], [False, True]]),
        "i8": np.array([-128, 127], np.int8), "i16": np.array([1, -2], np.int16),
        "i32": np.arange(6, dtype=np.int32).reshape(2, 3), "i64": np.array([-(1 << 63), (1 << 63) - 1], np.int64),
        "u8": np.arange(256, dtype=np.uint8), "u16": np.array([65535], np.uint16),
        "u32": np.array([1 << 31], np.uint32), "u64": np.array([(1 << 64) - 1], np.uint64),
        "c64": np.array([1 + 2j, -3.5j], np.complex64), "c128": np.array([[1e300 + 1j]], np.complex128),
        "bf16": np.array([1.5, -2.0, 3.25], ml_dtypes.bfloat16),
        "f8": np.array([0.5, -1.0], ml_dtypes.float8_e4m3fn),
        "scalar": np.array(3.5, np.float32), "empty": np.zeros((0, 4), np.float32),
        "empty_strings": np.zeros((2, 0), object),
        "strings": np.array([["a", ""], ["ünïcødé ✓", "x" * 300]], object),
        "bytes": np.array([b"\x00\xff", b""], object),
        "surrogate": np.array(["\ud800 lone"], object),
        "noncontiguous": np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2],
        "bigendian": np.array([1.0, 2.0], ">f4"),
    }
    inits["alias"] = inits["f32"]  # the same array object twice
    inner = Graph(nodes=[Node("Add", ["x", "w"], ["t"], {"k": 1})], inputs=[ValueInfo("x", np.dtype(np.float32), ())],
                  outputs=[ValueInfo("t")], initializers={"w": np.ones(2, np.float32)}, name="inner", opsets={})
    then_g = Graph(nodes=[Node("If", ["c"], ["r"], {"then_branch": inner, "else_branch": inner}, "nested_if")],
                   outputs=[ValueInfo("r", np.dtype(np.float32), None)],
                   initializers={"w": np.full(2, 3.0, np.float32)}, name="then", metadata={"sub": "meta"})
    tensor_attr = np.array([1, 2, 3], np.int64)
    attrs = {
        "i": 1, "f": 1.0, "neg0": -0.0, "inf": math.inf, "ninf": -math.inf, "nan": math.nan,
        "nan_bits": struct.unpack("<d", struct.pack("<Q", 0xFFF8DEADBEEF0001))[0], "tiny": 5e-324,
        "big": (1 << 63) - 1, "small": -(1 << 63), "s": "text with \"quotes\" and \\ and ünïcødé",
        "ints": [1, -2, 3], "floats": [1.0, 2.5, math.nan], "strs": ["a", "", "b"], "empty": [],
        "t": tensor_attr, "t0": np.array(2.0, np.float32), "ts": [tensor_attr, np.zeros(2, np.float16)],
        "g": then_g, "gs": [inner, then_g], "b": True, "none": None, "mixed": [1, 2.0, "x", [True, []]],
    }
    return Graph(
        nodes=[Node("Custom", ["x", "", "f32"], ["y", ""], attrs, "everything", "ai.test"),
               Node("Relu", ["y"], ["z"], name=""),
               Node("If", ["c"], ["r"], {"then_branch": then_g, "else_branch": inner}, "outer_if")],
        inputs=[ValueInfo("x", np.dtype(np.float32), (1, "N", None, -1)), ValueInfo("c", np.dtype(bool), ()),
                ValueInfo("seq", None, None)],
        outputs=[ValueInfo("z", np.dtype(np.float32), ("N",)), ValueInfo("r", None, ())],
        initializers=inits,
        value_info={"y": ValueInfo("y", np.dtype(np.float32), (1, 2)), "odd_key": ValueInfo("other", None, None)},
        opsets={"": 17, "ai.test": 3},
        metadata={"author": "me", "multi\nline": "välue", "character": "一\n二\n三"},
        name="everything ✓",
    )


# ---- taking files apart --------------------------------------------------------------------------
def explode(blob: bytes) -> tuple[dict, dict, bytes, list]:
    """(graph document, META (or METAZ) document, data section bytes, sections) of a valid file's bytes."""
    head = layout.unpack_header(blob, len(blob))
    sections = layout.unpack_table(blob, head)
    part = {t: blob[s.offset : s.offset + s.length] for t, s in sections.items()}
    graph = part["GRAPH"] if "GRAPH" in part else zlib.decompress(part["GRAPHZ"])
    meta = zlib.decompress(part["METAZ"]) if "METAZ" in part else part.get("META", b"{}")
    return json.loads(graph), json.loads(meta), part.get("DATA", b""), sections


def build(doc, meta=None, data: bytes = b"", *, graph_bytes: bytes | None = None, version=layout.FORMAT_VERSION,
          extra: list[tuple[str, int, bytes]] = (), header_size: int = 64, entry_size: int = 32,
          count: int | None = None, plain_graph: bool = False, graphz: bytes | None = None) -> bytes:
    """A file from parts, every checksum right, so crafted files get past the checksums to the checks behind
    them. extra: more (tag, flags, bytes) sections; header_size and entry_size above 64 and 32 stand for a
    newer minor version's longer header and table entries (the extra bytes are 0xEE); count overrides the
    section count the header gives. The graph goes in zlib'd as GRAPHZ, as the writer does, or as plain
    GRAPH JSON (format 1.0's way, still read) with plain_graph; graphz gives the GRAPHZ bytes as they are."""
    gb = graph_bytes if graph_bytes is not None else _compact(doc)
    graph_part = ("GRAPH", layout.REQUIRED, gb) if plain_graph else \
        ("GRAPHZ", layout.REQUIRED, zlib.compress(gb) if graphz is None else graphz)
    parts = [("DATA", layout.REQUIRED, data), graph_part]
    if meta is not None:
        parts.append(("META", 0, _compact(meta)))
    parts += list(extra)
    body, table = b"", b""
    for tag, flags, blob in parts:
        at = header_size + len(body)
        entry = layout.ENTRY.pack(tag.encode().ljust(8, b"\0"), flags, layout.crc32(blob), at, len(blob))
        table += entry + b"\xee" * (entry_size - 32)
        body += blob + b"\0" * layout.pad_to(len(blob))
    table_at = header_size + len(body)
    size = table_at + len(table)
    head = layout.HEADER.pack(layout.MAGIC, version[0], version[1], header_size, size, table_at,
                              len(parts) if count is None else count, entry_size, layout.crc32(table), b"\0" * 16, 0)
    head = head[:60] + b"\xee" * (header_size - 64)
    head += struct.pack("<I", layout.crc32(head))
    return head + body + table


def _compact(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()

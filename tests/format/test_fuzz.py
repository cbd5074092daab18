"""Hostile input: truncations, byte flips, crafted sizes and offsets, JSON of the wrong shape. Every case must
end in a SporeFormatError that starts with the path and comes from an explicit check (never the reader's
last-resort guard, whose messages say "unexpected"), or, where the format declares the flipped bytes
ignorable (the zero padding between sections, covered by no checksum), in a load identical to the
original. Nothing may raise another exception type, allocate past the file, or take long.

Everything is seeded (numpy's default_rng), so a failure reproduces."""

from __future__ import annotations

import copy
import os
import struct
import time

import numpy as np
import pytest

from sporeling.format import SporeFormatError, load_spore, read_info, save_spore
from sporeling.format import reader as reader_mod
from sporeling.format.layout import ENTRY, HEADER_SIZE, crc32
from sporeling.ir import Graph

from .helpers import assert_graphs_identical, build, every_feature_graph, explode

CASE_SECONDS = 1.0


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(graph, file bytes, a scratch path)."""
    folder = tmp_path_factory.mktemp("fuzz")
    g = every_feature_graph()
    path = str(folder / "base.spore")
    save_spore(g, path, provenance={"source": "x.onnx", "passes": [{"pass": "dce"}]})
    return g, open(path, "rb").read(), str(folder / "case.spore")


def outcome(path: str, blob: bytes, verify: bool = True):
    """The loaded graph, or the SporeFormatError's message; fails on anything else."""
    _overwrite(path, blob)
    start = time.perf_counter()
    try:
        return load_spore(path, verify=verify)
    except SporeFormatError as e:
        msg = str(e)
        assert msg.startswith(path + ": "), msg
        assert "unexpected" not in msg, f"the guard caught what no check did: {msg}"
        return msg
    finally:
        assert time.perf_counter() - start < CASE_SECONDS


def _overwrite(path: str, blob: bytes) -> None:
    """Rewrites the file in place: truncating to zero first (open "wb") makes ext4 flush at close, ~100x slower."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, len(blob))
        os.pwrite(fd, blob, 0)
    finally:
        os.close(fd)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def ignorable(blob: bytes) -> np.ndarray:
    """A mask of the bytes no checksum covers and no reader looks at: the padding between sections."""
    mask = np.ones(len(blob), bool)
    mask[:HEADER_SIZE] = False
    sections = explode(blob)[3]
    for s in sections.values():
        mask[s.offset : s.offset + s.length] = False
    head_table = struct.unpack_from("<Q", blob, 24)[0]
    mask[head_table:] = False
    return mask


def test_every_truncation_is_refused(base):
    _, blob, path = base
    for n in range(len(blob)):
        msg = outcome(path, blob[:n])
        assert isinstance(msg, str) and ("too short" in msg or "truncated" in msg), (n, msg)


def test_random_byte_flips(base):
    g, blob, path = base
    rng = np.random.default_rng(2024)
    gaps = np.flatnonzero(ignorable(blob))
    gap_set = set(gaps.tolist())
    assert len(gaps) > 20  # the file has padding to flip
    fds = _open_fds()
    loaded = refused = 0
    for trial in range(3000):
        mutated = bytearray(blob)
        k = 1 if trial < 2000 else int(rng.integers(2, 9))
        where = gaps[rng.integers(0, len(gaps), k)] if trial % 10 == 0 else rng.integers(0, len(blob), k)
        for pos in where:
            mutated[pos] ^= int(rng.integers(1, 256))
        result = outcome(path, bytes(mutated))
        if bytes(mutated) == blob or all(int(p) in gap_set for p in where):
            assert not isinstance(result, str), f"flip of padding at {list(where)} refused: {result}"
            assert_graphs_identical(g, result)
            loaded += 1
        else:
            assert isinstance(result, str), f"flip at {list(where)} loaded"
            refused += 1
    assert loaded >= 250 and refused >= 2500
    assert _open_fds() <= fds + 5  # failed loads do not leave the file mapped


def test_data_flips_without_verification_never_crash(base):
    """verify=False skips the data checksum: a flipped byte in tensor data may load (with a wrong value) or be
    caught by a codec's own checks (string lengths), never anything worse."""
    _, blob, path = base
    data = explode(blob)[3]["DATA"]
    rng = np.random.default_rng(7)
    outcomes = set()
    for _ in range(400):
        mutated = bytearray(blob)
        for pos in rng.integers(data.offset, data.offset + data.length, int(rng.integers(1, 4))):
            mutated[pos] ^= int(rng.integers(1, 256))
        result = outcome(path, bytes(mutated), verify=False)
        outcomes.add("refused" if isinstance(result, str) else "loaded")
        assert isinstance(result, (str, Graph))
    assert outcomes == {"refused", "loaded"}


def _tensor(doc, name):
    return next(t for t in doc["tensors"] if t["name"] == name)


def _set(name, key, value):
    def change(doc):
        _tensor(doc, name)[key] = value
    return change


def _nest_attrs(depth):
    def change(doc):
        value = {"type": "ints", "value": [1]}
        for _ in range(depth):
            value = {"type": "list", "value": [value]}
        doc["graph"]["nodes"][0]["attrs"]["deep"] = value
    return change


def _nest_graphs(depth):
    def change(doc):
        g = {"name": "leaf"}
        for _ in range(depth):
            g = {"nodes": [{"op_type": "If", "attrs": {"then_branch": {"type": "graph", "value": g}}}]}
        doc["graph"]["nodes"].append(g["nodes"][0])
    return change


DOC_CASES = {
    "shape 2^40 x 2^40": (_set("f32", "shape", [1 << 40, 1 << 40]), "takes 4835703278458516698824704 bytes"),
    "shape 2^62": (_set("f32", "shape", [1 << 62]), "can hold at most 48"),
    "shape past 2^62": (_set("f32", "shape", [(1 << 62) + 1]), "out of range"),
    "negative dim": (_set("f32", "shape", [-1, 12]), "out of range"),
    "65 dims": (_set("f32", "shape", [1] * 65), "65 dimensions"),
    "float dim": (_set("f32", "shape", [3.0, 4]), "expected an integer, got 3.0"),
    "offset past the data": (_set("f32", "offset", 1 << 40), "offset: 1099511627776 is out of range"),
    "negative offset": (_set("f32", "offset", -64), "out of range"),
    "unaligned offset": (_set("f64", "offset", 8), "not a multiple of 64"),
    "length 2^64": (_set("f32", "length", 1 << 64), "length: 18446744073709551616 is out of range"),
    "offset+length past the end": (_set("c128", "length", 10 ** 6), "out of range"),
    "length 0 for 12 floats": (_set("f32", "length", 0), "can hold at most 0"),
    "object through raw": (lambda d: _tensor(d, "f64").update(dtype="object", shape=[6]), "raw codec cannot hold"),
    "numpy dtype string": (_set("f32", "dtype", "<f4"), "unknown dtype '<f4'"),
    "structured dtype": (_set("f32", "dtype", "float32, int8"), "unknown dtype"),
    "dtype not a string": (_set("f32", "dtype", 5), "expected a string, got 5"),
    "strings miscounted": (_set("strings", "shape", [3, 2]), "lengths do not add up"),
    "strings kind": (_set("strings", "params", {"kind": "utf-9"}), "no kind 'utf-9'"),
    "codec not a string": (_set("f32", "codec", ["raw"]), "codec: expected a string"),
    "required not a bool": (_set("f32", "required", 1), "required: expected true or false"),
    "tensor index past the table": (lambda d: d["graph"]["initializers"][0].update(tensor=10**6), "not in the tensor"),
    "tensor index negative": (lambda d: d["graph"]["initializers"][0].update(tensor=-1), "not in the tensor"),
    "tensor index bool": (lambda d: d["graph"]["initializers"][0].update(tensor=True), "not in the tensor"),
    "tensor index float": (lambda d: d["graph"]["initializers"][0].update(tensor=0.0), "not in the tensor"),
    "duplicate initializer": (lambda d: d["graph"]["initializers"].append(d["graph"]["initializers"][0]),
                              "initializer 'f32' appears twice"),
    "name not a string": (lambda d: d["graph"]["nodes"][0].update(name=7), "name: expected a string, got 7"),
    "input not a string": (lambda d: d["graph"]["nodes"][0]["inputs"].append(None), "expected a string, got None"),
    "int attr given a float": (lambda d: d["graph"]["nodes"][0]["attrs"]["i"].update(value=1.0), "expected an int"),
    "int attr given a bool": (lambda d: d["graph"]["nodes"][0]["attrs"]["i"].update(value=True), "expected an int"),
    "int attr past int64": (lambda d: d["graph"]["nodes"][0]["attrs"]["i"].update(value=1 << 63), "out of range"),
    "bad NaN bits": (lambda d: d["graph"]["nodes"][0]["attrs"]["f"].update(value="nan:zzzzzzzzzzzzzzzz"),
                     "expected a float"),
    "unknown attribute type": (lambda d: d["graph"]["nodes"][0]["attrs"]["i"].update(type="int128"),
                               "unknown attribute type 'int128'"),
    "bad base64 TypeProto": (lambda d: d["graph"]["nodes"][0]["attrs"]["i"].update(type="type_proto", value="@@"),
                             "not valid base64"),
    "bad TypeProto bytes": (lambda d: d["graph"]["nodes"][0]["attrs"]["i"].update(type="type_proto", value="/////w=="),
                            "TypeProto attribute that does not parse"),
    "opset not an int": (lambda d: d["graph"]["opsets"].update({"": "17"}), "opset '': expected an integer"),
    "metadata not a string": (lambda d: d["graph"]["metadata"].update(k=[1]), "metadata 'k': expected a string"),
    "graph not an object": (lambda d: d.update(graph=[]), "expected an object, got list"),
    "tensors not a list": (lambda d: d.update(tensors={}), "tensors: expected a list"),
    "requires not a list": (lambda d: d.update(requires="x"), "requires: expected a list"),
    "attrs nested 200 deep": (_nest_attrs(200), "nests deeper than 64"),
    "subgraphs nested 100 deep": (_nest_graphs(100), "subgraphs nest deeper than 64"),
}


@pytest.mark.parametrize("case", list(DOC_CASES))
def test_crafted_graph_documents(base, case):
    _, blob, path = base
    doc, meta, data, _ = explode(blob)
    change, match = DOC_CASES[case]
    doc = copy.deepcopy(doc)
    change(doc)
    msg = outcome(path, build(doc, meta, data))
    assert isinstance(msg, str) and match in msg, msg


RAW_CASES = {
    "JSON nested 100000 deep": (b"[" * 100000 + b"]" * 100000, "nests too deeply"),
    "objects nested 100000 deep": (b'{"a":' * 100000 + b"1" + b"}" * 100000, "nests too deeply"),
    "not UTF-8": (b'{"graph": {"name": "\xff"}}', "not valid JSON"),
    "UTF-16": ('{"graph": {}}'.encode("utf-16"), "not valid JSON"),
    "NaN literal": (b'{"graph": {"name": NaN}}', "not valid JSON"),
    "5000-digit integer": (b'{"tensors": [' + b"9" * 5000 + b"]}", "not valid JSON"),
    "trailing junk": (b'{"graph": {}} {}', "not valid JSON"),
}


@pytest.mark.parametrize("case", list(RAW_CASES))
def test_crafted_json(base, case):
    _, blob, path = base
    _, meta, data, _ = explode(blob)
    graph_bytes, match = RAW_CASES[case]
    msg = outcome(path, build(None, meta, data, graph_bytes=graph_bytes))
    assert isinstance(msg, str) and match in msg, msg


def test_json_size_cap(base, monkeypatch):
    _, blob, path = base
    monkeypatch.setattr(reader_mod, "MAX_JSON_BYTES", 1000)
    msg = outcome(path, blob)
    assert isinstance(msg, str) and "over the limit of 1000" in msg


def _patch_entry(blob: bytes, index: int, **fields) -> bytes:
    """Rewrites one section-table entry, then the table's and the header's checksums, so only the entry's
    own checks can catch it."""
    b = bytearray(blob)
    table_at, count = struct.unpack_from("<QI", b, 24)
    at = table_at + index * 32
    tag, flags, crc, offset, length = ENTRY.unpack_from(b, at)
    values = {"tag": tag, "flags": flags, "crc": crc, "offset": offset, "length": length, **fields}
    ENTRY.pack_into(b, at, *values.values())
    struct.pack_into("<I", b, 40, crc32(b[table_at : table_at + count * 32]))
    struct.pack_into("<I", b, 60, crc32(b[:60]))
    return bytes(b)


def _patch_header(blob: bytes, fmt: str, offset: int, value: int) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, value)
    struct.pack_into("<I", b, 60, crc32(b[:60]))
    return bytes(b)


CONTAINER_CASES = {  # sections in the writer's order: 0 DATA, 1 GRAPHZ, 2 META
    "section past the end": (lambda b: _patch_entry(b, 1, offset=len(b) + 64), "lies outside the file"),
    "section length 2^64-1": (lambda b: _patch_entry(b, 1, length=(1 << 64) - 1), "lies outside the file"),
    "section over the header": (lambda b: _patch_entry(b, 2, offset=0), "lies outside the file"),
    "sections overlapping": (lambda b: _patch_entry(b, 2, offset=64), "overlap"),
    "section over the table": (lambda b: _patch_entry(b, 2, length=len(b) - _entry_offset(b, 2)), "overlap"),
    "duplicate tag": (lambda b: _patch_entry(b, 2, tag=b"GRAPHZ\0\0"), "appears twice"),
    "GRAPH and GRAPHZ": (lambda b: _patch_entry(b, 2, tag=b"GRAPH\0\0\0"), "both GRAPH and GRAPHZ"),
    "control byte in tag": (lambda b: _patch_entry(b, 2, tag=b"ME\x01A\0\0\0\0"), "invalid tag"),
    "no GRAPH": (lambda b: _patch_entry(b, 1, tag=b"OTHER\0\0\0", flags=0), "has no GRAPH section"),
    "unknown required": (lambda b: _patch_entry(b, 1, tag=b"OTHER\0\0\0"), "needs section OTHER"),
    "no DATA": (lambda b: _patch_entry(b, 0, tag=b"OLDDATA\0", flags=0), "the file has no DATA section"),
    "unaligned DATA": (lambda b: _patch_entry(b, 0, offset=72, length=0), "not a multiple of 64"),
    "section count 2^32-1": (lambda b: _patch_header(b, "<I", 32, (1 << 32) - 1), "more than the limit of 1024"),
    "section count 1000": (lambda b: _patch_header(b, "<I", 32, 1000), "section table (1000 entries"),
    "table offset 2^64-1": (lambda b: _patch_header(b, "<Q", 24, (1 << 64) - 1), "lies outside the file"),
    "header size 2^32-1": (lambda b: _patch_header(b, "<I", 12, (1 << 32) - 1), "header size 4294967295"),
    "entry size 7": (lambda b: _patch_header(b, "<I", 36, 7), "entry size 7 is invalid"),
    "file size 2^64-1": (lambda b: _patch_header(b, "<Q", 16, (1 << 64) - 1), "truncated or appended"),
    "appended byte": (lambda b: b + b"\0", "truncated or appended"),
    "header checksum": (lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:], "header checksum mismatch"),
}


def _entry_offset(blob: bytes, index: int) -> int:
    table_at = struct.unpack_from("<Q", blob, 24)[0]
    return ENTRY.unpack_from(blob, table_at + index * 32)[3]


@pytest.mark.parametrize("case", list(CONTAINER_CASES))
def test_crafted_containers(base, case):
    _, blob, path = base
    change, match = CONTAINER_CASES[case]
    msg = outcome(path, change(blob))
    assert isinstance(msg, str) and match in msg, msg
    with pytest.raises(SporeFormatError):
        read_info(path)


GARBAGE = [None, True, -1, 0, 1 << 70, -(1 << 70), 1.5, 1e300, "", "x", "nan:0", [], [None], [[]], {}, {"a": 1},
           {"type": "graph", "value": {}}, [1 << 40, 1 << 40]]


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def test_random_wrong_values_anywhere_in_the_graph_document(base):
    """Any value of the document replaced by a value of another type or an absurd size, or removed: a clean
    refusal or a clean load, never a crash."""
    _, blob, path = base
    doc, meta, data, _ = explode(blob)
    paths = list(_paths(doc))
    rng = np.random.default_rng(11)
    seen = {"refused": 0, "loaded": 0}
    for _ in range(1500):
        mutated = copy.deepcopy(doc)
        for _ in range(int(rng.integers(1, 3))):
            p = paths[int(rng.integers(0, len(paths)))]
            holder = mutated
            try:
                for key in p[:-1]:
                    holder = holder[key]
                if rng.random() < 0.2 and isinstance(holder, dict):
                    holder.pop(p[-1], None)
                else:
                    holder[p[-1]] = copy.deepcopy(GARBAGE[int(rng.integers(0, len(GARBAGE)))])
            except (KeyError, IndexError, TypeError):
                continue  # an earlier change in this round removed the path
        result = outcome(path, build(mutated, meta, data))
        seen["refused" if isinstance(result, str) else "loaded"] += 1
    assert seen["refused"] > 800 and seen["loaded"] > 50, seen


def test_metadata_section_of_the_wrong_type(base):
    _, blob, path = base
    doc, _, data, _ = explode(blob)
    msg = outcome(path, build(doc, [1, 2], data))
    assert isinstance(msg, str) and "META section: expected an object" in msg

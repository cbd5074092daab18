"""The compatibility rules of docs/format.md, one test each: what a reader ignores (unknown optional fields,
sections, a newer minor version, longer header and table entries) and what it refuses with a message
saying why (an unknown required section, codec or feature; another major version)."""

from __future__ import annotations

import copy
import json
import pathlib
import re

import numpy as np
import pytest

from sporeling.format import SporeFormatError, load_spore, read_info, save_spore
from sporeling.format.layout import REQUIRED
from sporeling.ir import Graph, Node, ValueInfo

from .helpers import assert_graphs_identical, build, explode


@pytest.fixture
def model(tmp_path):
    """(graph, its file's parts, a path to write variants to)."""
    g = Graph(nodes=[Node("Add", ["x", "w"], ["y"], {"k": 1}, "add")], inputs=[ValueInfo("x", np.dtype(np.float32),
                                                                                       (2,))],
              outputs=[ValueInfo("y")], initializers={"w": np.array([1.5, 2.5], np.float32),
                                                    "names": np.array(["a", "b"], object)}, name="m")
    path = str(tmp_path / "m.spore")
    save_spore(g, path, provenance={"source": "m.onnx"})
    return g, explode(open(path, "rb").read()), str(tmp_path / "variant.spore")


def _write(path, blob):
    with open(path, "wb") as f:
        f.write(blob)
    return path


def test_unknown_optional_fields_are_ignored(model):
    g, (doc, meta, data, _), path = model
    doc = copy.deepcopy(doc)
    doc["future"] = {"anything": [1, 2]}
    doc["graph"]["future"] = 1
    doc["graph"]["nodes"][0]["future"] = "x"
    doc["graph"]["nodes"][0]["attrs"]["k"]["future"] = True
    doc["graph"]["inputs"][0]["future"] = None
    doc["graph"]["initializers"][0]["future"] = 0
    doc["tensors"][0]["future"] = {"x": 1}
    meta = {**meta, "future": [1]}
    assert_graphs_identical(g, load_spore(_write(path, build(doc, meta, data))))


def test_unknown_optional_section_is_ignored(model):
    g, (doc, meta, data, _), path = model
    _write(path, build(doc, meta, data, extra=[("FUTURE", 0, b"\x00\x01 not json, not ours")]))
    assert_graphs_identical(g, load_spore(path))
    assert read_info(path)["sections"]["FUTURE"]["required"] is False


def test_unknown_required_section_is_refused(model):
    _, (doc, meta, data, _), path = model
    _write(path, build(doc, meta, data, extra=[("FUTURE", REQUIRED, b"{}")]))
    with pytest.raises(SporeFormatError, match="needs section FUTURE, which this sporeling does not know: upgrade"):
        load_spore(path)


def test_unknown_required_codec_is_refused_naming_codec_and_tensor(model):
    _, (doc, meta, data, _), path = model
    doc = copy.deepcopy(doc)
    doc["tensors"][0]["codec"] = "bitpack7"
    _write(path, build(doc, meta, data))
    with pytest.raises(SporeFormatError, match="tensor 0 'w' is encoded with codec 'bitpack7', which this sporeling "
                                               "does not know: upgrade sporeling"):
        load_spore(path)


def test_unknown_optional_codec_falls_back(model):
    g, (doc, meta, data, _), path = model
    doc = copy.deepcopy(doc)
    raw = doc["tensors"][0]
    doc["tensors"][0] = {"name": "w", "codec": "fancy", "required": False, "dtype": "float32", "shape": [2],
                         "offset": 0, "length": 3, "fallback": raw}
    assert_graphs_identical(g, load_spore(_write(path, build(doc, meta, data))))
    del doc["tensors"][0]["fallback"]
    with pytest.raises(SporeFormatError, match="codec 'fancy'"):
        load_spore(_write(path, build(doc, meta, data)))


def test_unknown_required_feature_is_refused(model):
    _, (doc, meta, data, _), path = model
    _write(path, build({**doc, "requires": ["sparse-tensors"]}, meta, data))
    with pytest.raises(SporeFormatError, match="needs the format feature 'sparse-tensors'.*upgrade sporeling"):
        load_spore(path)


def test_newer_major_version_is_refused_before_anything_else(model):
    _, (doc, meta, data, _), path = model
    blob = bytearray(build(doc, meta, data, version=(2, 0)))
    blob[12:] = b"\xff" * (len(blob) - 12)  # a format 2 file may lay out everything after the version otherwise
    _write(path, bytes(blob))
    for fn in (load_spore, read_info):
        with pytest.raises(SporeFormatError) as info:
            fn(path)
        assert str(info.value) == f"{path}: was written by format 2.x; this sporeling reads 1.x: upgrade sporeling"


def test_older_major_version_is_refused(model):
    _, (doc, meta, data, _), path = model
    _write(path, build(doc, meta, data, version=(0, 9)))
    with pytest.raises(SporeFormatError, match="was written by format 0.x; this sporeling reads 1.x$"):
        load_spore(path)


def test_newer_minor_version_with_longer_header_and_entries_is_read(model):
    g, (doc, meta, data, _), path = model
    _write(path, build(doc, meta, data, version=(1, 9), header_size=128, entry_size=48))
    assert_graphs_identical(g, load_spore(path))
    assert read_info(path)["format_version"] == "1.9"


def test_the_specifications_example_reads(tmp_path):
    """docs/format.md's example document, wrapped in a container built by the spec's rules, loads as described."""
    spec = (pathlib.Path(__file__).parents[2] / "docs" / "format.md").read_text(encoding="utf-8")
    example = re.search(r"### 2\.5 Example.*?```json\n(.*?)```", spec, re.DOTALL).group(1)
    doc = json.loads(example)
    data = np.ones((8, 3, 3, 3), np.float32).tobytes().ljust(896, b"\0") + b"\3\0\0\0\3\0\0\0catdog"
    g = load_spore(_write(str(tmp_path / "example.spore"), build(doc, {"producer": "by hand"}, data)))
    assert [n.op_type for n in g.nodes] == ["Conv", "If"]
    assert g.inputs[0].shape == (1, 3, "H", None) and g.inputs[1].dtype == np.dtype(bool)
    assert g.nodes[0].attrs == {"strides": [1, 1], "alpha": 0.5, "pads": []}
    assert g.nodes[1].attrs["then_branch"].nodes[0].op_type == "Neg"
    assert g.initializers["w"].shape == (8, 3, 3, 3) and float(g.initializers["w"].sum()) == 216.0
    assert g.initializers["labels"].tolist() == ["cat", "dog"]


def test_a_format_1_0_file_with_a_plain_graph_section_is_read(model):
    g, (doc, meta, data, _), path = model
    blob = build(doc, meta, data, version=(1, 0), plain_graph=True)
    assert_graphs_identical(load_spore(_write(path, blob)), g)


def test_graphz_that_inflates_past_the_limit_is_refused(model, monkeypatch):
    import zlib

    import sporeling.format.reader as reader

    _, (doc, meta, data, _), path = model
    text = json.dumps(doc).encode() + b" " * 4096  # whitespace: valid JSON that compresses very well
    packed = zlib.compress(text)
    blob = build(doc, meta, data, graphz=packed)
    limit = (len(packed) + len(text)) // 2  # the real limit is 256 MiB; the rule is the same
    monkeypatch.setattr(reader, "MAX_JSON_BYTES", limit)
    with pytest.raises(SporeFormatError, match=f"decompresses to more than the limit of {limit}"):
        load_spore(_write(path, blob))


def test_graphz_that_is_not_zlib_is_refused(model):
    import zlib

    _, (doc, meta, data, _), path = model
    good = zlib.compress(json.dumps(doc).encode())
    for bad, match in ((b"not zlib at all", "not a valid zlib stream"), (good[:-6], "truncated zlib stream"),
                       (good + b"tail", "bytes after it")):
        with pytest.raises(SporeFormatError, match=match):
            load_spore(_write(path, build(doc, meta, data, graphz=bad)))


def test_provenance_is_written_deflated_and_a_plain_meta_section_still_reads(model):
    import zlib

    g, (doc, meta, data, sections), path = model
    assert "METAZ" in sections and "META" not in sections  # 1.2 writes METAZ
    assert meta["source"] == "m.onnx"
    _, prov = load_spore(_write(path, build(doc, meta, data)), with_provenance=True)  # 1.1's plain META
    assert prov["source"] == "m.onnx"
    both = build(doc, meta, data, extra=[("METAZ", 0, zlib.compress(json.dumps(meta).encode()))])
    with pytest.raises(SporeFormatError, match="both META and METAZ"):
        load_spore(_write(path, both))
    broken = build(doc, None, data, extra=[("METAZ", 0, b"not zlib")])
    with pytest.raises(SporeFormatError, match="METAZ.*not a valid zlib stream"):
        load_spore(_write(path, broken))

"""save_spore -> load_spore on hand-built graphs: every attribute type, dtype and subgraph case comes back
exactly; raw tensors are views of the mapped file, 64-byte aligned; saving is atomic and deterministic;
what cannot be stored is refused at save time with the node and attribute named."""

from __future__ import annotations

import math
import mmap
import os

import numpy as np
import pytest

from sporeling.format import FORMAT_VERSION, MAGIC, SporeFormatError, load_spore, read_info, save_spore
from sporeling.format import writer as writer_mod
from sporeling.ir import Graph, Node, ValueInfo

from .helpers import assert_graphs_identical, every_feature_graph, explode


@pytest.fixture
def spore(tmp_path):
    return str(tmp_path / "model.spore")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, blob: bytes) -> None:
    with open(path, "wb") as f:
        f.write(blob)


def _mapping_of(arr: np.ndarray):
    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base


def test_every_feature_round_trips_exactly(spore):
    g = every_feature_graph()
    n = save_spore(g, spore, provenance={"source": "hand.onnx", "source_sha256": "ab" * 32,
                                         "passes": [{"pass": "dce", "rewrites": 2}], "extra": {"k": [1, None]}})
    assert n == os.path.getsize(spore)
    back = load_spore(spore)
    assert_graphs_identical(g, back)
    assert back.initializers["alias"] is back.initializers["f32"]  # one array, stored once, comes back once
    assert back.metadata == g.metadata  # the user's key/values only: provenance lives apart
    info = read_info(spore)
    assert info["provenance"]["passes"] == [{"pass": "dce", "rewrites": 2}]
    assert info["provenance"]["source_sha256"] == "ab" * 32
    assert info["provenance"]["producer"].startswith("sporeling ")
    assert info["format_version"] == "{}.{}".format(*FORMAT_VERSION)


def test_file_starts_with_magic_and_is_deterministic(spore, tmp_path):
    g = every_feature_graph()
    save_spore(g, spore, provenance={"source": "a"})
    other = str(tmp_path / "again.spore")
    save_spore(every_feature_graph(), other, provenance={"source": "a"})
    blob = _read(spore)
    assert blob.startswith(MAGIC)
    assert blob == _read(other)


def test_raw_tensors_are_aligned_read_only_views_of_the_file(spore):
    g = every_feature_graph()
    save_spore(g, spore)
    back = load_spore(spore)
    blob = _read(spore)
    checked = 0
    for name, arr in back.initializers.items():
        if arr.dtype == object or arr.size == 0:
            continue
        mm = _mapping_of(arr)
        assert isinstance(mm, mmap.mmap), f"{name}: not backed by the file mapping"
        whole = np.frombuffer(mm, np.uint8)
        assert np.shares_memory(arr, whole)
        offset = arr.ctypes.data - whole.ctypes.data
        assert offset % 64 == 0 and arr.ctypes.data % 64 == 0, f"{name}: at file offset {offset}"
        assert blob[offset : offset + arr.nbytes] == arr.tobytes()  # it is the file's bytes, not a copy
        assert not arr.flags.writeable
        checked += 1
    assert checked >= 15


def test_numpy_scalars_and_tuples_come_back_as_python_values(spore):
    attrs = {"f": np.float32(1.5), "i": np.int64(-3), "b": np.bool_(True), "t": (1, 2), "fl": [np.float16(0.5)]}
    save_spore(Graph(nodes=[Node("X", [], ["y"], attrs)]), spore)
    got = load_spore(spore).nodes[0].attrs
    assert got == {"f": 1.5, "i": -3, "b": True, "t": [1, 2], "fl": [0.5]}
    assert [type(v) for v in got.values()] == [float, int, bool, list, list]


def test_empty_graph_round_trips(spore):
    g = Graph(name="", opsets={}, metadata={})
    save_spore(g, spore)
    assert_graphs_identical(g, load_spore(spore))
    assert read_info(spore)["tensors"]["count"] == 0


def test_type_proto_attribute_round_trips(spore):
    onnx = pytest.importorskip("onnx")
    from sporeling.frontends.onnx import from_model_proto

    tp = onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [2, "N"])
    node = onnx.helper.make_node("Optional", [], ["o"], type=onnx.helper.make_optional_type_proto(tp))
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [], [onnx.helper.make_value_info(
        "o", onnx.helper.make_optional_type_proto(tp))]), opset_imports=[onnx.helper.make_opsetid("", 18)])
    g = from_model_proto(model)
    assert type(g.nodes[0].attrs["type"]).__name__ == "TypeProto"
    save_spore(g, spore)
    assert_graphs_identical(g, load_spore(spore))


@pytest.mark.parametrize("bad,match", [
    (lambda g: g.initializers.update(u=np.array(["fixed-width"])), "tensor 'u' has dtype <U11"),
    (lambda g: g.initializers.update(o=np.array([1, None], object)), "tensor 'o'.*only str"),
    (lambda g: g.nodes[0].attrs.update(odd={1, 2}), "node 0 'n' attribute 'odd': a set attribute"),
    (lambda g: g.nodes[0].attrs.update(huge=1 << 64), "attribute 'huge': .* does not fit in int64"),
    (lambda g: g.metadata.update(k=3), "metadata values must be strings"),
    (lambda g: g.nodes[0].inputs.append(7), "node 0 'n': .*expected a string"),
    (lambda g: g.inputs.append(ValueInfo("v", None, (1.5,))), "value 'v' has a float dimension"),
])
def test_what_cannot_be_stored_is_refused_at_save(spore, bad, match):
    g = Graph(nodes=[Node("Relu", ["x"], ["y"], name="n")], inputs=[ValueInfo("x")], outputs=[ValueInfo("y")])
    bad(g)
    with pytest.raises(SporeFormatError, match=match) as info:
        save_spore(g, spore)
    assert str(info.value).startswith(spore + ": cannot save")
    assert not os.path.exists(spore)


def test_provenance_must_be_json(spore):
    with pytest.raises(SporeFormatError, match="provenance cannot be stored as JSON"):
        save_spore(Graph(), spore, provenance={"when": {1, 2}})
    with pytest.raises(SporeFormatError, match="provenance cannot be stored as JSON"):
        save_spore(Graph(), spore, provenance={"x": math.nan})


def test_a_failed_save_leaves_the_old_file_and_no_temporary(spore, tmp_path, monkeypatch):
    save_spore(every_feature_graph(), spore)
    before = _read(spore)

    def broken(sections):  # fails after the data section has been written to the temporary file
        raise OSError("disk full")

    monkeypatch.setattr(writer_mod, "pack_table", broken)
    with pytest.raises(SporeFormatError, match=r"model.spore: cannot write \(disk full\)"):
        save_spore(Graph(name="new"), spore)
    with pytest.raises(SporeFormatError, match="disk full"):
        save_spore(Graph(name="new"), str(tmp_path / "fresh.spore"))
    assert _read(spore) == before
    assert sorted(os.listdir(tmp_path)) == ["model.spore"]


def test_saved_file_gets_the_usual_mode_and_a_missing_folder_is_reported(spore, tmp_path):
    save_spore(Graph(), spore)
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(spore).st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(SporeFormatError, match="cannot write"):
        save_spore(Graph(), str(tmp_path / "no" / "such" / "folder.spore"))


def test_read_info_reads_no_tensor_data(spore):
    """A corrupted data section: read_info does not notice (it never reads the data), load_spore does,
    and load_spore(verify=False) skips that check and gives the corrupted value."""
    g = Graph(initializers={"w": np.arange(1000, dtype=np.float32), "s": np.array(["a", "bc"], object)})
    save_spore(g, spore)
    blob = bytearray(_read(spore))
    data = explode(bytes(blob))[3]["DATA"]
    blob[data.offset + 4] ^= 0x40  # the second float
    _write(spore, bytes(blob))
    info = read_info(spore)
    assert info["tensors"]["count"] == 2
    assert info["tensors"]["by_codec"]["raw"] == {"count": 1, "bytes": 4000, "decoded_bytes": 4000}
    assert info["tensors"]["by_codec"]["strings"]["count"] == 1
    assert info["sections"]["DATA"]["length"] == data.length
    with pytest.raises(SporeFormatError, match="data section checksum mismatch"):
        load_spore(spore)
    w = load_spore(spore, verify=False).initializers["w"]
    assert w[1] != 1.0 and w[0] == 0.0 and w[2] == 2.0


@pytest.mark.parametrize("setup,match", [
    (lambda p: None, "no such file"),
    (lambda p: os.mkdir(p), "not a regular file"),
    (lambda p: _write(p, b""), "0 bytes is too short"),
    (lambda p: _write(p, b"\x08\x07" + b"\0" * 100), "not a .spore file"),
])
def test_not_a_spore_file(spore, setup, match):
    setup(spore)
    for fn in (load_spore, read_info):
        with pytest.raises(SporeFormatError, match=match) as info:
            fn(spore)
        assert str(info.value).startswith(spore + ": ")

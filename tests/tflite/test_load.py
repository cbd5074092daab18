"""Reading .tflite files: dispatch from sporeling.load, names/dtypes/NHWC shapes kept, metadata,
dynamic batch, and hostile input (truncated, corrupt, inconsistent files; unsupported ops listed
at once) always giving a ModelLoadError that names the file."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import sporeling
from sporeling.errors import ModelLoadError, UnsupportedOpError
from sporeling.frontends.tflite import from_buffer, load_tflite

from .builder import ModelBuilder
from .common import Feed, one_op, rand, run_litert


def _conv_model() -> bytes:
    b = ModelBuilder("a conv")
    x = b.input([1, 6, 6, 3], name="image")
    w, bias = b.const(rand(2, 3, 3, 3, seed=1)), b.const(rand(2, seed=2))
    y = b.output(b.tensor([1, 6, 6, 2], name="features"))
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", Padding=0, StrideH=1, StrideW=1)
    b.metadata.append(("min_runtime_version", b"1.5.0\0\0"))
    b.metadata.append(("binary_blob", bytes([0, 159, 146, 150])))
    return b.finish()


def test_sporeling_load_reads_tflite_with_its_names_dtypes_and_layout(tmp_path):
    path = tmp_path / "conv.tflite"
    path.write_bytes(_conv_model())
    model = sporeling.load(path)
    assert [(s.name, s.dtype, tuple(s.shape)) for s in model.inputs] == [("image", np.float32, (1, 6, 6, 3))]
    assert [s.name for s in model.outputs] == ["features"]
    x = rand(1, 6, 6, 3, seed=3)
    ours = model.run({"image": x})["features"]
    ref = run_litert(path.read_bytes(), {"image": x})["features"]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    other = tmp_path / "conv.bin"  # no extension to go by: the TFL3 identifier decides
    other.write_bytes(path.read_bytes())
    assert sporeling.load(other).run({"image": x})["features"].shape == (1, 6, 6, 2)


def test_metadata_keeps_text_and_names_the_source():
    graph = from_buffer(_conv_model(), "/some/where/conv.tflite")
    assert graph.metadata["tflite.description"] == "a conv"
    assert graph.metadata["tflite.source"] == "conv.tflite"
    assert graph.metadata["tflite.metadata.min_runtime_version"] == "1.5.0"
    assert "tflite.metadata.binary_blob" not in graph.metadata
    assert graph.opsets == {"": 20}


def test_dynamic_batch_from_the_shape_signature():
    data, _ = one_op("ADD", [Feed(rand(1, 3), signature=[-1, 3]), rand(3, seed=1)], [(1, 3)], "AddOptions")
    model = sporeling.model.Model(from_buffer(data, "t"))
    assert tuple(model.inputs[0].shape) == (None, 3)
    x = rand(5, 3, seed=2)
    np.testing.assert_allclose(model.run({"in0": x})["out0"], x + rand(3, seed=1), rtol=1e-6)


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.1])
def test_truncated_file(tmp_path, cut):
    data = _conv_model()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelLoadError, match="cut.tflite"):
        sporeling.load(path)


@pytest.mark.parametrize("content", [b"", b"1234", b"\x00" * 64, b"\x10\x00\x00\x00TFL3" + b"\xff" * 40,
                                     b"\x00\x00\x00\x00TFL3" + b"\x00" * 8])
def test_garbage(tmp_path, content):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="bad.tflite"):
        load_tflite(path)


def test_flipped_bytes_give_a_load_error_or_a_graph():
    """Random corruption anywhere in the file: every outcome is a Graph or a ModelLoadError."""
    data = bytearray(_conv_model())
    rng = np.random.default_rng(0)
    errors = 0
    for _ in range(300):
        bad = bytearray(data)
        for pos in rng.integers(8, len(bad), 3):
            bad[pos] = int(rng.integers(0, 256))
        try:
            from_buffer(bytes(bad), "flipped.tflite")
        except ModelLoadError as e:
            assert "flipped.tflite" in str(e)
            errors += 1
    assert errors > 0


def test_a_buffer_beyond_the_file():
    b = ModelBuilder()
    x = b.input([4])
    c = b.const(np.ones(4, np.float32))
    b.buffer_ranges[b.tensors[c]["buffer"]] = (1 << 20, 16)
    y = b.output(b.tensor([4]))
    b.op("ADD", [x, c], [y], "AddOptions")
    with pytest.raises(ModelLoadError, match="past the end of the file"):
        from_buffer(b.finish(), "far.tflite")


def test_a_buffer_of_the_wrong_size():
    b = ModelBuilder()
    x = b.input([4])
    c = b.tensor([4], np.float32, data=np.ones(3, np.float32), name="short")
    y = b.output(b.tensor([4]))
    b.op("ADD", [x, c], [y], "AddOptions")
    with pytest.raises(ModelLoadError, match="'short'.*16 bytes.*12"):
        from_buffer(b.finish(), "short.tflite")


def test_an_operator_reading_a_missing_tensor():
    b = ModelBuilder()
    x = b.input([4])
    y = b.output(b.tensor([4]))
    b.op("ADD", [x, 57], [y], "AddOptions")
    with pytest.raises(ModelLoadError, match="tensor 57"):
        from_buffer(b.finish(), "dangling.tflite")


def test_an_output_that_nothing_produces():
    b = ModelBuilder()
    b.input([4])
    b.output(b.tensor([4], name="orphan"))
    with pytest.raises(ModelLoadError, match="orphan"):
        from_buffer(b.finish(), "orphan.tflite")


def test_unsupported_ops_are_listed_at_once():
    b = ModelBuilder()
    x = b.input([1, 4, 4, 1])
    t1, t2, t3 = b.tensor([1, 4, 4, 1]), b.tensor([1, 4, 4, 1]), b.output(b.tensor([1, 4, 4, 1]))
    b.op("custom:MyFancyOp", [x], [t1])
    b.op("WHILE", [t1], [t2])
    b.op("WHILE", [t2], [t3])
    with pytest.raises(UnsupportedOpError) as e:
        from_buffer(b.finish(), "fancy.tflite")
    msg = str(e.value)
    assert "fancy.tflite" in msg and "custom:MyFancyOp" in msg and "WHILE x2" in msg and "control flow" in msg


def test_unsupported_uses_of_known_ops_are_listed_at_once():
    b = ModelBuilder()
    x = b.input([1, 4, 4, 2])
    size = b.input([2], np.int32)
    y1 = b.output(b.tensor([1, 8, 8, 2]))
    y2 = b.output(b.tensor([1, 8, 8, 2]))
    b.op("RESIZE_BILINEAR", [x, size], [y1], "ResizeBilinearOptions")
    b.op("RESIZE_NEAREST_NEIGHBOR", [x, size], [y2], "ResizeNearestNeighborOptions")
    with pytest.raises(ModelLoadError) as e:
        from_buffer(b.finish(), "dyn.tflite")
    assert "2 operator(s)" in str(e.value) and str(e.value).count("must be a constant") == 2


def test_missing_schema_package_is_one_clear_error(monkeypatch, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(_conv_model())
    monkeypatch.setitem(sys.modules, "tflite", None)
    with pytest.raises(ModelLoadError, match=r"sporeling\[tflite\]"):
        load_tflite(path)

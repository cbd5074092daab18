"""Every model of the ONNX backend node suite (shipped inside the onnx package: 1900-odd small graphs using
every attribute type ONNX has, strings, sparse constants, optionals with TypeProto attributes, Loop/If/Scan
bodies) survives ONNX -> Graph -> .spore -> Graph unchanged (about 10 s)."""

from __future__ import annotations

import glob
import os

import pytest

from sporeling.errors import ModelLoadError
from sporeling.format import load_spore, save_spore

from .helpers import assert_graphs_identical

onnx = pytest.importorskip("onnx")


def test_every_onnx_node_test_model_round_trips(tmp_path):
    from sporeling.frontends.onnx import load_onnx

    paths = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/*/*/model.onnx")))
    assert len(paths) > 1000
    path = str(tmp_path / "m.spore")
    done = 0
    for src in paths:
        try:
            graph = load_onnx(src)
        except ModelLoadError:
            continue  # the importer's business, tested elsewhere
        save_spore(graph, path)
        assert_graphs_identical(graph, load_spore(path), src)
        done += 1
    assert done > 0.9 * len(paths)

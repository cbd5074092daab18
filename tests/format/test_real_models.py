"""Real models through .spore: ONNX -> Graph -> .spore -> Graph is the identical graph (Silero's If bodies
included), and runs give bit-identical outputs to the ONNX-loaded graph, both as imported and after the
graph passes. The loaded weights are read-only views of the file, so these runs also show that neither
the passes nor the runtime write into initializers."""

from __future__ import annotations

import numpy as np
import pytest

from sporeling.format import load_spore, read_info, save_spore
from sporeling.frontends.onnx import load_onnx
from sporeling.model import Model
from sporeling.passes import optimize

from ..assets import require
from .helpers import assert_graphs_identical

pytestmark = pytest.mark.assets

rng = np.random.default_rng(0)
OCR_FEEDS = {"ppocr_det": {"x": rng.standard_normal((1, 3, 64, 96)).astype(np.float32)},
             "ppocr_rec": {"x": rng.standard_normal((1, 3, 48, 96)).astype(np.float32)},
             "ppocr_cls": {"x": rng.standard_normal((1, 3, 48, 192)).astype(np.float32)}}
SILERO = ["silero_vad", "silero_16k_op15", "silero_16k_sequence", "silero_half", "silero_op18_ifless",
          "silero_openvino_16k"]


def _feeds(name: str, graph) -> dict[str, np.ndarray]:
    if name in OCR_FEEDS:
        return OCR_FEEDS[name]
    feeds = {}
    for v in graph.inputs:
        if v.name in graph.initializers:
            continue
        if v.name == "sr":
            feeds["sr"] = np.array(16000, np.int64)
        elif v.name == "input":
            frames = 4 if name == "silero_16k_sequence" else 1
            feeds["input"] = (0.3 * rng.standard_normal((frames, 576))).astype(np.float32)
        else:  # recurrent state: (2, 1, 128) or h/c (1, 1, 128)
            shape = tuple(d if isinstance(d, int) else 1 for d in v.shape)
            feeds[v.name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return feeds


def _assert_bit_identical(ours: dict, ref: dict, what: str) -> None:
    assert list(ours) == list(ref), what
    for k in ref:
        a, b = np.asarray(ours[k]), np.asarray(ref[k])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {k}"
        assert a.tobytes() == b.tobytes(), f"{what}: {k} differs"


@pytest.mark.parametrize("name", list(OCR_FEEDS) + SILERO)
def test_real_model_round_trips_and_runs_bit_identically(name, tmp_path):
    src = require(name)
    graph = load_onnx(src)
    path = str(tmp_path / f"{name}.spore")
    save_spore(graph, path, provenance={"source": src})
    loaded = load_spore(path)
    assert_graphs_identical(graph, loaded)
    raw = [a for a in loaded.all_initializers() if a.dtype != object and a.size]
    assert raw and not any(a.flags.writeable for a in raw)  # views of the read-only mapping
    info = read_info(path)
    assert info["tensors"]["bytes"] >= sum(a.nbytes for a in raw)

    feeds = _feeds(name, graph)
    ref = Model(graph, src).run(feeds)
    _assert_bit_identical(Model(loaded, path).run(feeds), ref, f"{name} as imported")
    optimize(graph)
    optimize(loaded)  # the passes must not write into the mapped weights either
    ref = Model(graph, src).run(feeds)
    _assert_bit_identical(Model(loaded, path).run(feeds), ref, f"{name} after the passes")
    _assert_bit_identical(Model(loaded, path).run(feeds), ref, f"{name} second run")  # constants unchanged


def test_subgraphs_are_kept(tmp_path):
    """Silero's model holds If bodies with their own initializers; they survive the trip."""
    graph = load_onnx(require("silero_vad"))
    bodies = [g for n in graph.nodes for g in n.subgraphs()]
    assert bodies and any(b.initializers for b in bodies)
    path = str(tmp_path / "vad.spore")
    save_spore(graph, path)
    loaded = load_spore(path)
    assert sum(len(b.initializers) for n in loaded.nodes for b in n.subgraphs()) == sum(
        len(b.initializers) for b in bodies)

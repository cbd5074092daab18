"""The three MediaPipe models (BlazeFace short range, face mesh, selfie segmentation) on real photos,
in sporeling (imported as is, and after the graph passes) and in LiteRT with one thread.

Preprocessing follows MediaPipe's graphs: the whole photo resized (bilinear) to the model's input,
RGB floats in [-1, 1] for BlazeFace and in [0, 1] for the face mesh (on a crop around the face, as its
ROI would give) and for the selfie segmenter. Every output must match LiteRT within 1e-4 of its
scale (max |LiteRT output|); a sanity check on each shows the inputs are fit (a face is found where
there is one, the mask covers the person and not a brick wall).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from sporeling.frontends.tflite import load_tflite
from sporeling.model import Model
from sporeling.passes import optimize

from ..assets import require
from .common import run_litert

pytestmark = pytest.mark.assets
Image = pytest.importorskip("PIL.Image")

ASTRONAUT_FACE = (150, 30, 340, 220)  # left, top, right, bottom in the 512x512 photo


def photo(name: str, size: int, lo: float, hi: float, box=None) -> np.ndarray:
    im = Image.open(require("img_" + name)).convert("RGB")
    if box is not None:
        im = im.crop(box)
    rgb = np.asarray(im.resize((size, size), Image.BILINEAR), np.float32)
    return (rgb / 255.0 * (hi - lo) + lo)[None]


@functools.cache
def _model(asset: str, passes: bool) -> Model:
    graph = load_tflite(require(asset))
    if passes:
        optimize(graph)
    return Model(graph, asset, threads=1)


def _run(asset: str, feeds: dict) -> dict:
    """sporeling's outputs (checked with and without the passes against LiteRT)."""
    ref = run_litert(open(require(asset), "rb").read(), feeds)
    for passes in (False, True):
        ours = _model(asset, passes).run(feeds)
        assert set(ours) == set(ref)
        for name, want in ref.items():
            got = ours[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            tol = 1e-4 * float(np.abs(want).max())
            diff = float(np.abs(got.astype(np.float64) - want).max())
            assert diff <= tol, f"{asset} {name} (passes={passes}): max abs diff {diff:.3g} > {tol:.3g}"
    return ours


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-np.asarray(v, np.float64)))


@pytest.mark.parametrize("name, face", [("astronaut", True), ("brick", False), ("coffee", False)])
def test_blazeface(name, face):
    out = _run("mp_face_detection", {"input": photo(name, 128, -1.0, 1.0)})
    assert out["regressors"].shape == (1, 896, 16)
    score = _sigmoid(out["classificators"].max())
    assert score > 0.9 if face else score < 0.3


@pytest.mark.parametrize("name, box, face", [("astronaut", ASTRONAUT_FACE, True), ("brick", None, False)])
def test_face_mesh(name, box, face):
    out = _run("mp_face_landmark", {"input_1": photo(name, 192, 0.0, 1.0, box)})
    flag = _sigmoid(out["conv2d_31"].reshape(-1)[0])
    assert flag > 0.9 if face else flag < 0.1
    if face:  # 468 (x, y, z) points, inside the 192x192 crop
        xy = out["conv2d_21"].reshape(468, 3)[:, :2]
        assert (xy > 0).all() and (xy < 192).all()


@pytest.mark.parametrize("name", ["astronaut", "brick"])
def test_selfie_segmentation(name):
    out = _run("mp_selfie_segmentation", {"input_1": photo(name, 256, 0.0, 1.0)})
    mask = out["activation_10"][0, :, :, 0]
    if name == "astronaut":
        assert mask[100:200, 100:160].mean() > 0.9 and mask[:40, :40].mean() < 0.05
    else:
        assert mask.mean() < 0.01


def test_imported_graphs_keep_fp16_weights_and_metadata():
    for asset, title in [("mp_face_detection", "Short Range Face Detection"),
                         ("mp_face_landmark", "Face landmarks detection"),
                         ("mp_selfie_segmentation", "ImageSegmenter")]:
        graph = load_tflite(require(asset))
        assert graph.metadata["tflite.model.name"] == title
        weights = [a for a in graph.initializers.values() if a.size > 64]
        assert weights and all(a.dtype == np.float16 for a in weights), asset
        assert [n for n in graph.nodes if n.op_type == "Cast"]

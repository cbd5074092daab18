"""MediaPipe's face detector, face landmarker and selfie segmenter do their jobs on real photos when
sporeling runs them, with mediapipe's own pre- and post-processing (mediapipe_tasks.py). The same
checks run on LiteRT, TFLite's own interpreter, to show that the checks themselves are right.

Photos are scikit-image's: the astronaut (Eileen Collins, a face and a person), a brick wall, grass,
and the rocket launch (an outdoor scene with nobody in it). The regions below were read off the
astronaut photo (512x512) by eye: where her face is, a patch of her suit, and the background at the
top right, beside the model shuttle.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import sporeling  # noqa: F401  (a broken package must fail here, not skip)

from ..assets import require
from . import mediapipe_tasks as mp

pytestmark = pytest.mark.assets

FACE = (180, 75, 275, 185)  # forehead (hairline) to chin, ear to ear
SUIT = (110, 300, 270, 420)  # orange suit, left of the helmet on her lap
BACKGROUND = (470, 0, 512, 200)  # the wall at the top right, right of the shuttle
ENGINES = ["sporeling", "litert"]


@functools.cache
def engine(kind: str, asset: str):
    path = require(asset)
    if kind == "litert":
        pytest.importorskip("ai_edge_litert")
        return mp.litert_engine(path)
    pytest.importorskip("tflite")
    return mp.sporeling_engine(path)


@functools.cache
def photo(name: str) -> np.ndarray:
    return mp.load_photo(require(name))


def test_anchors_follow_the_short_range_layout():
    anchors = mp.ssd_anchors()
    assert anchors.shape == (896, 2)
    # stride 8: a 16x16 grid, 2 anchors per cell, row-major; stride 16: 8x8 cells, 6 anchors each
    np.testing.assert_allclose(anchors[:4], [[1 / 32, 1 / 32]] * 2 + [[3 / 32, 1 / 32]] * 2)
    np.testing.assert_allclose(anchors[512:518], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])


@pytest.mark.parametrize("kind", ENGINES)
def test_face_detector_finds_the_astronauts_face(kind):
    score, box = mp.detect_face(engine(kind, "mp_face_detection"), photo("img_astronaut"))
    assert score > 0.9
    assert mp.iou(box, FACE) > 0.6, box


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("name", ["img_brick", "img_grass"])
def test_face_detector_scores_no_face_low(kind, name):
    score, _ = mp.detect_face(engine(kind, "mp_face_detection"), photo(name))
    assert score < 0.5


@pytest.mark.parametrize("kind", ENGINES)
def test_face_landmarks_on_the_face_crop(kind):
    crop = mp.square_around(FACE, 1.5)
    points, presence = mp.face_landmarks(engine(kind, "mp_face_landmark"), photo("img_astronaut"), crop)
    assert presence > 0.9
    assert np.all((points[:, :2] >= 0) & (points[:, :2] <= mp.LANDMARK_SIZE))
    # Back in the photo's pixels, the points outline her face: nearly all inside the face region
    # (a few pixels of slack), and spread over most of it rather than bunched in one spot.
    xy = crop[:2] + points[:, :2] * (crop[2] - crop[0]) / mp.LANDMARK_SIZE
    inside = (xy[:, 0] > FACE[0] - 8) & (xy[:, 0] < FACE[2] + 8) & (xy[:, 1] > FACE[1] - 8) & (xy[:, 1] < FACE[3] + 8)
    assert inside.mean() > 0.95
    assert np.ptp(xy[:, 0]) > 0.6 * (FACE[2] - FACE[0]) and np.ptp(xy[:, 1]) > 0.6 * (FACE[3] - FACE[1])


@pytest.mark.parametrize("kind", ENGINES)
def test_face_landmark_presence_is_low_on_bricks(kind):
    image = photo("img_brick")
    _, presence = mp.face_landmarks(engine(kind, "mp_face_landmark"), image, (0, 0, *image.shape[1::-1]))
    assert presence < 0.1


@pytest.mark.parametrize("kind", ENGINES)
def test_selfie_mask_covers_the_person_and_not_the_background(kind):
    image = photo("img_astronaut")
    mask = mp.selfie_mask(engine(kind, "mp_selfie_segmentation"), image)
    assert mask.min() >= 0 and mask.max() <= 1
    assert mp.region_mean(mask, image.shape, FACE) > 0.9
    assert mp.region_mean(mask, image.shape, SUIT) > 0.9
    assert mp.region_mean(mask, image.shape, BACKGROUND) < 0.1


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("name", ["img_brick", "img_rocket"])
def test_selfie_mask_is_empty_without_a_person(kind, name):
    assert mp.selfie_mask(engine(kind, "mp_selfie_segmentation"), photo(name)).mean() < 0.05


@pytest.mark.parametrize("asset,left", [("mp_face_detection", 5), ("mp_face_landmark", 3),
                                        ("mp_selfie_segmentation", 2)])
def test_layout_pass_leaves_only_the_boundary_transposes(asset, left):
    # What must stay: the one after the NHWC input, the ones before each NHWC output, and (BlazeFace)
    # the ones before the Reshapes that flatten the NHWC heads into [1,896,k].
    pytest.importorskip("tflite")
    from sporeling.frontends.tflite import load_tflite
    from sporeling.passes import layout

    graph = load_tflite(require(asset))
    before = sporeling.Model(load_tflite(require(asset)), threads=1)
    assert sum(n.op_type == "Transpose" for n in graph.nodes) > 50
    layout.run(graph)
    assert sum(n.op_type == "Transpose" for n in graph.nodes) == left
    name = graph.inputs[0].name
    x = np.random.default_rng(0).random([int(d) for d in graph.inputs[0].shape]).astype(np.float32)
    want, got = before.run({name: x}), sporeling.Model(graph, threads=1).run({name: x})
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)

"""Real inputs and task checks for the real models of ../shared/ASSETS.md, for judging a changed model
(compressed, quantized) against its float self.

case(name) gives a Case: a few real inputs for the model (named feeds, in order), whether outputs feed
back into the next input (Silero's recurrent state, streamed chunk after chunk with each engine
carrying its own), and a task check that turns the outputs of all inputs into task figures, given the
float model's outputs on the same inputs. The preprocessing is the one the tests already trust:
PP-OCR's (det_input / line_input) and Silero's audio (audio_frames) from tests/test_real_models.py,
MediaPipe's from tests/tflite/mediapipe_tasks.py, imported rather than copied so they cannot drift.

- ppocr_det: skimage photos; text-mask IoU (DB threshold 0.3) with the float mask.
- ppocr_rec: rendered lines (sporeling.demo's renderer) whose text is the label, and two lines cropped
  from skimage's page; text accuracy on the rendered ones, agreement with the float reading on all.
- ppocr_cls: line crops and rendered lines, upright (label 0) and turned 180 degrees (label 1).
- silero_vad: a synthetic voiced signal in 512-sample chunks, streamed; speech-probability difference.
- mp_face_detection: photos letterboxed to 128; the astronaut's face score and box IoU with float's.
- mp_face_landmark: crops around the astronaut's face; mean landmark distance to float's, in pixels.
- mp_selfie_segmentation: photos at 256; person-mask IoU (threshold 0.5) with float's.

For the detector and the segmenter the photos are ones on which the float model finds something: on
a photo with nothing to find their output is ~1e-7 everywhere, and a cosine between two such maps
measures rounding noise, not the model (PP-OCR det on skimage's text.png, whose float map peaks at
5e-7: cosine 0.53 at 8 bits). The task figures are the check that matters there.
- fmnist_cnn: the conv32-conv64-fc128 CNN trained by sporeling itself on Fashion-MNIST (FMNIST_RECIPE,
  cached after the first run trains it); 5 batches of 100 test images, test accuracy against the labels.
- bench models (mobilenetv2, resnet18: photos at 224, top-1 agreement; tinybert: seeded token ids).

Metrics whose name ends in "acc" are accuracies against labels (fractions); the others compare with
the float model. Only numpy, Pillow and what the tests import are needed.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from sporeling.assets import asset_path, cache_dir  # noqa: E402
from sporeling.demo import charset_of, ctc_decode, render_text  # noqa: E402
from tests.test_real_models import (BODY_LINE, SAMPLE_RATE, STATE_FEEDBACK, TITLE_LINE, audio_frames,  # noqa: E402
                                    det_input, line_input)
from tests.tflite import mediapipe_tasks as mp  # noqa: E402

Feeds = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]
Engine = Callable[[Feeds], Outputs]

TRAINED = ["ppocr_det", "ppocr_rec", "ppocr_cls", "silero_vad", "mp_face_detection", "mp_face_landmark",
           "mp_selfie_segmentation", "fmnist_cnn"]
FMNIST_RECIPE = ["zoo:cnn", "--epochs", "3", "--batch", "64", "--optimizer", "adam", "--lr", "0.001",
                 "--schedule", "cosine", "--seed", "0", "--threads", "2", "--quiet"]
FMNIST_FILE = "fmnist_cnn-v1.spore"  # bump with the recipe
BENCH = ["mobilenetv2", "resnet18", "tinybert"]  # seeded random weights (benchmarks/models.py)
FACE = (180, 75, 275, 185)  # the astronaut's face in the 512x512 photo (tests/tflite/test_mediapipe_tasks.py)
REC_TEXTS = ["Hello World 2024", "The quick brown fox", "sporeling 0.1.0", "Invoice 4821 total 37.50",
             "COMPRESSION RATIO", "data-free weights"]


@dataclass
class Case:
    name: str
    path: str
    inputs: list[tuple[str, Feeds]]  # (label, feeds), run in this order
    task: Callable[[list[Outputs], list[Outputs]], dict[str, float]] | None = None  # (outputs, float outputs)
    feedback: dict[str, str] = field(default_factory=dict)  # output -> the input it becomes for the next one


def _fmnist_folder() -> str | None:
    path = asset_path("fmnist_test_images")
    return None if path is None or asset_path("fmnist_train_images") is None else os.path.dirname(path)


def fmnist_cnn_path(train: bool = True) -> str | None:
    """The Fashion-MNIST CNN sporeling trains (FMNIST_RECIPE, a few minutes on 2 cores), trained on first use."""
    path = os.path.join(cache_dir(), "trained", FMNIST_FILE)
    if os.path.exists(path) or not train:
        return path if os.path.exists(path) else None
    folder = _fmnist_folder()
    if folder is None:
        return None
    from sporeling.cli import main as cli

    os.makedirs(os.path.dirname(path), exist_ok=True)
    print(f"training the Fashion-MNIST CNN once into {path} ...", file=sys.stderr)
    if cli(["train", *FMNIST_RECIPE, "--data", folder, "-o", path]) != 0:
        raise RuntimeError("training the Fashion-MNIST CNN failed")
    return path


def model_path(name: str) -> str | None:
    """The cached file of a real model or a bench model, or None when it is not there."""
    if name == "fmnist_cnn":
        return fmnist_cnn_path(train=_fmnist_folder() is not None)
    if name in BENCH:
        found = sorted(glob.glob(os.path.join(cache_dir(), "bench", f"{name}-*.onnx")))
        return found[-1] if found else None
    return asset_path(name)


@functools.cache
def photo(name: str) -> np.ndarray:
    """An skimage photo as RGB uint8."""
    path = asset_path("img_" + name)
    if path is None:
        raise FileNotFoundError(f"photo img_{name} is not cached: run scripts/fetch_assets.py skimage")
    return mp.load_photo(path)


def run_case(case: Case, engine: Engine) -> list[Outputs]:
    """The engine's outputs for every input of the case, states carried from one input to the next."""
    outs, carried = [], {}
    for _, feeds in case.inputs:
        got = {k: np.asarray(v) for k, v in engine({**feeds, **carried}).items()}
        carried = {inp: got[out] for out, inp in case.feedback.items() if out in got}
        outs.append(got)
    return outs


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def output_cosines(outs: list[Outputs], ref: list[Outputs]) -> dict[str, dict[str, float]]:
    """Per output: cosine to float, mean and min over inputs. Outputs of fewer than 8 values (a speech
    probability, two class scores) say little one input at a time, so for them the values of all
    inputs are joined into one vector and its single cosine is both mean and min."""
    result = {}
    for name in ref[0]:
        if ref[0][name].size < 8:
            c = cosine(np.concatenate([r[name].ravel() for r in ref]), np.concatenate([o[name].ravel() for o in outs]))
            result[name] = {"mean": c, "min": c, "joined": True}
        else:
            cs = [cosine(r[name], o[name]) for r, o in zip(ref, outs)]
            result[name] = {"mean": float(np.mean(cs)), "min": float(np.min(cs)), "per_input": cs}
    return result


def _first(o: Outputs) -> np.ndarray:
    return next(iter(o.values()))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = np.logical_or(a, b).sum()
    return None if union == 0 else float(np.logical_and(a, b).sum() / union)


def _mean_iou(outs, ref, threshold: float, pick=_first) -> float:
    ious = [_mask_iou(pick(o) > threshold, pick(r) > threshold) for o, r in zip(outs, ref)]
    ious = [x for x in ious if x is not None]
    return float(np.mean(ious)) if ious else 1.0


# ---- PP-OCR ----

def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _ppocr_det(path: str, quick: bool) -> Case:
    names = ["page", "coffee", "clock_motion"] if quick else ["page", "coffee", "clock_motion", "rocket", "cell",
                                                              "horse"]
    inputs = [(n, {"x": det_input(_bgr(photo(n)))}) for n in names]
    return Case("ppocr_det", path, inputs, lambda o, r: {"text-mask IoU": _mean_iou(o, r, 0.3)})


def _ppocr_rec(path: str, quick: bool) -> Case:
    import sporeling

    charset = charset_of(sporeling.load(path))
    texts = REC_TEXTS[:3] if quick else REC_TEXTS
    inputs = [(t, {"x": line_input(_bgr(render_text(t)), 48, 320)}) for t in texts]
    page = _bgr(photo("page"))
    inputs += [("page title", {"x": line_input(page[TITLE_LINE], 48, 320)})]
    if not quick:
        inputs += [("page body", {"x": line_input(page[BODY_LINE], 48, 800, pad=False)})]

    def task(outs, ref):
        read = [ctc_decode(_first(o)[0], charset)[0] for o in outs]
        base = [ctc_decode(_first(r)[0], charset)[0] for r in ref]
        # a leading or trailing space read from the white margin is not a misreading
        return {"text acc": float(np.mean([a.strip() == t for a, t in zip(read, texts)])),
                "same text as float": float(np.mean([a == b for a, b in zip(read, base)]))}

    return Case("ppocr_rec", path, inputs, task)


def _ppocr_cls(path: str, quick: bool) -> Case:
    page = _bgr(photo("page"))
    lines = [("title", page[TITLE_LINE]), ("body", page[BODY_LINE])]
    texts = REC_TEXTS[:1] if quick else REC_TEXTS[:2]
    lines += [(t, _bgr(render_text(t))) for t in texts]
    inputs, labels = [], []
    for label, line in lines:
        for flipped in (0, 1):
            crop = np.ascontiguousarray(line[::-1, ::-1]) if flipped else line
            inputs.append((f"{label} {180 * flipped}", {"x": line_input(crop, 48, 192)}))
            labels.append(flipped)

    def task(outs, ref):
        return {"orientation acc": float(np.mean([int(np.argmax(_first(o))) == y for o, y in zip(outs, labels)]))}

    return Case("ppocr_cls", path, inputs, task)


# ---- Silero VAD ----

def _silero(path: str, quick: bool) -> Case:
    frames = audio_frames(8 if quick else 16)
    first = {"input": frames[:1], "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(SAMPLE_RATE, np.int64)}
    inputs = [("chunk 0", first)] + [(f"chunk {i}", {"input": frames[i:i + 1], "sr": first["sr"]})
                                     for i in range(1, len(frames))]

    def task(outs, ref):
        p, q = (np.array([float(x["output"].ravel()[0]) for x in xs]) for xs in (outs, ref))
        return {"speech prob max |d|": float(np.abs(p - q).max()),
                "speech decision (0.5) agrees": float(np.mean((p > 0.5) == (q > 0.5)))}

    feedback = {k: v for k, v in STATE_FEEDBACK.items() if k == "stateN"}
    return Case("silero_vad", path, inputs, task, feedback)


# ---- MediaPipe ----

def _face_detection(path: str, quick: bool) -> Case:
    names = ["astronaut", "brick", "coffee"] if quick else ["astronaut", "brick", "coffee", "chelsea", "camera",
                                                            "motorcycle_left", "rocket"]
    inputs = [(n, {"input": mp.to_tensor(mp.letterbox(photo(n))[0], mp.DETECTION_SIZE, -1.0, 1.0)}) for n in names]

    def best(o: Outputs):
        regressors = next(v for v in o.values() if v.shape[-1] == 16)
        classificators = next(v for v in o.values() if v.shape[-1] == 1)
        scores, boxes = mp.decode_faces(regressors, classificators)
        i = int(np.argmax(scores))
        return float(scores[i]), boxes[i]

    def task(outs, ref):  # the astronaut is input 0; letterboxing keeps IoU, so normalised boxes do
        (score, box), (_, float_box) = best(outs[0]), best(ref[0])
        return {"astronaut face score": score, "box IoU": float(mp.iou(box, float_box))}

    return Case("mp_face_detection", path, inputs, task)


def _face_landmark(path: str, quick: bool) -> Case:
    image = photo("astronaut")
    mirrored = np.ascontiguousarray(image[:, ::-1])
    mirror_face = (512 - FACE[2], FACE[1], 512 - FACE[0], FACE[3])
    crops = [("x1.5", image, FACE, 1.5), ("x1.3", image, FACE, 1.3), ("mirrored x1.5", mirrored, mirror_face, 1.5)]
    if not quick:
        shifted = (FACE[0] + 12, FACE[1] - 8, FACE[2] + 12, FACE[3] - 8)
        crops += [("x1.8", image, FACE, 1.8), ("shifted x1.5", image, shifted, 1.5)]
    inputs = []
    for label, img, box, scale in crops:
        patch = np.asarray(Image.fromarray(img).crop(mp.square_around(box, scale)))
        inputs.append((label, {"input_1": mp.to_tensor(patch, mp.LANDMARK_SIZE, 0.0, 1.0)}))

    def points(o: Outputs) -> np.ndarray:
        return next(v for v in o.values() if v.size == 468 * 3).reshape(468, 3)[:, :2]

    def task(outs, ref):
        d = [np.linalg.norm(points(o) - points(r), axis=1).mean() for o, r in zip(outs, ref)]
        return {"landmark dist px": float(np.mean(d))}

    return Case("mp_face_landmark", path, inputs, task)


def _selfie(path: str, quick: bool) -> Case:
    names = ["astronaut", "camera", "coffee"] if quick else ["astronaut", "camera", "coffee", "chelsea",
                                                             "motorcycle_left", "logo"]
    inputs = [(n, {"input_1": mp.to_tensor(photo(n), mp.SELFIE_SIZE, 0.0, 1.0)}) for n in names]
    return Case("mp_selfie_segmentation", path, inputs, lambda o, r: {"mask IoU": _mean_iou(o, r, 0.5)})


# ---- trained here ----

def _fmnist(path: str, quick: bool) -> Case:
    from sporeling.train.data import load_idx_dataset, to_nchw_float

    images, labels = load_idx_dataset(_fmnist_folder(), "test")
    batches = 2 if quick else 5
    x = to_nchw_float(images[:100 * batches])
    inputs = [(f"test {100 * i}-{100 * i + 99}", {"input": x[100 * i:100 * (i + 1)]}) for i in range(batches)]
    y = labels[:100 * batches].astype(np.int64)

    def task(outs, ref):
        pred = np.concatenate([_first(o).argmax(axis=1) for o in outs])
        return {"test acc": float(np.mean(pred == y[:len(pred)]))}

    return Case("fmnist_cnn", path, inputs, task)


# ---- bench models (random weights) ----

def _imagenet(name: str, quick: bool) -> Case:
    names = ["astronaut", "coffee", "chelsea"] if quick else ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    inputs = []
    for n in names:
        x = mp.to_tensor(photo(n), 224, 0.0, 1.0)[0]
        inputs.append((n, {"input": ((x - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)}))

    def task(outs, ref):
        return {"top-1 same as float": float(np.mean([np.argmax(_first(o)) == np.argmax(_first(r))
                                                      for o, r in zip(outs, ref)]))}

    return Case(name, model_path(name), inputs, task)


def _tinybert(quick: bool) -> Case:
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(2 if quick else 4):
        mask = np.ones((1, 128), np.int64)
        mask[0, 96 + 8 * i:] = 0  # some padding, as a real batch would have
        inputs.append((f"tokens {i}", {"input_ids": rng.integers(0, 30000, (1, 128)).astype(np.int64),
                                       "attention_mask": mask}))
    return Case("tinybert", model_path("tinybert"), inputs)


_BUILDERS = {"ppocr_det": _ppocr_det, "ppocr_rec": _ppocr_rec, "ppocr_cls": _ppocr_cls, "silero_vad": _silero,
             "mp_face_detection": _face_detection, "mp_face_landmark": _face_landmark,
             "mp_selfie_segmentation": _selfie, "fmnist_cnn": _fmnist}


def case(name: str, quick: bool = False) -> Case:
    """The inputs and task check of model `name` (TRAINED or BENCH); FileNotFoundError when it is not cached."""
    path = model_path(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not cached: run scripts/fetch_assets.py (bench models: "
                                "benchmarks/models.py)")
    if name in ("mobilenetv2", "resnet18"):
        return _imagenet(name, quick)
    if name == "tinybert":
        return _tinybert(quick)
    if name not in _BUILDERS:
        raise KeyError(f"no real inputs for {name!r}; known: {', '.join(TRAINED + BENCH)}")
    return _BUILDERS[name](path, quick)

"""Three MediaPipe tasks around their real models, with the pre- and post-processing that mediapipe's
own graph configs (mediapipe/modules/*/…_cpu.pbtxt, mediapipe 0.10) apply, so that a model can be
judged on a photo in any engine.

- Face detection, BlazeFace short range (face_detection.pbtxt + face_detection_short_range.pbtxt):
  the image letterboxed to 128x128 (keep_aspect_ratio, zero border), values in [-1, 1]. Outputs
  `regressors` [1,896,16] and `classificators` [1,896,1] are decoded against SSD anchors (strides
  8,16,16,16; fixed anchor size; anchors per cell 2 at stride 8, 6 at stride 16), scores clipped to
  +-100 then sigmoid, boxes as x/y centre, width, height over a 128 scale (reverse_output_order).
- Face landmarks (face_landmark_side_model_cpu.pbtxt): a face crop at 192x192 in [0, 1]; 468 points
  (x, y, z) in crop pixels, and a face-presence logit that mediapipe passes through a sigmoid.
- Selfie segmentation (selfie_segmentation_cpu.pbtxt): the image stretched to 256x256 in [0, 1];
  the output [1,256,256,1] is already a probability (activation: NONE there).

An engine is any callable taking the NHWC float32 input and returning the model's outputs by name;
outputs are told apart by shape, so engines may name them differently."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

Engine = Callable[[np.ndarray], dict[str, np.ndarray]]

DETECTION_SIZE, LANDMARK_SIZE, SELFIE_SIZE = 128, 192, 256


def load_photo(path: str) -> np.ndarray:
    """An RGB uint8 array, whatever the file's mode (grey, RGBA)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def to_tensor(image: np.ndarray, size: int, lo: float, hi: float) -> np.ndarray:
    """[1,size,size,3] float32, pixel values mapped from [0, 255] to [lo, hi] (bilinear resize)."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.float32)
    return (resized * ((hi - lo) / 255.0) + lo)[None]


def letterbox(image: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """The image centred on a black square, with the square's side and the image's offset in it."""
    h, w, _ = image.shape
    side = max(h, w)
    canvas = np.zeros((side, side, 3), np.uint8)
    oy, ox = (side - h) // 2, (side - w) // 2
    canvas[oy:oy + h, ox:ox + w] = image
    return canvas, side, ox, oy


def ssd_anchors(size: int = DETECTION_SIZE, strides=(8, 16, 16, 16)) -> np.ndarray:
    """Anchor centres [N, 2] (x, y, normalised), in SsdAnchorsCalculator's order: layers of the same
    stride merge, each layer giving two anchors per cell (aspect ratio 1 and the interpolated scale);
    with fixed_anchor_size every anchor is 1x1, so only the centres matter."""
    centres = []
    layer = 0
    while layer < len(strides):
        same = layer
        while same < len(strides) and strides[same] == strides[layer]:
            same += 1
        cells = int(np.ceil(size / strides[layer]))
        per_cell = 2 * (same - layer)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], -1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
        layer = same
    return np.concatenate(centres).astype(np.float32)


def decode_faces(regressors: np.ndarray, classificators: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores [896], boxes [896, 4] as normalised xmin, ymin, xmax, ymax)."""
    anchors = ssd_anchors()
    raw = regressors.reshape(len(anchors), 16)
    scores = 1.0 / (1.0 + np.exp(-np.clip(classificators.reshape(-1).astype(np.float64), -100.0, 100.0)))
    cx = raw[:, 0] / DETECTION_SIZE + anchors[:, 0]
    cy = raw[:, 1] / DETECTION_SIZE + anchors[:, 1]
    w, h = raw[:, 2] / DETECTION_SIZE, raw[:, 3] / DETECTION_SIZE
    return scores, np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def detect_face(engine: Engine, image: np.ndarray) -> tuple[float, np.ndarray]:
    """The best face score and its box (xmin, ymin, xmax, ymax) in the image's pixels."""
    square, side, ox, oy = letterbox(image)
    outs = list(engine(to_tensor(square, DETECTION_SIZE, -1.0, 1.0)).values())
    regressors = next(o for o in outs if o.shape[-1] == 16)
    classificators = next(o for o in outs if o.shape[-1] == 1)
    scores, boxes = decode_faces(regressors, classificators)
    best = int(np.argmax(scores))
    return float(scores[best]), boxes[best] * side - np.array([ox, oy, ox, oy])


def square_around(box, scale: float) -> tuple[int, int, int, int]:
    """A square crop (left, top, right, bottom) centred on box, its side scale times the box's longer
    side, as mediapipe enlarges a detection into a landmark ROI (here without the rotation)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = scale * max(box[2] - box[0], box[3] - box[1]) / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def face_landmarks(engine: Engine, image: np.ndarray, crop) -> tuple[np.ndarray, float]:
    """(points [468, 3] in the crop's 192x192 pixels, face-presence probability)."""
    patch = np.asarray(Image.fromarray(image).crop(tuple(crop)))
    outs = list(engine(to_tensor(patch, LANDMARK_SIZE, 0.0, 1.0)).values())
    points = next(o for o in outs if o.size == 468 * 3).reshape(468, 3)
    flag = next(o for o in outs if o.size == 1)
    return points, float(1.0 / (1.0 + np.exp(-float(flag.reshape(-1)[0]))))


def selfie_mask(engine: Engine, image: np.ndarray) -> np.ndarray:
    """Person probability [256, 256] over the image stretched to the model's square input."""
    (mask,) = engine(to_tensor(image, SELFIE_SIZE, 0.0, 1.0)).values()
    return mask.reshape(SELFIE_SIZE, SELFIE_SIZE)


def region_mean(mask: np.ndarray, image_shape, box) -> float:
    """Mean of a [256,256] mask over box (left, top, right, bottom), given in the image's pixels."""
    h, w = image_shape[:2]
    x0, y0, x1, y1 = box
    sx, sy = mask.shape[1] / w, mask.shape[0] / h
    return float(mask[int(y0 * sy):int(np.ceil(y1 * sy)), int(x0 * sx):int(np.ceil(x1 * sx))].mean())


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---- engines ----

def litert_engine(path: str, threads: int = 1) -> Engine:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return {d["name"]: interpreter.get_tensor(d["index"]).copy() for d in outputs}

    return run


def sporeling_engine(path: str, optimize: bool = True, threads: int = 1) -> Engine:
    import sporeling

    model = sporeling.load(path, threads=threads, optimize=optimize)
    (name,) = [spec.name for spec in model.inputs]
    return lambda x: model.run({name: x})

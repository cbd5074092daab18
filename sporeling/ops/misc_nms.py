"""NonMaxSuppression.

For each (batch, class): drop boxes whose score is not above score_threshold (when given), order
the rest by score (ties keep the lower box index first), then repeatedly keep the best remaining box
and discard every remaining box whose IoU with it exceeds iou_threshold, until
max_output_boxes_per_class boxes are kept. The loop runs once per kept box; each pass compares the
kept box with all remaining candidates at once.

Boxes are [y1, x1, y2, x2] with the two corners in either order (center_point_box=0), or
[x_center, y_center, width, height] (center_point_box=1). A box of zero area has IoU 0 with
everything. The output is [k, 3] int64 rows (batch, class, box), in batch, class, selection order,
so its length depends on the data and there is no infer function.
"""

from __future__ import annotations

import numpy as np

from .registry import register_op


def _corners(boxes: np.ndarray, center_point_box: int) -> tuple[np.ndarray, ...]:
    """(y_min, x_min, y_max, x_max) of every box."""
    if center_point_box:
        xc, yc, w, h = (boxes[..., k] for k in range(4))
        return yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2
    y1, x1, y2, x2 = (boxes[..., k] for k in range(4))
    return np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)


def _scalar(x, default, kind=float):
    return default if x is None or np.asarray(x).size == 0 else kind(np.asarray(x).reshape(-1)[0])


@register_op("NonMaxSuppression", since=10)
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None, score_threshold=None,
                        *, center_point_box: int = 0):
    max_out = _scalar(max_output_boxes_per_class, 0, int)
    iou_thr = _scalar(iou_threshold, 0.0)
    score_thr = _scalar(score_threshold, None)
    n_batch, n_class, n_box = scores.shape
    ymin, xmin, ymax, xmax = _corners(boxes, center_point_box)
    area = (ymax - ymin) * (xmax - xmin)
    selected: list[tuple[int, int, int]] = []
    if max_out <= 0:
        return np.zeros((0, 3), np.int64)
    for b in range(n_batch):
        for c in range(n_class):
            s = scores[b, c]
            cand = np.arange(n_box) if score_thr is None else np.flatnonzero(s > score_thr)
            cand = cand[np.argsort(-s[cand], kind="stable")]
            kept = 0
            while cand.size and kept < max_out:
                best, rest = cand[0], cand[1:]
                selected.append((b, c, int(best)))
                kept += 1
                ih = np.minimum(ymax[b, best], ymax[b, rest]) - np.maximum(ymin[b, best], ymin[b, rest])
                iw = np.minimum(xmax[b, best], xmax[b, rest]) - np.maximum(xmin[b, best], xmin[b, rest])
                inter = np.clip(ih, 0, None) * np.clip(iw, 0, None)
                union = area[b, best] + area[b, rest] - inter
                valid = (area[b, best] > 0) & (area[b, rest] > 0) & (union > 0)
                iou = np.where(valid, inter / np.where(union > 0, union, 1), 0)
                cand = rest[iou <= iou_thr]
    return np.array(selected, np.int64).reshape(-1, 3)

"""Classification losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both take scores [N, C, d1, ...] and integer targets [N, d1, ...]. The per-element loss is
-score[n, target, d...] * weight[target]; elements whose target equals ignore_index contribute
neither loss nor weight (their target may lie outside [0, C), so it is replaced by 0 before the
gather). 'mean' divides the summed loss by the summed weights of the elements that count, which is
their number when there are no weights. float16 inputs are reduced in float32.
"""

from __future__ import annotations

import numpy as np

from .infer import known
from .registry import register_op


def _loss_info(ins, *, reduction: str = "mean", **_attrs):
    x, t = ins[0], ins[1]
    if x is None or t is None or not known(x, t):
        return None
    return [(x.dtype, t.shape if reduction == "none" else ()), (x.dtype, x.shape)]


def _nll(log_prob: np.ndarray, target: np.ndarray, weight, ignore_index, reduction: str) -> np.ndarray:
    work = np.dtype(np.float32) if log_prob.dtype == np.float16 else log_prob.dtype
    target = target.astype(np.int64, copy=False)
    ignored = target == ignore_index if ignore_index is not None else np.zeros(target.shape, bool)
    safe = np.where(ignored, 0, target)
    n_classes = log_prob.shape[1]
    if safe.size and (safe.min() < 0 or safe.max() >= n_classes):
        raise IndexError(f"target values must be in [0, {n_classes}) or equal ignore_index")
    picked = np.take_along_axis(log_prob, safe[:, None], axis=1)[:, 0].astype(work, copy=False)
    w = np.ones(target.shape, work) if weight is None else weight.astype(work, copy=False)[safe]
    w = np.where(ignored, work.type(0), w)
    loss = -picked * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum(dtype=work)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):  # every element ignored: 0 / 0 = NaN, as ORT
            return loss.sum(dtype=work) / w.sum(dtype=work)
    raise ValueError(f"unknown reduction '{reduction}'")


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    work = x.astype(np.float32) if x.dtype == np.float16 else x
    shifted = work - work.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _emit(values, dtype, out):
    if out is None:
        return np.asarray(values).astype(dtype, copy=False)
    np.copyto(out, values, casting="unsafe")
    return out


@register_op("NegativeLogLikelihoodLoss", since=12, infer=_loss_info, out=True)
def negative_log_likelihood_loss(input, target, weight=None, *, ignore_index=None, reduction: str = "mean",
                                 out=None):
    return _emit(_nll(input, target, weight, ignore_index, reduction), input.dtype, out)


@register_op("SoftmaxCrossEntropyLoss", since=12, infer=_loss_info, out=True)
def softmax_cross_entropy_loss(scores, labels, weights=None, *, ignore_index=None, reduction: str = "mean",
                               out=None):
    """Returns (loss, log_prob); with a single planned output only the loss is written."""
    log_prob = _log_softmax(scores, axis=1)
    loss = _nll(log_prob, labels, weights, ignore_index, reduction)
    if out is None:
        return _emit(loss, scores.dtype, None), log_prob.astype(scores.dtype, copy=False)
    if not isinstance(out, tuple):
        return _emit(loss, scores.dtype, out)
    _emit(loss, scores.dtype, out[0])
    np.copyto(out[1], log_prob, casting="unsafe")
    return out

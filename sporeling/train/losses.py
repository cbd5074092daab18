"""Losses for training: each gives the mean-reduced loss and its gradient with respect to the prediction.

A Loss is called as loss(pred, target) -> (float, dloss/dpred), the gradient with pred's shape and dtype,
ready to seed the backward pass; value() gives the loss alone. The arithmetic is float32 for float32 (and
float16) predictions and float64 for float64, as PyTorch's. The definitions are torch.nn.functional's with
reduction="mean": cross_entropy (logits with the class axis 1, targets as class indices or as class
probabilities, label smoothing), mse_loss and binary_cross_entropy_with_logits (pos_weight). Both the
softmax and the sigmoid go through the log-sum-exp form, so logits of +-1e4 give finite losses and
gradients. A bad target (wrong shape, a class index out of range or not a whole number, an empty batch) is
a ValueError that says what is wrong. get_loss() turns a name, a Loss or a plain function into the loss
the Trainer calls; accuracy() is the share of argmax predictions that hit their class.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _compute_dtype(pred: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if pred.dtype == np.float64 else np.dtype(np.float32)


def _as_pred(pred, what: str, min_ndim: int = 1) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.dtype.kind != "f":
        raise ValueError(f"{what}: predictions must be floating point, got {pred.dtype}")
    if pred.ndim < min_ndim:
        raise ValueError(f"{what}: predictions need at least {min_ndim} dimensions, got shape {pred.shape}")
    if pred.size == 0:
        raise ValueError(f"{what}: empty batch (predictions of shape {pred.shape})")
    return pred


def _class_indices(target: np.ndarray, n_classes: int, what: str) -> np.ndarray:
    """target as int64 class indices, each checked to lie in [0, n_classes)."""
    if target.dtype.kind == "f":
        if not np.all(np.isfinite(target)) or not np.array_equal(target, np.round(target)):
            bad = target[~(np.isfinite(target) & (target == np.round(target)))].flat[0]
            raise ValueError(f"{what}: class-index targets must be whole numbers, got {bad}")
    elif target.dtype.kind not in "iu":
        raise ValueError(f"{what}: class-index targets must be integers, got {target.dtype}")
    idx = target.astype(np.int64)
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0:
        raise ValueError(f"{what}: negative class index {lo} (classes are 0..{n_classes - 1})")
    if hi >= n_classes:
        raise ValueError(f"{what}: class index {hi} out of range for {n_classes} classes")
    return idx


def _class_target(pred: np.ndarray, target, what: str) -> tuple[np.ndarray, bool]:
    """(target, is_probabilities): class probabilities have pred's shape, class indices pred's without axis 1."""
    target = np.asarray(target)
    index_shape = pred.shape[:1] + pred.shape[2:]
    if target.shape == pred.shape and target.dtype.kind in "fiu":
        return target, True
    if target.shape == index_shape:
        return _class_indices(target, pred.shape[1], what), False
    raise ValueError(f"{what}: target of shape {target.shape} fits neither class indices {index_shape} nor class "
                     f"probabilities {pred.shape} for predictions of shape {pred.shape}")


class Loss:
    """Base: __call__ gives (mean loss, gradient), value() the loss alone."""

    name = "loss"

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        return self._compute(pred, target, True)

    def value(self, pred, target) -> float:
        return self._compute(pred, target, False)[0]

    def config(self) -> dict:
        return {"type": self.name}

    def _compute(self, pred, target, want_grad: bool) -> tuple[float, np.ndarray | None]:
        raise NotImplementedError


class CrossEntropy(Loss):
    """torch.nn.functional.cross_entropy: -sum(t * log_softmax(pred, axis=1)), averaged over the samples
    (and positions, for (N, C, d1, ...)); the target t is one-hot from class indices, or the given class
    probabilities; label smoothing mixes t with the uniform distribution: (1-eps)*t + eps/C."""

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0):
        ls = float(label_smoothing)
        if not 0.0 <= ls <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.label_smoothing = ls

    def config(self) -> dict:
        return {"type": self.name, "label_smoothing": self.label_smoothing}

    def _compute(self, pred, target, want_grad):
        pred = _as_pred(pred, "cross_entropy", min_ndim=2)
        target, probs = _class_target(pred, target, "cross_entropy")
        ct = _compute_dtype(pred)
        x = pred.astype(ct, copy=False)
        n_classes = x.shape[1]
        count = x.size // n_classes  # samples times positions: what the mean divides by
        eps = ct.type(self.label_smoothing)
        z = x - x.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        logp = z - np.log(s)
        if probs:
            t = target.astype(ct)
            if eps:
                t = t * (1 - eps) + eps / n_classes
            loss = -(t * logp).sum() / count
        else:
            idx = np.expand_dims(target, 1)
            nll = -np.take_along_axis(logp, idx, axis=1).sum()
            loss = (1 - eps) * nll - eps / n_classes * logp.sum() if eps else nll
            loss = loss / count
        if not want_grad:
            return float(loss), None
        grad = e / s  # softmax; d/dx of -sum(t log p) is softmax * sum(t) - t
        if probs:
            grad *= t.sum(axis=1, keepdims=True)
            grad -= t
        else:
            if eps:
                grad -= eps / n_classes
            np.put_along_axis(grad, idx, np.take_along_axis(grad, idx, axis=1) - (1 - eps), axis=1)
        grad /= count
        return float(loss), grad.astype(pred.dtype, copy=False)


class MSE(Loss):
    """torch.nn.functional.mse_loss: mean((pred - target)^2). Shapes must match (torch would broadcast)."""

    name = "mse"

    def _compute(self, pred, target, want_grad):
        pred = _as_pred(pred, "mse")
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(f"mse: target shape {target.shape} differs from prediction shape {pred.shape}")
        ct = _compute_dtype(pred)
        diff = pred.astype(ct) - target.astype(ct, copy=False)
        loss = float(np.square(diff).mean())
        if not want_grad:
            return loss, None
        diff *= ct.type(2.0 / diff.size)
        return loss, diff.astype(pred.dtype, copy=False)


class BCEWithLogits(Loss):
    """torch.nn.functional.binary_cross_entropy_with_logits: mean((1-y)*x - w*log_sigmoid(x)), w = 1 + (pw-1)*y
    with pos_weight pw broadcast against the target (so a (C,) pos_weight weighs the last axis' classes)."""

    name = "bce_with_logits"

    def __init__(self, pos_weight=None):
        if pos_weight is not None:
            pos_weight = np.asarray(pos_weight)
            if pos_weight.dtype.kind not in "fiu" or not np.all(np.isfinite(pos_weight)):
                raise ValueError("pos_weight must be finite numbers")
        self.pos_weight = pos_weight

    def config(self) -> dict:
        pw = None if self.pos_weight is None else self.pos_weight.tolist()
        return {"type": self.name, "pos_weight": pw}

    def _compute(self, pred, target, want_grad):
        pred = _as_pred(pred, "bce_with_logits")
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(f"bce_with_logits: target shape {target.shape} differs from prediction shape "
                             f"{pred.shape}")
        ct = _compute_dtype(pred)
        x = pred.astype(ct, copy=False)
        y = target.astype(ct, copy=False)
        pw = None
        if self.pos_weight is not None:
            pw = self.pos_weight.astype(ct)
            try:
                if np.broadcast_shapes(pw.shape, x.shape) != x.shape:
                    raise ValueError
            except ValueError:
                raise ValueError(f"bce_with_logits: pos_weight of shape {pw.shape} does not broadcast to "
                                 f"predictions of shape {x.shape}") from None
        e = np.exp(-np.abs(x))
        log_sigmoid = np.minimum(x, 0) - np.log1p(e)
        weight = 1 if pw is None else (pw - 1) * y + 1
        loss = float(((1 - y) * x - weight * log_sigmoid).mean())
        if not want_grad:
            return loss, None
        r = 1 / (1 + e)
        sigmoid = np.where(x >= 0, r, e * r)
        # torch's arrangement: (pw*y + 1 - y) * sigmoid(x) - pw*y, which is sigmoid(x) - y without pos_weight
        grad = sigmoid - y if pw is None else weight * sigmoid - pw * y
        grad /= x.size
        return loss, grad.astype(pred.dtype, copy=False)


_LOSSES: dict[str, type[Loss]] = {"cross_entropy": CrossEntropy, "ce": CrossEntropy, "mse": MSE,
                                  "bce_with_logits": BCEWithLogits, "bce": BCEWithLogits}


def get_loss(spec) -> Loss | Callable:
    """A Loss from a name ("cross_entropy"/"ce", "mse", "bce_with_logits"/"bce"), a config dict
    ({"type": name, **arguments}, as Loss.config() gives), a Loss (as is), or a callable
    (pred, target) -> (float, grad) (as is)."""
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, dict):
        args = dict(spec)
        name = args.pop("type", None)
    else:
        name, args = spec, {}
    if isinstance(name, str):
        cls = _LOSSES.get(name.lower())
        if cls is None:
            raise ValueError(f"unknown loss {name!r}; known: {', '.join(_LOSSES)}")
        try:
            return cls(**args)
        except TypeError as e:
            raise ValueError(f"bad arguments for loss {name!r}: {e}") from None
    if callable(spec):
        return spec
    raise ValueError(f"a loss is a name ({', '.join(_LOSSES)}), a Loss or a callable, got {spec!r}")


def accuracy(pred, target) -> float:
    """Share of samples (and positions) whose argmax over axis 1 is the target class (the target given as
    class indices, or as class probabilities whose argmax is taken)."""
    pred = _as_pred(pred, "accuracy", min_ndim=2)
    target, probs = _class_target(pred, target, "accuracy")
    if probs:
        target = target.argmax(axis=1)
    return float(np.mean(pred.argmax(axis=1) == target))

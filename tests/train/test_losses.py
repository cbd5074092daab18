"""sporeling.train.losses against torch.nn.functional: loss values and gradients (torch.autograd) within 1e-6
relative in float64 and 1e-5 in float32, finite at logits of +-1e4, and clear errors for bad targets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sporeling.train.losses import MSE, BCEWithLogits, CrossEntropy, Loss, accuracy, get_loss

TOL = {np.float64: 1e-6, np.float32: 1e-5}


def _torch_loss(fn, pred, target):
    x = torch.from_numpy(pred.copy()).requires_grad_(True)
    loss = fn(x, torch.from_numpy(target) if isinstance(target, np.ndarray) else target)
    loss.backward()
    return loss.item(), x.grad.numpy()


def _check(ours, pred, target, torch_fn):
    value, grad = ours(pred, target)
    ref_value, ref_grad = _torch_loss(torch_fn, pred, target)
    tol = TOL[pred.dtype.type]
    assert isinstance(value, float) and value == pytest.approx(ref_value, rel=tol)
    assert grad.shape == pred.shape and grad.dtype == pred.dtype
    np.testing.assert_allclose(grad, ref_grad, rtol=tol, atol=tol * np.abs(ref_grad).max())
    assert ours.value(pred, target) == value
    return value, grad


def _logits(shape, dtype, scale=3.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(16, 10), (4, 5, 6, 7), (3, 4, 9)])
def test_cross_entropy_class_indices(dtype, smoothing, shape):
    pred = _logits(shape, dtype)
    target = np.random.default_rng(1).integers(0, shape[1], shape[:1] + shape[2:])
    _check(CrossEntropy(smoothing), pred, target, lambda x, t: F.cross_entropy(x, t, label_smoothing=smoothing))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(16, 10), (2, 3, 4, 5)])
def test_cross_entropy_class_probabilities(dtype, smoothing, shape):
    pred = _logits(shape, dtype)
    target = np.random.default_rng(1).random(shape).astype(dtype)
    target /= target.sum(axis=1, keepdims=True)
    _check(CrossEntropy(smoothing), pred, target, lambda x, t: F.cross_entropy(x, t, label_smoothing=smoothing))


def test_cross_entropy_by_hand():
    # two classes, logits (0, ln 3): softmax (1/4, 3/4); target 1 -> -ln(3/4); gradient softmax - onehot
    value, grad = CrossEntropy()(np.array([[0.0, np.log(3.0)]]), np.array([1]))
    assert value == pytest.approx(-np.log(0.75))
    np.testing.assert_allclose(grad, [[0.25, -0.25]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse(dtype):
    pred, target = _logits((8, 3, 5), dtype), _logits((8, 3, 5), dtype, seed=2)
    _check(MSE(), pred, target, F.mse_loss)
    assert MSE().value(np.array([1.0, 3.0]), np.array([0.0, 0.0])) == 5.0  # (1 + 9) / 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pos_weight", [None, "vector", "scalar"])
def test_bce_with_logits(dtype, pos_weight):
    pred = _logits((12, 7), dtype)
    target = (np.random.default_rng(3).random((12, 7)) > 0.4).astype(dtype)
    target[0] = 0.3  # soft labels are allowed
    pw = {None: None, "vector": np.linspace(0.5, 4.0, 7).astype(dtype), "scalar": np.array([2.5], dtype)}[pos_weight]
    tpw = None if pw is None else torch.from_numpy(pw)
    _check(BCEWithLogits(pos_weight=pw), pred, target,
           lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=tpw))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_logits_stay_finite(dtype):
    pred = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype)
    for loss, target, fn in [
        (CrossEntropy(0.1), np.array([1, 0]), lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1)),
        (CrossEntropy(), np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype), F.cross_entropy),
        (BCEWithLogits(np.array([3.0, 1.0, 0.5])), np.array([[0, 1, 1], [1, 0, 1]], dtype),
         lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.tensor([3.0, 1.0, 0.5],
                                                                                      dtype=x.dtype))),
    ]:
        value, grad = _check(loss, pred, target, fn)
        assert np.isfinite(value) and np.all(np.isfinite(grad)) and value > 1000  # the wrong classes cost 1e4


def test_float16_predictions_give_float16_gradients():
    pred = _logits((4, 6), np.float16)
    value, grad = CrossEntropy()(pred, np.array([0, 1, 2, 3]))
    assert grad.dtype == np.float16
    ref, _ = CrossEntropy()(pred.astype(np.float32), np.array([0, 1, 2, 3]))
    assert value == ref  # computed in float32 from the same numbers


def test_get_loss():
    assert isinstance(get_loss("cross_entropy"), CrossEntropy) and isinstance(get_loss("CE"), CrossEntropy)
    assert isinstance(get_loss("mse"), MSE)
    assert isinstance(get_loss("bce"), BCEWithLogits) and isinstance(get_loss("bce_with_logits"), BCEWithLogits)
    ce = CrossEntropy(0.3)
    assert get_loss(ce) is ce
    rebuilt = get_loss(ce.config())
    assert isinstance(rebuilt, CrossEntropy) and rebuilt.label_smoothing == 0.3
    bce = get_loss(BCEWithLogits(np.array([1.0, 2.0])).config())
    np.testing.assert_array_equal(bce.pos_weight, [1.0, 2.0])

    def custom(pred, target):
        return 0.0, np.zeros_like(pred)

    assert get_loss(custom) is custom
    with pytest.raises(ValueError, match="unknown loss 'hinge'; known: cross_entropy, ce, mse, bce_with_logits, bce"):
        get_loss("hinge")
    with pytest.raises(ValueError, match="a loss is a name"):
        get_loss(3)
    with pytest.raises(ValueError, match="bad arguments for loss 'mse'"):
        get_loss({"type": "mse", "label_smoothing": 0.1})
    assert issubclass(CrossEntropy, Loss)


def test_accuracy():
    pred = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(pred, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert accuracy(pred, np.array([[0.0, 1.0], [1.0, 0.0], [0.9, 0.1]])) == pytest.approx(2 / 3)
    spatial = np.zeros((1, 3, 2, 2))
    spatial[0, 2] = 1.0  # every position predicts class 2
    assert accuracy(spatial, np.array([[[2, 2], [0, 2]]])) == 0.75


@pytest.mark.parametrize("loss, pred, target, message", [
    (CrossEntropy(), np.zeros((4, 3)), np.array([0, 1, 3, 2]), "class index 3 out of range for 3 classes"),
    (CrossEntropy(), np.zeros((4, 3)), np.array([0, -1, 1, 2]), "negative class index -1"),
    (CrossEntropy(), np.zeros((4, 3)), np.array([0, 1.5, 1, 2]), "must be whole numbers, got 1.5"),
    (CrossEntropy(), np.zeros((4, 3)), np.array([True, False, True, True]), "must be integers, got bool"),
    (CrossEntropy(), np.zeros((4, 3)), np.array([0, 1, 2]), r"target of shape \(3,\) fits neither class indices "
                                                            r"\(4,\) nor class probabilities \(4, 3\)"),
    (CrossEntropy(), np.zeros((0, 3)), np.zeros(0, np.int64), r"empty batch"),
    (CrossEntropy(), np.zeros(3), np.array(1), r"at least 2 dimensions"),
    (CrossEntropy(), np.zeros((2, 3), np.int64), np.array([0, 1]), "must be floating point"),
    (MSE(), np.zeros((4, 3)), np.zeros((4, 1)), r"mse: target shape \(4, 1\) differs from prediction shape"),
    (MSE(), np.zeros((0, 3)), np.zeros((0, 3)), "mse: empty batch"),
    (BCEWithLogits(), np.zeros((4, 3)), np.zeros(4), r"bce_with_logits: target shape \(4,\) differs"),
    (BCEWithLogits(np.ones(4)), np.zeros((4, 3)), np.zeros((4, 3)), r"pos_weight of shape \(4,\) does not broadcast"),
])
def test_bad_inputs(loss, pred, target, message):
    with pytest.raises(ValueError, match=message):
        loss(pred, target)
    with pytest.raises(ValueError, match=message):
        loss.value(pred, target)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        CrossEntropy(1.5)
    with pytest.raises(ValueError, match="pos_weight must be finite numbers"):
        BCEWithLogits(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="class index 5 out of range for 3 classes"):
        accuracy(np.zeros((2, 3)), np.array([0, 5]))

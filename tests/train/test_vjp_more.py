"""Backward rules of sporeling/train/vjp_more.py against torch.autograd, with the harness of
test_vjp_elementwise.py: sporeling's forward kernel makes the node's outputs, torch recomputes them from its
own expression (so the expression is the op), and the rule's input gradients must match torch's gradient of
sum(output * random gradient) in float64 (<= 1e-6) and float32 (<= 1e-4).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import sporeling.train.vjp_more  # noqa: E402,F401  (registers the rules)
from sporeling.errors import SporelingError  # noqa: E402
from sporeling.train.vjp import VJPContext, saved_positions, vjp_for  # noqa: E402
from tests.train.test_vjp_elementwise import _away, _both_precisions, _forward, _n, _pos, check  # noqa: E402

I64 = np.int64


def _ties(*shape, seed=0):
    """Values on a coarse grid, so maxima and minima repeat."""
    return np.round(_n(*shape, seed=seed) * 2) / 2


def _in_unit(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-0.9, 0.9, shape)


def _pad_ref(pads_torch, mode="constant", with_value=False):
    """F.pad; a differentiable fill value enters as value * (mask of the padded positions)."""
    def f(t):
        x = t[0]
        if mode != "constant":
            return F.pad(x, pads_torch, mode=mode)
        y = F.pad(x, pads_torch)
        if with_value:
            y = y + t[2] * F.pad(torch.zeros_like(x), pads_torch, value=1.0)
        return y
    return f


def _cumsum_ref(axis, exclusive=False, reverse=False):
    def f(t):
        x = t[0].flip(axis) if reverse else t[0]
        y = torch.cumsum(x, axis)
        if exclusive:
            y = y - x
        return y.flip(axis) if reverse else y
    return f


def _gather_elements_ref(axis):
    def f(t):
        x, idx = t
        return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))
    return f


def _interp(size=None, scale=None, mode="nearest", align=None):
    return lambda t: F.interpolate(t[0], size=size, scale_factor=scale, mode=mode, align_corners=align)


def _d2s_ref(b, mode):
    """DepthToSpace: CRD is torch's pixel_shuffle; DCR first regroups the channels from (block, depth) to
    (depth, block)."""
    def f(t):
        x = t[0]
        n, c, h, w = x.shape
        if mode == "DCR":
            x = x.reshape(n, b * b, c // (b * b), h, w).transpose(1, 2).reshape(n, c, h, w)
        return F.pixel_shuffle(x, b)
    return f


def _s2d_ref(b):
    """SpaceToDepth: torch's pixel_unshuffle orders the channels (depth, block); ONNX orders them (block, depth)."""
    def f(t):
        y = F.pixel_unshuffle(t[0], b)
        n, cb, h, w = y.shape
        return y.reshape(n, cb // (b * b), b * b, h, w).transpose(1, 2).reshape(n, cb, h, w)
    return f


def _gather_nd_ref(batch_dims=0):
    def f(t):
        x, idx = t
        k = idx.shape[-1]
        batch = math.prod(x.shape[:batch_dims])
        xb = x.reshape((batch,) + tuple(x.shape[batch_dims:]))
        ib = idx.reshape(batch, -1, k)
        picked = xb[(torch.arange(batch)[:, None],) + tuple(ib[..., j] for j in range(k))]
        return picked.reshape(tuple(idx.shape[:-1]) + tuple(x.shape[batch_dims + k:]))
    return f


def _scatter_nd_ref(accumulate=False):
    return lambda t: t[0].index_put(tuple(t[1].unbind(-1)), t[2], accumulate=accumulate)


_F32 = np.array(1, np.float32)
_X4 = _n(2, 3, 4, 5)
_IDX = np.array([[0, 2, -1, 1, 2], [1, 1, 0, -3, 2]], I64)

CASES = {
    # ---- unary ----
    "abs": ("Abs", [_away(3, 4)], {}, 13, lambda t: t[0].abs(), [0]),
    "reciprocal": ("Reciprocal", [_away(3, 4)], {}, 13, lambda t: 1 / t[0], [0]),
    "erf": ("Erf", [_n(3, 4) * 2], {}, 13, lambda t: torch.erf(t[0]), [0]),
    "sin": ("Sin", [_n(3, 4) * 3], {}, 7, lambda t: torch.sin(t[0]), [0]),
    "cos": ("Cos", [_n(3, 4) * 3], {}, 7, lambda t: torch.cos(t[0]), [0]),
    "tan": ("Tan", [_in_unit(3, 4)], {}, 7, lambda t: torch.tan(t[0]), [0]),
    "asin": ("Asin", [_in_unit(3, 4)], {}, 7, lambda t: torch.asin(t[0]), [0]),
    "acos": ("Acos", [_in_unit(3, 4)], {}, 7, lambda t: torch.acos(t[0]), [0]),
    "atan": ("Atan", [_n(3, 4) * 2], {}, 7, lambda t: torch.atan(t[0]), [0]),
    "sinh": ("Sinh", [_n(3, 4)], {}, 9, lambda t: torch.sinh(t[0]), [0]),
    "cosh": ("Cosh", [_n(3, 4)], {}, 9, lambda t: torch.cosh(t[0]), [0]),
    "asinh": ("Asinh", [_n(3, 4) * 2], {}, 9, lambda t: torch.asinh(t[0]), [0]),
    "acosh": ("Acosh", [_pos(3, 4) + 1], {}, 9, lambda t: torch.acosh(t[0]), [0]),
    "atanh": ("Atanh", [_in_unit(3, 4)], {}, 9, lambda t: torch.atanh(t[0]), [0]),
    "softplus": ("Softplus", [_n(3, 4) * 4], {}, 1, lambda t: F.softplus(t[0]), [0]),
    "softsign": ("Softsign", [_n(3, 4) * 2], {}, 1, lambda t: F.softsign(t[0]), [0]),
    "elu_default": ("Elu", [_away(3, 4)], {}, 6, lambda t: F.elu(t[0]), [0]),
    "elu_alpha": ("Elu", [_away(3, 4)], {"alpha": 0.4}, 6, lambda t: F.elu(t[0], 0.4), [0]),
    "selu": ("Selu", [_away(3, 4)], {}, 6, lambda t: F.selu(t[0]), [0]),
    "selu_attrs": ("Selu", [_away(3, 4)], {"alpha": 1.5, "gamma": 0.8}, 6,
                   lambda t: 0.8 * torch.where(t[0] > 0, t[0], 1.5 * torch.expm1(t[0])), [0]),
    "celu": ("Celu", [_away(3, 4)], {"alpha": 0.7}, 12, lambda t: F.celu(t[0], 0.7), [0]),
    "thresholded_relu": ("ThresholdedRelu", [_n(3, 4) * 2], {"alpha": 0.5}, 10,
                         lambda t: F.threshold(t[0], 0.5, 0.0), [0]),
    "floor": ("Floor", [_n(3, 4) * 3], {}, 13, lambda t: torch.floor(t[0]), [0]),
    "ceil": ("Ceil", [_n(3, 4) * 3], {}, 13, lambda t: torch.ceil(t[0]), [0]),
    "round": ("Round", [_n(3, 4) * 3], {}, 11, lambda t: torch.round(t[0]), [0]),
    "sign": ("Sign", [_n(3, 4)], {}, 13, lambda t: torch.sign(t[0]), [0]),
    "prelu_channel": ("PRelu", [_away(2, 3, 4, 5), _n(3, 1, 1, seed=2)], {}, 16,
                      lambda t: torch.where(t[0] > 0, t[0], t[1] * t[0]), [0, 1]),
    "prelu_scalar_slope": ("PRelu", [_away(3, 4), np.array([0.2])], {}, 16,
                           lambda t: torch.where(t[0] > 0, t[0], t[1] * t[0]), [0, 1]),
    "cast_down": ("Cast", [_n(3, 4)], {"to": 1}, 19, lambda t: t[0].float(), [0]),
    "cast_like": ("CastLike", [_n(3, 4), _F32], {}, 19, lambda t: t[0].float(), [0]),
    # ---- variadic and broadcasting ----
    "sum_bcast": ("Sum", [_n(2, 3, 4), _n(3, 1, seed=2), _n(4, seed=3)], {}, 13,
                  lambda t: t[0] + t[1] + t[2], [0, 1, 2]),
    "sum_one": ("Sum", [_n(2, 3)], {}, 13, lambda t: t[0] * 1, [0]),
    "mean_bcast": ("Mean", [_n(2, 3, 4), _n(1, 4, seed=2)], {}, 13, lambda t: (t[0] + t[1]) / 2, [0, 1]),
    "max_three": ("Max", [_n(2, 3, 4), _n(3, 1, seed=2), _n(4, seed=3)], {}, 13,
                  lambda t: torch.maximum(torch.maximum(t[0], t[1]), t[2]), [0, 1, 2]),
    "max_ties": ("Max", [_ties(4, 5), _ties(4, 5, seed=2)], {}, 13, lambda t: torch.maximum(t[0], t[1]), [0, 1]),
    "min_ties_bcast": ("Min", [_ties(4, 5), _ties(5, seed=2)], {}, 13, lambda t: torch.minimum(t[0], t[1]), [0, 1]),
    "where_bcast": ("Where", [_n(3, 1) > 0, _n(3, 4, seed=2), _n(4, seed=3)], {}, 16,
                    lambda t: torch.where(t[0], t[1], t[2]), [1, 2]),
    "expand_rank_up": ("Expand", [_n(3, 1), np.array([2, 3, 4], I64)], {}, 13,
                       lambda t: t[0].expand(2, 3, 4), [0]),
    "expand_shape_smaller": ("Expand", [_n(2, 1, 4), np.array([3, 1], I64)], {}, 13,
                             lambda t: torch.broadcast_to(t[0], (2, 3, 4)), [0]),
    "tile": ("Tile", [_n(2, 3, 1), np.array([2, 1, 3], I64)], {}, 13, lambda t: t[0].repeat(2, 1, 3), [0]),
    "pad_constant": ("Pad", [_X4, np.array([0, 1, 2, 0, 0, 0, 1, 3], I64)], {}, 13,
                     _pad_ref((0, 3, 2, 1, 1, 0)), [0]),
    "pad_negative": ("Pad", [_X4, np.array([0, 0, -1, 2, 0, 0, 1, -2], I64)], {}, 13,
                     _pad_ref((2, -2, -1, 1)), [0]),
    "pad_value_input": ("Pad", [_X4, np.array([0, 0, 1, 1, 0, 0, 2, 0], I64), np.array(0.3)], {}, 13,
                        _pad_ref((1, 0, 1, 2), with_value=True), [0, 2]),
    "pad_axes_input": ("Pad", [_X4, np.array([2, 1, 0, 3], I64), None, np.array([-1, 2], I64)], {}, 18,
                       _pad_ref((2, 0, 1, 3)), [0]),
    "pad_reflect": ("Pad", [_X4, np.array([0, 0, 2, 1, 0, 0, 3, 2], I64)], {"mode": "reflect"}, 13,
                    _pad_ref((1, 2, 2, 3), "reflect"), [0]),
    "pad_edge": ("Pad", [_X4, np.array([0, 0, 3, 1, 0, 0, 2, 4], I64)], {"mode": "edge"}, 13,
                 _pad_ref((1, 4, 3, 2), "replicate"), [0]),
    "pad_wrap": ("Pad", [_X4, np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)], {"mode": "wrap"}, 19,
                 _pad_ref((2, 1, 1, 2), "circular"), [0]),
    "pad_v2_attrs": ("Pad", [_X4], {"pads": [0, 0, 1, 0, 0, 0, 0, 2], "value": 1.5}, 2,
                     lambda t: F.pad(t[0], (0, 2, 1, 0), value=1.5), [0]),
    # ---- reductions ----
    "reducemax_attr": ("ReduceMax", [_ties(3, 4, 5)], {"axes": [1]}, 13, lambda t: t[0].amax(1, keepdim=True), [0]),
    "reducemax_input": ("ReduceMax", [_ties(3, 4, 5), np.array([0, -1], I64)], {"keepdims": 0}, 18,
                        lambda t: t[0].amax((0, 2)), [0]),
    "reducemin_all": ("ReduceMin", [_ties(3, 4)], {"keepdims": 0}, 13, lambda t: t[0].amin(), [0]),
    "reducel2": ("ReduceL2", [np.concatenate([_n(2, 4), np.zeros((1, 4))])], {"axes": [1]}, 13,
                 lambda t: torch.linalg.vector_norm(t[0], dim=1, keepdim=True), [0]),
    "reducel2_input": ("ReduceL2", [_n(2, 3, 4), np.array([1], I64)], {"keepdims": 0}, 18,
                       lambda t: torch.linalg.vector_norm(t[0], dim=1), [0]),
    "reducel1": ("ReduceL1", [_away(3, 4)], {"axes": [0]}, 13, lambda t: t[0].abs().sum(0, keepdim=True), [0]),
    "reducesumsquare": ("ReduceSumSquare", [_n(3, 4)], {"axes": [-1], "keepdims": 0}, 13,
                        lambda t: (t[0] ** 2).sum(-1), [0]),
    "reducelogsumexp": ("ReduceLogSumExp", [_n(3, 4) * 3], {"axes": [1]}, 13,
                        lambda t: torch.logsumexp(t[0], 1, keepdim=True), [0]),
    "reducemax_noop": ("ReduceMax", [_n(3, 4), np.array([], I64)], {"noop_with_empty_axes": 1}, 18,
                       lambda t: t[0] * 1, [0]),
    # ---- index and scan ----
    "gather_elements": ("GatherElements", [_n(3, 5), _IDX], {"axis": 0}, 13, _gather_elements_ref(0), [0]),
    "gather_elements_axis1": ("GatherElements", [_n(2, 4), np.array([[3, 3, 0], [-1, 1, 1]], I64)],
                              {"axis": 1}, 13, _gather_elements_ref(1), [0]),
    "cumsum": ("CumSum", [_n(3, 4), np.array(1, I64)], {}, 14, _cumsum_ref(1), [0]),
    "cumsum_exclusive_reverse": ("CumSum", [_n(3, 4), np.array(-2, I64)], {"exclusive": 1, "reverse": 1}, 14,
                                 _cumsum_ref(0, True, True), [0]),
    "cumsum_exclusive": ("CumSum", [_n(3, 4), np.array(0, I64)], {"exclusive": 1}, 14,
                         _cumsum_ref(0, exclusive=True), [0]),
    # ---- Resize: the modes torch's Upsample/interpolate export ----
    "resize_nearest_x2": ("Resize", [_n(2, 3, 4, 5), None, np.array([1, 1, 2, 2], np.float32)],
                          {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
                          13, _interp(scale=2), [0]),
    "resize_nearest_sizes": ("Resize", [_n(1, 2, 5, 7), None, None, np.array([1, 2, 8, 4], I64)],
                             {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                              "nearest_mode": "floor"}, 13, _interp(size=(8, 4)), [0]),
    "resize_bilinear_half_pixel": ("Resize", [_n(2, 2, 4, 5), None, None, np.array([2, 2, 7, 3], I64)],
                                   {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, 13,
                                   _interp(size=(7, 3), mode="bilinear", align=False), [0]),
    "resize_bilinear_x2": ("Resize", [_n(1, 3, 4, 4), None, np.array([1, 1, 2, 2], np.float32)],
                           {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, 13,
                           _interp(scale=2, mode="bilinear", align=False), [0]),
    "resize_bilinear_align_corners": ("Resize", [_n(1, 2, 5, 4), None, None, np.array([1, 2, 3, 9], I64)],
                                      {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, 13,
                                      _interp(size=(3, 9), mode="bilinear", align=True), [0]),
    "resize_linear_1d": ("Resize", [_n(2, 3, 6), None, None, np.array([2, 3, 10], I64)],
                         {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, 13,
                         _interp(size=(10,), mode="linear", align=False), [0]),
    "upsample_v9_nearest": ("Upsample", [_n(1, 2, 3, 4), np.array([1, 1, 2, 3], np.float32)], {}, 9,
                            _interp(scale=(2, 3)), [0]),
    "upsample_v7_attrs": ("Upsample", [_n(1, 2, 3, 4)], {"scales": [1.0, 1.0, 3.0, 2.0]}, 7,
                          _interp(scale=(3, 2)), [0]),
    "resize_v10_nearest": ("Resize", [_n(1, 2, 3, 4), np.array([1, 1, 2, 2], np.float32)], {}, 10,
                           _interp(scale=2), [0]),
    # ---- Einsum ----
    "einsum_batched_matmul": ("Einsum", [_n(2, 3, 4), _n(2, 4, 5, seed=2)], {"equation": "bij,bjk->bik"}, 12,
                              lambda t: torch.einsum("bij,bjk->bik", *t), [0, 1]),
    "einsum_sum_out": ("Einsum", [_n(3, 4)], {"equation": "ij->i"}, 12, lambda t: t[0].sum(1), [0]),
    "einsum_implicit": ("Einsum", [_n(3, 4), _n(4, 2, seed=2)], {"equation": "ij,jk"}, 12,
                        lambda t: t[0] @ t[1], [0, 1]),
    "einsum_ellipsis_bcast": ("Einsum", [_n(2, 1, 3, 4), _n(5, 4, 2, seed=2)], {"equation": "...ij,...jk->...ik"},
                              12, lambda t: torch.einsum("...ij,...jk->...ik", *t), [0, 1]),
    "einsum_three": ("Einsum", [_n(3, 4), _n(4, seed=2), _n(3, 2, seed=3)], {"equation": "ij,j,ik->k"}, 12,
                     lambda t: torch.einsum("ij,j,ik->k", *t), [0, 1, 2]),
    "einsum_outer_transpose": ("Einsum", [_n(3), _n(4, seed=2)], {"equation": "i,j->ji"}, 12,
                               lambda t: torch.outer(t[1], t[0]), [0, 1]),
    # ---- InstanceNormalization, GlobalMaxPool, DepthToSpace/SpaceToDepth, GatherND, ScatterND ----
    "instance_norm_2d": ("InstanceNormalization", [_n(2, 3, 4, 5) * 2 + 1, _n(3, seed=2), _n(3, seed=3)], {}, 6,
                         lambda t: F.instance_norm(t[0], weight=t[1], bias=t[2], eps=1e-5), [0, 1, 2]),
    "instance_norm_1d_eps": ("InstanceNormalization", [_n(3, 2, 7), _n(2, seed=2), _n(2, seed=3)],
                             {"epsilon": 0.1}, 6,
                             lambda t: F.instance_norm(t[0], weight=t[1], bias=t[2], eps=0.1), [0, 1, 2]),
    "instance_norm_3d": ("InstanceNormalization", [_n(1, 4, 2, 3, 3), _n(4, seed=2), _n(4, seed=3)], {}, 6,
                         lambda t: F.instance_norm(t[0], weight=t[1], bias=t[2], eps=1e-5), [0, 1, 2]),
    "global_maxpool_2d": ("GlobalMaxPool", [_n(2, 3, 4, 5)], {}, 1, lambda t: t[0].amax((2, 3), keepdim=True), [0]),
    "global_maxpool_1d": ("GlobalMaxPool", [_n(3, 2, 9)], {}, 1, lambda t: t[0].amax(2, keepdim=True), [0]),
    "global_maxpool_3d": ("GlobalMaxPool", [_n(1, 2, 3, 2, 4)], {}, 1,
                          lambda t: t[0].amax((2, 3, 4), keepdim=True), [0]),
    "depth_to_space_dcr": ("DepthToSpace", [_n(2, 8, 3, 4)], {"blocksize": 2}, 13, _d2s_ref(2, "DCR"), [0]),
    "depth_to_space_default_mode": ("DepthToSpace", [_n(1, 18, 2, 3)], {"blocksize": 3}, 1, _d2s_ref(3, "DCR"),
                                    [0]),
    "depth_to_space_crd": ("DepthToSpace", [_n(2, 12, 3, 2)], {"blocksize": 2, "mode": "CRD"}, 13,
                           _d2s_ref(2, "CRD"), [0]),
    "depth_to_space_crd_b3": ("DepthToSpace", [_n(1, 18, 2, 2)], {"blocksize": 3, "mode": "CRD"}, 13,
                              _d2s_ref(3, "CRD"), [0]),
    "space_to_depth": ("SpaceToDepth", [_n(2, 3, 4, 6)], {"blocksize": 2}, 13, _s2d_ref(2), [0]),
    "space_to_depth_b3": ("SpaceToDepth", [_n(1, 2, 6, 3)], {"blocksize": 3}, 1, _s2d_ref(3), [0]),
    "gather_nd_elements": ("GatherND", [_n(3, 4), np.array([[0, 1], [2, -1], [0, 1], [1, 0]], I64)], {}, 13,
                           _gather_nd_ref(), [0]),
    "gather_nd_slices": ("GatherND", [_n(3, 4, 5), np.array([[[2], [0]], [[2], [-3]]], I64)], {}, 13,
                         _gather_nd_ref(), [0]),
    "gather_nd_batch1": ("GatherND", [_n(2, 3, 4), np.array([[[1], [1], [2]], [[0], [-1], [2]]], I64)],
                         {"batch_dims": 1}, 12, _gather_nd_ref(1), [0]),
    "gather_nd_batch2": ("GatherND", [_n(2, 3, 4, 5), np.array([[1, 4], [3, -1], [1, 4], [0, 0], [2, 2], [3, 0],
                                                                [1, 1], [1, 1], [0, 3], [2, 2], [3, 4], [-4, 0]],
                                                               I64).reshape(2, 3, 2, 2)],
                         {"batch_dims": 2}, 12, _gather_nd_ref(2), [0]),
    "scatter_nd_elements": ("ScatterND", [_n(3, 4), np.array([[0, 1], [2, -1], [1, 0]], I64), _n(3, seed=2)], {},
                            16, _scatter_nd_ref(), [0, 2]),
    "scatter_nd_slices": ("ScatterND", [_n(4, 3, 2), np.array([[[3], [0]]], I64), _n(1, 2, 3, 2, seed=2)], {}, 16,
                          _scatter_nd_ref(), [0, 2]),
    "scatter_nd_add_repeated": ("ScatterND", [_n(4, 5), np.array([[1], [3], [1]], I64), _n(3, 5, seed=2)],
                                {"reduction": "add"}, 16, _scatter_nd_ref(True), [0, 2]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rule_matches_torch(case):
    op, inputs, attrs, opset, fn, diff = CASES[case]
    _both_precisions(op, inputs, attrs, opset, fn, diff)


def test_cast_to_integers_gives_no_gradient():
    x = _n(3, 4)
    y = _forward("Cast", [x], {"to": 7}, 19)[0]
    assert y.dtype == np.int64
    ctx = VJPContext("Cast", {"to": 7}, [x], [y], [None])
    assert vjp_for("Cast")(ctx) == [None]


def test_ties_share_the_gradient():
    """Tied maxima split the gradient evenly (torch.amax, torch.maximum): a hand-computed case."""
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    y = x.max(axis=1, keepdims=True)
    ctx = VJPContext("ReduceMax", {"axes": [1]}, [x], [y], [np.array([[6.0], [3.0]])], opset=13)
    assert np.array_equal(vjp_for("ReduceMax")(ctx)[0], [[0, 3, 3], [1, 1, 1]])
    a, b = np.array([1.0, 2.0]), np.array([1.0, 0.0])
    ctx = VJPContext("Max", {}, [a, b], [np.maximum(a, b)], [np.array([4.0, 4.0])])
    ga, gb = vjp_for("Max")(ctx)
    assert np.array_equal(ga, [2, 4]) and np.array_equal(gb, [2, 0])


def test_einsum_diagonal_is_refused():
    x = _n(3, 3)
    ctx = VJPContext("Einsum", {"equation": "ii->i"}, [x], [np.diagonal(x).copy()], [np.ones(3)])
    with pytest.raises(SporelingError, match="repeated index"):
        vjp_for("Einsum")(ctx)


def test_resize_nearest_downscale_drops_unread_pixels():
    """Downscaling by 2 with nearest reads every other pixel: the others get exactly zero gradient."""
    x = _n(1, 1, 4, 4)
    sc = np.array([1, 1, 0.5, 0.5], np.float32)
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    y = _forward("Resize", [x, None, sc], attrs, 13)[0]
    g = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    gx = vjp_for("Resize")(VJPContext("Resize", attrs, [x, None, sc], [y], [g], opset=13))[0]
    want = np.zeros((1, 1, 4, 4))
    want[0, 0, ::2, ::2] = g[0, 0]
    assert np.array_equal(gx, want)


def test_every_listed_op_has_a_rule():
    wanted = {"Abs", "Max", "Min", "Sum", "Mean", "Softplus", "Elu", "Selu", "PRelu", "Sin", "Cos", "Reciprocal",
              "Erf", "Expand", "Tile", "Pad", "Where", "Cast", "ReduceMax", "ReduceMin", "ReduceL2", "Resize",
              "Einsum", "InstanceNormalization", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "GatherND",
              "ScatterND"}
    for op in wanted:
        vjp_for(op)
    covered = {c[0] for c in CASES.values()}
    assert wanted <= covered, sorted(wanted - covered)


def test_float32_smoke_keeps_dtype():
    """The float32 pass of check() asserts dtypes; run one op with a float16 input too (the gradient's dtype is
    the input's)."""
    x = _n(3, 4).astype(np.float16)
    y = _forward("Erf", [x], {}, 13)[0]
    gx = vjp_for("Erf")(VJPContext("Erf", {}, [x], [y], [np.ones_like(y)]))[0]
    assert gx.dtype == np.float16
    assert np.allclose(gx, 2 / np.sqrt(np.pi) * np.exp(-x.astype(np.float64) ** 2), rtol=2e-3)


def test_pad_fill_value_checked_by_hand():
    x = np.ones((2, 2))
    pads = np.array([1, 0, 0, 1], I64)
    y = _forward("Pad", [x, pads, np.array(5.0)], {}, 13)[0]
    g = np.arange(9.0).reshape(3, 3)
    got = vjp_for("Pad")(VJPContext("Pad", {}, [x, pads, np.array(5.0)], [y], [g], opset=13))
    # y is 3x3: row 0 and column 2 are fill; x sits at rows 1-2, columns 0-1
    assert np.array_equal(got[0], g[1:, :2]) and float(got[2]) == g[0].sum() + g[1:, 2].sum()
    assert got[1] is None
    check("Pad", [x, pads, np.array(5.0)], {}, 13, _pad_ref((0, 1, 1, 0), with_value=True), [0, 2])


def test_global_maxpool_tie_goes_to_the_first_maximum():
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]]])
    y = _forward("GlobalMaxPool", [x], {}, 1)[0]
    gx = vjp_for("GlobalMaxPool")(VJPContext("GlobalMaxPool", {}, [x], [y], [np.array([5.0, 7.0]).reshape(1, 2, 1, 1)]))
    assert np.array_equal(gx[0], [[[[0, 5], [0, 0]], [[7, 0], [0, 0]]]])


def _scatter_nd_fd(data, idx, upd, g, eps=1e-6):
    """Central differences of sum(ScatterND(data, idx, upd) * g) through sporeling's forward kernel."""
    def loss(d, u):
        return float(np.sum(_forward("ScatterND", [d, idx, u], {}, 16)[0] * g))
    grads = []
    for which in (0, 1):
        base = [data, upd][which]
        out = np.zeros_like(base)
        for pos in np.ndindex(base.shape):
            hi, lo = base.copy(), base.copy()
            hi[pos] += eps
            lo[pos] -= eps
            args = [(hi, upd), (data, hi)][which], [(lo, upd), (data, lo)][which]
            out[pos] = (loss(*args[0]) - loss(*args[1])) / (2 * eps)
        grads.append(out)
    return grads


@pytest.mark.parametrize("idx, dropped", [(np.array([[1], [3], [1], [-3]], I64), 2),  # -3 is row 1 too
                                          (np.array([[[0, 2], [2, 1]], [[0, 2], [0, -3]]], I64), 1)])
def test_scatter_nd_repeated_indices_match_finite_differences(idx, dropped):
    """Repeated index tuples without reduction: torch leaves the kept update undefined, so the reference is
    central differences of sporeling's own forward (the later update overwrites; the earlier one gets none)."""
    data = _n(4, 3)
    upd = _n(*idx.shape[:-1], *data.shape[idx.shape[-1]:], seed=2)
    y = _forward("ScatterND", [data, idx, upd], {}, 16)[0]
    g = _n(*y.shape, seed=3)
    got = vjp_for("ScatterND")(VJPContext("ScatterND", {}, [data, idx, upd], [y], [g.copy()], opset=16))
    want_data, want_upd = _scatter_nd_fd(data, idx, upd, g)
    assert got[1] is None
    assert np.allclose(got[0], want_data, atol=1e-8) and np.allclose(got[2], want_upd, atol=1e-8)
    assert np.count_nonzero(np.all(got[2].reshape(math.prod(idx.shape[:-1]), -1) == 0, axis=1)) == dropped


def test_scatter_nd_multiplicative_reduction_is_refused():
    data, idx, upd = _n(3, 2), np.array([[0], [2]], I64), _n(2, 2, seed=2)
    y = _forward("ScatterND", [data, idx, upd], {"reduction": "mul"}, 16)[0]
    ctx = VJPContext("ScatterND", {"reduction": "mul"}, [data, idx, upd], [y], [np.ones_like(y)], opset=16)
    with pytest.raises(SporelingError, match="reduction 'mul'"):
        vjp_for("ScatterND")(ctx)


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][0] in {
    "InstanceNormalization", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "GatherND", "ScatterND"}])
def test_rules_read_only_their_saved_values(case):
    """Training keeps only the values vjp.SAVES lists: with every other input and output replaced by NaNs of
    the same shape and dtype, the rule's gradients are unchanged."""
    op, inputs, attrs, opset, _, diff = CASES[case]
    outputs = _forward(op, inputs, attrs, opset)
    grads = [_n(*y.shape, seed=4) for y in outputs]
    ins_kept, outs_kept = saved_positions(op, len(inputs), len(outputs))

    def blank(arrays, kept):
        return [a if k in kept or a is None else np.full(a.shape, np.nan, a.dtype) for k, a in enumerate(arrays)]

    full = vjp_for(op)(VJPContext(op, dict(attrs), inputs, outputs, [g.copy() for g in grads], opset=opset))
    lean = vjp_for(op)(VJPContext(op, dict(attrs), blank(inputs, ins_kept), blank(outputs, outs_kept),
                                  [g.copy() for g in grads], opset=opset))
    assert (ins_kept, outs_kept) != (tuple(range(len(inputs))), tuple(range(len(outputs))))
    for i in diff:
        assert np.array_equal(full[i], lean[i]), f"{case}: input {i}'s gradient reads an unsaved value"

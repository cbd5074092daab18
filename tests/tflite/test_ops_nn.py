"""Convolutions, pools, resizes and dense layers, each a one-op model run in LiteRT and in sporeling
(imported as is, and after the graph passes) on seeded random inputs: SAME/VALID padding, strides,
dilations, fused activations, depth multipliers, the three resize coordinate modes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from .common import Feed, check, one_op, rand

SAME, VALID = 0, 1
NONE, RELU, RELU_N1_TO_1, RELU6, TANH = 0, 1, 2, 3, 4


def _out(n: int, k: int, s: int, d: int, padding: int) -> int:
    return -(-n // s) if padding == SAME else (n - (k - 1) * d - 1) // s + 1


@pytest.mark.parametrize("hw, k, stride, dil, padding, act, groups", [
    ((8, 8), (3, 3), (1, 1), (1, 1), SAME, NONE, 1),
    ((8, 8), (3, 3), (2, 2), (1, 1), SAME, RELU, 1),
    ((9, 7), (3, 3), (2, 2), (1, 1), SAME, RELU6, 1),
    ((9, 9), (3, 3), (2, 2), (1, 1), VALID, RELU_N1_TO_1, 1),
    ((10, 10), (3, 3), (1, 1), (2, 2), SAME, TANH, 1),
    ((10, 9), (3, 3), (1, 1), (2, 3), VALID, NONE, 1),
    ((7, 8), (3, 1), (2, 1), (1, 1), SAME, NONE, 1),
    ((6, 6), (1, 1), (1, 1), (1, 1), VALID, NONE, 1),
    ((8, 8), (3, 3), (1, 1), (1, 1), SAME, NONE, 2),
])
def test_conv_2d(hw, k, stride, dil, padding, act, groups):
    cin, cout = 4, 6
    oh, ow = (_out(n, kk, s, d, padding) for n, kk, s, d in zip(hw, k, stride, dil))
    w = rand(cout, *k, cin // groups, seed=1)
    data, feeds = one_op("CONV_2D", [Feed(rand(1, *hw, cin)), w, rand(cout, seed=2)], [(1, oh, ow, cout)],
                         "Conv2DOptions", Padding=padding, StrideH=stride[0], StrideW=stride[1],
                         DilationHFactor=dil[0], DilationWFactor=dil[1], FusedActivationFunction=act)
    check(data, feeds)


def test_fused_tanh_is_ignored_as_litert_does():
    """LiteRT's conv and pool kernels clamp to an activation range, which TANH does not have: the
    output is the plain convolution. Matching LiteRT is the contract; the assert on the range shows
    the case is not vacuous."""
    data, feeds = one_op("CONV_2D", [Feed(rand(1, 5, 5, 3, low=-3, high=3)), rand(2, 3, 3, 3, seed=1),
                                     rand(2, seed=2)], [(1, 5, 5, 2)], "Conv2DOptions", Padding=SAME, StrideH=1,
                         StrideW=1, FusedActivationFunction=TANH)
    ref = check(data, feeds)
    assert np.abs(ref["out0"]).max() > 1.5


@pytest.mark.parametrize("mult, stride, dil, padding, act", [
    (1, 1, 1, SAME, NONE),
    (1, 2, 1, SAME, RELU6),
    (2, 1, 1, VALID, RELU),
    (3, 2, 1, SAME, NONE),
    (1, 1, 2, SAME, TANH),
    (2, 1, 2, VALID, NONE),
])
def test_depthwise_conv_2d(mult, stride, dil, padding, act):
    c, n, k = 3, 9, 3
    o = _out(n, k, stride, dil, padding)
    data, feeds = one_op("DEPTHWISE_CONV_2D", [Feed(rand(1, n, n, c)), rand(1, k, k, c * mult, seed=1),
                                               rand(c * mult, seed=2)], [(1, o, o, c * mult)],
                         "DepthwiseConv2DOptions", Padding=padding, StrideH=stride, StrideW=stride,
                         DepthMultiplier=mult, DilationHFactor=dil, DilationWFactor=dil,
                         FusedActivationFunction=act)
    check(data, feeds)


@pytest.mark.parametrize("n, k, stride, padding, bias", [
    (4, 3, 2, SAME, True), (4, 3, 2, VALID, False), (5, 4, 2, SAME, True), (4, 3, 1, SAME, False),
    (3, 2, 3, VALID, True),
])
def test_transpose_conv(n, k, stride, padding, bias):
    cin, cout = 3, 4
    o = n * stride if padding == SAME else (n - 1) * stride + k
    data, feeds = one_op("TRANSPOSE_CONV", [np.array([1, o, o, cout], np.int32), rand(cout, k, k, cin, seed=1),
                                            Feed(rand(1, n, n, cin)), rand(cout, seed=2) if bias else None],
                         [(1, o, o, cout)], "TransposeConvOptions", Padding=padding, StrideH=stride, StrideW=stride)
    check(data, feeds)


@pytest.mark.parametrize("n, k, stride, padding", [(4, 4, 2, 1), (4, 3, 2, 2), (5, 2, 2, 1)])
def test_mediapipe_convolution_2d_transpose_bias(n, k, stride, padding):
    """MediaPipe's custom op, which LiteRT runs through its XNNPACK delegate."""
    cin, cout = 3, 4
    o = n * stride if padding == 1 else (n - 1) * stride + k
    data, feeds = one_op("custom:Convolution2DTransposeBias", [Feed(rand(1, n, n, cin)),
                                                               rand(cout, k, k, cin, seed=1), rand(cout, seed=2)],
                         [(1, o, o, cout)], custom_options=struct.pack("<3i", padding, stride, stride))
    check(data, feeds)


@pytest.mark.parametrize("op", ["MAX_POOL_2D", "AVERAGE_POOL_2D"])
@pytest.mark.parametrize("n, k, stride, padding, act", [
    (8, 2, 2, VALID, NONE), (9, 3, 2, SAME, NONE), (8, 3, 2, SAME, RELU), (7, 3, 1, VALID, RELU6),
    (6, 3, 3, SAME, NONE),
])
def test_pool_2d(op, n, k, stride, padding, act):
    o = _out(n, k, stride, 1, padding)
    data, feeds = one_op(op, [Feed(rand(1, n, n + 1, 3))], [(1, o, _out(n + 1, k, stride, 1, padding), 3)],
                         "Pool2DOptions", Padding=padding, StrideH=stride, StrideW=stride, FilterHeight=k,
                         FilterWidth=k, FusedActivationFunction=act)
    check(data, feeds)


@pytest.mark.parametrize("op, options", [("RESIZE_BILINEAR", "ResizeBilinearOptions"),
                                         ("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions")])
@pytest.mark.parametrize("align, half", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("src, dst", [((5, 7), (10, 13)), ((8, 8), (5, 3)), ((4, 4), (8, 8)), ((6, 5), (1, 1))])
def test_resize(op, options, align, half, src, dst):
    data, feeds = one_op(op, [Feed(rand(1, *src, 3)), np.array(dst, np.int32)], [(1, *dst, 3)], options,
                         AlignCorners=align, HalfPixelCenters=half)
    check(data, feeds)


@pytest.mark.parametrize("op, options, block, shape, out", [
    ("SPACE_TO_DEPTH", "SpaceToDepthOptions", 2, (1, 4, 6, 3), (1, 2, 3, 12)),
    ("DEPTH_TO_SPACE", "DepthToSpaceOptions", 2, (1, 2, 3, 12), (1, 4, 6, 3)),
])
def test_space_depth(op, options, block, shape, out):
    data, feeds = one_op(op, [Feed(rand(*shape))], [(out, np.float32)], options, BlockSize=block)
    check(data, feeds)


def test_local_response_normalization():
    data, feeds = one_op("LOCAL_RESPONSE_NORMALIZATION", [Feed(rand(1, 3, 3, 8))], [(1, 3, 3, 8)],
                         "LocalResponseNormalizationOptions", Radius=2, Bias=1.5, Alpha=0.3, Beta=0.6)
    check(data, feeds)


@pytest.mark.parametrize("in_shape, n_in, keep, bias, act", [
    ((2, 6), 6, False, True, NONE), ((2, 6), 6, True, False, RELU), ((2, 3, 6), 6, True, True, RELU6),
    ((2, 3, 6), 6, False, True, NONE), ((1, 2, 2, 3), 12, False, False, RELU_N1_TO_1),
])
def test_fully_connected(in_shape, n_in, keep, bias, act):
    """Weights [out, in]; the input is flattened to rows of n_in unless keep_num_dims."""
    n_out = 5
    out = tuple(in_shape[:-1]) + (n_out,) if keep else (int(np.prod(in_shape)) // n_in, n_out)
    data, feeds = one_op("FULLY_CONNECTED", [Feed(rand(*in_shape)), rand(n_out, n_in, seed=1),
                                             rand(n_out, seed=2) if bias else None], [out],
                         "FullyConnectedOptions", KeepNumDims=keep, FusedActivationFunction=act)
    check(data, feeds)


@pytest.mark.parametrize("adj_x, adj_y, const_y", [(False, False, False), (True, False, False), (False, True, True),
                                                   (True, True, False)])
def test_batch_matmul(adj_x, adj_y, const_y):
    a = rand(2, 4, 3) if not adj_x else rand(2, 3, 4)
    b = rand(2, 3, 5, seed=1) if not adj_y else rand(2, 5, 3, seed=1)
    data, feeds = one_op("BATCH_MATMUL", [Feed(a), b if const_y else Feed(b)], [(2, 4, 5)], "BatchMatMulOptions",
                         AdjX=adj_x, AdjY=adj_y)
    check(data, feeds)


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.5])
def test_softmax(beta):
    data, feeds = one_op("SOFTMAX", [Feed(rand(2, 3, 7, low=-4, high=4))], [(2, 3, 7)], "SoftmaxOptions", Beta=beta)
    check(data, feeds)


def test_l2_normalization():
    x = rand(2, 3, 8)
    x[0, 0] = 0.0  # the epsilon keeps an all-zero row at zero
    data, feeds = one_op("L2_NORMALIZATION", [Feed(x)], [(2, 3, 8)], "L2NormOptions")
    check(data, feeds)


@pytest.mark.parametrize("op, options, fields", [
    ("RELU", None, {}), ("RELU6", None, {}), ("RELU_N1_TO_1", None, {}), ("RELU_0_TO_1", None, {}),
    ("LEAKY_RELU", "LeakyReluOptions", {"Alpha": 0.2}), ("ELU", None, {}), ("TANH", None, {}),
    ("LOGISTIC", None, {}), ("HARD_SWISH", None, {}), ("LOG_SOFTMAX", None, {}),
    ("GELU", "GeluOptions", {"Approximate": False}), ("GELU", "GeluOptions", {"Approximate": True}),
])
def test_activation(op, options, fields):
    data, feeds = one_op(op, [Feed(rand(2, 5, 6, low=-7, high=7))], [(2, 5, 6)], options, **fields)
    check(data, feeds)


def test_prelu_broadcasts_alpha_over_channels():
    data, feeds = one_op("PRELU", [Feed(rand(1, 4, 4, 5, low=-3, high=3)), rand(1, 1, 5, seed=1)], [(1, 4, 4, 5)])
    check(data, feeds)

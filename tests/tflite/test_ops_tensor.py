"""Elementwise math, reductions and data movement: one-op models run in LiteRT and in sporeling on
seeded random inputs (broadcasting, fused activations, keep_dims, every strided-slice mask)."""

from __future__ import annotations

import numpy as np
import pytest

from .common import Feed, check, one_op, rand, run_sporeling

RELU, RELU6 = 1, 3
I32 = np.int32


@pytest.mark.parametrize("op, options, act", [
    ("ADD", "AddOptions", 0), ("ADD", "AddOptions", RELU6), ("SUB", "SubOptions", RELU), ("MUL", "MulOptions", 0),
    ("MUL", "MulOptions", RELU), ("DIV", "DivOptions", 0), ("DIV", "DivOptions", RELU6),
])
def test_arithmetic_broadcasts_and_fuses(op, options, act):
    a, b = rand(2, 3, 4, low=-4, high=4), rand(3, 1, seed=1, low=0.5, high=2)
    data, feeds = one_op(op, [Feed(a), Feed(b)], [(2, 3, 4)], options, FusedActivationFunction=act)
    check(data, feeds)


@pytest.mark.parametrize("op", ["MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW", "FLOOR_DIV"])
def test_binary(op):
    a, b = rand(2, 5, low=0.1, high=3), rand(1, 5, seed=1, low=-2, high=2)
    data, feeds = one_op(op, [Feed(a), b], [(2, 5)])
    check(data, feeds)


def test_floor_mod_integers():
    a = np.arange(-6, 6, dtype=I32).reshape(3, 4)
    data, feeds = one_op("FLOOR_MOD", [Feed(a), np.array([3, -3, 5, -5], I32)], [((3, 4), I32)])
    check(data, feeds)


@pytest.mark.parametrize("op", ["LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "NOT_EQUAL"])
def test_comparison(op):
    a = np.round(rand(3, 4) * 2) / 2  # ties, so that the *_EQUAL forms differ from the strict ones
    b = np.round(rand(3, 4, seed=1) * 2) / 2
    data, feeds = one_op(op, [Feed(a), Feed(b)], [((3, 4), np.bool_)])
    ref = check(data, feeds)
    assert 0 < ref["out0"].sum() < ref["out0"].size


@pytest.mark.parametrize("op", ["LOGICAL_AND", "LOGICAL_OR"])
def test_logical(op):
    a, b = rand(3, 4) > 0, rand(3, 4, seed=1) > 0
    data, feeds = one_op(op, [Feed(a), Feed(b)], [((3, 4), np.bool_)])
    check(data, feeds)


@pytest.mark.parametrize("op, low", [
    ("EXP", -3), ("LOG", 0.01), ("SQRT", 0.0), ("RSQRT", 0.05), ("SQUARE", -3), ("ABS", -3), ("NEG", -3),
    ("SIN", -3), ("COS", -3), ("FLOOR", -3), ("CEIL", -3), ("ROUND", -3), ("SIGN", -3),
])
def test_unary(op, low):
    x = rand(4, 6, low=low, high=3)
    if op == "ROUND":
        x[0, :4] = [0.5, 1.5, -2.5, 2.5]  # half to even
    data, feeds = one_op(op, [Feed(x)], [(4, 6)])
    check(data, feeds)


def test_logical_not():
    data, feeds = one_op("LOGICAL_NOT", [Feed(rand(3, 4) > 0)], [((3, 4), np.bool_)])
    check(data, feeds)


def test_select_v2_broadcasts():
    data, feeds = one_op("SELECT_V2", [Feed(rand(1, 4) > 0), Feed(rand(3, 4, seed=1)), Feed(rand(3, 1, seed=2))],
                         [(3, 4)])
    check(data, feeds)


def test_select_picks_rows_with_a_rank1_condition():
    data, feeds = one_op("SELECT", [Feed(np.array([True, False, True])), Feed(rand(3, 4, seed=1)),
                                    Feed(rand(3, 4, seed=2))], [(3, 4)])
    check(data, feeds)


def test_add_n():
    data, feeds = one_op("ADD_N", [Feed(rand(2, 3)), Feed(rand(2, 3, seed=1)), rand(2, 3, seed=2)], [(2, 3)])
    check(data, feeds)


@pytest.mark.parametrize("op", ["MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"])
@pytest.mark.parametrize("axes, keep", [([1], False), ([1, 2], True), ([-1], False), ([0, 2], False)])
def test_reduce(op, axes, keep):
    x = rand(2, 3, 4, low=0.5, high=1.5)
    want = np.sum(x, axis=tuple(axes), keepdims=keep).shape
    data, feeds = one_op(op, [Feed(x), np.array(axes, I32)], [want], "ReducerOptions", KeepDims=keep)
    check(data, feeds)


@pytest.mark.parametrize("op, options", [("ARG_MAX", "ArgMaxOptions"), ("ARG_MIN", "ArgMinOptions")])
@pytest.mark.parametrize("out_type", [2, 4])  # int32, int64
def test_arg_reduce(op, options, out_type):
    dtype = I32 if out_type == 2 else np.int64
    data, feeds = one_op(op, [Feed(rand(3, 5, 4)), np.array([1], I32)], [((3, 4), dtype)], options,
                         OutputType=out_type)
    check(data, feeds)


@pytest.mark.parametrize("exclusive, reverse", [(False, False), (True, False), (False, True), (True, True)])
def test_cumsum(exclusive, reverse):
    data, feeds = one_op("CUMSUM", [Feed(rand(3, 5)), np.array(1, I32)], [(3, 5)], "CumsumOptions",
                         Exclusive=exclusive, Reverse=reverse)
    check(data, feeds)


def test_topk():
    data, feeds = one_op("TOPK_V2", [Feed(rand(2, 7)), np.array(3, I32)], [(2, 3), ((2, 3), I32)])
    check(data, feeds)


# ---- data movement ----
def test_reshape_with_shape_tensor():
    data, feeds = one_op("RESHAPE", [Feed(rand(2, 3, 4)), np.array([4, -1], I32)], [(4, 6)])
    check(data, feeds)


@pytest.mark.parametrize("dims, out", [([1], (2, 4, 1)), ([], (2, 4))])
def test_squeeze(dims, out):
    data, feeds = one_op("SQUEEZE", [Feed(rand(2, 1, 4, 1))], [out], "SqueezeOptions", SqueezeDims=dims)
    check(data, feeds)


@pytest.mark.parametrize("axis, out", [(0, (1, 2, 3)), (-1, (2, 3, 1)), (1, (2, 1, 3))])
def test_expand_dims(axis, out):
    data, feeds = one_op("EXPAND_DIMS", [Feed(rand(2, 3)), np.array([axis], I32)], [out])
    check(data, feeds)


def test_transpose():
    data, feeds = one_op("TRANSPOSE", [Feed(rand(2, 3, 4, 5)), np.array([2, 0, 3, 1], I32)], [(4, 2, 5, 3)])
    check(data, feeds)


@pytest.mark.parametrize("axis", [-1, 1])
def test_concatenation(axis):
    xs = [rand(2, 3, 4, seed=s) for s in range(3)]
    out = np.concatenate(xs, axis=axis).shape
    data, feeds = one_op("CONCATENATION", [Feed(xs[0]), xs[1], Feed(xs[2])], [out], "ConcatenationOptions",
                         Axis=axis)
    check(data, feeds)


def test_concatenation_applies_its_fused_activation():
    """LiteRT's own kernel refuses a fused activation here and its XNNPACK delegate drops it; the
    schema says it applies, so sporeling applies it (checked against NumPy, not LiteRT)."""
    xs = [rand(2, 3, seed=s) for s in range(2)]
    data, feeds = one_op("CONCATENATION", [Feed(xs[0]), xs[1]], [(2, 6)], "ConcatenationOptions", Axis=1,
                         FusedActivationFunction=RELU6)
    ours = run_sporeling(data, feeds)["out0"]
    np.testing.assert_array_equal(ours, np.clip(np.concatenate(xs, axis=1), 0, 6))


def test_pack():
    data, feeds = one_op("PACK", [Feed(rand(2, 3)), Feed(rand(2, 3, seed=1))], [(2, 2, 3)], "PackOptions",
                         ValuesCount=2, Axis=1)
    check(data, feeds)


def test_unpack():
    data, feeds = one_op("UNPACK", [Feed(rand(2, 3, 4))], [(2, 4)] * 3, "UnpackOptions", Num=3, Axis=1)
    check(data, feeds)


def test_split():
    data, feeds = one_op("SPLIT", [np.array(2, I32), Feed(rand(2, 3, 6))], [(2, 3, 2)] * 3, "SplitOptions",
                         NumSplits=3)
    check(data, feeds)


def test_split_v_with_an_inferred_size():
    data, feeds = one_op("SPLIT_V", [Feed(rand(2, 7)), np.array([2, -1, 1], I32), np.array(1, I32)],
                         [(2, 2), (2, 4), (2, 1)], "SplitVOptions", NumSplits=3)
    check(data, feeds)


def test_slice():
    data, feeds = one_op("SLICE", [Feed(rand(3, 4, 5)), np.array([1, 0, 2], I32), np.array([2, -1, 2], I32)],
                         [(2, 4, 2)])
    check(data, feeds)


@pytest.mark.parametrize("begin, end, strides, masks, out", [
    ([1, 0, 1, 0], [3, 4, 5, 6], [1, 2, 2, 1], {}, (2, 2, 2, 6)),
    ([0, 1, 0, 0], [0, 3, 0, 0], [1, 1, 1, 1], {"BeginMask": 0b1101, "EndMask": 0b1101}, (3, 2, 5, 6)),
    ([2, 0, 0, 5], [0, 4, 5, 0], [-1, 1, 1, -2], {}, (2, 4, 5, 3)),
    ([0, 0, 0, 0], [0, 0, 0, 0], [-1, 1, 1, -2], {"BeginMask": 0b1111, "EndMask": 0b1111}, (3, 4, 5, 3)),
    ([1, 2, 0, 0], [2, 3, 5, 6], [1, 1, 1, 1], {"ShrinkAxisMask": 0b0011}, (5, 6)),
    ([0, 1], [0, 3], [1, 1], {"EllipsisMask": 0b01}, (3, 4, 5, 2)),
    ([0, 0], [0, 0], [1, 1], {"NewAxisMask": 0b01, "BeginMask": 0b10, "EndMask": 0b10}, (1, 3, 4, 5, 6)),
    ([-1], [0], [1], {"ShrinkAxisMask": 1}, (4, 5, 6)),
    ([0, 1, 1, 0], [3, 2, 3, 6], [1, 1, 1, 1], {"Offset": True}, (3, 2, 3, 6)),
])
def test_strided_slice(begin, end, strides, masks, out):
    data, feeds = one_op("STRIDED_SLICE", [Feed(rand(3, 4, 5, 6)), np.array(begin, I32), np.array(end, I32),
                                           np.array(strides, I32)], [out], "StridedSliceOptions", **masks)
    check(data, feeds)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather(axis):
    x = rand(4, 5, 6)
    idx = np.array([[3, 0], [1, 3]], I32)
    out = np.take(x, idx, axis=axis).shape
    data, feeds = one_op("GATHER", [Feed(x), Feed(idx)], [out], "GatherOptions", Axis=axis)
    check(data, feeds)


def test_gather_nd():
    data, feeds = one_op("GATHER_ND", [Feed(rand(3, 4, 5)), np.array([[0, 1], [2, 3]], I32)], [(2, 5)])
    check(data, feeds)


def test_embedding_lookup():
    data, feeds = one_op("EMBEDDING_LOOKUP", [Feed(np.array([2, 0, 4], I32)), rand(5, 4)], [(3, 4)])
    check(data, feeds)


def test_tile():
    data, feeds = one_op("TILE", [Feed(rand(2, 3)), np.array([2, 3], I32)], [(4, 9)])
    check(data, feeds)


def test_broadcast_to():
    data, feeds = one_op("BROADCAST_TO", [Feed(rand(3, 1)), np.array([2, 3, 4], I32)], [(2, 3, 4)])
    check(data, feeds)


def test_reverse_v2():
    data, feeds = one_op("REVERSE_V2", [Feed(rand(2, 3, 4)), np.array([1, 2], I32)], [(2, 3, 4)])
    check(data, feeds)


PADS = np.array([[0, 0], [1, 2], [2, 1], [0, 0]], I32)


def test_pad():
    data, feeds = one_op("PAD", [Feed(rand(1, 3, 4, 2)), PADS], [(1, 6, 7, 2)])
    check(data, feeds)


def test_padv2_with_a_value():
    data, feeds = one_op("PADV2", [Feed(rand(1, 3, 4, 2)), PADS, np.array(-7.5, np.float32)], [(1, 6, 7, 2)])
    ref = check(data, feeds)
    assert (ref["out0"] == -7.5).any()


@pytest.mark.parametrize("mode", [0, 1])  # REFLECT, SYMMETRIC
def test_mirror_pad(mode):
    data, feeds = one_op("MIRROR_PAD", [Feed(rand(1, 3, 4, 2)), PADS], [(1, 6, 7, 2)], "MirrorPadOptions",
                         Mode=mode)
    check(data, feeds)


@pytest.mark.parametrize("src, dst", [(np.float32, I32), (I32, np.float32), (np.float32, np.bool_),
                                      (np.int64, I32)])
def test_cast(src, dst):
    x = (rand(3, 4, low=-5, high=5) * (1 if np.dtype(src).kind == "f" else 100)).astype(src)
    data, feeds = one_op("CAST", [Feed(x)], [((3, 4), dst)])
    check(data, feeds)


def test_shape():
    data, feeds = one_op("SHAPE", [Feed(rand(2, 3, 4))], [((3,), I32)], "ShapeOptions", OutType=2)
    ref = check(data, feeds)
    assert ref["out0"].tolist() == [2, 3, 4]


def test_fill():
    data, feeds = one_op("FILL", [np.array([2, 3], I32), Feed(np.array(1.25, np.float32))], [(2, 3)])
    check(data, feeds)


def test_zeros_like():
    data, feeds = one_op("ZEROS_LIKE", [Feed(rand(2, 3))], [(2, 3)])
    check(data, feeds)


def test_range():
    data, feeds = one_op("RANGE", [Feed(np.array(1.5, np.float32)), np.array(6.0, np.float32),
                                   np.array(0.75, np.float32)], [(6,)])
    check(data, feeds)

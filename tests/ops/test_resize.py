"""Resize/Upsample, GridSample, AffineGrid and RoiAlign against onnxruntime (and PyTorch), with
shapes and attributes drawn by hypothesis.

onnxruntime computes sampling coordinates in float32 and uses the integer output length where the
spec (and its reference implementation, which the conformance suite follows) uses float64 and the
fractional length scale * in. The two differ only where a coordinate lands on a rounding boundary
or for align_corners/tf_crop_and_resize with a fractional scale, so the onnxruntime comparisons use
sizes, or scales whose products are exact; those spec-only corners are checked against onnx's
reference evaluator instead."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

import sporeling
from sporeling.frontends.onnx import from_model_proto
from sporeling.runtime.session import RETURNS, WRITES
from tests.ops.oracle import check_op, make_model, run_sporeling

EMPTY = np.zeros(0, np.float32)
CTMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _resize_inputs(x, scales=None, sizes=None, roi=EMPTY):
    inputs = {"x": x, "roi": roi, "scales": EMPTY if scales is None else np.asarray(scales, np.float32)}
    if sizes is not None:
        inputs["sizes"] = np.asarray(sizes, np.int64)
    return inputs


def _check_reference(op, inputs, attrs, opset, constants=(), rtol=1e-5, atol=1e-6):
    model = make_model(op, inputs, 1, attrs, opset, {k: inputs[k] for k in constants})
    feeds = {k: v for k, v in inputs.items() if v is not None and k not in constants}
    ours = run_sporeling(model, feeds)[0]
    with np.errstate(all="ignore"):  # the reference divides by zero for unit axes
        want = ReferenceEvaluator(model).run(None, feeds)[0]
    assert ours.dtype == want.dtype and ours.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=rtol, atol=atol)
    return ours


def _steps(model, feeds):
    m = sporeling.Model(from_model_proto(model), "t")
    first = m.run(feeds)
    plan = next(iter(m.session._plans.values()))
    return m, first, plan.steps


# ---- Resize: interpolation against onnxruntime ------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(["linear", "cubic"]), ctm=st.sampled_from(CTMS), h=st.integers(1, 9),
       w=st.integers(1, 9), oh=st.integers(1, 14), ow=st.integers(1, 14), const=st.booleans(),
       seed=st.integers(0, 2**16))
def test_resize_sizes_matches_onnxruntime(mode, ctm, h, w, oh, ow, const, seed):
    rng = np.random.default_rng(seed)
    x = _rand(rng, (2, 3, h, w))
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "cubic":
        attrs["cubic_coeff_a"] = float(rng.choice([-0.75, -0.5]))
    inputs = _resize_inputs(x, sizes=[2, 3, oh, ow])
    check_op("Resize", inputs, attrs, opset=19, constants=("roi", "scales") + (("sizes",) if const else ()),
             rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(["nearest", "linear", "cubic"]), ctm=st.sampled_from(CTMS[:4]),
       sh=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]), sw=st.sampled_from([0.25, 0.5, 2.0, 4.0]),
       const=st.booleans(), opset=st.sampled_from([11, 13, 18]), seed=st.integers(0, 2**16))
def test_resize_exact_scales_matches_onnxruntime(mode, ctm, sh, sw, const, opset, seed):
    rng = np.random.default_rng(seed)
    x = _rand(rng, (1, 2, 4, 8))
    inputs = _resize_inputs(x, scales=[1, 1, sh, sw])
    ours = check_op("Resize", inputs, {"mode": mode, "coordinate_transformation_mode": ctm}, opset=opset,
                    constants=("roi", "scales") if const else ("roi",), rtol=1e-4, atol=1e-5)
    assert ours[0].shape == (1, 2, int(4 * sh), int(8 * sw))


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("sizes", [[1, 2, 3, 4], [1, 2, 2, 11], [1, 2, 20, 5]])
def test_resize_antialias_and_exclude_outside(mode, sizes):
    rng = np.random.default_rng(7)
    inputs = _resize_inputs(_rand(rng, (1, 2, 9, 13)), sizes=sizes)
    check_op("Resize", inputs, {"mode": mode, "antialias": 1}, opset=18, constants=("roi", "scales", "sizes"),
             rtol=1e-4, atol=1e-5)
    if mode == "cubic":
        check_op("Resize", inputs, {"mode": mode, "exclude_outside": 1, "cubic_coeff_a": -0.5}, opset=18,
                 constants=("roi", "scales", "sizes"), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_keep_aspect_ratio(policy):
    rng = np.random.default_rng(8)
    x = _rand(rng, (1, 2, 6, 10))
    inputs = {"x": x, "roi": EMPTY, "scales": EMPTY, "sizes": np.array([7, 4], np.int64)}
    attrs = {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": policy}
    check_op("Resize", inputs, attrs, opset=18, constants=("roi", "scales", "sizes"), rtol=1e-4, atol=1e-5)
    inputs = {"x": x, "roi": EMPTY, "scales": np.array([2.0, 0.5], np.float32)}
    check_op("Resize", inputs, {"mode": "cubic", "axes": [-1, 2]}, opset=18, constants=("roi", "scales"),
             rtol=1e-4, atol=1e-5)


def test_resize_tf_crop_and_resize():
    """Checked against the spec's reference: onnxruntime maps crop boxes differently."""
    rng = np.random.default_rng(9)
    x = _rand(rng, (1, 1, 6, 9))
    inputs = _resize_inputs(x, sizes=[1, 1, 5, 9], roi=np.array([0, 0, 0.25, -0.25, 1, 1, 0.75, 1.25], np.float32))
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 7.0}
    ours = _check_reference("Resize", inputs, attrs, 13, ("roi", "scales", "sizes"))
    # source columns 1.5 * o - 2: o = 0, 1, 7, 8 fall outside the image and take the extrapolation value
    assert (ours[..., [0, 1, 7, 8]] == 7.0).all() and (ours[..., 2:7] != 7.0).all()
    _check_reference("Resize", inputs, {**attrs, "mode": "nearest"}, 13, ("roi", "scales", "sizes"))
    _check_reference("Resize", inputs, {**attrs, "mode": "cubic"}, 13, ("roi", "scales", "sizes"))
    # axes with a shorter roi, and an roi passed as a feed (the kernel then builds its tables per call)
    inputs = {"x": x, "roi": np.array([0.25, 0.1, 0.75, 0.9], np.float32), "scales": EMPTY,
              "sizes": np.array([4, 6], np.int64)}
    _check_reference("Resize", inputs, {**attrs, "axes": [3, 2]}, 18, ("scales", "sizes"))


# ---- Resize: nearest, spec corners and dtypes -----------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(ctm=st.sampled_from(CTMS),
       nearest_mode=st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]),
       h=st.integers(1, 7), w=st.integers(1, 7), oh=st.integers(1, 12), ow=st.integers(1, 12),
       use_scales=st.booleans(), seed=st.integers(0, 2**16))
def test_resize_nearest_matches_reference(ctm, nearest_mode, h, w, oh, ow, use_scales, seed):
    """Nearest picks are discontinuous in the coordinate, so they are checked against the spec's
    reference (float64 coordinates, like ours), with fractional scales included."""
    rng = np.random.default_rng(seed)
    x = _rand(rng, (1, 2, h, w))
    opset = 19 if ctm == "half_pixel_symmetric" else 18
    if use_scales:
        inputs = _resize_inputs(x, scales=[1, 1, oh / h, ow / w])
    else:
        inputs = _resize_inputs(x, sizes=[1, 2, oh, ow])
    _check_reference("Resize", inputs, {"mode": "nearest", "coordinate_transformation_mode": ctm,
                                        "nearest_mode": nearest_mode}, opset, constants=tuple(inputs)[1:])


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_resize11_tf_half_pixel_for_nn(nearest_mode):
    rng = np.random.default_rng(18)
    inputs = _resize_inputs(_rand(rng, (1, 2, 4, 6)), scales=[1, 1, 2.0, 0.5])
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn", "nearest_mode": nearest_mode}
    check_op("Resize", inputs, attrs, opset=11, constants=("roi", "scales"))


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_align_corners_fractional_scale_follows_spec(mode):
    rng = np.random.default_rng(10)
    inputs = _resize_inputs(_rand(rng, (1, 1, 5, 7)), scales=[1, 1, 1.7, 0.6])
    _check_reference("Resize", inputs, {"mode": mode, "coordinate_transformation_mode": "align_corners"}, 19,
                     ("roi", "scales"))


@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 4, 4], [1, 1, 1, 3], [1, 1, 2, 1], [2, 1, 3, 1]])
def test_resize_nearest_integer_repeat_is_planned(scales):
    rng = np.random.default_rng(11)
    x = _rand(rng, (1, 3, 4, 5))
    inputs = _resize_inputs(x, scales=scales)
    model = make_model("Resize", inputs, 1, {"mode": "nearest"}, 13, {"roi": EMPTY, "scales": inputs["scales"]})
    m, first, steps = _steps(model, {"x": x})
    assert [s.mode for s in steps] == [WRITES]
    want = x
    for axis, s in enumerate(scales):
        want = np.repeat(want, s, axis=axis)
    for _ in range(2):
        x2 = _rand(rng, x.shape)
        want2 = x2
        for axis, s in enumerate(scales):
            want2 = np.repeat(want2, s, axis=axis)
        np.testing.assert_array_equal(m.run({"x": x2})["y0"], want2)
    np.testing.assert_array_equal(first["y0"], want)


def test_resize_linear_uses_scratch_and_feeds_return():
    rng = np.random.default_rng(12)
    x = _rand(rng, (1, 2, 6, 6))
    inputs = _resize_inputs(x, scales=[1, 1, 2, 2])
    model = make_model("Resize", inputs, 1, {"mode": "linear"}, 13, {"roi": EMPTY, "scales": inputs["scales"]})
    _, first, steps = _steps(model, {"x": x})
    assert steps[0].mode == WRITES and steps[0].scratch >= 0
    check_op("Resize", inputs, {"mode": "linear"}, opset=13, constants=("roi", "scales"), rtol=1e-5, atol=1e-6)
    fed = make_model("Resize", inputs, 1, {"mode": "linear"}, 13, {"roi": EMPTY})
    _, again, steps = _steps(fed, {"x": x, "scales": inputs["scales"]})
    assert steps[0].mode == RETURNS
    np.testing.assert_allclose(again["y0"], first["y0"], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float16, np.float64])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_dtypes(dtype, mode):
    rng = np.random.default_rng(13)
    x = (rng.uniform(0, 200, (1, 2, 5, 6))).astype(dtype)
    inputs = _resize_inputs(x, sizes=[1, 2, 7, 9])
    tol = 1e-2 if dtype == np.float16 else 1e-5
    if dtype == np.float64:  # onnxruntime has no double Resize
        assert _check_reference("Resize", inputs, {"mode": mode}, 13, ("roi", "scales", "sizes")).dtype == dtype
        return
    ours = check_op("Resize", inputs, {"mode": mode}, opset=13, constants=("roi", "scales", "sizes"), rtol=tol,
                    atol=1 if np.dtype(dtype).kind in "iu" else tol)
    assert ours[0].dtype == dtype


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2.5, 1.5], [1, 1, 0.6, 0.5], [1, 1, 3, 2]])
def test_resize10_and_upsample(mode, scales):
    rng = np.random.default_rng(14)
    x = _rand(rng, (1, 2, 5, 6))
    s = np.array(scales, np.float32)
    check_op("Resize", {"x": x, "s": s}, {"mode": mode}, opset=10, constants=("s",), rtol=1e-5, atol=1e-6)
    if min(scales) >= 1:
        check_op("Upsample", {"x": x, "s": s}, {"mode": mode}, opset=9, constants=("s",), rtol=1e-5, atol=1e-6)
        check_op("Upsample", {"x": x}, {"mode": mode, "scales": [float(v) for v in scales]}, opset=7, rtol=1e-5,
                 atol=1e-6)


# ---- GridSample, AffineGrid, RoiAlign --------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(["bilinear", "nearest", "bicubic"]),
       padding=st.sampled_from(["zeros", "border", "reflection"]), align=st.sampled_from([0, 1]),
       h=st.integers(1, 6), w=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_grid_sample_2d(mode, padding, align, h, w, seed):
    rng = np.random.default_rng(seed)
    x = _rand(rng, (2, 3, h, w))
    grid = rng.uniform(-1.4, 1.4, (2, 4, 5, 2)).astype(np.float32)
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    ours = check_op("GridSample", {"x": x, "grid": grid}, attrs, opset=16, rtol=1e-4, atol=1e-5)
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), mode=mode,
                                           padding_mode=padding, align_corners=bool(align)).numpy()
    np.testing.assert_allclose(ours[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_3d(mode, padding):
    rng = np.random.default_rng(15)
    x = _rand(rng, (1, 2, 3, 4, 5))
    grid = rng.uniform(-1.3, 1.3, (1, 2, 3, 4, 3)).astype(np.float32)
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": 0}
    if mode != "cubic":
        check_op("GridSample", {"x": x, "grid": grid}, attrs, opset=20, rtol=1e-4, atol=1e-5)
    elif padding != "border":  # onnxruntime has no 3-D cubic; cubic border clamps taps (as torch), not locations
        _check_reference("GridSample", {"x": x, "grid": grid}, attrs, 20, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [[2, 3, 4, 5], [1, 1, 1, 3], [2, 2, 3, 4, 5]])
def test_affine_grid(align, size):
    rng = np.random.default_rng(16)
    theta = _rand(rng, (size[0], len(size) - 2, len(size) - 1))
    if not (align and 1 in size[2:]):
        ours = check_op("AffineGrid", {"theta": theta, "size": np.array(size, np.int64)}, {"align_corners": align},
                        opset=20, constants=("size",), rtol=1e-5, atol=1e-6)
    if align and 1 in size[2:]:  # a unit axis sits at -1 in the spec, +1 in onnxruntime, 0 in torch
        _check_reference("AffineGrid", {"theta": theta, "size": np.array(size, np.int64)}, {"align_corners": 1},
                         20, ("size",))
        return
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.affine_grid(torch.from_numpy(theta), size, align_corners=bool(align)).numpy()
    np.testing.assert_allclose(ours[0], want, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(["avg", "max"]), ctm=st.sampled_from(["half_pixel", "output_half_pixel"]),
       ratio=st.integers(1, 3), out_hw=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       scale=st.sampled_from([1.0, 0.5, 0.25]), n_rois=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_roi_align(mode, ctm, ratio, out_hw, scale, n_rois, seed):
    rng = np.random.default_rng(seed)
    x = _rand(rng, (2, 3, 7, 9))
    # continuous corners: with coordinates on a 0.1 grid a sample point can land exactly on the
    # image border, where float32 (onnxruntime) and float64 rounding decide differently
    corners = rng.uniform(-4, 40, (n_rois, 2, 2))
    rois = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1).astype(np.float32)
    batch = rng.integers(0, 2, n_rois).astype(np.int64)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "output_height": out_hw[0],
             "output_width": out_hw[1], "sampling_ratio": ratio, "spatial_scale": scale}
    check_op("RoiAlign", {"x": x, "rois": rois, "b": batch}, attrs, opset=16, rtol=1e-4, atol=1e-5)


def test_roi_align_adaptive_sampling_and_opset10():
    rng = np.random.default_rng(17)
    x = _rand(rng, (1, 2, 8, 8))
    rois = np.array([[0.5, 0.5, 6.5, 3.5], [1, 1, 1.5, 7], [-3, -3, 12, 12]], np.float32)
    inputs = {"x": x, "rois": rois, "b": np.zeros(3, np.int64)}
    for mode in ("avg", "max"):
        attrs = {"mode": mode, "output_height": 2, "output_width": 3, "spatial_scale": 0.5}
        _check_reference("RoiAlign", inputs, attrs, 16, rtol=1e-5, atol=1e-5)
        check_op("RoiAlign", inputs, attrs, opset=10, rtol=1e-4, atol=1e-5)

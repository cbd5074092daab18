"""DFT, STFT, the window generators and MelWeightMatrix against onnxruntime (and NumPy/PyTorch),
with shapes and attributes drawn by hypothesis. Scalar shape inputs (dft_length, axis,
frame_step, window sizes) are passed both as initializers (planned path) and as feeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sporeling
from sporeling.frontends.onnx import from_model_proto
from sporeling.runtime.session import WRITES
from tests.ops.oracle import check_op, make_model, run_sporeling


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@st.composite
def dft_cases(draw):
    signal_dims = draw(st.lists(st.integers(2, 7), min_size=1, max_size=2))
    inverse, onesided = draw(st.booleans()), draw(st.booleans())
    complex_in = (inverse or not onesided) and draw(st.booleans()) or (inverse and onesided)
    shape = (draw(st.integers(1, 2)), *signal_dims, 2 if complex_in else 1)
    axis = draw(st.integers(1, len(signal_dims)))
    length = None
    if not (inverse and onesided) and draw(st.booleans()):  # onnxruntime's IRFFT ignores an explicit length
        length = draw(st.integers(1, 9))
    return shape, axis, inverse, onesided, length


@settings(max_examples=25, deadline=None)
@given(case=dft_cases(), opset=st.sampled_from([17, 20]), negative=st.booleans(), const=st.booleans(),
       seed=st.integers(0, 2**16))
def test_dft_matches_onnxruntime(case, opset, negative, const, seed):
    shape, axis, inverse, onesided, length = case
    rng = np.random.default_rng(seed)
    if negative:
        axis -= len(shape)
    inputs = {"x": _rand(rng, shape), "n": None if length is None else np.array(length, np.int64)}
    attrs = {"inverse": int(inverse), "onesided": int(onesided)}
    if opset == 20:
        inputs["axis"] = np.array(axis, np.int64)
    else:
        attrs["axis"] = axis
    consts = tuple(k for k in ("n", "axis") if k in inputs and inputs[k] is not None and const)
    ours = check_op("DFT", inputs, attrs, opset=opset, constants=consts, rtol=1e-4, atol=1e-4)
    assert ours[0].shape[-1] == (1 if inverse and onesided else 2)


def test_dft_irfft_explicit_length_and_planning():
    rng = np.random.default_rng(1)
    spectrum = np.fft.rfft(_rand(rng, (2, 10)), axis=1)
    x = np.stack([spectrum.real, spectrum.imag], axis=-1).astype(np.float32)
    for n in (10, 8, 12):
        inputs = {"x": x, "n": np.array(n, np.int64), "axis": np.array(1, np.int64)}
        consts = {"n": inputs["n"], "axis": inputs["axis"]}
        model = make_model("DFT", inputs, 1, {"inverse": 1, "onesided": 1}, 20, consts)
        m = sporeling.Model(from_model_proto(model), "t")
        y = m.run({"x": x})["y0"]
        np.testing.assert_allclose(y[..., 0], np.fft.irfft(spectrum, n=n, axis=1), rtol=1e-4, atol=1e-5)
        plan = next(iter(m.session._plans.values()))
        assert plan.steps[0].mode == WRITES


@settings(max_examples=25, deadline=None)
@given(length=st.integers(16, 60), step=st.integers(1, 9), frame=st.sampled_from([4, 8, 15, 16]),
       window=st.booleans(), onesided=st.sampled_from([0, 1]), complex_in=st.booleans(), const=st.booleans(),
       seed=st.integers(0, 2**16))
def test_stft_matches_onnxruntime(length, step, frame, window, onesided, complex_in, const, seed):
    if complex_in and onesided:
        complex_in = False  # a one-sided spectrum needs a real signal
    rng = np.random.default_rng(seed)
    inputs = {"signal": _rand(rng, (2, length, 2 if complex_in else 1)), "step": np.array(step, np.int64),
              "window": np.hanning(frame).astype(np.float32) if window else None,
              "frame_length": None if window and rng.integers(2) else np.array(frame, np.int64)}
    consts = tuple(k for k in ("step", "frame_length") if inputs[k] is not None and const)
    ours = check_op("STFT", inputs, {"onesided": onesided}, opset=17, constants=consts, rtol=1e-4, atol=1e-4)
    assert ours[0].shape == (2, 1 + (length - frame) // step, frame // 2 + 1 if onesided else frame, 2)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size", [1, 2, 7, 16])
def test_windows(op, periodic, size):
    n = np.array(size, np.int64)
    if size == 1:  # degenerate: onnxruntime gives NaN (symmetric) and torch 1; the formula gives cos(0) terms
        y = run_sporeling(make_model(op, {"n": n}, 1, {"periodic": periodic}, 17), {"n": n})[0]
        assert y.shape == (1,) and np.isfinite(y).all()
        return
    ours = check_op(op, {"n": n}, {"periodic": periodic}, opset=17, constants=("n",), rtol=1e-5, atol=1e-6)
    assert ours[0].dtype == np.float32 and ours[0].shape == (size,)
    double = check_op(op, {"n": n}, {"periodic": periodic, "output_datatype": 11}, opset=17, rtol=1e-6, atol=1e-7)
    assert double[0].dtype == np.float64
    torch = pytest.importorskip("torch")
    make = {"HannWindow": torch.hann_window, "HammingWindow": torch.hamming_window,
            "BlackmanWindow": torch.blackman_window}[op]
    kwargs = {"alpha": 25 / 46, "beta": 21 / 46} if op == "HammingWindow" else {}
    want = make(size, periodic=bool(periodic), dtype=torch.float64, **kwargs).numpy()
    np.testing.assert_allclose(double[0], want, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("bins, dft, rate, lo, hi", [(8, 64, 8000, 100.0, 3000.0), (20, 512, 16000, 0.0, 8000.0),
                                                     (5, 33, 1000, 50.0, 400.0), (40, 1024, 22050, 20.0, 9000.0)])
def test_mel_weight_matrix(bins, dft, rate, lo, hi):
    inputs = {"bins": np.array(bins, np.int64), "dft": np.array(dft, np.int64), "rate": np.array(rate, np.int64),
              "lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}
    ours = check_op("MelWeightMatrix", inputs, {}, opset=17, constants=("bins", "dft"), rtol=1e-5, atol=1e-6)
    m = ours[0]
    assert m.shape == (dft // 2 + 1, bins) and m.max() <= 1.0 and (m >= 0).all()
    y = run_sporeling(make_model("MelWeightMatrix", inputs, 1, {"output_datatype": 11}, 17), inputs)[0]
    assert y.dtype == np.float64

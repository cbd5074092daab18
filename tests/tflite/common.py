"""Runs one model in LiteRT and in sporeling and compares every output.

Floats must agree within 1e-5 of the output's scale (max |LiteRT output|, at least 1); integer
outputs of quantized models within one quantization step (LiteRT computes in integers, sporeling
dequantizes, computes in float and quantizes again)."""

from __future__ import annotations

import numpy as np
import pytest

from sporeling.frontends.tflite import from_buffer
from sporeling.model import Model
from sporeling.passes import optimize

litert = pytest.importorskip("ai_edge_litert.interpreter")


def run_litert(data: bytes, feeds: dict[str, np.ndarray], threads: int = 1, xnnpack: bool = True) -> dict:
    """Outputs by name. xnnpack=False runs LiteRT's builtin kernels without its default delegate."""
    kinds = litert.OpResolverType
    it = litert.Interpreter(model_content=data, num_threads=threads, experimental_op_resolver_type=(
        kinds.AUTO if xnnpack else kinds.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], feeds[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def run_sporeling(data: bytes, feeds: dict[str, np.ndarray], passes: bool = False) -> dict[str, np.ndarray]:
    graph = from_buffer(data, "test.tflite")
    if passes:
        optimize(graph)
    return Model(graph, "test.tflite", threads=1).run(feeds)


def assert_match(ours: dict, ref: dict, rtol: float = 1e-5, steps: int = 0, what: str = "") -> None:
    assert set(ours) == set(ref), f"{what}: outputs {sorted(ours)} vs LiteRT {sorted(ref)}"
    for name, want in ref.items():
        got = np.asarray(ours[name])
        assert got.dtype == want.dtype, f"{what} {name}: dtype {got.dtype} vs LiteRT {want.dtype}"
        assert got.shape == want.shape, f"{what} {name}: shape {got.shape} vs LiteRT {want.shape}"
        if want.dtype.kind == "f":
            assert np.isfinite(want).all() or np.array_equal(np.isnan(got), np.isnan(want))
            ok = np.isfinite(want)
            tol = rtol * max(1.0, float(np.abs(want[ok]).max())) if ok.any() else 0.0
            diff = float(np.abs(got[ok].astype(np.float64) - want[ok]).max()) if ok.any() else 0.0
            assert diff <= tol, f"{what} {name}: max abs diff {diff:.3g} > {tol:.3g}"
        elif want.dtype.kind in "iu" and steps:
            diff = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max()) if want.size else 0
            assert diff <= steps, f"{what} {name}: {diff} quantization steps apart (at most {steps})"
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{what} {name}")


def check(data: bytes, feeds: dict[str, np.ndarray], rtol: float = 1e-5, steps: int = 0, xnnpack: bool = True) -> dict:
    """LiteRT's outputs, after checking that sporeling matches them with and without the passes."""
    ref = run_litert(data, feeds, xnnpack=xnnpack)
    assert_match(run_sporeling(data, feeds), ref, rtol, steps, "imported")
    assert_match(run_sporeling(data, feeds, passes=True), ref, rtol, steps, "optimized")
    return ref


class Feed:
    """A model input, fed `value` in the test (quant: its quantization parameters)."""

    def __init__(self, value, quant=None, signature=None):
        self.value, self.quant, self.signature = np.asarray(value), quant, signature


class Const:
    """A constant input with quantization parameters (plain arrays are float/int constants)."""

    def __init__(self, value, quant=None, dtype=None):
        self.value, self.quant = np.asarray(value, dtype), quant


def one_op(op: str, inputs: list, outputs: list, options: str | None = None, custom_options: bytes | None = None,
           **fields) -> tuple[bytes, dict[str, np.ndarray]]:
    """A model of one operator. inputs: Feed, Const, an array (a constant) or None (omitted); outputs:
    a shape (float32), (shape, dtype) or (shape, dtype, quant). Returns the model's bytes and its feeds."""
    from .builder import ModelBuilder

    b = ModelBuilder()
    ids, feeds = [], {}
    for k, v in enumerate(inputs):
        if v is None:
            ids.append(-1)
        elif isinstance(v, Feed):
            name = f"in{k}"
            ids.append(b.input(v.value.shape, v.value.dtype, name, v.quant, v.signature))
            feeds[name] = v.value
        elif isinstance(v, Const):
            ids.append(b.const(v.value, quant=v.quant, name=f"c{k}"))
        else:
            ids.append(b.const(np.asarray(v), name=f"c{k}"))
    outs = []
    for k, spec in enumerate(outputs):
        if all(isinstance(d, (int, np.integer)) for d in spec):  # a bare shape: float32
            spec = (spec, np.float32)
        shape, dtype, quant = (tuple(spec) + (None,))[:3]
        outs.append(b.output(b.tensor(shape, dtype, name=f"out{k}", quant=quant)))
    b.op(op, ids, outs, options, custom_options, **fields)
    return b.finish(), feeds


def rand(*shape, seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)

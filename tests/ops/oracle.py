"""Numerical oracle for kernel tests: build a one-node ONNX model, run it in onnxruntime and in
sporeling, compare."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

import sporeling  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402


def make_model(op_type: str, inputs: dict[str, np.ndarray], n_outputs: int = 1, attrs: dict | None = None,
               opset: int = 17, constants: dict[str, np.ndarray] | None = None, domain: str = ""):
    """One-node model. `inputs` become graph inputs (None values mean an omitted optional input);
    `constants` become initializers, so they are known at prepare time (weights, shape tensors)."""
    constants = constants or {}
    names = [k if v is not None else "" for k, v in inputs.items()]
    node = helper.make_node(op_type, names, [f"y{k}" for k in range(n_outputs)], domain=domain, **(attrs or {}))
    graph_inputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in inputs.items() if v is not None and k not in constants
    ]
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in constants.items()]
    outs = [onnx.ValueInfoProto(name=f"y{k}") for k in range(n_outputs)]
    g = helper.make_graph([node], "t", graph_inputs, outs, inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(g, opset_imports=opsets, ir_version=10)


def run_sporeling(model, feeds: dict[str, np.ndarray]) -> list:
    m = sporeling.Model(from_model_proto(model), "test")
    res = m.run(feeds)
    return [res[o.name] for o in model.graph.output]


def run_ort(model, feeds: dict[str, np.ndarray]) -> list:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check_op(op_type: str, inputs: dict[str, np.ndarray], attrs: dict | None = None, n_outputs: int = 1,
             opset: int = 17, constants: tuple[str, ...] = (), rtol: float = 1e-5, atol: float = 1e-6):
    """Runs op_type on inputs in both engines and asserts the outputs match. Names in `constants`
    are passed as initializers instead of feeds."""
    consts = {k: inputs[k] for k in constants}
    model = make_model(op_type, inputs, n_outputs, attrs, opset, consts)
    feeds = {k: v for k, v in inputs.items() if v is not None and k not in consts}
    ours = run_sporeling(model, feeds)
    theirs = run_ort(model, feeds)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype == b.dtype, f"output {k}: dtype {a.dtype} vs onnxruntime {b.dtype}"
        assert a.shape == b.shape, f"output {k}: shape {a.shape} vs onnxruntime {b.shape}"
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{op_type} output {k}")
    return ours

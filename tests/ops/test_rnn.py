"""LSTM, GRU and RNN against onnxruntime (all directions, both layouts, sequence_lens, initial states,
peepholes, clip, activation lists) and against torch.nn.LSTM / torch.nn.GRU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ops.oracle import run_ort, run_sporeling

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import helper, numpy_helper  # noqa: E402

N_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def build(op_type, inputs, outputs, attrs, opset=14, constants=()):
    """One-node model; inputs is a list of (name, array or None) in ONNX order, None = omitted."""
    while inputs and inputs[-1][1] is None:
        inputs = inputs[:-1]
    names = [n if a is not None else "" for n, a in inputs]
    node = helper.make_node(op_type, names, outputs, **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for n, a in inputs if a is not None and n not in constants]
    inits = [numpy_helper.from_array(a, n) for n, a in inputs if a is not None and n in constants]
    g = helper.make_graph([node], "t", graph_inputs, [onnx.ValueInfoProto(name=o) for o in outputs if o], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    feeds = {n: a for n, a in inputs if a is not None and n not in constants}
    return model, feeds


def compare(op_type, inputs, outputs, attrs, constants=(), rtol=1e-4, atol=1e-5):
    """Runs the layer in sporeling and onnxruntime. onnxruntime has no batch-major layout, so a
    layout=1 case runs there as the equivalent layout=0 model and its outputs are transposed back."""
    ours = run_sporeling(*build(op_type, inputs, outputs, attrs, constants=constants))
    if attrs.get("layout", 0):
        seq_major = [(n, None if a is None else a.transpose(1, 0, 2) if n in ("X", "initial_h", "initial_c") else a)
                     for n, a in inputs]
        theirs = run_ort(*build(op_type, seq_major, outputs, {**attrs, "layout": 0}, constants=constants))
        present = [o for o in outputs if o]
        theirs = [t.transpose(2, 0, 1, 3) if name == "Y" else t.transpose(1, 0, 2) for name, t in zip(present, theirs)]
    else:
        theirs = run_ort(*build(op_type, inputs, outputs, attrs, constants=constants))
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype == b.dtype and a.shape == b.shape, (k, a.dtype, a.shape, b.dtype, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"output {k}")
    return ours


def rnn_inputs(rng, op_type, *, seq, batch, size, hidden, direction, layout, bias=True, lens=None, initial=False,
               peepholes=False):
    nd = 2 if direction == "bidirectional" else 1
    g = N_GATES[op_type]
    x = rng.standard_normal((batch, seq, size) if layout else (seq, batch, size)).astype(np.float32)
    inputs = [("X", x), ("W", (rng.standard_normal((nd, g * hidden, size)) * 0.5).astype(np.float32)),
              ("R", (rng.standard_normal((nd, g * hidden, hidden)) * 0.5).astype(np.float32)),
              ("B", (rng.standard_normal((nd, 2 * g * hidden)) * 0.5).astype(np.float32) if bias else None),
              ("sequence_lens", None if lens is None else np.asarray(lens, np.int32))]
    state_shape = (batch, nd, hidden) if layout else (nd, batch, hidden)
    n_states = 2 if op_type == "LSTM" else 1
    for name in ["initial_h", "initial_c"][:n_states]:
        inputs.append((name, rng.standard_normal(state_shape).astype(np.float32) if initial else None))
    if op_type == "LSTM":
        inputs.append(("P", (rng.standard_normal((nd, 3 * hidden)) * 0.5).astype(np.float32) if peepholes else None))
    return inputs


rnn_config = st.fixed_dictionaries({
    "seq": st.integers(1, 5), "batch": st.integers(1, 3), "size": st.integers(1, 5), "hidden": st.integers(1, 8),
    "direction": st.sampled_from(["forward", "reverse", "bidirectional"]), "layout": st.integers(0, 1),
    "bias": st.booleans(), "initial": st.booleans(), "use_lens": st.booleans(), "const": st.booleans(),
})


def _lens(rng, cfg):
    return rng.integers(1, cfg["seq"] + 1, cfg["batch"]) if cfg["use_lens"] else None


@settings(max_examples=25, deadline=None)
@given(cfg=rnn_config, peepholes=st.booleans(), clip=st.sampled_from([None, 0.7]), input_forget=st.integers(0, 1),
       seed=st.integers(0, 2**16))
def test_lstm_matches_onnxruntime(cfg, peepholes, clip, input_forget, seed):
    rng = np.random.default_rng(seed)
    inputs = rnn_inputs(rng, "LSTM", lens=_lens(rng, cfg), peepholes=peepholes,
                        **{k: cfg[k] for k in ("seq", "batch", "size", "hidden", "direction", "layout", "bias",
                                               "initial")})
    attrs = {"hidden_size": cfg["hidden"], "direction": cfg["direction"], "layout": cfg["layout"],
             "input_forget": input_forget}
    if clip is not None:
        attrs["clip"] = clip
    consts = ("W", "R", "B", "P") if cfg["const"] else ()
    compare("LSTM", inputs, ["Y", "Y_h", "Y_c"], attrs, consts)


@settings(max_examples=25, deadline=None)
@given(cfg=rnn_config, lbr=st.integers(0, 1), clip=st.sampled_from([None, 0.9]), seed=st.integers(0, 2**16))
def test_gru_matches_onnxruntime(cfg, lbr, clip, seed):
    rng = np.random.default_rng(seed)
    inputs = rnn_inputs(rng, "GRU", lens=_lens(rng, cfg),
                        **{k: cfg[k] for k in ("seq", "batch", "size", "hidden", "direction", "layout", "bias",
                                               "initial")})
    attrs = {"hidden_size": cfg["hidden"], "direction": cfg["direction"], "layout": cfg["layout"],
             "linear_before_reset": lbr}
    if clip is not None:
        attrs["clip"] = clip
    consts = ("W", "R", "B") if cfg["const"] else ()
    compare("GRU", inputs, ["Y", "Y_h"], attrs, consts)


@settings(max_examples=25, deadline=None)
@given(cfg=rnn_config, act=st.sampled_from(["Tanh", "Relu", "Sigmoid"]), seed=st.integers(0, 2**16))
def test_rnn_matches_onnxruntime(cfg, act, seed):
    rng = np.random.default_rng(seed)
    inputs = rnn_inputs(rng, "RNN", lens=_lens(rng, cfg),
                        **{k: cfg[k] for k in ("seq", "batch", "size", "hidden", "direction", "layout", "bias",
                                               "initial")})
    nd = 2 if cfg["direction"] == "bidirectional" else 1
    attrs = {"hidden_size": cfg["hidden"], "direction": cfg["direction"], "layout": cfg["layout"],
             "activations": [act] * nd}
    consts = ("W", "R", "B") if cfg["const"] else ()
    compare("RNN", inputs, ["Y", "Y_h"], attrs, consts)


@pytest.mark.parametrize("acts,alphas,betas", [
    (["HardSigmoid", "Tanh", "LeakyRelu"], [0.3, 0.05], [0.4]),
    (["Sigmoid", "Affine", "ScaledTanh"], [0.7, 1.3], [0.2, 0.9]),
    (["Sigmoid", "Elu", "Softsign"], [0.7], None),
    (["Sigmoid", "Relu", "Softplus"], None, None),
    (["ThresholdedRelu", "Tanh", "Tanh"], [0.1], None),
])
def test_lstm_activation_lists(acts, alphas, betas):
    """alpha/beta values go, in order, to the activations that take them."""
    rng = np.random.default_rng(9)
    inputs = rnn_inputs(rng, "LSTM", seq=4, batch=2, size=3, hidden=5, direction="forward", layout=0)
    attrs = {"hidden_size": 5, "activations": acts}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    compare("LSTM", inputs, ["Y", "Y_h", "Y_c"], attrs, ("W", "R", "B"))


def test_gru_bidirectional_activations():
    rng = np.random.default_rng(10)
    inputs = rnn_inputs(rng, "GRU", seq=3, batch=2, size=3, hidden=4, direction="bidirectional", layout=0)
    attrs = {"hidden_size": 4, "direction": "bidirectional",
             "activations": ["HardSigmoid", "Tanh", "Sigmoid", "Softsign"], "activation_alpha": [0.25],
             "activation_beta": [0.45]}
    compare("GRU", inputs, ["Y", "Y_h"], attrs, ("W", "R", "B"))


@pytest.mark.parametrize("op_type", ["LSTM", "GRU", "RNN"])
def test_all_constant_inputs_fold(op_type):
    """Every input an initializer: the node is evaluated once at prepare time (the path subgraph
    bodies take too: make() sees every value)."""
    rng = np.random.default_rng(15)
    inputs = rnn_inputs(rng, op_type, seq=4, batch=2, size=3, hidden=5, direction="bidirectional", layout=0,
                        lens=[4, 2], initial=True)
    outputs = ["Y", "Y_h", "Y_c"] if op_type == "LSTM" else ["Y", "Y_h"]
    names = tuple(n for n, a in inputs if a is not None)
    model, _ = build(op_type, inputs, outputs, {"hidden_size": 5, "direction": "bidirectional"}, constants=names)
    ours = run_sporeling(model, {})
    theirs = run_ort(*build(op_type, inputs, outputs, {"hidden_size": 5, "direction": "bidirectional"}))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("outputs", [["Y"], ["", "Y_h"], ["", "", "Y_c"], ["Y", "", "Y_c"]])
def test_lstm_partial_outputs(outputs):
    rng = np.random.default_rng(11)
    inputs = rnn_inputs(rng, "LSTM", seq=3, batch=2, size=4, hidden=6, direction="bidirectional", layout=0,
                        initial=True)
    ours = compare("LSTM", inputs, outputs, {"hidden_size": 6, "direction": "bidirectional"}, ("W", "R", "B"))
    assert len(ours) == sum(1 for o in outputs if o)


# ---- against PyTorch ---------------------------------------------------------------------------
def _torch_to_onnx_lstm(lstm, nd):
    """torch gate order is (i, f, g, o); ONNX wants (i, o, f, c)."""
    def reorder(t):
        i, f, g, o = np.split(t.detach().numpy(), 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    sfx = ["", "_reverse"][:nd]
    w = np.stack([reorder(getattr(lstm, f"weight_ih_l0{s}")) for s in sfx])
    r = np.stack([reorder(getattr(lstm, f"weight_hh_l0{s}")) for s in sfx])
    b = np.stack([np.concatenate([reorder(getattr(lstm, f"bias_ih_l0{s}")), reorder(getattr(lstm, f"bias_hh_l0{s}"))])
                  for s in sfx])
    return w, r, b


def _torch_run(module, x, lens, h0):
    """torch outputs in ONNX layout 0: Y (T, nd, B, H), and final states (nd, B, H)."""
    t, b = x.shape[0], x.shape[1]
    xt = torch.from_numpy(x)
    with torch.no_grad():
        if lens is not None:
            packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lens.astype(np.int64)),
                                                             enforce_sorted=False)
            y, states = module(packed, h0)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=t)
        else:
            y, states = module(xt, h0)
    nd = 2 if module.bidirectional else 1
    y = y.numpy().reshape(t, b, nd, -1).transpose(0, 2, 1, 3)
    states = states if isinstance(states, tuple) else (states,)
    return [y] + [s.numpy() for s in states]


@pytest.mark.parametrize("hidden", [1, 16, 128])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("with_lens", [False, True])
def test_lstm_matches_torch(hidden, bidirectional, layout, with_lens):
    torch.manual_seed(hidden + 2 * bidirectional + 4 * layout)
    rng = np.random.default_rng(12)
    seq, batch, size, nd = 7, 3, 10, 1 + bidirectional
    lstm = torch.nn.LSTM(size, hidden, bidirectional=bidirectional)
    w, r, b = _torch_to_onnx_lstm(lstm, nd)
    x = rng.standard_normal((seq, batch, size)).astype(np.float32)
    h0 = rng.standard_normal((nd, batch, hidden)).astype(np.float32)
    c0 = rng.standard_normal((nd, batch, hidden)).astype(np.float32)
    lens = np.array([7, 2, 5], np.int32) if with_lens else None
    want = _torch_run(lstm, x, lens, (torch.from_numpy(h0), torch.from_numpy(c0)))
    to_layout = (lambda a, perm: a.transpose(perm)) if layout else (lambda a, perm: a)
    inputs = [("X", np.ascontiguousarray(to_layout(x, (1, 0, 2)))), ("W", w), ("R", r), ("B", b),
              ("sequence_lens", lens), ("initial_h", np.ascontiguousarray(to_layout(h0, (1, 0, 2)))),
              ("initial_c", np.ascontiguousarray(to_layout(c0, (1, 0, 2))))]
    attrs = {"hidden_size": hidden, "direction": "bidirectional" if bidirectional else "forward", "layout": layout}
    model, feeds = build("LSTM", inputs, ["Y", "Y_h", "Y_c"], attrs, constants=("W", "R", "B"))
    y, yh, yc = run_sporeling(model, feeds)
    np.testing.assert_allclose(y, to_layout(want[0], (2, 0, 1, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(yh, to_layout(want[1], (1, 0, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(yc, to_layout(want[2], (1, 0, 2)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_matches_torch(bidirectional):
    """torch's GRU applies the reset gate after the recurrent product: linear_before_reset=1."""
    torch.manual_seed(5)
    rng = np.random.default_rng(13)
    seq, batch, size, hidden, nd = 6, 2, 5, 9, 1 + bidirectional
    gru = torch.nn.GRU(size, hidden, bidirectional=bidirectional)

    def reorder(t):  # torch (r, z, n) -> ONNX (z, r, h)
        rr, z, n = np.split(t.detach().numpy(), 3, axis=0)
        return np.concatenate([z, rr, n], axis=0)

    sfx = ["", "_reverse"][:nd]
    w = np.stack([reorder(getattr(gru, f"weight_ih_l0{s}")) for s in sfx])
    r = np.stack([reorder(getattr(gru, f"weight_hh_l0{s}")) for s in sfx])
    b = np.stack([np.concatenate([reorder(getattr(gru, f"bias_ih_l0{s}")), reorder(getattr(gru, f"bias_hh_l0{s}"))])
                  for s in sfx])
    x = rng.standard_normal((seq, batch, size)).astype(np.float32)
    lens = np.array([6, 3], np.int32)
    want = _torch_run(gru, x, lens, None)
    inputs = [("X", x), ("W", w), ("R", r), ("B", b), ("sequence_lens", lens)]
    attrs = {"hidden_size": hidden, "direction": "bidirectional" if bidirectional else "forward",
             "linear_before_reset": 1}
    y, yh = run_sporeling(*build("GRU", inputs, ["Y", "Y_h"], attrs, constants=("W", "R", "B")))
    np.testing.assert_allclose(y, want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(yh, want[1], rtol=1e-4, atol=1e-5)


def test_lstm_streaming_state_carries_over():
    """Silero-style use: one step at a time, feeding Y_h/Y_c back, equals one pass over the sequence."""
    rng = np.random.default_rng(14)
    inputs = rnn_inputs(rng, "LSTM", seq=6, batch=1, size=8, hidden=128, direction="forward", layout=0,
                        initial=True)
    full_model, feeds = build("LSTM", inputs, ["Y", "Y_h", "Y_c"], {"hidden_size": 128}, constants=("W", "R", "B"))
    y_full, h_full, c_full = run_sporeling(full_model, feeds)
    step_inputs = [(n, a[:1] if n == "X" else a) for n, a in inputs]
    step_model, _ = build("LSTM", step_inputs, ["Y", "Y_h", "Y_c"], {"hidden_size": 128}, constants=("W", "R", "B"))
    import sporeling
    from sporeling.frontends.onnx import from_model_proto

    stepper = sporeling.Model(from_model_proto(step_model), "step")
    h, c = feeds["initial_h"], feeds["initial_c"]
    for t in range(6):
        res = stepper.run({"X": feeds["X"][t : t + 1], "initial_h": h, "initial_c": c})
        y, h, c = res["Y"], res["Y_h"], res["Y_c"]
        np.testing.assert_allclose(y[0], y_full[t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, c_full, rtol=1e-5, atol=1e-6)

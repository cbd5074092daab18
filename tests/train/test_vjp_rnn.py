"""Backward rules of sporeling/train/vjp_rnn.py (LSTM, GRU, RNN): against torch.autograd, and against finite
differences where torch has no equivalent.

The torch cases make torch.nn.LSTM / GRU / RNN run on weights derived from the ONNX-layout leaf tensors (gate
blocks reordered: ONNX iofc -> torch ifgo, ONNX zrh -> torch rzn; torch's GRU is linear_before_reset=1) via
torch.func.functional_call, so torch's gradients land on the ONNX tensors directly; sequence_lens goes through
pack_padded_sequence, whose semantics (padded Y zero, final state at each sequence's last step, the reverse
direction starting there) are ONNX's. Each case runs sporeling's forward kernel, draws random gradients for the
outputs (some dropped), and compares the rule with torch's gradient of sum(outputs * gradients): float64 within
1e-6 relative, float32 within 1e-4. The rest (linear_before_reset=0, peepholes, clip, input_forget, every
activation the kernel supports, zero-length sequences, reverse with sequence_lens) is checked in float64
against central differences of the forward kernel, relative 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.func import functional_call  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import sporeling.train.vjp_rnn  # noqa: E402,F401  (registers the rules)
from sporeling.ops import lookup  # noqa: E402
from sporeling.train.vjp import VJPContext, vjp_for  # noqa: E402

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
TORCH_ORDER = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}  # torch's gate blocks, as ONNX block indices
DTYPES = [(np.float64, 1e-6), (np.float32, 1e-4)]


def _rel(a, b):
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-300)


def make_inputs(op, t, b, i, h, *, nd=1, layout=0, lens=None, states=True, peep=False, seed=0, scale=0.5):
    """ONNX inputs X, W, R, B, sequence_lens, initial_h[, initial_c, P]."""
    rng = np.random.default_rng(seed)
    g = GATES[op]
    n = rng.standard_normal
    state = (b, nd, h) if layout else (nd, b, h)
    ins = [n((b, t, i) if layout else (t, b, i)), scale * n((nd, g * h, i)), scale * n((nd, g * h, h)),
           scale * n((nd, 2 * g * h)), None if lens is None else np.asarray(lens, np.int32),
           n(state) if states else None]
    if op == "LSTM":
        ins += [n(state) if states else None, scale * n((nd, 3 * h)) if peep else None]
    while ins[-1] is None:
        ins.pop()
    return ins


def run_rule(op, ins, attrs, *, drop=(), seed=1, needs=None):
    """Forward kernel, random output gradients (outputs in `drop` get None), the rule's input gradients."""
    outs = lookup(op, 17).kernel(*ins, **attrs)
    rng = np.random.default_rng(seed)
    grads = [None if k in drop else rng.standard_normal(y.shape).astype(y.dtype) for k, y in enumerate(outs)]
    given = [None if g is None else g.copy() for g in grads]  # copies: the rule's to write into
    got = vjp_for(op)(VJPContext(op, dict(attrs), list(ins), list(outs), given, needs=needs or []))
    assert len(got) == len(ins)
    assert len(ins) < 5 or got[4] is None, "sequence_lens is not differentiable"
    return outs, grads, got


# ---- torch -----------------------------------------------------------------------------------------------
def torch_outputs(op, ts, attrs, t, b, h, lens):
    """torch's (Y, Y_h[, Y_c]) in ONNX layout, computed from the ONNX-layout tensors ts."""
    direction, layout = attrs.get("direction", "forward"), attrs.get("layout", 0)
    nd = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    order = torch.tensor([k * h + j for k in TORCH_ORDER[op] for j in range(h)])
    kw = {"nonlinearity": attrs["activations"][0].lower()} if op == "RNN" and "activations" in attrs else {}
    module = getattr(torch.nn, op)(ts[0].shape[-1], h, batch_first=bool(layout), bidirectional=nd == 2,
                                   **kw).double()
    params = {}
    for d in range(nd):
        suffix = "_l0" + ("_reverse" if d else "")
        params["weight_ih" + suffix] = ts[1][d][order]
        params["weight_hh" + suffix] = ts[2][d][order]
        params["bias_ih" + suffix] = ts[3][d][: g * h][order]
        params["bias_hh" + suffix] = ts[3][d][g * h :][order]
    x = ts[0]
    if direction == "reverse":
        x = x.flip(1 if layout else 0)
    states = [s.transpose(0, 1) if layout else s for s in ts[5:7] if s is not None]
    hx = None if not states else (tuple(states) if op == "LSTM" else states[0])
    if lens is not None:
        x = pack_padded_sequence(x, torch.tensor(lens), batch_first=bool(layout), enforce_sorted=False)
    y, hn = functional_call(module, params, (x, hx))
    if lens is not None:
        y = pad_packed_sequence(y, batch_first=bool(layout), total_length=t)[0]
    if direction == "reverse":
        y = y.flip(1 if layout else 0)
    y = y.reshape(b, t, nd, h) if layout else y.reshape(t, b, nd, h).permute(0, 2, 1, 3)
    finals = list(hn) if op == "LSTM" else [hn]
    return [y] + [s.transpose(0, 1) if layout else s for s in finals]


def check_torch(op, t, b, i, h, attrs, *, dtype, tol, lens=None, states=True, drop=(), seed=0):
    nd = 2 if attrs.get("direction") == "bidirectional" else 1
    ins = make_inputs(op, t, b, i, h, nd=nd, layout=attrs.get("layout", 0), lens=lens, states=states, seed=seed)
    ins = [None if k == 4 or x is None else x.astype(dtype) for k, x in enumerate(ins)]
    if lens is not None:
        ins[4] = np.asarray(lens, np.int32)
    attrs = dict(attrs, hidden_size=h)
    outs, grads, got = run_rule(op, ins, attrs, drop=drop, seed=seed + 1)
    ts = [None if k == 4 or x is None else torch.tensor(x.astype(np.float64), requires_grad=True)
          for k, x in enumerate(ins)]
    touts = torch_outputs(op, ts, attrs, t, b, h, lens)
    loss = 0
    for y, ty, g in zip(outs, touts, grads):
        assert tuple(ty.shape) == y.shape
        assert _rel(y.astype(np.float64), ty.detach().numpy()) <= tol, f"{op} forward differs from torch's"
        if g is not None:
            loss = loss + (ty * torch.tensor(g.astype(np.float64))).sum()
    diff = [k for k, x in enumerate(ts) if x is not None]
    want = torch.autograd.grad(loss, [ts[k] for k in diff], allow_unused=True)
    for k, w in zip(diff, want):
        assert got[k] is not None and got[k].shape == ins[k].shape and got[k].dtype == ins[k].dtype
        w = np.zeros(ins[k].shape) if w is None else w.numpy()
        err = _rel(got[k].astype(np.float64), w)
        assert err <= tol, f"{op} {attrs}: input {k} relative error {err:.2e} > {tol}"


SIZES = [(5, 3, 4, 6), (1, 1, 2, 3), (7, 2, 5, 4)]
DIRECTIONS = ["forward", "reverse", "bidirectional"]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("size", SIZES)
def test_against_torch(op, direction, size, dtype, tol):
    attrs = {"direction": direction}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    check_torch(op, *size, attrs, dtype=dtype, tol=tol)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("drop", [(1, 2), (0,), ()], ids=["Y-only", "Y_h-only", "all"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_against_torch_partial_gradients(op, drop, direction):
    attrs = {"direction": direction, "linear_before_reset": 1} if op == "GRU" else {"direction": direction}
    if op == "LSTM" and drop == (0,):
        drop = (0, 2)  # Y_h only
    check_torch(op, 6, 3, 4, 5, attrs, dtype=np.float64, tol=1e-6, drop=drop, seed=3)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("layout", [0, 1])
def test_against_torch_sequence_lens_layout_no_states(op, layout, dtype, tol):
    attrs = {"direction": "bidirectional", "layout": layout}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    check_torch(op, 6, 4, 3, 5, attrs, dtype=dtype, tol=tol, lens=[6, 2, 4, 1], seed=5)
    check_torch(op, 4, 2, 3, 3, dict(attrs, direction="forward"), dtype=dtype, tol=tol, lens=[3, 1], states=False)


def test_against_torch_relu_rnn():
    check_torch("RNN", 5, 3, 4, 6, {"direction": "bidirectional", "activations": ["Relu", "Relu"]},
                dtype=np.float64, tol=1e-6)


# ---- finite differences ----------------------------------------------------------------------------------
def check_fd(op, ins, attrs, *, drop=(), eps=1e-6, tol=1e-6):
    kernel = lookup(op, 17).kernel
    outs, grads, got = run_rule(op, ins, attrs, drop=drop)
    if "clip" in attrs:  # the case must actually clip something
        unclipped = kernel(*ins, **{k: v for k, v in attrs.items() if k != "clip"})
        assert any(not np.allclose(a, b) for a, b in zip(outs, unclipped))

    def loss(args):
        return sum(float(np.sum(y * g)) for y, g in zip(kernel(*args, **attrs), grads) if g is not None)

    for k, x in enumerate(ins):
        if x is None or k == 4:
            continue
        fd = np.empty_like(x)
        for idx in np.ndindex(*x.shape):
            args = list(ins)
            args[k] = x.copy()
            args[k][idx] += eps
            up = loss(args)
            args[k][idx] -= 2 * eps
            fd[idx] = (up - loss(args)) / (2 * eps)
        assert got[k] is not None and got[k].shape == x.shape
        err = _rel(got[k], fd)
        assert err <= tol, f"{op} {attrs}: input {k} relative error {err:.2e} > {tol}"


LENS = [4, 0, 2]  # with a sequence of length 0: its state stays the initial one, its Y is all zero
FD_CASES = [
    ("LSTM", {"direction": "bidirectional", "clip": 0.8}, dict(peep=True, lens=LENS)),
    ("LSTM", {"direction": "reverse", "input_forget": 1}, dict(lens=LENS)),
    ("LSTM", {"direction": "bidirectional", "layout": 1, "input_forget": 1, "clip": 1.0}, dict(peep=True)),
    ("LSTM", {"activations": ["HardSigmoid", "Softsign", "Softplus"], "activation_alpha": [0.3],
              "activation_beta": [0.45]}, dict(peep=True)),
    ("LSTM", {"direction": "bidirectional", "activations": ["Sigmoid", "Tanh", "Tanh", "Affine", "ScaledTanh", "Elu"],
              "activation_alpha": [0.7, 1.3, 0.9], "activation_beta": [0.2, 0.8]}, dict(lens=LENS)),
    ("GRU", {"direction": "forward"}, {}),
    ("GRU", {"direction": "reverse", "layout": 1}, dict(lens=LENS)),
    ("GRU", {"direction": "bidirectional", "clip": 0.8}, dict(lens=LENS)),
    ("GRU", {"direction": "bidirectional", "linear_before_reset": 1, "clip": 0.8, "layout": 1}, dict(lens=LENS)),
    ("GRU", {"activations": ["LeakyRelu", "Tanh"], "activation_alpha": [0.2]}, {}),
    ("GRU", {"direction": "bidirectional", "linear_before_reset": 1,
             "activations": ["HardSigmoid", "Softsign", "Sigmoid", "Elu"]}, {}),
    ("RNN", {"direction": "reverse", "clip": 0.8, "layout": 1}, dict(lens=LENS)),
    ("RNN", {"direction": "bidirectional", "activations": ["ThresholdedRelu", "Softplus"],
             "activation_alpha": [0.1]}, dict(lens=LENS)),
    ("RNN", {"activations": ["LeakyRelu"], "activation_alpha": [0.3], "clip": 1.0}, {}),
]


@pytest.mark.parametrize("op,attrs,kw", FD_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FD_CASES)])
def test_against_finite_differences(op, attrs, kw):
    nd = 2 if attrs.get("direction") == "bidirectional" else 1
    ins = make_inputs(op, 4, 3, 2, 2, nd=nd, layout=attrs.get("layout", 0), seed=7, scale=0.8, **kw)
    check_fd(op, ins, attrs)


def test_finite_differences_partial_gradients():
    ins = make_inputs("LSTM", 3, 2, 2, 3, nd=2, peep=True, lens=[3, 1], seed=2)
    check_fd("LSTM", ins, {"direction": "bidirectional"}, drop=(0, 1))  # only Y_c reaches the loss
    check_fd("GRU", make_inputs("GRU", 3, 2, 2, 3, seed=4), {}, drop=(0,))  # only Y_h


# ---- the contract ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gradient_dtypes_and_unwanted_inputs(dtype):
    """Gradients come in the input's dtype; unwanted ones are None and leave the wanted ones unchanged."""
    ins = [x.astype(dtype) if x is not None and k != 4 else x
           for k, x in enumerate(make_inputs("LSTM", 3, 2, 2, 3, nd=2, peep=True, lens=[3, 2]))]
    attrs = {"direction": "bidirectional"}
    full = run_rule("LSTM", ins, attrs)[2]
    for needs in ([False, True, False, True, False, True, False, True], [True, False, True, False] + [False] * 4):
        got = run_rule("LSTM", ins, attrs, needs=needs)[2]
        for k, (x, need) in enumerate(zip(ins, needs)):
            if need:
                assert got[k].dtype == dtype and got[k].shape == x.shape and np.isfinite(got[k]).all()
                np.testing.assert_array_equal(got[k], full[k])
            else:
                assert got[k] is None
    # float16 is computed in float32: its gradients agree with a float32 run on the same (rounded) values
    if dtype == np.float16:
        ref = run_rule("LSTM", [x.astype(np.float32) if x is not None and k != 4 else x for k, x in enumerate(ins)],
                       attrs)[2]
        for k in (0, 1, 2, 3, 5, 6, 7):
            assert _rel(full[k].astype(np.float32), ref[k]) < 2e-3


def test_omitted_optional_inputs_and_outputs():
    """X, W, R only (no bias, no states), and a node whose Y_h/Y_c outputs are absent."""
    ins = make_inputs("GRU", 4, 2, 3, 3, seed=9)[:3]
    outs, grads, got = run_rule("GRU", ins, {"linear_before_reset": 1})
    assert len(got) == 3 and all(g.shape == x.shape for g, x in zip(got, ins))
    full = run_rule("GRU", ins + [np.zeros((1, 18))], {"linear_before_reset": 1})[2]
    for a, b in zip(got, full):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    y = outs[0]
    ctx = VJPContext("GRU", {"linear_before_reset": 1}, list(ins), [y], [grads[0]])
    only_y = vjp_for("GRU")(ctx)
    with_hidden = vjp_for("GRU")(VJPContext("GRU", {"linear_before_reset": 1}, list(ins), list(outs),
                                            [grads[0], None]))
    for a, b in zip(only_y, with_hidden):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_without_y_the_kernel_is_run_again(op):
    """A node whose Y output is unused, saved in another dtype or not kept (a zero-stride stand-in) gets the same
    gradients: the rule runs the forward kernel for Y instead of reading it."""
    attrs = {"direction": "bidirectional", "layout": 1, "clip": 2.0}
    ins = make_inputs(op, 5, 3, 2, 4, nd=2, layout=1, lens=[5, 1, 3], peep=op == "LSTM", seed=11)
    outs, grads, got = run_rule(op, ins, attrs, drop=(0,))
    stand_in = np.broadcast_to(np.zeros((), outs[0].dtype), outs[0].shape)  # what the runtime gives for unkept
    for saved in (None, outs[0].astype(np.float16), stand_in):
        again = vjp_for(op)(VJPContext(op, dict(attrs), list(ins), [saved] + list(outs[1:]), grads))
        for a, b in zip(got, again):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)

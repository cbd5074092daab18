"""Backward rules of sporeling/train/vjp_nn.py against torch.autograd.

Each case runs sporeling's own forward kernel to produce the node's outputs, draws a random gradient for
each output, and compares the rule's input gradients with torch's gradient of sum(output * gradient):
float64 within a relative error of 1e-6 and a float32 smoke run within 1e-4. torch recomputes the forward
too, and it must match sporeling's, so the gradients are of the same function.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import sporeling.train.vjp_conv  # noqa: E402
import sporeling.train.vjp_pool  # noqa: E402,F401
import sporeling.train.vjp_nn  # noqa: E402  (registers the rules)
from sporeling.ops import lookup  # noqa: E402
from sporeling.train.vjp import VJPContext, vjp_for  # noqa: E402

DTYPES = [(np.float64, 1e-6), (np.float32, 1e-4)]


def _n(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _rel(a, b):
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-300)


def check(op, inputs, attrs, torch_fn, *, opset=17, dtype=np.float64, tol=1e-6, diff=None, drop_grads=(), seed=1):
    """torch_fn(list of tensors or None) -> tensor or tuple of tensors, the op's outputs."""
    inputs = [None if x is None else x.astype(dtype) for x in inputs]
    diff = [i for i, x in enumerate(inputs) if x is not None] if diff is None else diff
    res = lookup(op, opset).kernel(*inputs, **attrs)
    outputs = list(res) if isinstance(res, (tuple, list)) else [res]
    r = np.random.default_rng(seed)
    grads = [None if k in drop_grads or not np.issubdtype(y.dtype, np.floating) else r.standard_normal(y.shape)
             .astype(y.dtype) for k, y in enumerate(outputs)]
    # only the checked inputs' gradients are asked for, as the training runtime asks; the gradients are copies,
    # the rule's to write into
    needs = [x is not None and i in diff for i, x in enumerate(inputs)]
    got = vjp_for(op)(VJPContext(op, dict(attrs), inputs, outputs, [None if g is None else g.copy() for g in grads],
                                  needs, opset=opset))
    assert len(got) == len(inputs)
    # the same, offered arena buffers (vjp.py): a rule may write a gradient there and return it, or ignore them
    offered = [np.full(x.shape, np.nan, x.dtype) if needs[i] else None for i, x in enumerate(inputs)]
    again = vjp_for(op)(VJPContext(op, dict(attrs), inputs, outputs, [None if g is None else g.copy() for g in grads],
                                    needs, opset=opset, out=offered))
    for i in diff:
        np.testing.assert_array_equal(again[i], got[i], err_msg=f"{op}: input {i} with an offered buffer")
    ts = [None if x is None else torch.tensor(x.astype(np.float64), requires_grad=i in diff)
          for i, x in enumerate(inputs)]
    outs = torch_fn(ts)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    loss = 0
    for y, ty, g in zip(outputs, outs, grads):
        assert ty.shape == y.shape, f"{op}: torch output {tuple(ty.shape)} vs sporeling {y.shape}"
        assert _rel(ty.detach().numpy(), y.astype(np.float64)) <= tol, f"{op} forward differs from torch's"
        if g is not None:
            loss = loss + (ty * torch.tensor(g.astype(np.float64))).sum()
    want = torch.autograd.grad(loss, [ts[i] for i in diff], allow_unused=True)
    for i, w in zip(diff, want):
        assert got[i] is not None, f"{op}: no gradient for input {i}"
        assert got[i].shape == inputs[i].shape and got[i].dtype == inputs[i].dtype, f"{op}: input {i} shape/dtype"
        w = np.zeros(inputs[i].shape) if w is None else w.numpy()
        err = _rel(got[i].astype(np.float64), w)
        assert err <= tol, f"{op} {attrs}: input {i} relative error {err:.2e} > {tol}"
    return got


# ---- MatMul, Gemm -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                                   ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((4,), (4,))])
def test_matmul(sa, sb, dtype, tol):
    check("MatMul", [_n(*sa), _n(*sb, seed=1)], {}, lambda t: t[0] @ t[1], dtype=dtype, tol=tol)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("attrs,c_shape", [({}, (5,)), ({"alpha": 0.5, "beta": 2.0, "transA": 1}, (3, 1)),
                                           ({"transB": 1}, (1, 5)), ({"transA": 1, "transB": 1}, None),
                                           ({"beta": -1.5}, ()), ({"alpha": 2.0}, (3, 5))])
def test_gemm(attrs, c_shape, dtype, tol):
    a = _n(4, 3) if attrs.get("transA") else _n(3, 4)
    b = _n(5, 4, seed=1) if attrs.get("transB") else _n(4, 5, seed=1)
    c = None if c_shape is None else _n(*c_shape, seed=2)

    def ref(t):
        ta = t[0].T if attrs.get("transA") else t[0]
        tb = t[1].T if attrs.get("transB") else t[1]
        y = attrs.get("alpha", 1.0) * (ta @ tb)
        return y if t[2] is None else y + attrs.get("beta", 1.0) * t[2]

    check("Gemm", [a, b, c], attrs, ref, dtype=dtype, tol=tol)


# ---- Conv -----------------------------------------------------------------------------------------
CONV2D = [
    ({}, (2, 3, 7, 6), (4, 3, 3, 3), True),
    ({}, (3, 5, 6, 7), (4, 5, 1, 1), True),  # pointwise: batched GEMMs on NCHW
    # 3x3, 16+ channels, stride 1: X's gradient through the forward Conv kernel (symmetric, lopsided, no pads)
    ({"pads": [1, 1, 1, 1]}, (2, 16, 7, 6), (17, 16, 3, 3), True),
    ({"pads": [2, 0, 1, 2]}, (2, 16, 6, 7), (16, 16, 3, 3), False),
    ({}, (1, 18, 6, 6), (16, 18, 3, 3), True),
    ({"strides": [2, 2]}, (2, 3, 7, 7), (4, 3, 1, 1), False),
    ({"strides": [2, 1], "pads": [1, 0, 2, 1]}, (2, 3, 8, 7), (4, 3, 3, 2), True),
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, (1, 2, 9, 9), (3, 2, 3, 3), False),
    ({"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 4, 7, 8), (6, 2, 3, 3), True),
    ({"group": 3, "pads": [1, 1, 1, 1]}, (2, 3, 6, 6), (3, 1, 3, 3), True),  # depthwise
    ({"group": 5, "pads": [2, 0, 1, 2]}, (2, 5, 7, 6), (5, 1, 3, 3), True),  # stride 1: X's gradient by a Conv
    # depthwise with strides: the input is split into stride phases (with dilation it is not)
    ({"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 4, 9, 8), (4, 1, 3, 3), True),
    ({"group": 3, "strides": [2, 3], "pads": [0, 1, 2, 1]}, (2, 3, 10, 11), (3, 1, 3, 2), False),
    ({"group": 2, "strides": [2, 2], "dilations": [2, 1]}, (1, 2, 9, 9), (2, 1, 3, 3), True),
    ({"group": 4, "strides": [2, 2], "dilations": [1, 2]}, (1, 4, 9, 9), (8, 1, 3, 3), False),  # multiplier 2
    ({"strides": [3, 3]}, (1, 2, 8, 8), (2, 2, 2, 2), True),  # the last rows are never read
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (2, 3, 7, 8), (4, 3, 3, 3), True),
    ({"auto_pad": "SAME_LOWER"}, (1, 2, 6, 5), (2, 2, 2, 2), False),
]


def _torch_conv(attrs, x_shape, w_shape, nd):
    strides = attrs.get("strides", [1] * nd)
    dil = attrs.get("dilations", [1] * nd)
    ap = attrs.get("auto_pad", "NOTSET")
    pads = attrs.get("pads", [0] * (2 * nd))
    if ap.startswith("SAME"):
        out = [-(-s // st) for s, st in zip(x_shape[2:], strides)]
        total = [max((o - 1) * st + (k - 1) * d + 1 - s, 0)
                 for o, st, k, d, s in zip(out, strides, w_shape[2:], dil, x_shape[2:])]
        begin = [t // 2 if ap == "SAME_UPPER" else t - t // 2 for t in total]
        pads = begin + [t - b for t, b in zip(total, begin)]
    fpad = [p for ax in reversed(range(nd)) for p in (pads[ax], pads[nd + ax])]  # F.pad: last axis first
    fn = F.conv2d if nd == 2 else F.conv1d

    def ref(t):
        return fn(F.pad(t[0], fpad), t[1], t[2] if len(t) > 2 else None, stride=strides, dilation=dil,
                  groups=attrs.get("group", 1))

    return ref


@pytest.mark.parametrize("attrs,xs,ws,bias", CONV2D)
def test_conv2d(attrs, xs, ws, bias):
    ins = [_n(*xs), _n(*ws, seed=1)] + ([_n(ws[0], seed=2)] if bias else [])
    for dtype, tol in DTYPES:
        check("Conv", ins, attrs, _torch_conv(attrs, xs, ws, 2), dtype=dtype, tol=tol)


@pytest.mark.parametrize("attrs,xs,ws", [({}, (2, 3, 9), (4, 3, 3)),
                                         ({"strides": [2], "pads": [1, 2]}, (2, 2, 10), (3, 2, 4)),
                                         ({"group": 2, "dilations": [2]}, (1, 4, 11), (4, 2, 3)),
                                         ({"group": 3, "strides": [2], "pads": [1, 1]}, (2, 3, 11), (3, 1, 3)),
                                         ({"auto_pad": "SAME_UPPER", "strides": [2]}, (2, 3, 9), (2, 3, 4))])
def test_conv1d(attrs, xs, ws):
    ins = [_n(*xs), _n(*ws, seed=1), _n(ws[0], seed=2)]
    for dtype, tol in DTYPES:
        check("Conv", ins, attrs, _torch_conv(attrs, xs, ws, 1), dtype=dtype, tol=tol)


def test_conv_needs():
    """Only the wanted gradients are computed."""
    x, w = _n(1, 2, 5, 5), _n(3, 2, 3, 3, seed=1)
    y = lookup("Conv", 17).kernel(x, w)
    got = vjp_for("Conv")(VJPContext("Conv", {}, [x, w], [y], [np.ones_like(y)], needs=[False, True]))
    assert got[0] is None and got[1] is not None and got[1].shape == w.shape


# ---- pools ----------------------------------------------------------------------------------------
POOL = [
    ({"kernel_shape": [2, 2]}, (2, 3, 6, 6)),
    ({"kernel_shape": [2, 2], "strides": [2, 2]}, (2, 3, 8, 6)),  # windows that tile the input
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 2, 7, 8)),
    ({"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 0, 0, 1]}, (1, 2, 6, 7)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (1, 2, 8, 8)),
    ({"kernel_shape": [2, 2], "strides": [3, 3]}, (1, 2, 8, 7)),
]


@pytest.mark.parametrize("op,attrs,xs,ws", [
    ("Conv", {}, (3, 5, 6, 7), (4, 5, 1, 1)),  # pointwise
    ("Conv", {"pads": [1, 1, 1, 1]}, (2, 16, 7, 6), (17, 16, 3, 3)),  # through the forward Conv
    ("Conv", {"strides": [2, 1], "pads": [1, 0, 2, 1]}, (2, 3, 8, 7), (4, 3, 3, 2)),  # tap GEMMs
    ("Conv", {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}, (2, 4, 9, 8), (4, 1, 3, 3)),  # depthwise
    ("Conv", {"group": 5, "pads": [2, 0, 1, 2]}, (2, 5, 7, 6), (5, 1, 3, 3)),  # depthwise, forward kernel
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, (2, 3, 8, 6), None),  # windows tile the input
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [1, 1]}, (2, 3, 7, 6), None),  # overlapping windows
])
def test_conv_and_maxpool_write_x_gradient_into_the_offered_buffer(op, attrs, xs, ws):
    """The big rules write X's gradient straight into the arena buffer the runtime offers (no copy after), in
    float32 as in float64; the values are those check() compares with torch."""
    for dtype in (np.float32, np.float64):
        ins = [_n(*xs).astype(dtype)] + ([] if ws is None else [_n(*ws, seed=1).astype(dtype)])
        res = lookup(op, 17 if op == "Conv" else 12).kernel(*ins, **attrs)
        ys = list(res) if isinstance(res, tuple) else [res]
        g = np.random.default_rng(2).standard_normal(ys[0].shape).astype(dtype)
        buf = np.full(xs, np.nan, dtype)
        got = vjp_for(op)(VJPContext(op, dict(attrs), ins, ys, [g.copy()] + [None] * (len(ys) - 1), out=[buf, None]))
        assert np.shares_memory(got[0], buf) and not np.isnan(buf).any()
        plain = vjp_for(op)(VJPContext(op, dict(attrs), ins, ys, [g.copy()] + [None] * (len(ys) - 1)))
        np.testing.assert_array_equal(got[0], plain[0])


def _torch_pool_args(attrs):
    pads = attrs.get("pads", [0, 0, 0, 0])
    fpad = [pads[1], pads[3], pads[0], pads[2]]
    return fpad, dict(kernel_size=attrs["kernel_shape"], stride=attrs.get("strides", [1, 1]),
                      ceil_mode=bool(attrs.get("ceil_mode", 0)))


@pytest.mark.parametrize("attrs,xs", POOL + [({"kernel_shape": [2, 2], "dilations": [2, 1]}, (1, 2, 7, 6))])
def test_maxpool(attrs, xs):
    fpad, kw = _torch_pool_args(attrs)
    kw["dilation"] = attrs.get("dilations", [1, 1])

    def ref(t):
        return F.max_pool2d(F.pad(t[0], fpad, value=-float("inf")), **kw)

    for dtype, tol in DTYPES:
        check("MaxPool", [_n(*xs)], attrs, ref, opset=12, dtype=dtype, tol=tol)


@pytest.mark.parametrize("attrs,out_hw", [({"kernel_shape": [2, 2], "strides": [2, 2]}, (4, 4)),
                                          ({"kernel_shape": [3, 3]}, (6, 6))])
def test_maxpool_ties_go_to_the_first_maximum(attrs, out_hw):
    """After a ReLU many windows hold several equal maxima (zeros): one element, the first, gets the gradient."""
    x = np.maximum(np.round(_n(2, 3, 8, 8, seed=5)), 0)
    shape = (2, 3) + out_hw
    y, idx = lookup("MaxPool", 12).kernel(x, **attrs, out=(np.empty(shape), np.empty(shape, np.int64)))
    g = np.random.default_rng(6).standard_normal(y.shape) + 3  # no zero gradients
    got = vjp_for("MaxPool")(VJPContext("MaxPool", attrs, [x], [y, idx], [g.copy(), None]))[0]
    want = np.zeros(x.size)
    np.add.at(want, idx.reshape(-1), g.reshape(-1))
    np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-12, atol=0)


def test_maxpool_indices_output_ignored():
    x = _n(1, 2, 6, 6)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    y, idx = lookup("MaxPool", 12).kernel(x, **attrs, out=(np.empty((1, 2, 3, 3)), np.empty((1, 2, 3, 3), np.int64)))
    g = np.random.default_rng(3).standard_normal(y.shape)
    got = vjp_for("MaxPool")(VJPContext("MaxPool", attrs, [x], [y, idx], [g, None]))
    # each window sends its gradient to exactly one element: the one the Indices output names
    np.testing.assert_allclose(got[0].reshape(-1)[idx.reshape(-1)], g.reshape(-1), rtol=0, atol=0)
    assert np.count_nonzero(got[0]) == g.size


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("attrs,xs", POOL)
def test_averagepool(attrs, xs, include):
    attrs = dict(attrs, count_include_pad=include)
    pads = attrs.get("pads", [0, 0, 0, 0])
    fpad, kw = _torch_pool_args(attrs)

    def ref(t):
        if pads[:2] == pads[2:]:
            return F.avg_pool2d(t[0], padding=pads[:2], count_include_pad=bool(include), **kw)
        # torch pads symmetrically only: pad explicitly, and divide by the count of the taps that count
        total = F.avg_pool2d(F.pad(t[0], fpad), count_include_pad=True, **kw)
        ones = torch.ones_like(t[0]) if not include else torch.ones_like(F.pad(t[0], fpad))
        counted = F.avg_pool2d(F.pad(ones, fpad) if not include else ones, count_include_pad=True, **kw)
        return total / counted

    for dtype, tol in DTYPES:
        check("AveragePool", [_n(*xs)], attrs, ref, opset=19, dtype=dtype, tol=tol)


def test_global_averagepool():
    for dtype, tol in DTYPES:
        check("GlobalAveragePool", [_n(2, 3, 4, 5)], {}, lambda t: t[0].mean(dim=(2, 3), keepdim=True),
              dtype=dtype, tol=tol)
        check("GlobalAveragePool", [_n(2, 3, 7)], {}, lambda t: t[0].mean(dim=2, keepdim=True),
              dtype=dtype, tol=tol)


# ---- Softmax, LogSoftmax ---------------------------------------------------------------------------
@pytest.mark.parametrize("op,tfn", [("Softmax", torch.softmax), ("LogSoftmax", torch.log_softmax)])
@pytest.mark.parametrize("axis", [None, 0, 1, -2])
def test_softmax_13(op, tfn, axis):
    attrs = {} if axis is None else {"axis": axis}
    for dtype, tol in DTYPES:
        check(op, [_n(3, 4, 5) * 3], attrs, lambda t: tfn(t[0], dim=-1 if axis is None else axis),
              opset=13, dtype=dtype, tol=tol)


@pytest.mark.parametrize("op,tfn", [("Softmax", torch.softmax), ("LogSoftmax", torch.log_softmax)])
@pytest.mark.parametrize("axis", [None, 0, 2])
def test_softmax_legacy_flattens(op, tfn, axis):
    a = 1 if axis is None else axis
    attrs = {} if axis is None else {"axis": axis}
    shape = (2, 3, 4)

    def ref(t):
        rows = int(np.prod(shape[:a]))
        return tfn(t[0].reshape(rows, -1), dim=-1).reshape(shape)

    for dtype, tol in DTYPES:
        check(op, [_n(*shape) * 3], attrs, ref, opset=11, dtype=dtype, tol=tol)


# ---- BatchNormalization, LayerNormalization --------------------------------------------------------
def _bn_inputs(shape):
    c = shape[1]
    rng = np.random.default_rng(5)
    return [_n(*shape) * 2 + 1, _n(c, seed=1), _n(c, seed=2), _n(c, seed=3), rng.uniform(0.5, 2.0, c)]


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("drop", [(), (1, 2)])
def test_batchnorm_training(shape, drop):
    attrs = {"training_mode": 1, "epsilon": 1e-3, "momentum": 0.8}
    axes = (0,) + tuple(range(2, len(shape)))
    cs = (1, -1) + (1,) * (len(shape) - 2)

    def ref(t):
        x, s, b, m, v = t
        mu = x.mean(dim=axes, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=axes, keepdim=True)  # biased, as ONNX
        y = (x - mu) / torch.sqrt(var + 1e-3) * s.reshape(cs) + b.reshape(cs)
        return y, m * 0.8 + mu.reshape(-1) * 0.2, v * 0.8 + var.reshape(-1) * 0.2

    for dtype, tol in DTYPES:
        diff = [0, 1, 2] if drop else [0, 1, 2, 3, 4]
        check("BatchNormalization", _bn_inputs(shape), attrs, ref, opset=15, dtype=dtype, tol=tol, diff=diff,
              drop_grads=drop)


def test_batchnorm_training_in_blocks_of_samples(monkeypatch):
    """The backward walks the batch in blocks (here 2 samples of 5, the last one short): same gradients."""
    monkeypatch.setattr(sporeling.train.vjp_nn, "BN_BLOCK_ELEMENTS", 2 * 3 * 16)
    attrs = {"training_mode": 1, "epsilon": 1e-3, "momentum": 0.8}

    def ref(t):
        x, s, b, m, v = t
        mu = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        y = (x - mu) / torch.sqrt(var + 1e-3) * s.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)
        return y, m * 0.8 + mu.reshape(-1) * 0.2, v * 0.8 + var.reshape(-1) * 0.2

    for dtype, tol in DTYPES:
        check("BatchNormalization", _bn_inputs((5, 3, 4, 4)), attrs, ref, opset=15, dtype=dtype, tol=tol,
              diff=[0, 1, 2], drop_grads=(1, 2))


def test_batchnorm_inference():
    shape = (2, 3, 4, 4)

    def ref(t):
        x, s, b, m, v = t
        cs = (1, -1, 1, 1)  # F.batch_norm refuses gradients for the statistics: the affine map written out
        return (x - m.reshape(cs)) / torch.sqrt(v.reshape(cs) + 1e-5) * s.reshape(cs) + b.reshape(cs)

    for dtype, tol in DTYPES:
        check("BatchNormalization", _bn_inputs(shape), {}, ref, opset=15, dtype=dtype, tol=tol)


@pytest.mark.parametrize("axis,shape,s_shape,bias", [(-1, (3, 5), (5,), True), (1, (2, 3, 4), (3, 4), True),
                                                     (-2, (2, 3, 4), (4,), False), (0, (2, 3), (2, 3), True)])
@pytest.mark.parametrize("drop", [(), (1, 2)])
def test_layernorm(axis, shape, s_shape, bias, drop):
    a = axis % len(shape)
    dims = tuple(range(a, len(shape)))
    ins = [_n(*shape) * 2 + 0.5, _n(*s_shape, seed=1), _n(*s_shape, seed=2) if bias else None]
    attrs = {"axis": axis, "epsilon": 1e-4}

    def ref(t):
        mu = t[0].mean(dim=dims, keepdim=True)
        inv = 1 / torch.sqrt(((t[0] - mu) ** 2).mean(dim=dims, keepdim=True) + 1e-4)
        y = (t[0] - mu) * inv * t[1]
        return (y if t[2] is None else y + t[2]), mu, inv

    for dtype, tol in DTYPES:
        check("LayerNormalization", ins, attrs, ref, dtype=dtype, tol=tol, drop_grads=drop)


# ---- ConvTranspose --------------------------------------------------------------------------------
CONVT = [
    ({}, (2, 3, 4, 5), (3, 2, 3, 3)),
    ({"strides": [2, 2], "pads": [1, 0, 0, 1]}, (1, 2, 4, 4), (2, 3, 3, 2)),
    ({"strides": [2, 3], "output_padding": [1, 2], "dilations": [1, 2]}, (2, 2, 3, 4), (2, 2, 2, 3)),
    ({"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}, (1, 4, 3, 3), (4, 3, 3, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 2, 3, 4), (2, 2, 3, 3)),
    ({"strides": [2, 2], "output_shape": [8, 9]}, (1, 2, 4, 4), (2, 1, 3, 3)),
]


@pytest.mark.parametrize("attrs,xs,ws", CONVT)
def test_conv_transpose(attrs, xs, ws):
    nd = 2
    strides, dil = attrs.get("strides", [1] * nd), attrs.get("dilations", [1] * nd)
    out_pad = attrs.get("output_padding", [0] * nd)
    full = [s * (n - 1) + op + (k - 1) * d + 1 for n, s, op, k, d in zip(xs[2:], strides, out_pad, ws[2:], dil)]
    ap = attrs.get("auto_pad", "NOTSET")
    if "output_shape" in attrs or ap.startswith("SAME"):
        out = attrs.get("output_shape") or [n * s for n, s in zip(xs[2:], strides)]
        total = [f - o for f, o in zip(full, out)]
        begin = [t // 2 if ap == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        pads = attrs.get("pads", [0] * 2 * nd)
        begin, out = pads[:nd], [f - pads[a] - pads[a + nd] for a, f in enumerate(full)]

    def ref(t):  # torch's full result, lengthened by output_padding (rows that get only the bias), cropped
        y = F.conv_transpose2d(t[0], t[1], None, stride=strides, dilation=dil, groups=attrs.get("group", 1))
        y = F.pad(y, [0, full[1] - y.shape[3], 0, full[0] - y.shape[2]])
        return y[:, :, begin[0]:begin[0] + out[0], begin[1]:begin[1] + out[1]] + t[2].reshape(1, -1, 1, 1)

    ins = [_n(*xs), _n(*ws, seed=1), _n(ws[1] * attrs.get("group", 1), seed=2)]
    for dtype, tol in DTYPES:
        check("ConvTranspose", ins, attrs, ref, dtype=dtype, tol=tol)


@pytest.mark.parametrize("attrs,xs,ws,bias", [c for c in CONV2D if c[2][2:] != (1, 1) and "group" not in c[0]])
def test_conv2d_one_tap_at_a_time(attrs, xs, ws, bias, monkeypatch):
    """Above WHOLE_PATCHES_BYTES the dense rule goes one kernel tap at a time; same gradients."""
    monkeypatch.setattr(sporeling.train.vjp_conv, "WHOLE_PATCHES_BYTES", 0)
    ins = [_n(*xs), _n(*ws, seed=1)] + ([_n(ws[0], seed=2)] if bias else [])
    for dtype, tol in DTYPES:
        check("Conv", ins, attrs, _torch_conv(attrs, xs, ws, 2), dtype=dtype, tol=tol)


@pytest.mark.parametrize("attrs,xs,ws,bias", [c for c in CONV2D if "group" not in c[0]])
def test_conv2d_weight_gradient_image_by_image(attrs, xs, ws, bias, monkeypatch):
    """W's gradient image by image (taken when X's gradient comes from elsewhere or is not wanted)."""
    monkeypatch.setattr(sporeling.train.vjp_conv, "PER_IMAGE_MIN_MACS", 0)
    ins = [_n(*xs), _n(*ws, seed=1)] + ([_n(ws[0], seed=2)] if bias else [])
    for dtype, tol in DTYPES:
        check("Conv", ins, attrs, _torch_conv(attrs, xs, ws, 2), dtype=dtype, tol=tol, diff=[1, 2] if bias else [1])


@pytest.mark.parametrize("attrs,xs,ws,bias", CONV2D)
@pytest.mark.parametrize("needs", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("whole_bytes", [None, 0])
def test_conv_scratch_is_what_its_workspace_function_states(attrs, xs, ws, bias, needs, whole_bytes, monkeypatch):
    """The runtime plans conv_workspace's bytes for a Conv's backward step: the rule takes exactly that much from
    it (nothing from the heap, nothing left over) and gives the gradients it gives without one."""
    from sporeling.train.vjp import Workspace
    from sporeling.train.vjp_conv import conv_workspace

    if whole_bytes is not None:
        monkeypatch.setattr(sporeling.train.vjp_conv, "WHOLE_PATCHES_BYTES", whole_bytes)
    for dtype in (np.float32, np.float64):
        ins = [_n(*xs).astype(dtype), _n(*ws, seed=1).astype(dtype)] + ([_n(ws[0], seed=2).astype(dtype)] if bias else [])
        y = lookup("Conv", 17).kernel(*ins, **attrs)
        g = np.random.default_rng(3).standard_normal(y.shape).astype(dtype)
        wants = list(needs) + [bias] * bias
        nbytes = conv_workspace([(a.dtype, a.shape) for a in ins], [(y.dtype, y.shape)], dict(attrs), tuple(wants))
        work = Workspace(np.full(nbytes, 0xFF, np.uint8))
        got = vjp_for("Conv")(VJPContext("Conv", dict(attrs), ins, [y], [g.copy()], wants, work=work))
        plain = vjp_for("Conv")(VJPContext("Conv", dict(attrs), ins, [y], [g.copy()], wants))
        assert work.missed == 0 and work.high == nbytes, (nbytes, work.high, work.missed)
        for a, b in zip(got, plain):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)

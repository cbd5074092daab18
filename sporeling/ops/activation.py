"""Activation functions: Relu LeakyRelu PRelu Elu Selu Celu Gelu HardSigmoid HardSwish Sigmoid
Softplus Softsign Mish Swish ThresholdedRelu Shrink; Softmax, LogSoftmax and Hardmax are in
activation_softmax.py (registered by the import at the bottom).

Each kernel is a short chain of in-place ufunc passes over the output buffer. A few formulas are
chosen over the textbook ones for speed or accuracy:

- Relu is NumPy's clip loop with bounds (0, +inf): on large float arrays it runs ~3x faster than
  np.maximum against a scalar.
- Sigmoid is 1 / (1 + exp(-x)): exp overflowing to inf for very negative x still gives the right
  limit 0 (the overflow warning is silenced), and the result keeps full relative accuracy where it
  is tiny, unlike 0.5 * tanh(x / 2) + 0.5. The tanh form of Gelu uses the same identity,
  (1 + tanh(u)) / 2 = sigmoid(2u), so its negative tail does not cancel either.
- NumPy's expm1 and log1p have no vectorised loops (~10x slower than exp), so ELU-style ops use
  expm1(x) = 2t / (1 - t) with t = tanh(x / 2) for x <= 0, and Softplus a corrected log(1 + e).
- np.where and masked copies branch per element (~10x a plain ufunc pass on irregular masks), so
  piecewise functions are sums of clipped halves, max/min tricks, or bit-pattern selects.
- float16 inputs are computed in float32 and rounded once; chains with temporaries run block by
  block on large inputs (run_blocked) so the temporaries stay small.
"""

from __future__ import annotations

import numpy as np

from .elementwise_math import erfc_into
from .infer import broadcast_like_first, same_as_first
from .registry import register_op
from .ufunc_kernels import alloc_like, clip_ufunc, run_blocked, select_into, upper_bound, via_float32


# ---- Relu family ---------------------------------------------------------------------------------
def relu(x, *, out=None):
    x = np.asarray(x)
    return clip_ufunc(x, x.dtype.type(0), upper_bound(x.dtype), out=alloc_like(out, x))


def _make_relu(ins, **_attrs):
    """Binds the clip bounds of the input's dtype once."""
    dt = ins[0].dtype if ins and ins[0] is not None else None
    if dt is None:
        return relu
    zero, top = np.dtype(dt).type(0), upper_bound(dt)

    def relu_bound(x, *, out=None):
        return clip_ufunc(x, zero, top, out=alloc_like(out, x))

    return relu_bound


register_op("Relu", since=6, infer=same_as_first, out=True, inplace={0: 0}, make=_make_relu)(relu)


@register_op("LeakyRelu", since=6, infer=same_as_first, out=True)
def leaky_relu(x, *, alpha=0.01, out=None):
    """max(x, alpha*x) when alpha <= 1, min(x, alpha*x) otherwise: two passes, no mask."""
    out = np.multiply(x, alpha, out=alloc_like(out, x))
    return (np.maximum if alpha <= 1 else np.minimum)(out, x, out=out)


def prelu(x, slope, *, out=None):
    """slope*x where x < 0; the max/min trick applies when every slope is on one side of 1."""
    out = np.multiply(x, slope, out=alloc_like(out, x, slope))
    if np.all(slope <= 1):
        return np.maximum(out, x, out=out)
    if np.all(slope >= 1):
        return np.minimum(out, x, out=out)
    return select_into(np.less(x, 0), out, x, out)


def _make_prelu(ins, **_attrs):
    """With a constant slope (the usual case) the choice between max, min and the select is made
    once."""
    slope = ins[1]
    if slope is None or slope.value is None:
        return prelu
    pick = np.maximum if np.all(slope.value <= 1) else np.minimum if np.all(slope.value >= 1) else None
    if pick is None:
        return prelu

    def prelu_const(x, s, *, out=None):
        out = np.multiply(x, s, out=alloc_like(out, x, s))
        return pick(out, x, out=out)

    return prelu_const


register_op("PRelu", since=7, infer=broadcast_like_first, out=True, make=_make_prelu)(prelu)


@register_op("ThresholdedRelu", since=10, infer=same_as_first, out=True, inplace={0: 0})
def thresholded_relu(x, *, alpha=1.0, out=None):
    x = np.asarray(x)
    return select_into(np.greater(x, alpha), x, 0, alloc_like(out, x))


@register_op("Shrink", since=9, infer=same_as_first, out=True, inplace={0: 0})
def shrink(x, *, bias=0.0, lambd=0.5, out=None):
    """x + bias below -lambd, x - bias above lambd, else 0: x - sign(x)*bias where |x| > lambd.
    Integer inputs compute with the float bias and truncate back."""
    x = np.asarray(x)
    keep = np.greater(np.abs(x), lambd)  # read x before out (maybe x's buffer) is written
    shifted = np.subtract(x, np.multiply(np.sign(x), bias))
    out = alloc_like(out, x)
    np.copyto(out, shifted, casting="unsafe")
    return select_into(keep, out, 0, out)


# ---- exponential-linear family ---------------------------------------------------------------------
def _expm1_nonpositive(v: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = expm1(v) for v <= 0. In float32, as 2t / (1 - t) with t = tanh(v/2): no cancellation
    near 0, the limit -1 at -inf, and ~4x faster than np.expm1. float64 tanh is no faster, so
    np.expm1 is used there."""
    if v.dtype != np.float32:
        return np.expm1(v, out=out)
    np.multiply(v, 0.5, out=out)
    np.tanh(out, out=out)
    den = np.subtract(1.0, out, out=np.empty_like(out))
    np.multiply(out, 2.0, out=out)
    return np.divide(out, den, out=out)


def _elu_into(x, out, alpha: float, scale: float, inner: float) -> np.ndarray:
    """scale * (max(x, 0) + alpha * expm1(min(x, 0) / inner)): Elu, Selu and Celu. Two branch-free
    halves added, since a masked copy or np.where is ~10x slower than a ufunc pass."""
    positive = clip_ufunc(x, 0.0, np.inf, out=np.empty_like(out))
    np.minimum(x, 0, out=out)
    if inner != 1.0:
        with np.errstate(over="ignore"):  # -huge / small alpha -> -inf, and expm1(-inf) = -1
            np.divide(out, inner, out=out)
    _expm1_nonpositive(out, out)
    np.multiply(out, alpha, out=out)
    np.add(out, positive, out=out)
    if scale != 1.0:
        np.multiply(out, scale, out=out)
    return out


@register_op("Elu", since=6, infer=same_as_first, out=True, inplace={0: 0})
@via_float32
def elu(x, *, alpha=1.0, out=None):
    return run_blocked(_elu_into, x, alloc_like(out, x), alpha, 1.0, 1.0)


@register_op("Selu", since=6, infer=same_as_first, out=True, inplace={0: 0})
@via_float32
def selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875, out=None):
    return run_blocked(_elu_into, x, alloc_like(out, x), alpha, gamma, 1.0)


@register_op("Celu", since=12, infer=same_as_first, out=True, inplace={0: 0})
@via_float32
def celu(x, *, alpha=1.0, out=None):
    return run_blocked(_elu_into, x, alloc_like(out, x), alpha, 1.0, alpha)


# ---- sigmoid family ------------------------------------------------------------------------------
def _sigmoid_into(x, out: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """out = sigmoid(scale * x); out may be x's buffer."""
    np.multiply(x, -scale, out=out)
    with np.errstate(over="ignore"):  # exp(-x) -> inf for very negative x gives the limit 0
        np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    return np.reciprocal(out, out=out)


def _swish_into(x, out: np.ndarray, alpha: float) -> np.ndarray:
    _sigmoid_into(x, out, alpha)
    return np.multiply(out, x, out=out)


@register_op("Sigmoid", since=6, infer=same_as_first, out=True, inplace={0: 0})
@via_float32
def sigmoid(x, *, out=None):
    return run_blocked(_sigmoid_into, x, alloc_like(out, x))


@register_op("Swish", since=24, infer=same_as_first, out=True)
@via_float32
def swish(x, *, alpha=1.0, out=None):
    return run_blocked(_swish_into, x, alloc_like(out, x), alpha)


def _hard_sigmoid_into(x, out: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    np.multiply(x, alpha, out=out)
    np.add(out, beta, out=out)
    return clip_ufunc(out, 0.0, 1.0, out=out)


@register_op("HardSigmoid", since=6, infer=same_as_first, out=True, inplace={0: 0})
@via_float32
def hard_sigmoid(x, *, alpha=0.2, beta=0.5, out=None):
    x = np.asarray(x)
    return run_blocked(_hard_sigmoid_into, x, alloc_like(out, x), alpha, beta)


def _hard_swish_into(x, out: np.ndarray) -> np.ndarray:
    _hard_sigmoid_into(x, out, 1.0 / 6.0, 0.5)
    return np.multiply(out, x, out=out)


@register_op("HardSwish", since=14, infer=same_as_first, out=True)
@via_float32
def hard_swish(x, *, out=None):
    """x * clip(x/6 + 1/2, 0, 1): four passes in out (x is read again at the end, so no in-place)."""
    x = np.asarray(x)
    return run_blocked(_hard_swish_into, x, alloc_like(out, x))


def _gelu_tanh_into(x, out: np.ndarray) -> np.ndarray:
    c = -2.0 * np.sqrt(2.0 / np.pi)
    # x^2 and exp(-2u) reach inf for huge |x|, which still gives the right limits (x, -0); only
    # x = -inf ends as inf/inf = nan, as the formula itself does
    with np.errstate(over="ignore", invalid="ignore"):
        np.square(x, out=out)
        np.multiply(out, 0.044715 * c, out=out)
        np.add(out, c, out=out)
        np.multiply(out, x, out=out)  # -2u
        np.exp(out, out=out)
        np.add(out, 1.0, out=out)
        return np.divide(x, out, out=out)


def _gelu_into(x, out: np.ndarray) -> np.ndarray:
    np.multiply(x, -np.sqrt(0.5), out=out)
    erfc_into(out, out)
    # times x/2 as one factor: erfc * x overflows for x near the float max, erfc / 2 first would
    # turn the far negative tail (erfc ~ 1e-38) denormal
    half_x = np.multiply(x, 0.5, out=np.empty_like(out))
    with np.errstate(invalid="ignore"):  # x = -inf: -inf * 0 = nan, as in the formula
        return np.multiply(out, half_x, out=out)


@register_op("Gelu", since=20, infer=same_as_first, out=True)
@via_float32
def gelu(x, *, approximate="none", out=None):
    """x * Phi(x). Exact: Phi(x) = erfc(-x/sqrt 2) / 2, accurate in both tails. "tanh":
    (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3) is sigmoid(2u), so
    y = x / (1 + exp(-2u))."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"Gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return run_blocked(_gelu_tanh_into if approximate == "tanh" else _gelu_into, x, alloc_like(out, x))


# ---- softplus family -----------------------------------------------------------------------------
def _softplus_into(x, out: np.ndarray) -> np.ndarray:
    """out = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)); out may be x's buffer. In float32,
    log1p(e) for e in (0, 1] is log(u) with u = 1 + e, corrected for the rounding of u by
    - ((u - 1) - e) / u (exact to first order, and e itself when u rounds to 1): ~5x faster than
    np.log1p. float64 uses np.log1p, which is no slower than the alternatives there."""
    e = np.abs(x, out=np.empty_like(out))  # temporaries via out=: a 0-d ufunc result is a scalar
    np.negative(e, out=e)
    np.exp(e, out=e)
    if x.dtype != np.float32:
        np.log1p(e, out=e)
        np.maximum(x, 0, out=out)
        return np.add(out, e, out=out)
    u = np.add(e, 1.0, out=np.empty_like(e))
    corr = np.subtract(u, 1.0, out=np.empty_like(u))
    np.subtract(corr, e, out=corr)
    np.divide(corr, u, out=corr)
    np.maximum(x, 0, out=e)  # the last read of x, before out is written
    np.log(u, out=out)
    np.subtract(out, corr, out=out)
    return np.add(out, e, out=out)


@register_op("Softplus", since=1, infer=same_as_first, out=True, inplace={0: 0})
@via_float32
def softplus(x, *, out=None):
    return run_blocked(_softplus_into, x, alloc_like(out, x))


def _softsign_into(x, out: np.ndarray) -> np.ndarray:
    np.abs(x, out=out)
    np.add(out, 1.0, out=out)
    return np.divide(x, out, out=out)


@register_op("Softsign", since=1, infer=same_as_first, out=True)
def softsign(x, *, out=None):
    x = np.asarray(x)
    return run_blocked(_softsign_into, x, alloc_like(out, x))


def _mish_into(x, out: np.ndarray) -> np.ndarray:
    np.minimum(x, 20.0, out=out)
    np.exp(out, out=out)
    den = np.add(out, 2.0, out=np.empty_like(out))
    np.multiply(out, den, out=out)
    np.add(out, 2.0, out=den)
    np.divide(out, den, out=out)
    return np.multiply(out, x, out=out)


@register_op("Mish", since=18, infer=same_as_first, out=True)
@via_float32
def mish(x, *, out=None):
    """x * tanh(softplus(x)) = x * n / (n + 2) with n = e^x (e^x + 2): one exp, no log or tanh.
    e^x is capped at x = 20, past which the ratio is 1 even in float64."""
    return run_blocked(_mish_into, x, alloc_like(out, x))


from . import activation_softmax  # noqa: E402,F401

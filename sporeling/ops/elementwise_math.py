"""Unary math ops: Neg Abs Reciprocal Sqrt Exp Log Ceil Floor Round Sign Tanh, trigonometric and
hyperbolic functions, and Erf.

Most are one NumPy ufunc. NumPy has no erf, so it is computed here from two fitted approximations
(see `_ERF_SMALL`), or with the C library's erf per element for small tensors; Gelu in
activation.py shares it through `erfc_into`.
"""

from __future__ import annotations

import math

import numpy as np

from .infer import same_as_first
from .registry import register_op
from .ufunc_kernels import clip_ufunc, run_blocked, unary

# (op, ufunc, since, quiet): `quiet` silences NumPy's warnings for inputs outside the domain
# (log(0), arccos(2)...), which are ordinary in real models and should just give inf/nan.
_UNARY = [
    ("Neg", np.negative, 6, False),
    ("Abs", np.absolute, 6, False),
    ("Reciprocal", np.reciprocal, 6, True),
    ("Sqrt", np.sqrt, 6, False),
    ("Exp", np.exp, 6, False),
    ("Log", np.log, 6, True),
    ("Ceil", np.ceil, 6, False),
    ("Floor", np.floor, 6, False),
    ("Round", np.rint, 11, False),  # rint rounds halves to even, as ONNX asks
    ("Sign", np.sign, 9, False),
    ("Tanh", np.tanh, 6, False),
    ("Sin", np.sin, 7, False),
    ("Cos", np.cos, 7, False),
    ("Tan", np.tan, 7, True),
    ("Asin", np.arcsin, 7, True),
    ("Acos", np.arccos, 7, True),
    ("Atan", np.arctan, 7, False),
    ("Sinh", np.sinh, 9, True),
    ("Cosh", np.cosh, 9, True),
    ("Asinh", np.arcsinh, 9, False),
    ("Acosh", np.arccosh, 9, True),
    ("Atanh", np.arctanh, 9, True),
]

for _name, _ufunc, _since, _quiet in _UNARY:
    register_op(_name, since=_since, infer=same_as_first, out=True, inplace={0: 0})(unary(_ufunc, _quiet))


# ---- erf / erfc ----------------------------------------------------------------------------------
# Two regions, each a polynomial fitted for this module by weighted least squares on a Chebyshev
# basis against 30-digit reference values (mpmath), with separate degrees for float32 and float64:
#
#   |z| < 1:   erf(z)  = z * P(z^2)                          relative error < 3e-9 (f32), 3e-15 (f64)
#   |z| >= 1:  erfc(|z|) = exp(-z^2) * t * K(t), t = k/(k+|z|)   relative error < 4e-8 (f32), 7e-14 (f64)
#
# The tail form keeps erfc's relative accuracy down to underflow, which Gelu needs for large
# negative inputs (x * erfc(-x/sqrt 2) / 2), where 1 + erf(x) would cancel to nothing; the
# rounding of z^2 inside exp adds a relative error of ~eps * z^2 there, the same that rounding
# x/sqrt 2 already causes. |z| is clamped where exp(-z^2) underflows anyway, so no overflow reaches
# the polynomial.
# Coefficients are lowest degree first.
_ERF_SMALL = {
    np.dtype(np.float32): (
        1.1283791637774967, -0.37612620798931934, 0.11283551024425348,
        -0.026852871460072765, 0.0051871483984887, -0.0008003832533355004,
        7.843561501429932e-05,
    ),
    np.dtype(np.float64): (
        1.1283791670955146, -0.3761263890320536, 0.1128379167151185,
        -0.026866170715533107, 0.005223978132577924, -0.0008548349344309483,
        0.00012055957767559767, -1.4936947663971788e-05, 1.659270950186959e-06,
        -1.7284546896254377e-07, 1.8228425462355425e-08, -1.5953962018750972e-09,
    ),
}
# dtype -> (k, |z| clamp, coefficients of K)
_ERFC_TAIL = {
    np.dtype(np.float32): (2.0, 10.3, (
        0.28209766230227606, 0.2820579521532516, 0.24678122940563182,
        0.17973387420947565, 0.05816606417964164, 0.08729315568163196,
        -0.23064439975415563, 0.09512919107334242,
    )),
    np.dtype(np.float64): (3.0, 27.3, (
        0.18806319445533135, 0.1880631985140802, 0.17761511939905333,
        0.15672149709633787, 0.12709027683359891, 0.092522859688285,
        0.05546351701407214, 0.03372447799369844, -0.024505317528664736,
        0.07629075035410202, -0.19926266389190628, 0.3208236788826308,
        -0.4163903060283859, 0.3821966120287158, -0.21896989389536925,
        0.07029834900879606, -0.00974535673320694,
    )),
}


def _horner(coeffs, s: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """acc = sum(coeffs[i] * s**i), evaluated in place (two ufunc passes per degree)."""
    np.multiply(s, coeffs[-1], out=acc)
    np.add(acc, coeffs[-2], out=acc)
    for c in coeffs[-3::-1]:
        np.multiply(acc, s, out=acc)
        np.add(acc, c, out=acc)
    return acc


def _erfc_tail(z: np.ndarray) -> np.ndarray:
    """erfc(|z|) for a 1-D float32/float64 array (meant for |z| >= 1)."""
    k, zmax, coeffs = _ERFC_TAIL[z.dtype]
    a = np.abs(z)
    np.minimum(a, zmax, out=a)
    t = np.add(a, k)
    np.divide(k, t, out=t)
    res = _horner(coeffs, t, np.empty_like(a))
    np.multiply(res, t, out=res)
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    return np.multiply(res, a, out=res)


def _erf_family(x: np.ndarray, out: np.ndarray, complement: bool) -> np.ndarray:
    """out = erf(x) or erfc(x) for float32/float64 x; out may be x's buffer."""
    flat_x = x.reshape(-1)
    tail = np.flatnonzero(np.abs(flat_x) >= 1.0)
    z_tail = flat_x[tail]  # gathered before out (possibly x) is overwritten
    z = clip_ufunc(x, -1.0, 1.0, out=np.empty_like(x))  # the small-|z| region, finite for every element
    s = np.square(z)
    _horner(_ERF_SMALL[x.dtype], s, out)
    np.multiply(out, z, out=out)
    if complement:
        np.subtract(1.0, out, out=out)
    if tail.size:
        e = _erfc_tail(z_tail)
        if complement:  # erfc(-a) = 2 - erfc(a)
            value = np.where(z_tail > 0, e, 2.0 - e)
        else:  # erf(z) = sign(z) * (1 - erfc(|z|))
            value = np.subtract(1.0, e, out=e)
            np.copysign(value, z_tail, out=value)
        out.reshape(-1)[tail] = value
    return out


# Below this many elements the ~45 ufunc calls of the polynomial path cost more (~1.5 us each)
# than calling the C library's erf per element (~0.15 us), which is also exact to the last ulp.
_SMALL = 256
_LIBM = (np.frompyfunc(math.erf, 1, 1), np.frompyfunc(math.erfc, 1, 1))


def _erf_or_erfc(x, out, complement: bool) -> np.ndarray:
    """Computes in float32/float64 (float16 and integers go through them and are rounded once),
    block by block on large inputs, and delivers in x's dtype."""
    x = np.asarray(x)
    dt = x.dtype
    if x.size <= _SMALL:
        res = _LIBM[complement](x.astype(np.float64), out=np.empty(x.shape, object))
        if out is None:
            return res.astype(dt)
        np.copyto(out, res, casting="unsafe")
        return out
    if dt in _ERF_SMALL:
        target = out if out is not None and out.flags.c_contiguous else np.empty(x.shape, dt)
        res = run_blocked(_erf_family, x if x.flags.c_contiguous else x.copy(), target, complement)
    else:
        work = x.astype(np.float32 if dt.itemsize <= 2 else np.float64)
        res = run_blocked(_erf_family, work, work, complement)
    if out is None:
        return res if res.dtype == dt else res.astype(dt)
    if res is not out:
        np.copyto(out, res, casting="unsafe")
    return out


def erf_into(x, out: np.ndarray | None = None) -> np.ndarray:
    """Vectorised erf, accurate to a few ulp in float32 and ~3e-15 relative in float64."""
    return _erf_or_erfc(x, out, False)


def erfc_into(x, out: np.ndarray | None = None) -> np.ndarray:
    """Vectorised erfc; relative accuracy holds in the tail down to underflow (~eps * x^2 from exp)."""
    return _erf_or_erfc(x, out, True)


@register_op("Erf", since=9, infer=same_as_first, out=True, inplace={0: 0})
def erf(x, *, out=None):
    return erf_into(x, out)

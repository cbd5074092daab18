"""Matrix products: MatMul, Gemm, Einsum and Det.

These are the hot ops of most models, so the kernels try hard to make exactly one BLAS call that
writes straight into the planned output buffer. A stacked product whose right operand is a plain
matrix ((..., M, K) @ (K, N), the shape of every Linear layer applied to a sequence) is folded into a
single (prod(...) * M, K) @ (K, N) GEMM instead of letting NumPy loop over the leading dimensions.
float16 has no BLAS path in NumPy, so half-precision products are computed in float32 and rounded
once at the end, which is both faster and closer to what accelerated runtimes produce.

The attention family lives in attention.py and is registered by importing it at the bottom.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from .infer import broadcast, known
from .registry import Info, register_op

_HALF = np.dtype(np.float16)


# ---- MatMul ------------------------------------------------------------------------------------
def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """Output shape of numpy/ONNX matmul, including the 1-D promotion rules."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("MatMul operands must have rank >= 1")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise ValueError(f"MatMul inner dimensions differ: {a} @ {b}")
    batch = broadcast(a2[:-2], b2[:-2])
    shape = batch + (a2[-2], b2[-1])
    if len(b) == 1:
        shape = shape[:-1]
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:] if len(b) > 1 else shape[:-1]
    return shape


def _infer_matmul(ins, **_attrs):
    a, b = ins[0], ins[1]
    if not known(a, b):
        return None
    return [(a.dtype, matmul_shape(a.shape, b.shape))]


def product(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b into out (or a new array) with one BLAS call where the layout allows it."""
    if a.dtype == _HALF or b.dtype == _HALF:
        res = product(a.astype(np.float32), b.astype(np.float32))
        if out is None:
            return res.astype(_HALF)
        np.copyto(out, res, casting="unsafe")
        return out
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
        # (..., M, K) @ (K, N) is one (prod(...)*M, K) @ (K, N) GEMM on the same memory
        rows = a.reshape(math.prod(a.shape[:-1]), a.shape[-1])
        if out is None:
            return np.matmul(rows, b).reshape(a.shape[:-1] + b.shape[-1:])
        if out.flags.c_contiguous:
            np.matmul(rows, b, out=out.reshape(rows.shape[0], b.shape[1]))
            return out
    if out is None:
        return np.matmul(a, b)
    np.matmul(a, b, out=out)
    return out


@register_op("MatMul", since=1, infer=_infer_matmul, out=True)
def matmul(a, b, *, out=None):
    return product(a, b, out)


# ---- Gemm --------------------------------------------------------------------------------------
def _infer_gemm(ins, *, transA=0, transB=0, **_attrs):
    a, b = ins[0], ins[1]
    if not known(a, b):
        return None
    m = a.shape[1] if transA else a.shape[0]
    n = b.shape[0] if transB else b.shape[1]
    return [(a.dtype, (m, n))]


def _scaled(x: np.ndarray, factor: float, dtype: np.dtype) -> np.ndarray:
    """x * factor in dtype (integer Gemm truncates the scaled values, as a cast would)."""
    if factor == 1.0:
        return x.astype(dtype, copy=False)
    return (x * factor).astype(dtype)


def _make_gemm(ins, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0):
    """Binds Gemm once per plan. A constant B is transposed (and scaled by alpha) here, so each call
    hands BLAS a contiguous operand; a constant C is pre-multiplied by beta. Each call is then one
    GEMM into `out` and one in-place broadcast add of the bias."""
    b_info = ins[1] if len(ins) > 1 else None
    c_info = ins[2] if len(ins) > 2 else None
    dtype = ins[0].dtype if ins[0] is not None and ins[0].dtype is not None else None
    floating = dtype is not None and np.dtype(dtype).kind == "f"
    b_fixed = None
    post_alpha = alpha
    # Binding for a plan (A is not known yet) is when packing the constants pays; a subgraph body
    # or constant folding binds with every input known, once per call, and would only pay for it.
    planning = ins[0] is not None and ins[0].value is None
    if planning and b_info is not None and b_info.value is not None and dtype is not None:
        b_fixed = b_info.value.T if transB else b_info.value
        if floating and alpha != 1.0:
            b_fixed, post_alpha = _scaled(b_fixed, alpha, np.dtype(dtype)), 1.0
        b_fixed = np.ascontiguousarray(b_fixed)
    c_fixed = None
    if planning and c_info is not None and c_info.value is not None and dtype is not None:
        c_fixed = None if beta == 0.0 else _scaled(c_info.value, beta, np.dtype(dtype))

    def gemm_bound(a, b, c=None, *, out=None):
        bm = b_fixed if b_fixed is not None else (b.T if transB else b)
        bias = c_fixed
        if bias is None and c is not None and beta != 0.0:
            bias = _scaled(c, beta, a.dtype)
        return _gemm(a.T if transA else a, bm, bias, post_alpha, out)

    return gemm_bound


def _gemm(a, b, bias, alpha, out):
    res = product(a, b, out)
    if alpha != 1.0:
        np.multiply(res, alpha, out=res, casting="unsafe")
    if bias is not None:
        np.add(res, bias, out=res, casting="unsafe")
    return res


@register_op("Gemm", since=1, infer=_infer_gemm, out=True, make=_make_gemm)
def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0, out=None):
    return _make_gemm([Info(a.dtype, a.shape), Info(b.dtype, b.shape)], alpha=alpha, beta=beta,
                      transA=transA, transB=transB)(a, b, c, out=out)


# ---- Einsum ------------------------------------------------------------------------------------
def einsum_shape(equation: str, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Output shape of an einsum equation (explicit or implicit form, with ellipses)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"Einsum '{equation}' names {len(terms)} operands, got {len(shapes)}")
    sizes: dict[str, int] = {}
    ellipses = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            pre, post = term.split("...")
            n_ell = len(shape) - len(pre) - len(post)
            ellipses.append(tuple(shape[len(pre) : len(pre) + n_ell]))
            letters, dims = pre + post, tuple(shape[: len(pre)]) + tuple(shape[len(pre) + n_ell :])
        else:
            letters, dims = term, tuple(shape)
        for ch, d in zip(letters, dims):
            if sizes.get(ch, 1) == 1:
                sizes[ch] = int(d)
    ell = broadcast(*ellipses) if ellipses else ()
    if not arrow:
        counts = Counter(ch for t in terms for ch in t.replace("...", ""))
        rhs = ("..." if ellipses else "") + "".join(sorted(ch for ch, k in counts.items() if k == 1))
    if "..." in rhs:
        pre, post = rhs.split("...")
        return tuple(sizes[c] for c in pre) + ell + tuple(sizes[c] for c in post)
    return tuple(sizes[c] for c in rhs)


def _infer_einsum(ins, *, equation, **_attrs):
    if not ins or not known(*ins):
        return None
    return [(ins[0].dtype, einsum_shape(equation, [i.shape for i in ins]))]


def _make_einsum(ins, *, equation):
    """Finds the contraction order once per plan; every call then reuses it."""
    eq = equation.replace(" ", "")
    path = True
    if ins and all(i is not None and i.shape is not None and i.dtype is not None for i in ins) and len(ins) > 1:
        stand_ins = [np.broadcast_to(np.zeros((), i.dtype), i.shape) for i in ins]
        path = np.einsum_path(eq, *stand_ins, optimize="greedy")[0]

    def einsum_bound(*inputs, out=None):
        if len(inputs) == 1:
            return np.einsum(eq, inputs[0], out=out)
        return np.einsum(eq, *inputs, optimize=path, out=out)

    return einsum_bound


@register_op("Einsum", since=12, infer=_infer_einsum, out=True, make=_make_einsum)
def einsum(*inputs, equation, out=None):
    return _make_einsum([], equation=equation)(*inputs, out=out)


# ---- Det ---------------------------------------------------------------------------------------
def _infer_det(ins, **_attrs):
    x = ins[0]
    return None if x.shape is None else [(x.dtype, tuple(x.shape[:-2]))]


@register_op("Det", since=11, infer=_infer_det, out=True)
def det(x, *, out=None):
    res = np.linalg.det(x.astype(np.float32) if x.dtype == _HALF else x)
    if out is None:
        return np.asarray(res, x.dtype)
    np.copyto(out, res, casting="unsafe")
    return out


from . import attention  # noqa: E402,F401

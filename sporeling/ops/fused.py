"""Kernels of the ai.sporeling domain: the ops the graph passes create when they fuse standard ops.
(FusedConv lives with the convolutions in conv.py.)"""

from __future__ import annotations

import numpy as np

from .elementwise_math import erf_into
from .infer import same_as_first
from .matmul import _infer_matmul, product
from .registry import register_op

DOMAIN = "ai.sporeling"

_SQRT_HALF = float(np.sqrt(0.5))


@register_op("Gelu", since=1, domain=DOMAIN, infer=same_as_first, out=True)
def gelu(x, *, out=None):
    """x * 0.5 * (1 + erf(x / sqrt 2)), the arithmetic the fusion pass replaced, evaluated in the
    same order inside one buffer (Gelu exists in ONNX only from opset 20; this serves any opset)."""
    out = np.multiply(x, _SQRT_HALF, out=out)
    erf_into(out, out)
    np.add(out, 1.0, out=out)
    np.multiply(out, x, out=out)
    return np.multiply(out, 0.5, out=out)


@register_op("FusedMatMul", since=1, domain=DOMAIN, infer=_infer_matmul, out=True)
def fused_matmul(a, b, bias=None, *, out=None):
    """a @ b + bias, with bias a vector along the last axis: the add happens in the output
    buffer right after the GEMM, instead of as a separate op with its own tensor."""
    out = product(a, b, out)
    if bias is not None:
        np.add(out, bias, out=out)
    return out


"""sporeling.train: training on the device (issue 5). So far: the table of backward rules (vjp.py), filled by
vjp_elementwise.py (elementwise, activation and shape ops) and vjp_nn.py (MatMul, Gemm, Conv, ConvTranspose,
pools, Softmax, BatchNormalization, LayerNormalization), each checked against torch.autograd in tests/train."""

from . import vjp_elementwise, vjp_nn  # noqa: F401  (importing them registers their rules)
from .vjp import VJPS, VJPContext, register_vjp, unbroadcast, vjp_for

__all__ = ["VJPS", "VJPContext", "register_vjp", "unbroadcast", "vjp_for"]

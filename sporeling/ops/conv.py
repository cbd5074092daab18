"""Convolution: ONNX Conv, and FusedConv (domain ai.sporeling): act(conv(X, W) + B + Z).

make() resolves the window geometry once per plan and picks an algorithm by shape:
- 1x1 stride-1 convs are one matmul into `out` (conv_gemm.Pointwise);
- 2-D depthwise convs are shifted multiply-adds over flat images (conv_depthwise);
- 3x3 stride-1 dense convs with enough channels use Winograd minimal filtering (conv_winograd);
- everything else unrolls windows into a workspace and runs one batched matmul (conv_gemm.Im2colGemm).
Constant weights are re-laid out once at make time. The workspace comes from the planner's scratch.
After the algorithm has written conv + bias, the "epilogue" adds the residual Z and applies the
activation in place, so a whole ResNet or MobileNet block tail is one step.

The other members of the family live in conv_transpose (ConvTranspose, Col2Im), conv_quant
(ConvInteger, QLinearConv), conv_deform (DeformConv) and conv_causal (CausalConvWithState).
"""

from __future__ import annotations

import numpy as np

from .conv_depthwise import Depthwise2D, DepthwiseCols, depthwise_applicable
from .conv_gemm import BatchedIm2col, ConvShape, Im2colGemm, Pointwise, WideIm2col
from .conv_geometry import carve, conv_window, workspace_bytes
from .conv_winograd import Winograd, winograd_tile
from .registry import Info, register_op

# above this many output positions per channel the unrolled taps stop fitting in cache and the
# shifted multiply-adds win over the BLAS vector-matrix form. Measured (1 thread, ms, 2D vs cols):
# 192x40x40 5x5 8.5 vs 5.0, 240x24x80 5x5 11.4 vs 7.8, 128x12x160 3x3 2.1-3.1 vs 1.0 (P 1600-1920,
# PP-OCRv4); 96x50x50 5x5 2.3 vs 2.9, 144x56x56 3x3 1.4 vs 2.2, 32x112x112 1.3 vs 2.3 (P >= 2500).
DEPTHWISE_COLS_MAX_P = 2048
# the wide im2col is used while its row pitch is at most this many times the output width
WIDE_MAX_WASTE = 1.15

ACTIVATIONS = ("", "Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh")


# ---- geometry and shape inference ---------------------------------------------------------------
def conv_geometry(x_shape, w_shape, kernel_shape=None, strides=None, dilations=None, pads=None, auto_pad="NOTSET"):
    kernel = tuple(kernel_shape) if kernel_shape else tuple(w_shape[2:])
    return conv_window(tuple(x_shape[2:]), kernel, strides, dilations, pads, auto_pad)


def infer_conv(ins, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
               **_unused):
    x, w = ins[0], ins[1]
    if x is None or w is None or x.shape is None or w.shape is None:
        return None
    win = conv_geometry(x.shape, w.shape, kernel_shape, strides, dilations, pads, auto_pad)
    return [(x.dtype, (x.shape[0], w.shape[0], *win.out_sizes))]


# ---- activation epilogue ------------------------------------------------------------------------
class Activation:
    """An activation applied in place on the conv output; some need an output-sized temporary."""

    def __init__(self, name: str = "", params=None):
        if isinstance(name, bytes):
            name = name.decode()
        if name not in ACTIVATIONS:
            raise ValueError(f"FusedConv: unknown activation '{name}' (expected one of {', '.join(ACTIVATIONS[1:])})")
        params = [float(p) for p in (params or [])]
        self.name = name
        if name == "Clip":
            self.lo = params[0] if len(params) > 0 else -np.inf
            self.hi = params[1] if len(params) > 1 else np.inf
        elif name == "LeakyRelu":
            self.alpha = params[0] if params else 0.01
        elif name == "HardSigmoid":
            self.alpha = params[0] if params else 0.2
            self.beta = params[1] if len(params) > 1 else 0.5
        self.needs_tmp = name in ("LeakyRelu", "HardSwish")

    def __call__(self, y: np.ndarray, tmp: np.ndarray | None) -> None:
        name = self.name
        if not name:
            return
        if name == "Relu":
            np.clip(y, 0, np.inf, out=y)  # NumPy's maximum with a scalar is ~2x slower than clip
        elif name == "Clip":
            np.clip(y, self.lo, self.hi, out=y)
        elif name == "LeakyRelu":
            np.multiply(y, self.alpha, out=tmp)
            (np.maximum if self.alpha <= 1 else np.minimum)(y, tmp, out=y)
        elif name == "HardSigmoid":
            np.multiply(y, self.alpha, out=y)
            np.add(y, self.beta, out=y)
            np.clip(y, 0, 1, out=y)
        elif name == "HardSwish":
            np.multiply(y, 1 / 6, out=tmp)
            np.add(tmp, 0.5, out=tmp)
            np.clip(tmp, 0, 1, out=tmp)
            np.multiply(y, tmp, out=y)
        elif name == "Sigmoid":
            np.negative(y, out=y)
            np.exp(y, out=y)
            np.add(y, 1, out=y)
            np.reciprocal(y, out=y)
        elif name == "Tanh":
            np.tanh(y, out=y)


# ---- algorithm choice ---------------------------------------------------------------------------
def choose_algorithm(shape: ConvShape, has_bias: bool, exact: bool = False):
    """exact: integer-valued data that must stay exact (no Winograd transforms)."""
    if shape.pointwise:
        return Pointwise(shape, has_bias)
    if depthwise_applicable(shape):
        return DepthwiseCols(shape) if shape.p <= DEPTHWISE_COLS_MAX_P else Depthwise2D(shape)
    tile = 0 if exact else winograd_tile(shape)
    if tile:
        return Winograd(shape, tile)
    if BatchedIm2col.fits(shape):
        return BatchedIm2col(shape)
    if shape.window.nd == 2:
        wide = WideIm2col(shape, has_bias)
        # wide rows cost (kernel extent / stride) extra matmul columns per output row: fine on wide
        # maps, too many on narrow ones, where the plain unrolling is cheaper
        if wide.wq <= WIDE_MAX_WASTE * wide.ow:
            return wide
    return Im2colGemm(shape)


def _compute_dtype(dtype) -> np.dtype:
    """Half precision is computed in float32 (NumPy's float16 matmul has no BLAS path)."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


class ConvPlan:
    """One conv specialised for fixed input shapes: algorithm, workspace layout, prepared weights."""

    def __init__(self, x_shape, w_shape, dtype, has_bias, attrs, act: Activation, has_z: bool = False,
                 exact: bool = False):
        win = conv_geometry(x_shape, w_shape, attrs.get("kernel_shape"), attrs.get("strides"),
                            attrs.get("dilations"), attrs.get("pads"), attrs.get("auto_pad", "NOTSET"))
        group = int(attrs.get("group", 1) or 1)
        if x_shape[1] != w_shape[1] * group or w_shape[0] % group:
            raise ValueError(f"Conv: input channels {x_shape[1]} and weight {list(w_shape)} do not match group {group}")
        self.dtype = np.dtype(dtype)
        self.work_dtype = _compute_dtype(dtype)
        self.shape = ConvShape(x_shape, w_shape, group, win, self.work_dtype)
        self.algo = choose_algorithm(self.shape, has_bias, exact)
        self.act = act
        specs = list(self.algo.workspace())
        self.n_algo_ws = len(specs)
        if act.needs_tmp:
            specs.append((self.shape.out_shape, self.work_dtype))
        if self.work_dtype != self.dtype:  # half precision: float32 staging of x, Z and the output
            specs += [(tuple(x_shape), self.work_dtype), (self.shape.out_shape, self.work_dtype)]
            if has_z:
                specs.append((self.shape.out_shape, self.work_dtype))
        self.specs = specs

    def nbytes(self) -> int:
        return workspace_bytes(self.specs)

    def prepare(self, w, b):
        return self.algo.prepare(np.asarray(w), None if b is None else np.asarray(b))

    def __call__(self, x, prepared, z, out, scratch):
        ws = carve(scratch, self.specs)
        k = self.n_algo_ws
        tmp = None
        if self.act.needs_tmp:
            tmp, k = ws[k], k + 1
        y = out
        if self.work_dtype != self.dtype:  # half precision: stage x (and Z) in float32
            np.copyto(ws[k], x, casting="unsafe")
            x, y = ws[k], ws[k + 1]
            if z is not None:
                np.copyto(ws[k + 2], z, casting="unsafe")
                z = ws[k + 2]
        self.algo.run(x, prepared, y, ws[: self.n_algo_ws])
        if z is not None:
            np.add(y, z, out=y)
        self.act(y, tmp)
        if y is not out:
            np.copyto(out, y, casting="unsafe")
        return out


def _conv_attrs(auto_pad, dilations, group, kernel_shape, pads, strides):
    return {"auto_pad": auto_pad, "dilations": dilations, "group": group, "kernel_shape": kernel_shape,
            "pads": pads, "strides": strides}


def _make(ins, attrs, act: Activation):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    z = ins[3] if len(ins) > 3 else None
    plan = prepared = None
    if x is not None and w is not None and x.shape is not None and w.shape is not None:
        try:
            plan = ConvPlan(x.shape, w.shape, x.dtype, b is not None, attrs, act, z is not None)
        except ValueError:
            plan = None  # inconsistent shapes: rebuilt and reported by the kernel call, which names the node
    const_w = plan is not None and w.value is not None and (b is None or b.value is not None)
    if const_w:
        prepared = plan.prepare(w.value, None if b is None else b.value)

    def run(x, w, b=None, z=None, *, out=None, scratch=None):
        p = plan
        if p is None or p.shape.in_sizes != x.shape[2:] or p.shape.n != x.shape[0]:
            p = ConvPlan(x.shape, w.shape, x.dtype, b is not None, attrs, act, z is not None)
            scratch = None
        if out is None:
            out = np.empty(p.shape.out_shape, x.dtype)
        weights = prepared if (const_w and p is plan) else p.prepare(w, b)
        return p(x, weights, z, out, scratch)

    return run


def _scratch(ins, attrs, act: Activation) -> int:
    x, w = ins[0], ins[1]
    if x is None or w is None or x.shape is None or w.shape is None:
        return 0
    b = ins[2] if len(ins) > 2 else None
    z = ins[3] if len(ins) > 3 else None
    try:
        return ConvPlan(x.shape, w.shape, x.dtype, b is not None, attrs, act, z is not None).nbytes()
    except ValueError:
        return 0


# ---- Conv ---------------------------------------------------------------------------------------
def make_conv(ins, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    return _make(ins, _conv_attrs(auto_pad, dilations, group, kernel_shape, pads, strides), Activation())


def scratch_conv(ins, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    return _scratch(ins, _conv_attrs(auto_pad, dilations, group, kernel_shape, pads, strides), Activation())


def _infos(*arrays) -> list:
    return [None if a is None else Info(a.dtype, a.shape, None) for a in arrays]


@register_op("Conv", since=1, infer=infer_conv, out=True, make=make_conv, scratch=scratch_conv)
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
         out=None, scratch=None):
    fn = make_conv(_infos(x, w, b), auto_pad=auto_pad, dilations=dilations, group=group,
                   kernel_shape=kernel_shape, pads=pads, strides=strides)
    return fn(x, w, b, out=out, scratch=scratch)


# ---- FusedConv ----------------------------------------------------------------------------------
def make_fused_conv(ins, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
                    activation="", activation_params=None):
    attrs = _conv_attrs(auto_pad, dilations, group, kernel_shape, pads, strides)
    return _make(ins, attrs, Activation(activation, activation_params))


def scratch_fused_conv(ins, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
                       strides=None, activation="", activation_params=None):
    attrs = _conv_attrs(auto_pad, dilations, group, kernel_shape, pads, strides)
    return _scratch(ins, attrs, Activation(activation, activation_params))


@register_op("FusedConv", domain="ai.sporeling", since=1, infer=infer_conv, out=True, make=make_fused_conv,
             scratch=scratch_fused_conv)
def fused_conv(x, w, b=None, z=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
               strides=None, activation="", activation_params=None, out=None, scratch=None):
    fn = make_fused_conv(_infos(x, w, b, z), auto_pad=auto_pad, dilations=dilations, group=group,
                         kernel_shape=kernel_shape, pads=pads, strides=strides, activation=activation,
                         activation_params=activation_params)
    return fn(x, w, b, z, out=out, scratch=scratch)


from . import conv_causal, conv_deform, conv_quant, conv_transpose  # noqa: E402, F401  (they import from here)

"""TFLite builtin ops -> ONNX nodes: the neural-network half (convolutions, pools, resizes, dense layers,
activations, normalisation, quantization). Elementwise math and shape ops are in tflite_ops_tensor.py;
BUILTINS below merges both tables, keyed by the schema's op name, one small function per op.

A converter reads its inputs through the OpContext (`c.x(k)`: the graph name of input k, float when
the tensor is quantized, and transposed by `perm` when given, which for a constant happens here at
import), and its last node writes `c.y(k)`. Layout-sensitive ops run in NCHW: Transpose(0,3,1,2) on
the input, the ONNX op, the fused activation, then Transpose(0,2,3,1) back to the TFLite tensor, so
the activation sits right after the op where the fusion pass finds it.

TFLite's SAME padding puts the smaller half first (ONNX SAME_UPPER); with static spatial sizes the
pads are written out explicitly. LiteRT is the reference where it and the schema part ways: a fused
TANH or SIGN_BIT changes nothing there (its kernels clamp to the ReLU family's ranges only), so
nothing is emitted for them (see OpContext.act_steps).
"""

from __future__ import annotations

import struct

import numpy as np

from .tflite_context import ONNX_TYPES, OpContext, Unsupported
from .tflite_ops_tensor import TENSOR_OPS

SAME, VALID = 0, 1  # tflite.Padding
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


# ---- shared pieces -------------------------------------------------------------------------------
def nchw(c: OpContext, k: int = 0) -> str:
    """Input k transposed to NCHW, shared by every op that reads the same tensor that way."""
    name = c.x(k)
    key = ("nchw", name)
    if key not in c.imp.cache:
        c.imp.cache[key] = c.node("Transpose", [name], perm=TO_NCHW)
    return c.imp.cache[key]


def in_nchw(c: OpContext, op_type: str, inputs: list[str], act: int = 0, **attrs) -> str:
    """op_type on NCHW inputs, its fused activation, then back to NHWC into output 0."""
    steps = [(op_type, inputs[1:], attrs)] + c.act_steps(act) + [("Transpose", [], {"perm": TO_NHWC})]
    return c.chain(inputs[0], steps)


def same_pads(in_sizes, kernel, strides, dilations) -> list[int]:
    """TensorFlow's SAME: output ceil(in / stride), the smaller half of the padding first."""
    begin, end = [], []
    for n, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


def window(c: OpContext, padding: int, kernel, strides, dilations=(1, 1)) -> dict:
    if padding not in (SAME, VALID):
        raise Unsupported(f"padding {padding}")
    if min(strides) < 1 or min(dilations) < 1:
        raise Unsupported(f"strides {list(strides)} / dilations {list(dilations)} must be positive")
    attrs = {"kernel_shape": [int(k) for k in kernel], "strides": [int(s) for s in strides]}
    hw = c.shape(0)[1:3]
    if padding == VALID:
        attrs["pads"] = [0, 0, 0, 0]
    elif len(hw) == 2 and min(hw) > 0:
        attrs["pads"] = same_pads(hw, kernel, strides, dilations)
    else:
        attrs["auto_pad"] = "SAME_UPPER"
    return attrs


def rank4(c: OpContext, k: int = 0) -> tuple[int, ...]:
    shape = c.shape(k)
    if len(shape) != 4:
        raise Unsupported(f"input {k} has rank {len(shape)}, expected an NHWC tensor")
    return shape


# ---- convolutions ----------------------------------------------------------------------------------
def conv_2d(c: OpContext) -> None:
    o = c.options("Conv2DOptions")
    cin = rank4(c)[3]
    w = c.tensor(1).shape  # OHWI
    if len(w) != 4 or cin <= 0 or cin % w[3]:
        raise Unsupported(f"filter shape {list(w)} does not fit {cin} input channels")
    dil = [o.DilationHFactor(), o.DilationWFactor()]
    attrs = window(c, o.Padding(), w[1:3], [o.StrideH(), o.StrideW()], dil)
    ins = [nchw(c), c.x(1, (0, 3, 1, 2))] + ([c.x(2)] if c.has(2) else [])
    in_nchw(c, "Conv", ins, o.FusedActivationFunction(), dilations=dil, group=cin // w[3], **attrs)


def depthwise_conv_2d(c: OpContext) -> None:
    o = c.options("DepthwiseConv2DOptions")
    cin = rank4(c)[3]
    w = c.tensor(1).shape  # [1, H, W, C * multiplier]
    if len(w) != 4 or w[0] != 1 or cin <= 0 or w[3] % cin:
        raise Unsupported(f"filter shape {list(w)} does not fit {cin} input channels")
    dil = [o.DilationHFactor(), o.DilationWFactor()]
    attrs = window(c, o.Padding(), w[1:3], [o.StrideH(), o.StrideW()], dil)
    ins = [nchw(c), c.x(1, (3, 0, 1, 2))] + ([c.x(2)] if c.has(2) else [])
    in_nchw(c, "Conv", ins, o.FusedActivationFunction(), dilations=dil, group=cin, **attrs)


def _deconv(c: OpContext, xk: int, wk: int, bk: int, out_hw, padding: int, strides, act: int) -> None:
    """TFLite's transpose convolution: padding computed as for the forward convolution that maps the
    output size back to the input size, then written as explicit ONNX pads (output_padding where the
    requested output is longer than what the taps reach)."""
    n_hw = c.shape(xk)[1:3]
    w = c.tensor(wk).shape  # [O, H, W, I]
    if len(w) != 4 or len(n_hw) != 2 or min(n_hw) <= 0:
        raise Unsupported("needs a static NHWC input and an OHWI filter")
    if padding not in (SAME, VALID) or min(strides) < 1:
        raise Unsupported(f"padding {padding}, strides {list(strides)}")
    begin, end, extra = [], [], []
    for n, k, s, o in zip(n_hw, w[1:3], strides, out_hw):
        fwd = (o + s - 1) // s if padding == SAME else (o + s - k) // s
        pb = max((fwd - 1) * s + k - o, 0) // 2
        pe = (n - 1) * s + k - o - pb
        begin.append(pb)
        end.append(max(pe, 0))
        extra.append(max(-pe, 0))
    ins = [nchw(c, xk), c.x(wk, (3, 0, 1, 2))] + ([c.x(bk)] if c.has(bk) else [])
    attrs = {"kernel_shape": list(w[1:3]), "strides": list(strides), "pads": begin + end}
    if any(extra):
        attrs["output_padding"] = extra
    in_nchw(c, "ConvTranspose", ins, act, **attrs)


def transpose_conv(c: OpContext) -> None:
    o = c.options("TransposeConvOptions")
    out_shape = [int(v) for v in c.const(0, "output shape").reshape(-1)]
    if len(out_shape) != 4:
        raise Unsupported(f"output shape {out_shape}")
    _deconv(c, 2, 1, 3, out_shape[1:3], o.Padding(), [o.StrideH(), o.StrideW()], o.FusedActivationFunction())


def convolution_2d_transpose_bias(c: OpContext) -> None:
    """MediaPipe's custom transpose convolution with bias. Its options are the C struct
    TfLiteTransposeConvParams copied raw: padding (TfLitePadding: 1 SAME, 2 VALID), stride_width,
    stride_height, as little-endian int32s."""
    opts = c.custom_options()
    if len(opts) < 12:
        raise Unsupported(f"custom options of {len(opts)} bytes, expected 12")
    padding, stride_w, stride_h = struct.unpack_from("<3i", opts)
    if padding not in (1, 2):
        raise Unsupported(f"padding {padding}")
    out_hw = c.out_tensor().shape[1:3]
    _deconv(c, 0, 1, 2, out_hw, SAME if padding == 1 else VALID, [stride_h, stride_w], 0)


# ---- pools and resizes -----------------------------------------------------------------------------
def _pool(op_type: str):
    def convert(c: OpContext) -> None:
        o = c.options("Pool2DOptions")
        rank4(c)
        attrs = window(c, o.Padding(), [o.FilterHeight(), o.FilterWidth()], [o.StrideH(), o.StrideW()])
        in_nchw(c, op_type, [nchw(c)], o.FusedActivationFunction(), **attrs)

    return convert


def _resize(mode: str, options: str):
    def convert(c: OpContext) -> None:
        o = c.options(options)
        rank4(c)
        size = c.const(1, "output size").astype(np.int64).reshape(-1)
        align, half = o.AlignCorners(), o.HalfPixelCenters()
        if align and half:
            raise Unsupported("align_corners together with half_pixel_centers")
        if len(size) != 2:
            raise Unsupported(f"output size {size.tolist()}")
        if mode == "linear":
            ctm = "align_corners" if align else "half_pixel" if half else "asymmetric"
            extra = {}
        else:  # TFLite: floor((o + offset) * scale), or round half up with align_corners
            ctm = "align_corners" if align else "tf_half_pixel_for_nn" if half else "asymmetric"
            extra = {"nearest_mode": "round_prefer_ceil" if align else "floor"}
        if mode == "nearest":
            c.keep_ints()
        in_nchw(c, "Resize", [nchw(c), "", "", c.ints(size, "size")], mode=mode,
                coordinate_transformation_mode=ctm, axes=[2, 3], **extra)

    return convert


def space_to_depth(c: OpContext) -> None:
    c.keep_ints()
    rank4(c)
    in_nchw(c, "SpaceToDepth", [nchw(c)], blocksize=c.options("SpaceToDepthOptions").BlockSize())


def depth_to_space(c: OpContext) -> None:
    c.keep_ints()
    rank4(c)
    in_nchw(c, "DepthToSpace", [nchw(c)], blocksize=c.options("DepthToSpaceOptions").BlockSize(), mode="DCR")


def local_response_normalization(c: OpContext) -> None:
    o = c.options("LocalResponseNormalizationOptions")
    rank4(c)
    size = 2 * o.Radius() + 1
    in_nchw(c, "LRN", [nchw(c)], size=size, alpha=o.Alpha() * size, beta=o.Beta(), bias=o.Bias())


# ---- dense layers ----------------------------------------------------------------------------------
def fully_connected(c: OpContext) -> None:
    o = c.options("FullyConnectedOptions")
    if o.WeightsFormat() != 0:
        raise Unsupported("shuffled weights format")
    w = c.tensor(1).shape
    if len(w) != 2:
        raise Unsupported(f"weights of shape {list(w)}")
    in_shape = c.shape(0)
    steps, expected = [], tuple(in_shape[:-1]) + (w[0],)
    if len(in_shape) != 2 and not o.KeepNumDims():
        steps.append(("Reshape", [c.ints([-1, w[1]], "flat")], {}))
        expected = (-1, w[0])
    steps.append(("MatMul", [c.x(1, (1, 0))], {}))
    if c.has(2):
        steps.append(("Add", [c.x(2)], {}))
    declared = c.out_tensor().signature
    if tuple(declared) != expected and sum(d < 0 for d in declared) <= 1:
        steps.append(("Reshape", [c.ints(declared, "shape")], {}))
    c.chain(c.x(0), steps + c.act_steps(o.FusedActivationFunction()))


def batch_matmul(c: OpContext) -> None:
    o = c.options("BatchMatMulOptions")

    def operand(k: int, adjoint: bool) -> str:
        r = len(c.shape(k))
        return c.x(k, tuple(range(r - 2)) + (r - 1, r - 2)) if adjoint and r >= 2 else c.x(k)

    c.chain(operand(0, o.AdjX()), [("MatMul", [operand(1, o.AdjY())], {})])


# ---- activations and normalisation -------------------------------------------------------------------
def softmax(c: OpContext) -> None:
    beta = c.options("SoftmaxOptions").Beta()
    steps = [] if beta == 1.0 else [("Mul", [c.scalar(beta)], {})]
    c.chain(c.x(0), steps + [("Softmax", [], {"axis": -1})])


def l2_normalization(c: OpContext) -> None:
    """x / max(||x||, 1e-6) over the last axis, TFLite's epsilon."""
    x = c.x(0)
    norm = c.node("ReduceL2", [x, c.ints([-1], "axis")], keepdims=1)
    norm = c.node("Max", [norm, c.scalar(1e-6)])
    c.chain(x, [("Div", [norm], {})] + c.act_steps(c.options("L2NormOptions").FusedActivationFunction()))


def leaky_relu(c: OpContext) -> None:
    c.chain(c.x(0), [("LeakyRelu", [], {"alpha": c.options("LeakyReluOptions").Alpha()})])


def gelu(c: OpContext) -> None:
    approximate = "tanh" if c.options("GeluOptions").Approximate() else "none"
    c.chain(c.x(0), [("Gelu", [], {"approximate": approximate})])


def prelu(c: OpContext) -> None:
    c.chain(c.x(0), [("PRelu", [c.x(1)], {})])


def _activation(op_type: str, *more: float):
    def convert(c: OpContext) -> None:
        c.chain(c.x(0), [(op_type, [c.scalar(v) for v in more], {})])

    return convert


# ---- quantization --------------------------------------------------------------------------------
def quantize(c: OpContext) -> None:
    """Float -> integers, or integers -> integers of other parameters (requantization)."""
    t = c.out_tensor()
    if t.quant is None:
        raise Unsupported("the output has no quantization parameters")
    s, z, axis = c.imp.quant_params(t)
    c.node("QuantizeLinear", [c.x(0), s, z], out=c.raw_y(), axis=axis)


def dequantize(c: OpContext) -> None:
    t = c.tensor(0)
    if t.quant is not None:
        s, z, axis = c.imp.quant_params(t)
        c.node("DequantizeLinear", [c.raw(0), s, z], out=c.raw_y(), axis=axis)
    else:  # float16 -> float32
        c.node("Cast", [c.raw(0)], out=c.raw_y(), to=ONNX_TYPES[c.out_tensor().dtype])


NN_OPS = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "TRANSPOSE_CONV": transpose_conv,
    "MAX_POOL_2D": _pool("MaxPool"),
    "AVERAGE_POOL_2D": _pool("AveragePool"),
    "RESIZE_BILINEAR": _resize("linear", "ResizeBilinearOptions"),
    "RESIZE_NEAREST_NEIGHBOR": _resize("nearest", "ResizeNearestNeighborOptions"),
    "SPACE_TO_DEPTH": space_to_depth,
    "DEPTH_TO_SPACE": depth_to_space,
    "LOCAL_RESPONSE_NORMALIZATION": local_response_normalization,
    "FULLY_CONNECTED": fully_connected,
    "BATCH_MATMUL": batch_matmul,
    "SOFTMAX": softmax,
    "LOG_SOFTMAX": _activation("LogSoftmax"),
    "L2_NORMALIZATION": l2_normalization,
    "RELU": _activation("Relu"),
    "RELU6": _activation("Clip", 0.0, 6.0),
    "RELU_N1_TO_1": _activation("Clip", -1.0, 1.0),
    "RELU_0_TO_1": _activation("Clip", 0.0, 1.0),
    "LEAKY_RELU": leaky_relu,
    "PRELU": prelu,
    "ELU": _activation("Elu"),
    "GELU": gelu,
    "HARD_SWISH": _activation("HardSwish"),
    "LOGISTIC": _activation("Sigmoid"),
    "TANH": _activation("Tanh"),
    "QUANTIZE": quantize,
    "DEQUANTIZE": dequantize,
}

BUILTINS = {**NN_OPS, **TENSOR_OPS}
CUSTOM = {"Convolution2DTransposeBias": convolution_2d_transpose_bias}

"""Integer convolutions: ConvInteger (int32 result) and QLinearConv (requantized 8-bit result).

NumPy's integer matmul has no BLAS path (20-40x slower than float), so the zero-point-shifted
8-bit operands are converted to float64, where every product and every partial sum of a realistic
conv is an exactly representable integer, and run through the same float conv algorithms (minus
Winograd, whose fractional transforms would round). The float64 weights are prepared once per plan
when the weights and their zero points are constant. ConvInteger then wraps to int32 as the spec
allows; QLinearConv scales by x_scale * w_scale / y_scale (float32, as the reference computes it),
adds y_zero_point, saturates and rounds half to even.
"""

from __future__ import annotations

import numpy as np

from .conv import Activation, ConvPlan, infer_conv
from .registry import Info, register_op


def _centered(v, zero_point):
    """v - zero_point as float64; a 1-D zero point broadcasts over axis 0 (output channels of w)."""
    out = np.asarray(v, np.float64)
    if zero_point is None:
        return out
    zp = np.asarray(zero_point, np.float64)
    if zp.ndim == 1 and zp.size > 1:
        zp = zp.reshape(-1, *([1] * (out.ndim - 1)))
    else:
        zp = zp.reshape(())
    return out - zp


def _conv_attrs(auto_pad, dilations, group, kernel_shape, pads, strides):
    return {"auto_pad": auto_pad, "dilations": dilations, "group": group, "kernel_shape": kernel_shape,
            "pads": pads, "strides": strides}


class _ExactConv:
    """A float64 conv over zero-point-shifted integers, its weights prepared once when constant."""

    def __init__(self, x_info, w_info, wzp_info, attrs, bias_info=None):
        self.attrs = attrs
        self.plan = None
        self.prepared = None
        if x_info is not None and w_info is not None and x_info.shape is not None and w_info.shape is not None:
            self.plan = ConvPlan(x_info.shape, w_info.shape, np.float64, bias_info is not None, attrs, Activation(),
                                 exact=True)
            consts = [w_info] + [i for i in (wzp_info, bias_info) if i is not None]
            if all(i.value is not None for i in consts):
                self.prepared = self.plan.prepare(_centered(w_info.value, None if wzp_info is None else wzp_info.value),
                                                  None if bias_info is None else bias_info.value)

    def __call__(self, x, w, wzp, xzp, bias):
        xf = _centered(x, xzp)
        plan = self.plan
        if plan is None or plan.shape.in_sizes != x.shape[2:] or plan.shape.n != x.shape[0]:
            plan = ConvPlan(x.shape, w.shape, np.float64, bias is not None, self.attrs, Activation(), exact=True)
        weights = self.prepared if (self.prepared is not None and plan is self.plan) else \
            plan.prepare(_centered(w, wzp), bias)
        acc = np.empty(plan.shape.out_shape, np.float64)
        return plan(xf, weights, None, acc, None)


# ---- ConvInteger --------------------------------------------------------------------------------
def _infer_conv_integer(ins, **attrs):
    res = infer_conv(ins, **attrs)
    return None if res is None else [(np.dtype(np.int32), res[0][1])]


def make_conv_integer(ins, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    ins = list(ins) + [None] * (4 - len(ins))
    conv = _ExactConv(ins[0], ins[1], ins[3], _conv_attrs(auto_pad, dilations, group, kernel_shape, pads, strides))

    def run(x, w, x_zero_point=None, w_zero_point=None, *, out=None):
        acc = conv(x, w, w_zero_point, x_zero_point, None)
        res = np.rint(acc).astype(np.int64).astype(np.int32)  # int32 wrap-around, as the spec allows
        if out is None:
            return res
        np.copyto(out, res)
        return out

    return run


@register_op("ConvInteger", since=10, infer=_infer_conv_integer, out=True, make=make_conv_integer)
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None, group=1,
                 kernel_shape=None, pads=None, strides=None, out=None):
    infos = [Info(a.dtype, a.shape, None) if a is not None else None for a in (x, w, x_zero_point, w_zero_point)]
    return make_conv_integer(infos, auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                             pads=pads, strides=strides)(x, w, x_zero_point, w_zero_point, out=out)


# ---- QLinearConv --------------------------------------------------------------------------------
def _infer_qlinear_conv(ins, **attrs):
    x, w = ins[0], ins[3]
    yzp = ins[7] if len(ins) > 7 else None
    res = infer_conv([x, w], **attrs)
    if res is None:
        return None
    dtype = yzp.dtype if yzp is not None else x.dtype
    return [(dtype, res[0][1])]


def make_qlinear_conv(ins, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    ins = list(ins) + [None] * (9 - len(ins))
    conv = _ExactConv(ins[0], ins[3], ins[5], _conv_attrs(auto_pad, dilations, group, kernel_shape, pads, strides),
                      bias_info=ins[8])

    def run(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point=None, b=None, *, out=None):
        acc = conv(x, w, w_zero_point, x_zero_point, b)
        scale = np.asarray(x_scale, np.float32) * np.asarray(w_scale, np.float32) / np.asarray(y_scale, np.float32)
        if scale.ndim == 1 and scale.size > 1:
            scale = scale.reshape(1, -1, *([1] * (acc.ndim - 2)))
        else:
            scale = scale.reshape(())
        res = acc * scale.astype(np.float64)
        dtype = np.dtype(y_zero_point.dtype if y_zero_point is not None else x.dtype)
        if y_zero_point is not None:
            res += np.asarray(y_zero_point, np.float64).reshape(())
        info = np.iinfo(dtype)
        np.clip(res, info.min, info.max, out=res)
        np.rint(res, out=res)
        if out is None:
            return res.astype(dtype)
        np.copyto(out, res, casting="unsafe")
        return out

    return run


@register_op("QLinearConv", since=10, infer=_infer_qlinear_conv, out=True, make=make_qlinear_conv)
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point=None, b=None, *,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None, out=None):
    args = (x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, b)
    infos = [Info(a.dtype, a.shape, None) if a is not None else None for a in args]
    return make_qlinear_conv(infos, auto_pad=auto_pad, dilations=dilations, group=group, kernel_shape=kernel_shape,
                             pads=pads, strides=strides)(*args, out=out)

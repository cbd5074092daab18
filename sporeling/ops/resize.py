"""Resize and its predecessor Upsample.

Resize is separable. Each resized axis gets a table of taps: for every output position, the input
indices it reads and their weights (1 tap for nearest, 2 for linear, 4 for cubic, more when
antialiasing widens the filter to downscale). The axes are then resampled one after another. With
constant scales/sizes and a static input shape the tables, the pass order and the workspace layout
(taken from the planner's scratch) are fixed once in make(), and each pass picks the cheapest form
for its table: integer up/downscaling by strided slices, two-tap linear by row gathers of the
input and of its differences, anything else by per-tap gathers. Nearest resizes whose indices are
a plain integer repeat (the 2x/4x upsampling of detection necks) skip the gathers: np.repeat along
the innermost axis and one broadcast copy into ``out`` for the others.

Coordinates follow the spec's definitions in float64 on the given scales (the fractional output
width included), as its reference implementation and the conformance data do.
"""

from __future__ import annotations

import math

import numpy as np

from ..memory.planner import align
from .infer import norm_axis
from .registry import register_op

# ---- Resize geometry ----------------------------------------------------------------------------


def _geometry(in_shape, roi, scales, sizes, axes, policy):
    """Output shape, per-axis scale and per-axis (roi start, roi end) of a resize.

    With `sizes` the scale of an axis is out/in (one common scale when a keep_aspect_ratio_policy
    asks for it); with `scales` the output length is floor(scale * in) and the given scale is kept,
    fractional output width and all, since the coordinate transforms are defined on it."""
    rank = len(in_shape)
    axes = list(range(rank)) if not axes else [norm_axis(int(a), rank) for a in axes]
    out = list(in_shape)
    scale = [1.0] * rank
    if sizes is not None and np.size(sizes) > 0:
        for a, s in zip(axes, np.reshape(sizes, -1)):
            out[a] = int(s)
            scale[a] = int(s) / in_shape[a] if in_shape[a] else 1.0
        if policy in ("not_larger", "not_smaller"):
            common = (min if policy == "not_larger" else max)(scale[a] for a in axes)
            for a in axes:
                scale[a] = common
                out[a] = int(common * in_shape[a] + 0.5)
    elif scales is not None and np.size(scales) > 0:
        for a, s in zip(axes, np.reshape(scales, -1)):
            scale[a] = float(s)
            out[a] = math.floor(float(s) * in_shape[a])
    else:
        raise ValueError("Resize needs non-empty scales or sizes")
    starts, ends = [0.0] * rank, [1.0] * rank
    if roi is not None and np.size(roi) > 0:
        roi = [float(v) for v in np.reshape(roi, -1)]
        named = axes if len(roi) == 2 * len(axes) else list(range(rank))
        for k, a in enumerate(named):
            starts[a], ends[a] = roi[k], roi[len(named) + k]
    return tuple(out), scale, list(zip(starts, ends))


def _source_coords(out_len, in_len, scale, roi, ctm):
    """Input coordinate of every output position along one axis (float64)."""
    o = np.arange(out_len, dtype=np.float64)
    width = scale * in_len  # the output width the scale implies, possibly fractional
    if ctm == "align_corners":
        return np.zeros(out_len) if width == 1 else o * (in_len - 1) / (width - 1)
    if ctm == "asymmetric":
        return o / scale
    if ctm == "tf_crop_and_resize":
        start, end = roi
        if width == 1:
            return np.full(out_len, (end - start) * (in_len - 1) / 2 + start * (in_len - 1))
        return o * (end - start) * (in_len - 1) / (width - 1) + start * (in_len - 1)
    if ctm == "pytorch_half_pixel":  # the spec's formula (and onnxruntime): a single output samples x = 0
        return np.zeros(out_len) if width == 1 else (o + 0.5) / scale - 0.5
    if ctm == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if ctm == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / width)
        return offset + (o + 0.5) / scale - 0.5
    if ctm == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    raise ValueError(f"unknown coordinate_transformation_mode '{ctm}'")


def _keys_cubic(t, a):
    """Keys' cubic convolution kernel."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _axis_taps(in_len, out_len, scale, roi, a):
    """Tap table of one axis: (indices (out, K), weights (out, K) or None, extrapolated mask or None)."""
    x = _source_coords(out_len, in_len, scale, roi, a["coordinate_transformation_mode"])
    outside = None
    if a["coordinate_transformation_mode"] == "tf_crop_and_resize":
        outside = (x < 0) | (x > in_len - 1)
        outside = outside if outside.any() else None
    mode = a["mode"]
    if mode == "nearest":
        rounding = {
            "round_prefer_floor": lambda v: np.ceil(v - 0.5),
            "round_prefer_ceil": lambda v: np.floor(v + 0.5),
            "floor": np.floor,
            "ceil": np.ceil,
            # Resize-10 and Upsample: ceil when shrinking this axis, floor when growing it
            "legacy": np.ceil if scale < 1 else np.floor,
        }[a["nearest_mode"]]
        idx = np.clip(rounding(x), 0, in_len - 1).astype(np.intp)
        return idx[:, None], None, outside
    # Taps at base + start .. base + start + K - 1, where a position exactly on a pixel counts as
    # ratio 1 of the pixel before it (so a tie picks the same neighbours as the spec's reference).
    base = np.floor(x)
    ratio = x - base
    on_grid = ratio == 0
    base[on_grid] -= 1
    ratio[on_grid] = 1.0
    reach = 1 if mode == "linear" else 2
    stretch = min(scale, 1.0) if a["antialias"] else 1.0
    start = math.floor(-reach / stretch) + 1
    offsets = np.arange(start, 2 - start, dtype=np.float64)
    t = (offsets[None, :] - ratio[:, None]) * stretch
    if mode == "linear":
        w = np.clip(1 - np.abs(t), 0, 1)
    elif mode == "cubic":
        w = _keys_cubic(t, a["cubic_coeff_a"])
    else:
        raise ValueError(f"unknown Resize mode '{mode}'")
    if a["antialias"]:
        w /= w.sum(axis=1, keepdims=True)
    idx = base[:, None] + offsets[None, :]
    if a["exclude_outside"]:
        w[(idx < 0) | (idx > in_len - 1)] = 0
        total = w.sum(axis=1, keepdims=True)
        w /= np.where(total == 0, 1, total)
    return idx.astype(np.int64), w, outside


def _compute_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _to_dtype(y, dtype, out):
    """Casts the float result to the input dtype (integers round and saturate) into out."""
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    if out is None:
        return y.astype(dtype, copy=False)
    np.copyto(out, y, casting="unsafe")
    return out


class _Workspace:
    """Arrays carved in order from one flat byte buffer (the planner's scratch), or fresh ones."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def __call__(self, shape, dtype):
        if self.buf is None:
            return np.empty(shape, dtype)
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        a = self.buf[self.pos : self.pos + n].view(dtype).reshape(shape)
        self.pos += align(n)
        return a


def _specs_bytes(specs) -> int:
    return sum(align(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize) for shape, dt in specs)


def _build_resize(in_shape, dtype, roi, scales, sizes, attrs):
    """(output shape, callable (x, out, scratch) -> y with every table precomputed, scratch bytes)."""
    out_shape, scale, rois = _geometry(in_shape, roi, scales, sizes, attrs["axes"], attrs["keep_aspect_ratio_policy"])
    rank = len(in_shape)
    passes = []
    for d, (n_in, n_out) in enumerate(zip(in_shape, out_shape)):
        cropped = attrs["coordinate_transformation_mode"] == "tf_crop_and_resize" and rois[d] != (0.0, 1.0)
        identity = n_in == n_out and scale[d] == 1.0 and not cropped
        if not identity and n_out > 0 and n_in > 0:
            passes.append((d, *_axis_taps(n_in, n_out, scale[d], rois[d], attrs)))
    if attrs["mode"] == "nearest" and all(p[3] is None for p in passes):
        return out_shape, _nearest_plan(in_shape, out_shape, passes), 0
    # Shrinking axes first keeps the slabs small; among growing axes the innermost goes first, so
    # its strided or gathered writes work on the smaller array.
    passes.sort(key=lambda p: (out_shape[p[0]] / in_shape[p[0]], -p[0]))
    weighted = attrs["mode"] != "nearest"
    ct = _compute_dtype(dtype) if weighted else np.dtype(dtype)
    cast = ct != np.dtype(dtype)
    specs = [(in_shape, ct)] if cast else []  # the workspace layout, in order of use
    plan, shape = [], tuple(in_shape)
    for k, (d, idx, w, mask) in enumerate(passes):
        step_out = shape[:d] + (out_shape[d],) + shape[d + 1 :]
        periodic = None if w is None else _periodic_form(idx, w, in_shape[d], out_shape[d])
        two_tap = w is not None and w.shape[1] == 2 and bool((idx[:, 1] == idx[:, 0] + 1).all()) and \
            np.abs(w.sum(axis=1) - 1).max() < 1e-9
        # Strided slices beat gathers along the innermost axis, and on any axis when shrinking by an
        # integer factor (the writes stay contiguous); interleaved row writes are slower than gathers.
        if periodic is not None and (d == rank - 1 or periodic[0] == 1):
            fn, temps = _periodic_step(d, shape, out_shape[d], *periodic, ct)
        elif two_tap:
            fn, temps = _two_tap_step(d, shape, step_out, idx, w, ct)
        else:
            fn, temps = _gather_step(d, shape, step_out, np.clip(idx, 0, in_shape[d] - 1).astype(np.intp),
                                     None if w is None else w.astype(ct), ct)
        direct = k == len(passes) - 1 and not cast
        plan.append((d, fn, temps, None if direct else (step_out, ct), mask))
        specs += temps + ([] if direct else [(step_out, ct)])
        shape = step_out
    fill = attrs["extrapolation_value"]
    scratch_bytes = _specs_bytes(specs)
    empty = 0 in out_shape or 0 in in_shape

    def resize_taps(x, out=None, scratch=None):
        if out is None:
            out = np.empty(out_shape, dtype)
        if not plan or empty:
            if not empty:
                np.copyto(out, x)
            return out
        ws = _Workspace(scratch if scratch is not None and scratch.nbytes >= scratch_bytes else None)
        y = x
        if cast:
            y = ws(in_shape, ct)
            np.copyto(y, x, casting="unsafe")
        for d, fn, temps, own_out, mask in plan:
            temp_arrays = [ws(*spec) for spec in temps]
            y = fn(y, out if own_out is None else ws(*own_out), temp_arrays)
            if mask is not None:
                y[(slice(None),) * d + (mask,)] = fill
        return out if y is out else _to_dtype(y, dtype, out)

    return out_shape, resize_taps, scratch_bytes


def _gather_step(axis, in_shape, out_shape, idx, w, ct):
    """One separable pass by gathers: y[..., i, ...] = sum_k w[i, k] * x[..., idx[i, k], ...]."""
    shape = (1,) * axis + (-1,) + (1,) * (len(in_shape) - axis - 1)

    def step(x, out, temps):
        acc = np.take(x, idx[:, 0], axis=axis, out=out, mode="clip")
        if w is None:
            return acc
        acc *= w[:, 0].reshape(shape)
        for k in range(1, idx.shape[1]):
            tap = np.take(x, idx[:, k], axis=axis, out=temps[0], mode="clip")
            tap *= w[:, k].reshape(shape)
            acc += tap
        return acc

    return step, ([(out_shape, ct)] if w is not None and idx.shape[1] > 1 else [])


def _two_tap_step(axis, in_shape, out_shape, idx, w, ct):
    """Linear pass as y = x[i] + f * (x[i+1] - x[i]): the differences are taken once on the input
    and both terms are row gathers into contiguous arrays, which beats scaling two gathers."""
    in_len = in_shape[axis]
    lead = (slice(None),) * axis
    shape = (1,) * axis + (-1,) + (1,) * (len(in_shape) - axis - 1)
    first = np.clip(idx[:, 0], 0, in_len - 1)
    frac = np.where(np.clip(idx[:, 1], 0, in_len - 1) == first + 1, w[:, 1], 0.0)  # clamped edges: f = 0
    frac = frac.astype(ct).reshape(shape)
    first_diff = np.minimum(first, max(in_len - 2, 0)).astype(np.intp)
    first = first.astype(np.intp)
    diff_shape = in_shape[:axis] + (in_len - 1,) + in_shape[axis + 1 :]

    def step(x, out, temps):
        acc = np.take(x, first, axis=axis, out=out, mode="clip")
        if in_len > 1:
            diff = np.subtract(x[lead + (slice(1, None),)], x[lead + (slice(None, -1),)], out=temps[0])
            tap = np.take(diff, first_diff, axis=axis, out=temps[1], mode="clip")
            tap *= frac
            acc += tap
        return acc

    return step, ([(diff_shape, ct), (out_shape, ct)] if in_len > 1 else [])


def _periodic_form(idx, w, in_len, out_len):
    """(s, t, offsets, weights) when output j*s + r reads x[j*t + offsets[r, k]] with weights[r, k]
    for every block j -- integer upsampling (t = 1) or downsampling (s = 1) -- else None."""
    if out_len % in_len == 0:
        s, t = out_len // in_len, 1
    elif in_len % out_len == 0:
        s, t = 1, in_len // out_len
    else:
        return None
    blocks = out_len // s
    offsets = (idx - (np.arange(out_len) // s * t)[:, None]).reshape(blocks, s, -1)
    weights = w.reshape(blocks, s, -1)
    if not (offsets == offsets[0]).all() or np.abs(weights - weights[0]).max() > 1e-12:
        return None
    return s, t, offsets[0], weights[0]


def _periodic_step(axis, in_shape, out_len, s, t, offsets, weights, ct):
    """A separable pass as strided slices: every phase r of the output is a weighted sum of K
    strided slices of the (edge-padded) input, with no gathers. Two-tap linear phases use
    x[j] + f * (x[j+1] - x[j]) with the differences computed once for all phases."""
    in_len = in_shape[axis]
    blocks = out_len // s
    lo = max(0, -int(offsets.min()))
    hi = max(0, (blocks - 1) * t + int(offsets.max()) - (in_len - 1))
    lead = (slice(None),) * axis
    weights = weights.tolist()  # Python floats keep the arithmetic in the data's dtype
    # shared differences pay off when several phases reuse them (upsampling)
    two_tap = s > 1 and offsets.shape[1] == 2 and bool((offsets[:, 1] == offsets[:, 0] + 1).all())
    padded_shape = in_shape[:axis] + (in_len + lo + hi,) + in_shape[axis + 1 :]
    diff_shape = in_shape[:axis] + (in_len + lo + hi - 1,) + in_shape[axis + 1 :]
    phase_shape = in_shape[:axis] + (blocks,) + in_shape[axis + 1 :]
    temps = [(padded_shape, ct)] if lo or hi else []
    temps += [(diff_shape, ct)] if two_tap else [(phase_shape, ct)] if offsets.shape[1] > 1 else []

    def strided(arr, begin):
        return arr[lead + (slice(begin, begin + (blocks - 1) * t + 1, t),)]

    def step(x, out, temp_arrays):
        temp_arrays = list(temp_arrays)
        if lo or hi:  # edge padding, so every phase reads plain slices
            padded = temp_arrays.pop(0)
            padded[lead + (slice(lo, lo + in_len),)] = x
            padded[lead + (slice(0, lo),)] = x[lead + (slice(0, 1),)]
            padded[lead + (slice(lo + in_len, None),)] = x[lead + (slice(in_len - 1, in_len),)]
            x = padded
        view = out.reshape(x.shape[:axis] + (blocks, s) + x.shape[axis + 1 :])
        work = temp_arrays[0] if temp_arrays else None
        if two_tap:
            np.subtract(x[lead + (slice(1, None),)], x[lead + (slice(None, -1),)], out=work)
        for r in range(s):
            dst = view[lead + (slice(None), r)]
            begin = int(offsets[r, 0]) + lo
            if two_tap:
                np.multiply(strided(work, begin), weights[r][1], out=dst)
                np.add(dst, strided(x, begin), out=dst)
                continue
            taps = [(int(o) + lo, wk) for o, wk in zip(offsets[r], weights[r]) if wk != 0]
            if not taps:
                dst[...] = 0
            for k, (b, wk) in enumerate(taps):
                if k == 0:
                    np.multiply(strided(x, b), wk, out=dst)
                else:
                    dst += np.multiply(strided(x, b), wk, out=work)
        return out

    return step, temps


def _nearest_plan(in_shape, out_shape, passes):
    """Nearest resize: axes whose indices are i // s (an integer repeat) are filled by np.repeat
    (the innermost axis) and one broadcast copy (the others); any other axis is a gather first."""
    gathers, repeats = [], {}
    mid_shape = list(in_shape)
    for d, idx, _, _ in passes:
        n_in, n_out = in_shape[d], out_shape[d]
        rep = n_out // n_in if n_out % n_in == 0 else 0
        if rep and np.array_equal(idx[:, 0], np.arange(n_out) // rep):
            repeats[d] = rep
        else:
            gathers.append((d, np.clip(idx[:, 0], 0, n_in - 1).astype(np.intp)))
            mid_shape[d] = n_out
    inner = repeats.pop(len(in_shape) - 1, 0)
    if inner:
        mid_shape[-1] *= inner
    view_shape, src_shape = [], []
    for d, n in enumerate(mid_shape):
        view_shape += [n, repeats[d]] if d in repeats else [n]
        src_shape += [n, 1] if d in repeats else [n]
    empty = any(n == 0 for n in out_shape) or any(n == 0 for n in in_shape)

    def resize_nearest(x, out=None, scratch=None):
        if out is None:
            out = np.empty(out_shape, x.dtype)
        if empty:
            return out
        for k, (d, idx) in enumerate(gathers):
            direct = k == len(gathers) - 1 and not repeats and not inner
            x = np.take(x, idx, axis=d, out=out if direct else None, mode="clip")
        if inner:
            x = np.repeat(x, inner, axis=-1)
        if x is not out:
            np.copyto(out.reshape(view_shape), x.reshape(src_shape))
        return out

    return resize_nearest


_RESIZE_DEFAULTS = {
    "mode": "nearest", "coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75,
    "exclude_outside": 0, "extrapolation_value": 0.0, "nearest_mode": "round_prefer_floor", "antialias": 0,
    "axes": None, "keep_aspect_ratio_policy": "stretch",
}


def _resize_attrs(**attrs):
    a = dict(_RESIZE_DEFAULTS)
    a.update(attrs)
    return a


def _value(info):
    return None if info is None else info.value


def _known_geometry(ins, attrs):
    """(roi, scales, sizes) values when the output shape and every table are fixed at prepare time."""
    roi, scales, sizes = (list(ins) + [None] * 4)[1:4]
    if ins[0] is None or ins[0].shape is None:
        return None
    sz, sc, rv = _value(sizes), _value(scales), _value(roi)
    if sz is not None and sz.size > 0:
        sc = None
    elif (sizes is not None and sz is None) or sc is None or sc.size == 0:
        return None
    if roi is not None and rv is None and attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        return None
    return rv, sc, sz


def _resize_infer(ins, **attrs):
    known = _known_geometry(ins, attrs)
    if known is None:
        return None
    a = _resize_attrs(**attrs)
    shape, _, _ = _geometry(ins[0].shape, known[0], known[1], known[2], a["axes"], a["keep_aspect_ratio_policy"])
    return [(ins[0].dtype, shape)]


def _resize_make(ins, **attrs):
    known = _known_geometry(ins, attrs)
    if known is None:
        return lambda *args, out=None: resize(*args, **attrs, out=out)
    x = ins[0]
    _, fn, _ = _build_resize(x.shape, x.dtype, *known, _resize_attrs(**attrs))
    return lambda X, *_ignored, out=None, scratch=None: fn(X, out, scratch)


def _resize_scratch(ins, **attrs):
    known = _known_geometry(ins, attrs)
    if known is None:
        return 0
    return _build_resize(ins[0].shape, ins[0].dtype, *known, _resize_attrs(**attrs))[2]


@register_op("Resize", since=11, infer=_resize_infer, out=True, make=_resize_make, shape_inputs=(1, 2, 3),
             scratch=_resize_scratch)
def resize(X, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
           cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, nearest_mode="round_prefer_floor",
           antialias=0, axes=None, keep_aspect_ratio_policy="stretch", out=None):
    """Resize 11-19 (the newer attributes default to the older behaviour)."""
    attrs = {
        "mode": mode, "coordinate_transformation_mode": coordinate_transformation_mode,
        "cubic_coeff_a": cubic_coeff_a, "exclude_outside": exclude_outside,
        "extrapolation_value": extrapolation_value, "nearest_mode": nearest_mode, "antialias": antialias,
        "axes": axes, "keep_aspect_ratio_policy": keep_aspect_ratio_policy,
    }
    if sizes is not None and np.size(sizes) > 0:
        scales = None
    return _build_resize(X.shape, X.dtype, roi, scales, sizes, attrs)[1](X, out)


def _legacy_attrs(mode):
    mode = {"bilinear": "linear"}.get(mode, mode)
    return _resize_attrs(mode=mode, coordinate_transformation_mode="asymmetric", nearest_mode="legacy")


def _legacy_infer(ins, *, scales=None, height_scale=None, width_scale=None, **_attrs):
    x = ins[0]
    scale_values = _legacy_scales(x, scales, height_scale, width_scale, ins[1] if len(ins) > 1 else None)
    if x.shape is None or scale_values is None:
        return None
    return [(x.dtype, _geometry(x.shape, None, scale_values, None, None, "stretch")[0])]


def _legacy_scales(x, scales, height_scale, width_scale, scales_input):
    if scales_input is not None:
        return _value(scales_input)
    if scales is not None:
        return np.asarray(scales, np.float32)
    if height_scale is not None and x is not None and x.shape is not None:  # Upsample-1: NCHW only
        return np.array([1.0, 1.0, height_scale, width_scale or 1.0], np.float32)
    return None


@register_op("Resize", since=10, infer=_legacy_infer, out=True, shape_inputs=(1,))
@register_op("Upsample", since=9, infer=_legacy_infer, out=True, shape_inputs=(1,))
def resize_legacy(X, scales, *, mode="nearest", out=None):
    """Resize-10 and Upsample-9: asymmetric coordinates; nearest floors when growing an axis and
    ceils when shrinking it."""
    return _build_resize(X.shape, X.dtype, None, scales, None, _legacy_attrs(mode))[1](X, out)


@register_op("Upsample", since=1, infer=_legacy_infer, out=True)
def upsample_attr(X, *, mode="nearest", scales=None, height_scale=None, width_scale=None, out=None):
    """Upsample 1-7: the scales are attributes."""
    s = _legacy_scales(X, scales, height_scale, width_scale, None)
    return _build_resize(X.shape, X.dtype, None, s, None, _legacy_attrs(mode))[1](X, out)


# Submodules of this family, imported so that their kernels register.
from . import resize_grid, signal  # noqa: F401  (GridSample/AffineGrid/RoiAlign; DFT, STFT, windows, mel)

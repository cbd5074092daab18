"""Conv and pooling kernels vs onnxruntime on the layer shapes of MobileNetV2 and ResNet-18 (224x224, batch 1).

For every distinct layer we time our kernel (the callable built by the op's make(), writing into
a preallocated output, workspace from a preallocated scratch buffer, weights constant) against
onnxruntime running a one-node model of the same op, both on ONE thread, with interleaved runs and
medians. Two variants per conv layer:

- conv:  Conv + bias, against ORT's one-node Conv;
- fused: our FusedConv with the layer's activation (and residual where the network has one),
         against ORT running Conv -> Add -> Relu/Clip (which ORT fuses itself).

Totals weight each layer by how often it occurs in the network. With --networks the two whole
networks (FusedConv + MaxPool + GlobalAveragePool, classifier excluded) also run end to end through
sporeling.Model against onnxruntime on the equivalent unfused graph.

    python benchmarks/conv_ops.py [--reps 30] [--networks] [--only mbv2|resnet18]

Writes benchmarks/results/conv_ops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from sporeling.ops import Info, lookup  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "conv_ops.json")


# ---- the networks' layers -----------------------------------------------------------------------
def mobilenet_v2_layers():
    """(kind, C, H, Cout, k, stride, group, act, residual) per conv, in network order."""
    layers = [("stem 3x3 s2", 3, 224, 32, 3, 2, 1, "Clip", False)]
    cin, h = 32, 112
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:
        for i in range(n):
            st = s if i == 0 else 1
            hid = cin * t
            if t != 1:
                layers.append(("pw expand", cin, h, hid, 1, 1, 1, "Clip", False))
            layers.append((f"dw 3x3 s{st}", hid, h, hid, 3, st, hid, "Clip", False))
            h2 = (h + 2 - 3) // st + 1
            layers.append(("pw project", hid, h2, c, 1, 1, 1, "", st == 1 and cin == c))
            cin, h = c, h2
    layers.append(("pw last", 320, 7, 1280, 1, 1, 1, "Clip", False))
    return layers


def resnet18_layers():
    layers = [("stem 7x7 s2", 3, 224, 64, 7, 2, 1, "Relu", False)]
    cin, h = 64, 56
    for c, s in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for b in range(2):
            st = s if b == 0 else 1
            h2 = (h + 2 - 3) // st + 1
            layers.append((f"3x3 s{st}", cin, h, c, 3, st, 1, "Relu", False))
            layers.append(("3x3 s1", c, h2, c, 3, 1, 1, "Relu", True))
            if st != 1 or cin != c:
                layers.append(("1x1 s2 down", cin, h, c, 1, st, 1, "", False))
            cin, h = c, h2
    return layers


def pool_layers(net):
    if net == "resnet18":
        return [("maxpool 3x3 s2", 64, 112, "MaxPool"), ("global avgpool", 512, 7, "GlobalAveragePool")]
    return [("global avgpool", 1280, 7, "GlobalAveragePool")]


# ---- one-node models ----------------------------------------------------------------------------
def _ort_session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, inits, out="y", opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def conv_case(layer, fused: bool, rng):
    kind, c, h, co, k, s, g, act, residual = layer
    pad = k // 2
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4, group=g)
    x = rng.standard_normal((1, c, h, h), dtype=np.float32)
    w = (rng.standard_normal((co, c // g, k, k)) * np.sqrt(2 / (c // g * k * k))).astype(np.float32)
    b = (rng.standard_normal(co) * 0.1).astype(np.float32)
    oh = (h + 2 * pad - k) // s + 1
    out_shape = (1, co, oh, oh)
    feeds, inits = {"x": x}, {"w": w, "b": b}
    inputs = [("x", x.shape)]
    if not fused:
        model = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], inputs, inits)
        op, ins, args, extra = lookup("Conv", 17), [x, w, b], (x, w, b), {}
    else:
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
        last = "c"
        z = None
        if residual:
            z = rng.standard_normal(out_shape, dtype=np.float32)
            feeds["z"] = z
            inputs.append(("z", z.shape))
            nodes.append(helper.make_node("Add", [last, "z"], ["s"]))
            last = "s"
        if act == "Relu":
            nodes.append(helper.make_node("Relu", [last], ["y"]))
        elif act == "Clip":
            inits.update(lo=np.array(0, np.float32), hi=np.array(6, np.float32))
            nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["y"]))
        else:
            nodes.append(helper.make_node("Identity", [last], ["y"]))
        model = _model(nodes, inputs, inits)
        op = lookup("FusedConv", 1, "ai.sporeling")
        ins, args = [x, w, b, z], (x, w, b, z)
        extra = {"activation": act, "activation_params": [0.0, 6.0] if act == "Clip" else []}
    consts = {id(w), id(b)}
    infos = [None if a is None else Info(a.dtype, a.shape, a if id(a) in consts else None) for a in ins]
    fn = op.make(infos, **attrs, **extra)
    nbytes = op.scratch(infos, **attrs, **extra) if op.scratch else 0
    scratch = np.empty(max(nbytes, 1), np.uint8)
    out = np.empty(out_shape, np.float32)
    ours = lambda: fn(*args, out=out, scratch=scratch)  # noqa: E731
    sess = _ort_session(model)
    theirs = lambda: sess.run(None, feeds)  # noqa: E731
    return ours, theirs, out, (lambda: sess.run(None, feeds)[0])


def pool_case(layer, rng):
    kind, c, h, op_type = layer
    x = rng.standard_normal((1, c, h, h), dtype=np.float32)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]) if op_type == "MaxPool" else {}
    model = _model([helper.make_node(op_type, ["x"], ["y"], **attrs)], [("x", x.shape)], {})
    op = lookup(op_type, 17)
    infos = [Info(x.dtype, x.shape, None)]
    shape = op.infer(infos, **attrs)[0][1]
    fn = op.make(infos, **attrs) if op.make else (lambda x, out=None, scratch=None: op.kernel(x, **attrs, out=out))
    nbytes = op.scratch(infos, **attrs) if op.scratch else 0
    scratch = np.empty(max(nbytes, 1), np.uint8)
    out = np.empty(shape, np.float32)
    kw = {"scratch": scratch} if op.scratch else {}
    ours = lambda: fn(x, out=out, **kw)  # noqa: E731
    sess = _ort_session(model)
    feeds = {"x": x}
    return ours, (lambda: sess.run(None, feeds)), out, (lambda: sess.run(None, feeds)[0])


def interleaved(ours, theirs, reps: int) -> tuple[float, float]:
    for _ in range(3):
        ours()
        theirs()
    a, b = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        theirs()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return float(np.median(a)) * 1e3, float(np.median(b)) * 1e3


# ---- whole networks -----------------------------------------------------------------------------
def build_network(net: str, fused: bool, rng):
    """The network as ONNX: FusedConv nodes (ours) or Conv/Add/Relu/Clip (for onnxruntime)."""
    nodes, inits = [], {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    counter = [0]

    def name(p):
        counter[0] += 1
        return f"{p}{counter[0]}"

    def conv(x, c, co, k, s, g, act, z=None):
        wn, bn = name("w"), name("b")
        inits[wn] = (rng.standard_normal((co, c // g, k, k)) * np.sqrt(2 / (c // g * k * k))).astype(np.float32)
        inits[bn] = (rng.standard_normal(co) * 0.1).astype(np.float32)
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, group=g)
        y = name("y")
        if fused:
            ins = [x, wn, bn] + ([z] if z else [])
            extra = {"activation_params": [0.0, 6.0]} if act == "Clip" else {}
            nodes.append(helper.make_node("FusedConv", ins, [y], domain="ai.sporeling", activation=act, **attrs,
                                          **extra))
            return y
        nodes.append(helper.make_node("Conv", [x, wn, bn], [y], **attrs))
        if z:
            y2 = name("a")
            nodes.append(helper.make_node("Add", [y, z], [y2]))
            y = y2
        if act:
            y2 = name("r")
            nodes.append(helper.make_node(act, [y] + (["lo", "hi"] if act == "Clip" else []), [y2]))
            y = y2
        return y

    if net == "mbv2":
        y, cin = conv("x", 3, 32, 3, 2, 1, "Clip"), 32
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                           (6, 160, 3, 2), (6, 320, 1, 1)]:
            for i in range(n):
                st, hid, h = (s if i == 0 else 1), cin * t, y
                if t != 1:
                    h = conv(h, cin, hid, 1, 1, 1, "Clip")
                h = conv(h, hid, hid, 3, st, hid, "Clip")
                y = conv(h, hid, c, 1, 1, 1, "", z=y if (st == 1 and cin == c) else None)
                cin = c
        y = conv(y, 320, 1280, 1, 1, 1, "Clip")
    else:
        y = conv("x", 3, 64, 7, 2, 1, "Relu")
        p = name("p")
        nodes.append(helper.make_node("MaxPool", [y], [p], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
        y, cin = p, 64
        for c, s in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            for i in range(2):
                st = s if i == 0 else 1
                sc = conv(y, cin, c, 1, st, 1, "") if (st != 1 or cin != c) else y
                h = conv(y, cin, c, 3, st, 1, "Relu")
                y = conv(h, c, c, 3, 1, 1, "Relu", z=sc)
                cin = c
    nodes.append(helper.make_node("GlobalAveragePool", [y], ["out"]))
    g = helper.make_graph(nodes, net, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.sporeling", 1)] if fused else [])
    return helper.make_model(g, opset_imports=opsets, ir_version=10)


def network_case(net: str, rng):
    import sporeling
    from sporeling.frontends.onnx import from_model_proto

    seed = int(rng.integers(1 << 30))
    ours_model = sporeling.Model(from_model_proto(build_network(net, True, np.random.default_rng(seed))), net,
                                 threads=1)
    sess = _ort_session(build_network(net, False, np.random.default_rng(seed)))
    x = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
    feeds = {"x": x}
    return (lambda: ours_model.run(feeds)), (lambda: sess.run(None, feeds)), \
        (lambda: ours_model.run(feeds)["out"]), (lambda: sess.run(None, feeds)[0])


# ---- main ---------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--networks", action="store_true", help="also time the whole networks end to end")
    ap.add_argument("--only", choices=["mbv2", "resnet18"])
    args = ap.parse_args()
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    nets = {"mbv2": mobilenet_v2_layers(), "resnet18": resnet18_layers()}
    report = {"machine": platform.processor() or platform.machine(), "threads": 1, "reps": args.reps,
              "onnxruntime": ort.__version__, "numpy": np.__version__, "networks": {}}
    for net, layers in nets.items():
        if args.only and net != args.only:
            continue
        distinct: OrderedDict = OrderedDict()
        for layer in layers:
            distinct.setdefault(layer[1:], [layer, 0])[1] += 1
        rows = []
        print(f"\n{net}: {len(layers)} conv layers, {len(distinct)} distinct")
        print(f"{'layer':14s} {'C':>5s} {'H':>4s} {'Cout':>5s} {'k':>2s} {'s':>2s} {'g':>4s} {'n':>2s} "
              f"{'conv ours':>9s} {'ort':>7s} {'ratio':>5s}  {'fused ours':>10s} {'ort':>7s} {'ratio':>5s}")
        for key, (layer, count) in distinct.items():
            kind, c, h, co, k, s, g, act, res = layer
            row = {"layer": kind, "C": c, "H": h, "Cout": co, "k": k, "stride": s, "group": g, "count": count,
                   "act": act, "residual": res}
            for variant in ("conv", "fused"):
                ours, theirs, out, ref = conv_case(layer, variant == "fused", rng)
                ours()
                err = float(np.max(np.abs(out - ref())) / (np.max(np.abs(ref())) + 1e-12))
                t_ours, t_ort = interleaved(ours, theirs, args.reps)
                row[variant] = {"ours_ms": t_ours, "ort_ms": t_ort, "ratio": t_ours / t_ort, "rel_err": err}
            rows.append(row)
            print(f"{kind:14s} {c:5d} {h:4d} {co:5d} {k:2d} {s:2d} {g:4d} {count:2d} "
                  f"{row['conv']['ours_ms']:9.3f} {row['conv']['ort_ms']:7.3f} {row['conv']['ratio']:5.2f}  "
                  f"{row['fused']['ours_ms']:10.3f} {row['fused']['ort_ms']:7.3f} {row['fused']['ratio']:5.2f}")
        for layer in pool_layers(net):
            ours, theirs, out, ref = pool_case(layer, rng)
            ours()
            err = float(np.max(np.abs(out - ref())))
            t_ours, t_ort = interleaved(ours, theirs, args.reps)
            r = {"ours_ms": t_ours, "ort_ms": t_ort, "ratio": t_ours / t_ort, "abs_err": err}
            rows.append({"layer": layer[0], "C": layer[1], "H": layer[2], "count": 1, "conv": r, "fused": r})
            print(f"{layer[0]:14s} {layer[1]:5d} {layer[2]:4d} {'':5s} {'':2s} {'':2s} {'':4s} {1:2d} "
                  f"{t_ours:9.3f} {t_ort:7.3f} {t_ours / t_ort:5.2f}")
        totals = {}
        for variant in ("conv", "fused"):
            o = sum(r[variant]["ours_ms"] * r["count"] for r in rows)
            t = sum(r[variant]["ort_ms"] * r["count"] for r in rows)
            totals[variant] = {"ours_ms": o, "ort_ms": t, "ratio": o / t}
        print(f"{'TOTAL (weighted)':44s} {totals['conv']['ours_ms']:9.3f} {totals['conv']['ort_ms']:7.3f} "
              f"{totals['conv']['ratio']:5.2f}  {totals['fused']['ours_ms']:10.3f} {totals['fused']['ort_ms']:7.3f} "
              f"{totals['fused']['ratio']:5.2f}")
        entry = {"layers": rows, "totals": totals}
        if args.networks:
            ours, theirs, got, want = network_case(net, rng)
            err = float(np.max(np.abs(got() - want())) / (np.max(np.abs(want())) + 1e-12))
            t_ours, t_ort = interleaved(ours, theirs, max(10, args.reps // 2))
            entry["network"] = {"ours_ms": t_ours, "ort_ms": t_ort, "ratio": t_ours / t_ort, "rel_err": err}
            print(f"{'whole network (Model.run)':44s} {t_ours:9.3f} {t_ort:7.3f} {t_ours / t_ort:5.2f}"
                  f"   rel err {err:.1e}")
        report["networks"][net] = entry
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, RESULTS)
    print(f"\nwrote {os.path.relpath(RESULTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Debugging aid: runs a model in sporeling and onnxruntime with every intermediate value exposed as
an output, and prints the first node whose output differs.

    python scripts/bisect_model.py MODEL.onnx [--data DIR_WITH_input_N.pb] [--no-optimize]
"""

import argparse
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sporeling  # noqa: E402
from sporeling.frontends.onnx import from_model_proto  # noqa: E402
from sporeling.tools import random_feeds  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--data", help="folder with input_N.pb files (as in the ONNX node suite)")
    args = ap.parse_args()
    proto = onnx.load(args.model)
    proto = onnx.shape_inference.infer_shapes(proto)
    existing = {o.name for o in proto.graph.output}
    for n in proto.graph.node:
        for o in n.output:
            if o and o not in existing:
                proto.graph.output.append(onnx.ValueInfoProto(name=o))
                existing.add(o)
    model = sporeling.Model(from_model_proto(proto), args.model)
    if args.data:
        feeds = {}
        for k, v in enumerate(proto.graph.input):
            p = os.path.join(args.data, f"input_{k}.pb")
            if os.path.exists(p):
                t = onnx.TensorProto()
                t.ParseFromString(open(p, "rb").read())
                feeds[v.name] = onnx.numpy_helper.to_array(t)
    else:
        feeds = random_feeds(model)
    ours = model.run(feeds)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    theirs = dict(zip(names, sess.run(None, feeds)))
    for n in proto.graph.node:
        for o in n.output:
            if not o or o not in theirs:
                continue
            a, b = np.asarray(ours[o]), np.asarray(theirs[o])
            if a.shape != b.shape or a.dtype != b.dtype or not np.allclose(a, b, rtol=1e-3, atol=1e-5, equal_nan=True):
                print(f"first difference at {n.op_type} '{n.name}' output '{o}': ours {a.dtype}{a.shape} "
                      f"vs ort {b.dtype}{b.shape}")
                print("inputs:", [(i, np.asarray(ours.get(i, feeds.get(i))).shape) for i in n.input if i])
                return 1
    print("all intermediate values match")
    return 0


if __name__ == "__main__":
    sys.exit(main())

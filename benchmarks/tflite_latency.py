"""Latency and agreement of sporeling against LiteRT (ai-edge-litert) on the mediapipe TFLite models.

Each model is converted to .spore (all passes) and fed the same real photo (skimage's astronaut,
resized to the model's input, in the range the model expects). We report the largest difference of
sporeling's outputs from LiteRT's relative to the output's scale, then time both engines interleaved
(order alternating each round) at one thread: LiteRT with num_threads=1 and its default XNNPACK
delegate (which also runs mediapipe's Convolution2DTransposeBias), sporeling with threads=1 and
OpenBLAS pinned to 1. Medians in ms after warm-up.

    python benchmarks/tflite_latency.py --rounds 50

Writes benchmarks/results/tflite_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402

MODELS = {"mp_face_detection": -1.0, "mp_face_landmark": 0.0, "mp_selfie_segmentation": 0.0}  # input range low end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    import sporeling
    from sporeling.assets import asset_path

    photo = Image.open(asset_path("img_astronaut")).convert("RGB")
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, low in MODELS.items():
            path = asset_path(name)
            lite = Interpreter(model_path=path, num_threads=1)
            lite.allocate_tensors()
            spec = lite.get_input_details()[0]
            height, width = (int(d) for d in spec["shape"][1:3])
            x = np.asarray(photo.resize((width, height), Image.BILINEAR), np.float32)[None] / 255.0
            x = x * 2 - 1 if low == -1.0 else x
            spore = os.path.join(tmp, name + ".spore")
            sporeling.convert(path, spore, verbose=False)
            model = sporeling.load(spore, threads=1)

            def run_lite():
                lite.set_tensor(spec["index"], x)
                lite.invoke()
                return {o["name"]: lite.get_tensor(o["index"]).copy() for o in lite.get_output_details()}

            def run_ours():
                return model.run({model.inputs[0].name: x})

            ref, got = run_lite(), run_ours()
            rel = max(float(np.abs(got[k] - v).max() / max(float(np.abs(v).max()), 1e-12)) for k, v in ref.items())
            times = {"litert": [], "sporeling": []}
            for r in range(args.warmup + args.rounds):
                order = [("litert", run_lite), ("sporeling", run_ours)]
                for engine, fn in order if r % 2 else order[::-1]:
                    t0 = time.perf_counter()
                    fn()
                    if r >= args.warmup:
                        times[engine].append((time.perf_counter() - t0) * 1000)
            row = {"max_rel_diff": rel, **{f"{k}_ms": statistics.median(v) for k, v in times.items()}}
            row["ratio"] = row["sporeling_ms"] / row["litert_ms"]
            table[name] = row
            print(f"{name:24s} rel diff {rel:.1e}  LiteRT {row['litert_ms']:6.2f} ms  sporeling "
                  f"{row['sporeling_ms']:6.2f} ms  ({row['ratio']:.1f}x)", flush=True)
    out = os.path.join(_ROOT, "benchmarks", "results", "tflite_latency.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"threads": 1, "rounds": args.rounds, "models": table}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

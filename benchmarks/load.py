"""Load time and memory of a .spore file against onnxruntime (same model as ONNX) and LiteRT (TFLite).

Each measurement runs in a fresh Python process, so that nothing is cached in the interpreter; the
file itself is in the OS page cache for every engine alike (each file is read once before timing).
Rounds interleave the engines, the order rotating, and we report medians over rounds of:

- load: from the path to a model object ready to take inputs (sporeling.load, ort.InferenceSession,
  Interpreter + allocate_tensors);
- first run: the first inference on random inputs (sporeling prepares its plan there);
- RSS: resident memory after imports, and the growth over it after load and after the first run,
  beside the size of the model's weights.

sporeling loads .spore files with the data checksums verified (the default) unless --no-verify.
BLAS and engine threads are pinned to 1 (OPENBLAS/OMP/MKL_NUM_THREADS=1, ort intra-op 1, LiteRT
num_threads=1).

    python benchmarks/load.py --rounds 7
    python benchmarks/load.py --models mobilenetv2,mp_face_landmark

Writes benchmarks/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

THREAD_ENV = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---- child: one engine, one model, one fresh process -----------------------------------------------
def child(engine: str, path: str, verify: bool, shapes: dict) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    if engine == "sporeling":
        import sporeling
        from sporeling.format import load_spore  # noqa: F401  (import cost counted before the load)
        from sporeling.tools import random_feeds

        base = rss_bytes()
        t0 = time.perf_counter()
        if verify:
            model = sporeling.load(path)
        else:
            from sporeling.format import load_spore
            from sporeling.model import Model

            model = Model(load_spore(path, verify=False), path)
        t1 = time.perf_counter()
        loaded = rss_bytes()
        feeds = random_feeds(model, 0, {k: tuple(v) for k, v in shapes.items()})
        model.run(feeds)
        t2 = time.perf_counter()
        weights = sum(a.nbytes for a in model.graph.all_initializers())
    elif engine == "onnxruntime":
        import onnxruntime as ort

        base = rss_bytes()
        t0 = time.perf_counter()
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        t1 = time.perf_counter()
        loaded = rss_bytes()
        feeds = {}
        for i in sess.get_inputs():
            shape = shapes.get(i.name) or [d if isinstance(d, int) else 1 for d in i.shape]
            dt = {"tensor(float)": np.float32, "tensor(int64)": np.int64}.get(i.type, np.float32)
            feeds[i.name] = rng.standard_normal(shape).astype(dt) if dt == np.float32 else np.ones(shape, dt)
        sess.run(None, feeds)
        t2 = time.perf_counter()
        weights = None
    elif engine == "litert":
        from ai_edge_litert.interpreter import Interpreter

        base = rss_bytes()
        t0 = time.perf_counter()
        interp = Interpreter(model_path=path, num_threads=1)
        interp.allocate_tensors()
        t1 = time.perf_counter()
        loaded = rss_bytes()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        interp.invoke()
        t2 = time.perf_counter()
        weights = None
    else:
        raise SystemExit(f"unknown engine {engine}")
    return {"load_ms": (t1 - t0) * 1000, "first_run_ms": (t2 - t1) * 1000, "rss_import": base,
            "rss_load": loaded - base, "rss_run": rss_bytes() - base, "weights": weights}


# ---- parent ------------------------------------------------------------------------------------
def models() -> dict[str, dict]:
    """name -> {onnx|tflite: path}; only those whose files are here."""
    from sporeling.assets import asset_path

    found = {}
    bench = os.path.join(os.path.dirname(asset_path("ppocr_det")), os.pardir, "bench")
    for name in ("mobilenetv2", "resnet18", "tinybert"):
        files = [f for f in os.listdir(bench) if f.startswith(name)] if os.path.isdir(bench) else []
        if files:
            found[name] = {"onnx": os.path.join(bench, sorted(files)[-1])}
    found["ppocr_det"] = {"onnx": asset_path("ppocr_det"), "shapes": {"x": [1, 3, 640, 640]}}
    found["ppocr_rec"] = {"onnx": asset_path("ppocr_rec"), "shapes": {"x": [1, 3, 48, 320]}}
    for name in ("mp_face_detection", "mp_face_landmark", "mp_selfie_segmentation"):
        found[name] = {"tflite": asset_path(name)}
    return {k: v for k, v in found.items() if os.path.exists(v.get("onnx") or v["tflite"])}


def measure(engine: str, path: str, verify: bool = True, shapes: dict | None = None) -> dict:
    env = dict(os.environ, **THREAD_ENV)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, path, "--shapes", json.dumps(shapes or {})]
    cmd += [] if verify else ["--no-verify"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} on {path}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="", help="comma-separated subset")
    ap.add_argument("--no-verify", action="store_true", help="load .spore without checking data checksums")
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--shapes", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], not args.no_verify, json.loads(args.shapes))))
        return
    import sporeling

    wanted = set(filter(None, args.models.split(",")))
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, files in models().items():
            if wanted and name not in wanted:
                continue
            src = files.get("onnx") or files["tflite"]
            spore = os.path.join(tmp, name + ".spore")
            sporeling.convert(src, spore, verbose=False)
            peer = ("onnxruntime", src) if "onnx" in files else ("litert", src)
            runs = {"sporeling": [], peer[0]: []}
            for path in (spore, src):  # into the page cache before any timing
                with open(path, "rb") as f:
                    while f.read(1 << 24):
                        pass
            for r in range(args.rounds):
                order = [("sporeling", spore), peer] if r % 2 == 0 else [peer, ("sporeling", spore)]
                for engine, path in order:
                    runs[engine].append(measure(engine, path, not args.no_verify, files.get("shapes")))
            row = {"spore_bytes": os.path.getsize(spore), "source_bytes": os.path.getsize(src), "peer": peer[0]}
            for engine, samples in runs.items():
                for key in ("load_ms", "first_run_ms", "rss_load", "rss_run"):
                    row[f"{engine}.{key}"] = statistics.median(s[key] for s in samples)
            row["weights"] = runs["sporeling"][0]["weights"]
            table[name] = row
            _print_row(name, row)
    out = os.path.join(_ROOT, "benchmarks", "results", "load.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"rounds": args.rounds, "threads": 1, "verify": not args.no_verify, "models": table}, f, indent=1)
    print(f"wrote {out}")


def _print_row(name: str, row: dict) -> None:
    mib = 1 / (1 << 20)
    peer = row["peer"]
    print(f"{name:24s} load {row['sporeling.load_ms']:7.1f} ms vs {peer} {row[peer + '.load_ms']:7.1f} ms "
          f"({row['sporeling.load_ms'] / row[peer + '.load_ms']:.2f}x) | first run {row['sporeling.first_run_ms']:7.1f}"
          f" vs {row[peer + '.first_run_ms']:7.1f} ms | RSS after load {row['sporeling.rss_load'] * mib:6.1f} vs "
          f"{row[peer + '.rss_load'] * mib:6.1f} MiB, after run {row['sporeling.rss_run'] * mib:6.1f} vs "
          f"{row[peer + '.rss_run'] * mib:6.1f} MiB | weights {row['weights'] * mib:6.1f} MiB", flush=True)


if __name__ == "__main__":
    main()

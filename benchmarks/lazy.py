"""Lazy mode against eager loading of the same compressed .spore: resident memory and latency.

Each model is compressed with `sporeling.compress(src, dst, method="fixed", bits=8)` (8-bit codes, each
weight stored bit-packed or FSE-coded, whichever is smaller) and then loaded two ways: eager
(`sporeling.load(dst)`: every weight decoded to float at load) and lazy (`sporeling.load(dst, lazy=True)`:
weights stay encoded, each decoded just before its node runs and dropped after).

- Memory: every measurement runs in a fresh Python process (the file already in the OS page cache), the
  two modes interleaved round by round, order alternating; medians over rounds of the RSS growth over the
  process's RSS after imports, after load and after the first run, and of the peak RSS (VmHWM, reset
  through /proc/self/clear_refs after imports, so Linux only) over the same base.
- Latency: one fresh process loads both, checks their outputs are bit-identical, and times them
  interleaved (one run of each per round, order alternating) after warm-up runs; medians. It also times
  decoding every lazy weight once (the part of the lazy cost that is the codecs' decode).

BLAS runs on one thread: OPENBLAS/OMP/MKL_NUM_THREADS=1 in the children's environment, and sporeling's own
threadpoolctl limit of 1 (its default) when a model runs.

    python benchmarks/lazy.py --rounds 5 --runs 20
    python benchmarks/lazy.py --models mp_face_landmark

Writes benchmarks/results/lazy.json.
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

from benchmarks.load import THREAD_ENV, rss_bytes  # noqa: E402

MIB = 1 / (1 << 20)


# ---- children: one fresh process each -----------------------------------------------------------------
def child_memory(path: str, lazy: bool, shapes: dict) -> dict:
    import sporeling
    from sporeling.tools import random_feeds

    feeds = random_feeds(sporeling.load(path, lazy=True), 0, {k: tuple(v) for k, v in shapes.items()})
    _reset_peak()  # imports and the feeds above peaked higher than what follows may; start the mark here
    base = rss_bytes()
    model = sporeling.load(path, lazy=lazy)
    loaded = rss_bytes()
    model.run(feeds)
    ran = rss_bytes()
    return {"rss_load": loaded - base, "rss_run": ran - base, "rss_peak": _peak_bytes() - base}


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak RSS (VmHWM) to the current RSS
        f.write("5")


def _peak_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def child_latency(path: str, shapes: dict, runs: int, warmup: int) -> dict:
    import numpy as np

    import sporeling
    from sporeling.runtime.lazy import LazyTensor
    from sporeling.runtime.threads import blas_info
    from sporeling.tools import plan_stats, random_feeds

    models = {"eager": sporeling.load(path), "lazy": sporeling.load(path, lazy=True)}
    feeds = random_feeds(models["eager"], 0, {k: tuple(v) for k, v in shapes.items()})
    outs = {mode: m.run(feeds) for mode, m in models.items()}
    identical = all(np.array_equal(outs["eager"][k], outs["lazy"][k]) for k in outs["eager"])
    for _ in range(warmup):
        for m in models.values():
            m.run(feeds)
    times: dict[str, list[float]] = {"eager": [], "lazy": []}
    for r in range(runs):
        for mode in ("eager", "lazy") if r % 2 == 0 else ("lazy", "eager"):
            t0 = time.perf_counter()
            models[mode].run(feeds)
            times[mode].append(time.perf_counter() - t0)
    graph = models["lazy"].graph
    stored = [a for a in graph.initializers.values() if isinstance(a, LazyTensor)]
    decode = []
    for _ in range(max(3, runs // 4)):
        t0 = time.perf_counter()
        for a in stored:
            a.materialize()
        decode.append(time.perf_counter() - t0)
    return {"eager_ms": statistics.median(times["eager"]) * 1e3, "lazy_ms": statistics.median(times["lazy"]) * 1e3,
            "decode_ms": statistics.median(decode) * 1e3, "identical": identical,
            "weights_bytes": sum(int(a.nbytes) for a in graph.all_initializers()),
            "lazy_weights": len(stored), "lazy_decoded_bytes": sum(a.nbytes for a in stored),
            "lazy_stored_bytes": sum(a.stored_bytes for a in stored),
            "arena_bytes": plan_stats(models["lazy"], feeds)["arena_bytes"], "blas": blas_info()}


def run_child(*args: str) -> dict:
    env = dict(os.environ, **THREAD_ENV)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- parent ----------------------------------------------------------------------------------------------
def models() -> dict[str, dict]:
    """name -> {src, shapes}, for the models whose files are here."""
    from sporeling.assets import asset_path

    found = {"ppocr_det": {"src": asset_path("ppocr_det"), "shapes": {"x": [1, 3, 640, 640]}},
             "ppocr_rec": {"src": asset_path("ppocr_rec"), "shapes": {"x": [1, 3, 48, 320]}}}
    bench = os.path.join(os.path.dirname(asset_path("ppocr_det") or "."), os.pardir, "bench")
    nets = sorted(f for f in os.listdir(bench) if f.startswith("mobilenetv2")) if os.path.isdir(bench) else []
    if nets:
        found["mobilenetv2"] = {"src": os.path.join(bench, nets[-1]), "shapes": {}}
    found["mp_face_landmark"] = {"src": asset_path("mp_face_landmark"), "shapes": {}}
    return {k: v for k, v in found.items() if v["src"] and os.path.exists(v["src"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="fresh-process memory rounds per mode")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per mode")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--models", default="", help="comma-separated subset")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, path, shapes, *rest = args.child
        result = child_memory(path, rest[0] == "lazy", json.loads(shapes)) if kind == "memory" else \
            child_latency(path, json.loads(shapes), int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return
    import sporeling
    from benchmarks.common import versions

    wanted = set(filter(None, args.models.split(",")))
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in models().items():
            if wanted and name not in wanted:
                continue
            dst = os.path.join(tmp, name + ".spore")
            sporeling.compress(m["src"], dst, method="fixed", bits=8, check=False, verbose=False)
            with open(dst, "rb") as f:  # into the page cache before any measurement
                f.read()
            shapes = json.dumps(m["shapes"])
            mem: dict[str, list[dict]] = {"eager": [], "lazy": []}
            for r in range(args.rounds):
                for mode in ("eager", "lazy") if r % 2 == 0 else ("lazy", "eager"):
                    mem[mode].append(run_child("memory", dst, shapes, mode))
            row = {"spore_bytes": os.path.getsize(dst), "shapes": m["shapes"],
                   **run_child("latency", dst, shapes, str(args.runs), str(args.warmup))}
            for mode, samples in mem.items():
                for key in ("rss_load", "rss_run", "rss_peak"):
                    row[f"{mode}.{key}"] = statistics.median(s[key] for s in samples)
            table[name] = row
            _print_row(name, row)
    out = os.path.join(_ROOT, "benchmarks", "results", "lazy.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"rounds": args.rounds, "runs": args.runs, "threads": 1, "compress": "fixed, 8 bits",
                   "versions": versions(), "models": table}, f, indent=1)
    print(f"wrote {out}")


def _print_row(name: str, r: dict) -> None:
    print(f"{name:18s} file {r['spore_bytes'] * MIB:5.1f} MiB, weights {r['weights_bytes'] * MIB:5.1f} MiB | "
          f"RSS after load eager {r['eager.rss_load'] * MIB:5.1f} / lazy {r['lazy.rss_load'] * MIB:5.1f} MiB, "
          f"after run {r['eager.rss_run'] * MIB:5.1f} / {r['lazy.rss_run'] * MIB:5.1f} MiB, "
          f"peak {r['eager.rss_peak'] * MIB:5.1f} / {r['lazy.rss_peak'] * MIB:5.1f} MiB, "
          f"arena {r['arena_bytes'] * MIB:5.1f} MiB | "
          f"latency {r['eager_ms']:6.1f} / {r['lazy_ms']:6.1f} ms ({r['lazy_ms'] / r['eager_ms']:.2f}x; "
          f"decoding {r['decode_ms']:.1f} ms) | identical {r['identical']}", flush=True)


if __name__ == "__main__":
    main()

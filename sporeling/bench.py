"""`sporeling bench`: latency and memory of one model, optionally beside onnxruntime.

Runs are interleaved when comparing (one run of each engine per round), so both see the same
machine state; the report gives medians. Memory: the process's peak resident set, the largest
amount NumPy allocated during one run (tracemalloc sees NumPy's allocations), and the plan's arena
against the sum of all planned tensors and the lower bound of live bytes.
"""

from __future__ import annotations

import os
import resource
import time
import tracemalloc

import numpy as np

from .errors import SporelingError
from .tools import human_bytes, median_ms, plan_stats


def ort_session(path: str, threads: int):
    """An onnxruntime CPU session with the same intra-op thread count, one inter-op thread."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SporelingError("--compare onnxruntime needs the onnxruntime package (pip install onnxruntime)") from None

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def bench_model(path: str, feeds_spec=(), runs: int = 20, warmup: int = 3, threads: int | None = None,
                compare: str | None = None, quiet: bool = False, shapes=(), lazy: bool = False) -> dict:
    from . import load
    from .cli import _feeds

    t0 = time.perf_counter()
    model = load(path, threads=threads, lazy=lazy)
    load_ms = (time.perf_counter() - t0) * 1e3
    feeds = _feeds(model, list(feeds_spec), shapes=list(shapes))
    t0 = time.perf_counter()
    ours = model.run(feeds)
    first_ms = (time.perf_counter() - t0) * 1e3
    engines = {"sporeling": lambda: model.run(feeds)}
    if compare == "onnxruntime":
        sess = ort_session(path, model.threads)
        engines["onnxruntime"] = lambda: sess.run(None, feeds)
        theirs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        diff = max(float(np.max(np.abs(ours[k].astype(np.float64) - theirs[k]))) if ours[k].size else 0.0
                   for k in ours)
    for _ in range(warmup):
        for fn in engines.values():
            fn()
    samples = {k: [] for k in engines}
    for _ in range(runs):
        for name, fn in engines.items():
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    profile: dict[str, float] = {}
    for _ in range(max(1, runs // 4)):
        model.session.run(feeds, times=profile)
    total = sum(profile.values()) or 1.0
    tracemalloc.start()
    model.run(feeds)
    _, run_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stats = plan_stats(model, feeds)
    report = {
        "model": os.path.basename(path),
        "threads": model.threads,
        "lazy": lazy,
        "runs": runs,
        "load_ms": load_ms,
        "first_run_ms": first_ms,
        "median_ms": {k: median_ms(v) for k, v in samples.items()},
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "run_allocation_peak_bytes": run_peak,
        "plan": stats,
        "op_time_share": {k: v / total for k, v in sorted(profile.items(), key=lambda kv: -kv[1])},
    }
    if compare:
        report["ratio_vs_" + compare] = report["median_ms"]["sporeling"] / report["median_ms"][compare]
        report["max_abs_diff_vs_" + compare] = diff
    if not quiet:
        _print(report, compare)
    return report


def _print(r: dict, compare: str | None) -> None:
    print(f"{r['model']}  threads={r['threads']}  runs={r['runs']}  load {r['load_ms']:.1f} ms  "
          f"first run {r['first_run_ms']:.1f} ms (includes prepare)")
    line = f"  median latency: sporeling {r['median_ms']['sporeling']:.2f} ms"
    if compare:
        line += f", {compare} {r['median_ms'][compare]:.2f} ms, ratio {r['ratio_vs_' + compare]:.2f}x"
        line += f" (max abs diff {r['max_abs_diff_vs_' + compare]:.2g})"
    print(line)
    p = r["plan"]
    print(f"  memory: peak RSS {human_bytes(r['peak_rss_bytes'])}, allocated during one run "
          f"{human_bytes(r['run_allocation_peak_bytes'])}")
    print(f"  plan: arena {human_bytes(p['arena_bytes'])} vs sum of tensors {human_bytes(p['sum_of_tensors_bytes'])}"
          f" vs lower bound {human_bytes(p['live_lower_bound_bytes'])} ({p['planned_tensors']} planned tensors, "
          f"{p['steps_with_runtime_allocation']} of {p['steps']} steps allocate)")
    top = list(r["op_time_share"].items())[:8]
    print("  time by op: " + ", ".join(f"{k} {v:.0%}" for k, v in top))

"""Latency of sporeling against onnxruntime and PyTorch eager, on the same machine and thread count.

For each benchmark model (benchmarks/models.py) every engine is loaded, checked against onnxruntime
on the same feeds (max abs difference), warmed up, and then timed in rounds: one run of each engine
per round, the order rotating from round to round, so that a slow spell of the machine (another
process, thermal or frequency changes) lands on all engines alike instead of on whichever ran in
that stretch. We report the median over rounds, and the ratios sporeling/onnxruntime and
sporeling/torch (below 1: sporeling is faster).

Thread counts are pinned for all three: sporeling through load(threads=N) (its BLAS pool via
threadpoolctl), torch.set_num_threads(N), and onnxruntime's intra-op pool at N with one inter-op
thread. A model sporeling cannot run yet gets its one-line error in the table; the others go on.

    python benchmarks/latency.py --threads 1 --runs 20
    python benchmarks/latency.py --models resnet18,tinybert

The table is printed and written, with the machine's CPU model and the BLAS pools threadpoolctl sees,
to benchmarks/results/latency.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import models as bench_models  # noqa: E402
from benchmarks.common import one_line  # noqa: E402
from benchmarks.common import versions as library_versions  # noqa: E402

ENGINES = ("sporeling", "onnxruntime", "torch")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_pools() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed"}]
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer", "architecture")
    return [{k: d[k] for k in keys if k in d} for d in threadpool_info()]


def _as_list(outputs) -> list[np.ndarray]:
    return [np.asarray(o) for o in outputs]


def max_abs_diff(ours: list[np.ndarray], ref: list[np.ndarray]) -> float | str:
    if len(ours) != len(ref):
        return f"{len(ours)} outputs vs {len(ref)}"
    worst = 0.0
    for a, b in zip(ours, ref):
        if a.shape != b.shape:
            return f"shape {a.shape} vs {b.shape}"
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


class Engines:
    """Loads each engine for one model; `runners` maps engine name -> zero-argument callable that runs
    the model once on the fixed feeds and returns its outputs as a list; `errors` holds the engines
    that could not load or run."""

    def __init__(self, model: bench_models.BenchModel, feeds: dict[str, np.ndarray], threads: int, sporeling):
        self.runners, self.errors = {}, {}
        self._load_ort(model, feeds, threads)
        if isinstance(sporeling, str):  # the import failed; this is its error
            self.errors["sporeling"] = sporeling
        else:
            self._load_sporeling(sporeling, model, feeds, threads)
        if model.torch_module is not None and bench_models.torch is not None:
            self._load_torch(model, feeds, threads)

    def _load_ort(self, model, feeds, threads):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.path, so, providers=["CPUExecutionProvider"])
        self.runners["onnxruntime"] = lambda: sess.run(None, feeds)

    def _load_sporeling(self, sporeling, model, feeds, threads):
        try:
            spm = sporeling.load(model.path, threads=threads)
            names = [o.name for o in spm.outputs]
        except Exception as e:  # noqa: BLE001  (any failure is reported in the row, and the run goes on)
            self.errors["sporeling"] = one_line(e)
            return
        self.runners["sporeling"] = lambda: (lambda res: [res[n] for n in names])(spm.run(feeds))

    def _load_torch(self, model, feeds, threads):
        torch = bench_models.torch
        torch.set_num_threads(threads)
        module = model.torch_module.eval()
        args = model.torch_inputs(feeds)

        def run():
            with torch.inference_mode():
                out = module(*args)
            return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]

        self.runners["torch"] = run

    def call(self, engine: str):
        """Runs once; on failure the engine is dropped for this model with its error kept."""
        try:
            return self.runners[engine]()
        except Exception as e:  # noqa: BLE001
            self.errors[engine] = one_line(e)
            del self.runners[engine]
            return None


def bench_model(name: str, threads: int, runs: int, warmup: int, sporeling) -> dict:
    row: dict = {"model": name}
    try:
        model = bench_models.get(name)
    except Exception as e:  # noqa: BLE001
        row["error"] = one_line(e)
        return row
    feeds = model.make_feeds()
    row.update(note=model.note, file=os.path.basename(model.path),
               inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()})
    engines = Engines(model, feeds, threads, sporeling)

    # First runs: the outputs to compare, and part of the warm-up.
    first = {e: engines.call(e) for e in list(engines.runners)}
    ref = _as_list(first["onnxruntime"]) if first.get("onnxruntime") is not None else None
    row["max_abs_diff_vs_onnxruntime"] = {
        e: max_abs_diff(_as_list(out), ref) for e, out in first.items()
        if out is not None and e != "onnxruntime" and ref is not None
    }
    for _ in range(max(0, warmup - 1)):
        for e in list(engines.runners):
            engines.call(e)

    times: dict[str, list[float]] = {e: [] for e in engines.runners}
    gc.collect()
    gc.disable()  # a collection inside one engine's run would be charged to it alone
    try:
        for r in range(runs):
            order = list(engines.runners)
            order = order[r % len(order):] + order[:r % len(order)] if order else order
            for e in order:
                t0 = time.perf_counter()
                if engines.call(e) is None:
                    times.pop(e, None)
                    continue
                times[e].append(time.perf_counter() - t0)
    finally:
        gc.enable()

    row["engines"] = {}
    for e in ENGINES:
        if e in engines.errors:
            row["engines"][e] = {"error": engines.errors[e]}
        elif times.get(e):
            t = times[e]
            row["engines"][e] = {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t), "runs": len(t)}
    med = {e: v["median_ms"] for e, v in row["engines"].items() if "median_ms" in v}
    if "sporeling" in med:
        for other in ("onnxruntime", "torch"):
            if other in med:
                row[f"sporeling/{other}"] = med["sporeling"] / med[other]
    return row


def _fmt_ms(row: dict, engine: str) -> str:
    v = row.get("engines", {}).get(engine)
    if v is None:
        return "-"
    return f"{v['median_ms']:.2f}" if "median_ms" in v else "error"


def _fmt_diff(row: dict, engine: str) -> str:
    d = row.get("max_abs_diff_vs_onnxruntime", {}).get(engine)
    return "-" if d is None else (f"{d:.1e}" if isinstance(d, float) else d)


def print_table(rows: list[dict], threads: int, runs: int) -> None:
    head = ["model", "onnxruntime ms", "torch ms", "sporeling ms", "spor/ort", "spor/torch", "|d| spor", "|d| torch"]
    lines = []
    for row in rows:
        ratio = {k: f"{row[k]:.2f}x" if k in row else "-" for k in ("sporeling/onnxruntime", "sporeling/torch")}
        lines.append([row["model"], _fmt_ms(row, "onnxruntime"), _fmt_ms(row, "torch"), _fmt_ms(row, "sporeling"),
                      ratio["sporeling/onnxruntime"], ratio["sporeling/torch"], _fmt_diff(row, "sporeling"),
                      _fmt_diff(row, "torch")])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print(f"median latency over {runs} interleaved rounds, {threads} thread(s); "
          "|d|: max abs difference from onnxruntime's outputs")
    for cells in [head, *lines]:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    for row in rows:
        errors = [(e, v["error"]) for e, v in row.get("engines", {}).items() if "error" in v]
        if "error" in row:
            errors.append(("model", row["error"]))
        for engine, err in errors:
            print(f"  {row['model']}: {engine} failed: {err}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Median latency of sporeling vs onnxruntime and PyTorch eager.")
    ap.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    ap.add_argument("--runs", type=int, default=10, help="timed rounds, one run of each engine per round (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs of each engine first (default 2)")
    ap.add_argument("--models", default=",".join(bench_models.ALL_MODELS),
                    help=f"comma-separated subset of {','.join(bench_models.ALL_MODELS)}")
    ap.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "latency.json"),
                    help="where to write the JSON results")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.runs < 1:
        ap.error("--threads and --runs must be at least 1")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in bench_models.ALL_MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}")
    try:  # every native pool (numpy's BLAS, torch's OpenMP) at N, whether or not sporeling gets to run
        from threadpoolctl import threadpool_limits

        pools = threadpool_limits(limits=args.threads)  # noqa: F841  (kept alive for the whole run)
    except ImportError:
        print("threadpoolctl is not installed: BLAS thread counts are left as they are", file=sys.stderr)
    if bench_models.torch is not None:
        try:
            bench_models.torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before torch's first parallel work
            pass

    try:  # once, so every row sees the same sporeling
        import sporeling
    except Exception as e:  # noqa: BLE001
        sporeling = f"import failed: {one_line(e)}"

    rows = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows.append(bench_model(name, args.threads, args.runs, args.warmup, sporeling))
    print_table(rows, args.threads, args.runs)

    versions = library_versions("sporeling", "onnxruntime", "torch")
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions,
        "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
        "blas": blas_pools(),
        "models": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

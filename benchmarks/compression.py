"""Weight compression on the real models: size and output quality of sporeling.compress against its peers.

For each model (the trained ones of ../shared/ASSETS.md, then the bench models, whose weights are
seeded random and so are reported apart and left out of the averages) the float model is converted
to .spore, compressed by each method (fixed 8, 6 and 4 bits; the mixed-bit search when compress
offers it), loaded back with sporeling.load and run on the real inputs of benchmarks/real_inputs.py.
Each output's cosine to the float model's is averaged over the inputs (min kept too), and the task
figures of real_inputs are computed. Peers in the same table: onnxruntime's quantize_dynamic (QInt8
weights, per tensor and per channel, after its quant_pre_process; ONNX models only, run in
onnxruntime and compared with onnxruntime's own float outputs) and zstd -19 of the source file and of
the float .spore (lossless).

Ratios are against the float .spore ("x float", what the issue's target is measured against),
against the source file ("x source"), and against the float model with every weight in fp32 ("x fp32":
MediaPipe ships fp16 weights and the float .spore keeps them, so there x float starts from a model
already halved; elsewhere x fp32 equals x float). The averages over the trained models give both the arithmetic
mean (the issue's "average whole-file ratio", which the target is judged on) and the geometric mean.
A model meets the quality target when every output's mean cosine is >= 0.995 and no accuracy (a task
figure ending in "acc") drops by more than 1 point from the float model's. Sizes, not timings, so
nothing is interleaved; the compress time per model is reported. BLAS and onnxruntime at one thread.

The data-free searches (mixed, original) judge on seeded random inputs, and where a search ends depends on
that draw: each runs once per seed of --seeds, one row each ("mixed" is seed 0, what compress does by
default; "mixed seed=1000" another draw), and the averages pool every model and seed ("mixed, 3 seeds").

The default mixed search judges a model that keeps BatchNormalization statistics and normalises nothing at run
time on inputs distilled from them (PP-OCR det and cls), the others on random inputs. mixed-random and
mixed-distill (only with --methods) judge on random inputs everywhere (compress's distill=False) and on distilled
ones wherever the statistics are, PP-OCR rec too (distill=True). mixed-nearest (only with --methods) is the mixed
search rounding every weight to nearest (--rounding nearest), as it did before kernel sums became the default.

The bounds fit and fit-gptq (only with --methods) calibrate the mixed search on every input of a case and judge it
on those alone, then evaluate it on the same inputs: what the search's quantizers reach when the judge is the
evaluation itself, a ceiling for the data-free and calibrated rows rather than a method.

    python benchmarks/compression.py [--models ppocr_det,mp_face_detection] [--methods fixed8,mixed] [--quick]
                                     [--seeds 0,1000,2000]

Writes benchmarks/results/compression.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (_HERE, os.path.dirname(_HERE)) if p not in sys.path]

import numpy as np  # noqa: E402

import real_inputs as ri  # noqa: E402
from common import one_line, write_result  # noqa: E402
from common import versions as library_versions  # noqa: E402

METHODS = {"fixed8": ("fixed", 8), "fixed6": ("fixed", 6), "fixed4": ("fixed", 4), "original": ("original", None),
           "mixed": ("mixed", None), "mixed-random": ("mixed", None), "mixed-distill": ("mixed", None),
           "mixed-calib": ("mixed", None), "mixed-calib-gptq": ("mixed", None), "fit": ("mixed", None),
           "fit-gptq": ("mixed", None), "mixed-nearest": ("mixed", None)}
# fit, fit-gptq: a bound, not a method, so not run unless asked (--methods): the mixed search calibrated on every
# input of the case and judged on those alone (no random samples beside them, no held-out fold), then evaluated on
# the same inputs. No search of this family judged on fewer or other inputs can expect a smaller file at the target.
BOUNDS = ("fit", "fit-gptq")
JUDGES = {"mixed-random": False, "mixed-distill": True}  # compress's distill= for these
ROUNDED = {"mixed-nearest": "nearest", "mixed-calib-gptq": "gptq", "fit-gptq": "gptq"}  # compress's rounding=
DEFAULT_METHODS = [m for m in METHODS if m not in BOUNDS + tuple(JUDGES) + ("mixed-nearest",)]
PEERS = ["ort", "zstd"]
LABEL = 24  # the width of the method column: "mixed-distill seed=1000" fits
TARGET_RATIO, TARGET_COSINE, TARGET_ACC_DROP = 7.0, 0.995, 0.01


# ---- engines and peers ----

def sporeling_engine(path: str):
    import sporeling

    return sporeling.load(path, threads=1).run


def ort_engine(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return lambda feeds: dict(zip(names, sess.run(None, {k: v for k, v in feeds.items() if k in wanted})))


def zstd_size(path: str) -> tuple[int, str]:
    """Bytes of the file after zstd level 19, with the python package or else the CLI."""
    try:
        import zstandard
    except ImportError:
        if shutil.which("zstd") is None:
            raise RuntimeError("neither the zstandard package nor the zstd CLI is available") from None
        out = subprocess.run(["zstd", "-19", "-c", "-q", path], check=True, capture_output=True).stdout
        return len(out), "zstd CLI"
    with open(path, "rb") as f:
        return len(zstandard.ZstdCompressor(level=19).compress(f.read())), f"zstandard {zstandard.__version__}"


def quantize_dynamic(src: str, dst: str, per_channel: bool, tmp: str) -> bool:
    """onnxruntime's quantize_dynamic, after its own quant_pre_process as its docs advise: PP-OCR keeps
    its weights in Constant nodes, which quantize_dynamic leaves float (the file grows), and its BN is
    unfolded. Returns whether the pre-processing worked (else the source is quantized as it is)."""
    import logging

    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as qd
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, once per call
    pre = os.path.join(tmp, os.path.basename(src) + ".pre.onnx")
    try:
        if not os.path.exists(pre):
            quant_pre_process(src, pre, skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001
        pre = None
    qd(pre or src, dst, weight_type=QuantType.QInt8, per_channel=per_channel)
    return pre is not None


# ---- one model ----

def fp16_bytes(src: str) -> int:
    """Bytes of the float16 weights of the optimized graph (MediaPipe ships its weights in fp16, and the
    float .spore keeps them so): an fp32 float model would be this much larger."""
    import numpy as np

    from sporeling.model import load_graph
    from sporeling.passes import optimize

    graph = load_graph(src)
    optimize(graph, [])
    return sum(int(w.nbytes) for w in graph.initializers.values() if np.asarray(w).dtype == np.float16)


def evaluate(case: ri.Case, outs, ref, size: int, float_bytes: int, source_bytes: int, fp32_bytes: int) -> dict:
    cos = ri.output_cosines(outs, ref)
    return {"bytes": size, "x_float": float_bytes / size, "x_source": source_bytes / size,
            "x_fp32": fp32_bytes / size,
            "cos_mean": min(c["mean"] for c in cos.values()), "cos_min": min(c["min"] for c in cos.values()),
            "cosines": cos, "task": case.task(outs, ref) if case.task else {}}


# the data-free searches: each seed of their random sample inputs (or of the distillation's start) is one draw
SEEDED = ("mixed", "mixed-random", "mixed-distill", "mixed-nearest", "original")


def seeded_label(method: str, seed: int) -> str:
    return method if seed == 0 else f"{method} seed={seed}"


def bench_model(name: str, methods: list[str], peers: list[str], quick: bool, tmp: str,
                seeds: tuple[int, ...] = (0,)) -> dict:
    import sporeling

    case = ri.case(name, quick)
    src = case.path
    source_bytes = os.path.getsize(src)
    float_spore = os.path.join(tmp, f"{name}.float.spore")
    sporeling.convert(src, float_spore, verbose=False)
    float_bytes = os.path.getsize(float_spore)
    fp32_bytes = float_bytes + fp16_bytes(src)
    sizes = (float_bytes, source_bytes, fp32_bytes)
    ref = ri.run_case(case, sporeling_engine(float_spore))
    result = {"model": name, "source": os.path.basename(src), "source_bytes": source_bytes,
              "float_bytes": float_bytes, "fp32_equivalent_bytes": fp32_bytes,
              "inputs": [label for label, _ in case.inputs], "rows": []}
    rows = result["rows"]
    rows.append({"method": "float .spore", **evaluate(case, ref, ref, float_bytes, *sizes)})
    runs = [(seeded_label(m, seed), m, seed) for m in methods for seed in (seeds if m in SEEDED else (0,))]
    for label, m, seed in runs:
        kind, bits = METHODS[m]
        options = {"method": kind, "verbose": False, "check": False, **({"bits": bits} if bits else {})}
        if m in SEEDED:
            options["seed"] = seed
        if kind != "fixed":  # random samples of the first real input's shapes; or, calibrated, the real inputs
            first = case.inputs[0][1]
            options["input_shapes"] = {k: tuple(np.shape(v)) for k, v in first.items()}
            # an integer scalar input is a setting, not data (silero's sample rate): it keeps its real value
            options["inputs"] = {k: v for k, v in first.items() if np.ndim(v) == 0 and np.asarray(v).dtype.kind in "iu"}
        try:
            if m in ROUNDED:
                options["rounding"] = ROUNDED[m]
            if m in BOUNDS:
                options["samples"] = 0
            if m in JUDGES:
                options["distill"] = JUDGES[m]
            outs, report = run_method(case, src, os.path.join(tmp, f"{name}.{m}.{seed}"), options,
                                      m.startswith("mixed-calib") or m in BOUNDS, fitted=m in BOUNDS)
        except Exception as e:  # noqa: BLE001  (one method failing must not stop the others)
            if m == "mixed":
                print(f"{name}: mixed: not available: {one_line(e)}", file=sys.stderr, flush=True)
            rows.append({"method": label, "error": one_line(e)})
            continue
        row = {"method": label, **({"seed": seed} if m in SEEDED else {}),
               **evaluate(case, outs, ref, report["output_bytes"], *sizes),
               "seconds": report.get("seconds"), "compress_ratio": report.get("ratio"),
               "compress_float_bytes": report.get("float_bytes")}
        if "folds" in report:
            row["folds"] = report["folds"]
        layers = report.get("layers", [])
        row["codecs"] = {c: sum(1 for x in layers if x.get("codec") == c) for c in {x.get("codec") for x in layers}}
        rows.append(row)
    if "ort" in peers and src.endswith(".onnx"):
        rows.extend(ort_rows(case, sizes, tmp))
    if "zstd" in peers:
        for label, path in (("zstd -19 source", src), ("zstd -19 .spore", float_spore)):
            try:
                start = time.perf_counter()
                size, tool = zstd_size(path)
                rows.append({"method": label, "bytes": size, "x_float": float_bytes / size,
                             "x_source": source_bytes / size, "x_fp32": fp32_bytes / size, "cos_mean": 1.0,
                             "cos_min": 1.0, "lossless": True,
                             "tool": tool, "seconds": round(time.perf_counter() - start, 3)})
            except Exception as e:  # noqa: BLE001
                rows.append({"method": label, "error": one_line(e)})
    return result


def run_method(case: ri.Case, src: str, stem: str, options: dict, calibrated: bool,
               fitted: bool = False) -> tuple[list, dict]:
    """Compress and run the case's inputs. Calibrated, no input is judged by a model calibrated on it: the
    inputs split in two folds (even and odd positions), each compressed with the other fold as calibration
    and run on its own, the outputs put back in order; the size and time are the folds' means. A case that
    carries state from one input to the next (silero) cannot be split and calibrates on all its inputs, as
    `fitted` (the bounds) does on purpose."""
    from sporeling.quant.compress import compress

    if not calibrated:
        report = compress(src, stem + ".spore", **options)
        return ri.run_case(case, sporeling_engine(stem + ".spore")), report
    n = len(case.inputs)
    split = n >= 2 and not case.feedback and not fitted
    folds = [[i for i in range(n) if i % 2 == k] for k in (0, 1)] if split else [list(range(n))]
    outs: list = [None] * n
    reports = []
    feeds = full_feeds(case, src)
    for k, judged in enumerate(folds):
        calib = [i for i in range(n) if i not in judged] or judged
        dst = f"{stem}.fold{k}.spore"
        reports.append(compress(src, dst, calib=[feeds[i] for i in calib], **options))
        sub = ri.Case(case.name, case.path, [case.inputs[i] for i in judged], case.task, case.feedback)
        for i, o in zip(judged, ri.run_case(sub, sporeling_engine(dst))):
            outs[i] = o
    report = dict(reports[0])
    for key in ("output_bytes", "seconds", "ratio"):
        report[key] = float(np.mean([r[key] for r in reports]))
    report["output_bytes"] = int(round(report["output_bytes"]))
    if len(folds) > 1:
        report["folds"] = [{"judged": [case.inputs[i][0] for i in f], "output_bytes": r["output_bytes"]}
                           for f, r in zip(folds, reports)]
    return outs, report


def full_feeds(case: ri.Case, src: str) -> list[dict]:
    """Each input's complete feeds: with the state the float model carries into it (silero's)."""
    import sporeling

    if not case.feedback:
        return [dict(f) for _, f in case.inputs]
    model, carried, feeds = sporeling.load(src), {}, []
    for _, f in case.inputs:
        feeds.append({**f, **carried})
        got = model.run(feeds[-1])
        carried = {inp: np.asarray(got[out]) for out, inp in case.feedback.items() if out in got}
    return feeds


def ort_rows(case: ri.Case, sizes: tuple[int, int, int], tmp: str) -> list[dict]:
    """quantize_dynamic per tensor and per channel, judged in onnxruntime against onnxruntime's float."""
    try:
        ref = ri.run_case(case, ort_engine(case.path))
    except Exception as e:  # noqa: BLE001
        return [{"method": "ort float", "error": one_line(e)}]
    rows = []
    for per_channel in (False, True):
        label = "ort qdyn int8" + (" per-ch" if per_channel else "")
        dst = os.path.join(tmp, f"{case.name}.qdyn{int(per_channel)}.onnx")
        try:
            start = time.perf_counter()
            preprocessed = quantize_dynamic(case.path, dst, per_channel, tmp)
            seconds = round(time.perf_counter() - start, 3)
            outs = ri.run_case(case, ort_engine(dst))
        except Exception as e:  # noqa: BLE001
            rows.append({"method": label, "error": one_line(e)})
            continue
        rows.append({"method": label, **evaluate(case, outs, ref, os.path.getsize(dst), *sizes),
                     "seconds": seconds, "preprocessed": preprocessed})
    return rows


# ---- report ----

def acc_drop(model: dict, row: dict) -> float:
    """The largest fall of a labelled accuracy from the float model's, as a fraction (0.01 = 1 point)."""
    base = model["rows"][0].get("task", {})
    drops = [base[k] - v for k, v in row.get("task", {}).items() if k.endswith("acc") and k in base]
    return max(drops, default=0.0)


def meets_quality(model: dict, row: dict) -> bool:
    return row["cos_mean"] >= TARGET_COSINE and acc_drop(model, row) <= TARGET_ACC_DROP + 1e-9


def print_model(model: dict) -> None:
    fp32 = model["fp32_equivalent_bytes"]
    note = f", {fp32 / 1024:.1f} KiB with its fp16 weights in fp32" if fp32 != model["float_bytes"] else ""
    print(f"\n{model['model']} ({model['source']}: source {model['source_bytes'] / 1024:.1f} KiB, float .spore "
          f"{model['float_bytes'] / 1024:.1f} KiB{note}, {len(model['inputs'])} inputs)")
    print(f"  {'method':<{LABEL}} {'KiB':>9} {'x float':>8} {'x source':>8} {'x fp32':>7} {'cos mean':>9} "
          f"{'cos min':>9} {'time s':>7}  task")
    for r in model["rows"]:
        if "error" in r:
            print(f"  {r['method']:<{LABEL}} error: {r['error']}")
            continue
        task = ", ".join(f"{k} {v:.3g}" for k, v in r.get("task", {}).items())
        secs = f"{r['seconds']:7.2f}" if r.get("seconds") is not None else f"{'':>7}"
        print(f"  {r['method']:<{LABEL}} {r['bytes'] / 1024:9.1f} {r['x_float']:8.2f} {r['x_source']:8.2f} "
              f"{r['x_fp32']:7.2f} "
              f"{r['cos_mean']:9.5f} {r['cos_min']:9.5f} {secs}  {task}")
    sys.stdout.flush()


def summarize(models: list[dict], label: str) -> list[dict]:
    """Per method over `models`: both means of the ratios, the worst cosine, the largest accuracy drop. A
    method run with several seeds also gets a row pooling every (model, seed) pair: "mixed, 3 seeds"."""
    groups: dict[str, list] = {}  # method -> its (model, row) pairs, in the order the methods first ran
    pooled: dict[str, list] = {}  # a seeded method -> the pairs of all its seeds
    seeds: dict[str, set] = {}
    for m in models:
        for r in m["rows"]:
            if r["method"] == "float .spore":
                continue
            pairs = groups.setdefault(r["method"], [])
            if "error" in r:
                continue
            pairs.append((m, r))
            if "seed" in r:
                base = r["method"].split(" seed=")[0]
                pooled.setdefault(base, []).append((m, r))
                seeds.setdefault(base, set()).add(r["seed"])
    groups.update({f"{k}, {len(seeds[k])} seeds": v for k, v in pooled.items() if len(seeds[k]) > 1})
    out = []
    for method, pairs in groups.items():
        if not pairs:
            continue
        xf = np.array([r["x_float"] for _, r in pairs])
        xs = np.array([r["x_source"] for _, r in pairs])
        x32 = np.array([r["x_fp32"] for _, r in pairs])
        quality = [meets_quality(m, r) for m, r in pairs]
        out.append({"set": label, "method": method, "n": len(pairs), "models": [m["model"] for m, _ in pairs],
                    "x_float_arith": float(xf.mean()), "x_float_geo": float(np.exp(np.log(xf).mean())),
                    "x_source_arith": float(xs.mean()), "x_source_geo": float(np.exp(np.log(xs).mean())),
                    "x_fp32_arith": float(x32.mean()), "x_fp32_geo": float(np.exp(np.log(x32).mean())),
                    "worst_cos_mean": min(r["cos_mean"] for _, r in pairs),
                    "worst_cos_min": min(r["cos_min"] for _, r in pairs),
                    "max_acc_drop_points": 100 * max(acc_drop(m, r) for m, r in pairs),
                    "quality_ok": f"{sum(quality)}/{len(quality)}",
                    "ratio_target_met": bool(xf.mean() >= TARGET_RATIO),
                    "target_met": bool(xf.mean() >= TARGET_RATIO and all(quality))})
    return out


def print_summary(rows: list[dict], title: str) -> None:
    if not rows:
        return
    print(f"\n{title}")
    print(f"  {'method':<{LABEL}} {'n':>2} {'x float arith':>13} {'x float geo':>11} {'x src arith':>11} "
          f"{'x src geo':>9} {'x fp32 arith':>12} {'worst cos':>9} {'acc drop':>8} {'quality':>7}  "
          f"target (arith >= {TARGET_RATIO:g}x, quality)")
    for s in rows:
        print(f"  {s['method']:<{LABEL}} {s['n']:>2} {s['x_float_arith']:13.2f} {s['x_float_geo']:11.2f} "
              f"{s['x_source_arith']:11.2f} {s['x_source_geo']:9.2f} {s['x_fp32_arith']:12.2f} "
              f"{s['worst_cos_mean']:9.5f} "
              f"{s['max_acc_drop_points']:7.1f}p {s['quality_ok']:>7}  {'met' if s['target_met'] else 'not met'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(ri.TRAINED + ri.BENCH),
                    help=f"comma-separated subset of {','.join(ri.TRAINED + ri.BENCH)}")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"subset of {','.join(METHODS)} (default: all but {', '.join(JUDGES)}, mixed-nearest and the "
                    f"bounds {', '.join(BOUNDS)})")
    ap.add_argument("--peers", default=",".join(PEERS), help="subset of ort,zstd (empty for none)")
    ap.add_argument("--quick", action="store_true", help="fewer inputs per model")
    ap.add_argument("--seeds", default="0,1000,2000",
                    help="seeds of the data-free searches' random inputs (mixed, original): each is one draw, "
                    "reported as its own row and pooled (default 0,1000,2000)")
    ap.add_argument("--out", default=os.path.join(_HERE, "results", "compression.json"))
    args = ap.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    methods = [m for m in args.methods.split(",") if m]
    peers = [p for p in args.peers.split(",") if p]
    try:
        seeds = tuple(dict.fromkeys(int(x) for x in args.seeds.split(",") if x.strip())) or (0,)
    except ValueError:
        ap.error(f"--seeds takes whole numbers separated by commas, not {args.seeds!r}")
    for bad, known, what in ((names, ri.TRAINED + ri.BENCH, "model"), (methods, METHODS, "method"),
                             (peers, PEERS, "peer")):
        unknown = [x for x in bad if x not in known]
        if unknown:
            ap.error(f"unknown {what}(s) {', '.join(unknown)}")
    try:
        from threadpoolctl import threadpool_limits

        pools = threadpool_limits(limits=1)  # noqa: F841  (kept for the whole run)
    except ImportError:
        pass

    models, skipped = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            try:
                model = bench_model(name, methods, peers, args.quick, tmp, seeds)
            except Exception as e:  # noqa: BLE001  (a missing asset or a failing float model: say, go on)
                skipped[name] = one_line(e)
                print(f"\n{name}: skipped: {skipped[name]}")
                continue
            model["trained"] = name in ri.TRAINED
            models.append(model)
            print_model(model)
    trained = [m for m in models if m["trained"]]
    summary = summarize(trained, "trained") + summarize([m for m in trained if m["source"].endswith(".onnx")],
                                                        "trained ONNX")
    summary += summarize([m for m in models if not m["trained"]], "bench (random weights)")
    for label, title in (("trained", "Averages over the trained models (the target's set)"),
                         ("trained ONNX", "Averages over the trained ONNX models (where onnxruntime's peers ran)"),
                         ("bench (random weights)", "Bench models, seeded random weights (not in the averages)")):
        print_summary([s for s in summary if s["set"] == label], title)

    versions = library_versions("sporeling", "onnxruntime", "zstandard")
    result = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions,
              "quick": args.quick, "methods": methods, "peers": peers, "seeds": list(seeds),
              "targets": {"x_float_arith": TARGET_RATIO, "cos_mean": TARGET_COSINE, "acc_drop": TARGET_ACC_DROP},
              "models": models, "skipped": skipped, "summary": summary}
    print()
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

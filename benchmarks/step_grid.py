"""The mixed search's two quantization grids at equal coded size: which keeps the outputs better.

mixed.quantize_levels puts each channel's L levels across its max |w|, clipped by a search for coarse L
(what the search used to round to); mixed.quantize_step uses a step of STEP_PEAK * rms / L per channel
and lets the codes run as wide as the weights need (what the search rounds to now). For every trained
model of benchmarks/real_inputs.py and each L, every weight the search takes is rounded to levels'
grid at L; then quantize_step's continuous L is bisected until its predicted coded size (the codes'
entropy plus the stored scales, as the search predicts it) matches, and both models run on the real
inputs. Reported: each one's size and the worst output's mean cosine to the float model, and the ratio
of 1 - cosine (levels / step: above 1, the step grid loses less at that size). Weights are judged in
memory as the file decodes them (mixed.decoded); BLAS at one thread.

    python benchmarks/step_grid.py [--models ppocr_det,...] [--levels 15,31]

Writes benchmarks/results/step_grid.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (_HERE, os.path.dirname(_HERE)) if p not in sys.path]

import numpy as np  # noqa: E402

import real_inputs as ri  # noqa: E402
from common import versions, write_result  # noqa: E402


def measure(name: str, levels_list: list[int]) -> dict:
    from sporeling.model import Model, load_graph
    from sporeling.passes import optimize
    from sporeling.quant.encode import channel_axes
    from sporeling.quant.allocate import coded_bytes
    from sporeling.quant.mixed import decoded, quantize_levels, quantize_step, with_weights
    from sporeling.quant.quantize import MIN_QUANT_WEIGHT_SIZE, should_quantize

    case = ri.case(name)
    graph = load_graph(case.path)
    optimize(graph, [])
    axes, weights = channel_axes(graph), graph.named_initializers()
    chosen = {n: axes.get(n, 0) or 0 for n, w in weights.items()
              if should_quantize(n, w, MIN_QUANT_WEIGHT_SIZE, axis=axes.get(n, 0) or 0)}
    ref = ri.run_case(case, Model(graph, "float").run)

    def judged(qs: dict) -> float:
        model = Model(with_weights(graph, {n: decoded(q, weights[n].dtype) for n, q in qs.items()}), "candidate")
        return min(c["mean"] for c in ri.output_cosines(ri.run_case(case, model.run), ref).values())

    def step_at(lv: float) -> dict:
        return {n: quantize_step(weights[n], lv, a) for n, a in chosen.items()}

    rows = []
    for levels in levels_list:
        old = {n: quantize_levels(weights[n], levels, a, clip=True) for n, a in chosen.items()}
        target = sum(coded_bytes(q) for q in old.values())
        lo, hi = levels / 8, levels * 8.0  # bisect for the finest step grid within the old size
        for _ in range(16):
            mid = (lo * hi) ** 0.5
            if sum(coded_bytes(q) for q in step_at(mid).values()) > target:
                hi = mid
            else:
                lo = mid
        new = step_at(lo)
        row = {"levels": levels, "step_levels": round(lo, 3),
               "levels_grid": {"bytes": round(target), "cos_mean": judged(old)},
               "step_grid": {"bytes": round(sum(coded_bytes(q) for q in new.values())), "cos_mean": judged(new)}}
        loss_old, loss_new = 1 - row["levels_grid"]["cos_mean"], 1 - row["step_grid"]["cos_mean"]
        row["loss_ratio"] = loss_old / loss_new if loss_new > 0 else None
        rows.append(row)
        ratio = f"{row['loss_ratio']:.2f}x" if row["loss_ratio"] else "-"
        print(f"  {name:24} L={levels:<3} {target / 1024:8.1f} KiB  cos levels grid "
              f"{row['levels_grid']['cos_mean']:.5f}  step grid {row['step_grid']['cos_mean']:.5f}  "
              f"(1 - cos) levels / step {ratio}", flush=True)
    return {"model": name, "tensors": len(chosen), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(ri.TRAINED))
    ap.add_argument("--levels", default="7,15,31,63")
    ap.add_argument("--out", default=os.path.join(_HERE, "results", "step_grid.json"))
    args = ap.parse_args(argv)
    levels_list = [int(v) for v in args.levels.split(",")]
    results = []
    for name in args.models.split(","):
        if ri.model_path(name) is None:
            print(f"  {name}: not cached, skipped", flush=True)
            continue
        results.append(measure(name, levels_list))
    ratios = [r["loss_ratio"] for m in results for r in m["rows"] if r["loss_ratio"]]
    if ratios:
        print(f"geometric mean of (1 - cos) levels grid / step grid: {float(np.exp(np.mean(np.log(ratios)))):.2f}x "
              f"over {len(ratios)} model-levels; step grid better in {sum(r > 1 for r in ratios)}")
    write_result(args.out, {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions(),
                            "threads": 1, "models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

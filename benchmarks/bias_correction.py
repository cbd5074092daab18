"""What bias correction does to output error: each trained model at fixed widths, with and without it.

For every trained model of benchmarks/real_inputs.py, sporeling.compress(method="fixed") at 8, 6, 5 and 4
bits, once with bias correction (each channel's dequantized weights keep the mean and standard deviation
of the float ones) and once without; each file runs on the real inputs and the worst output's mean cosine
to the float model is reported (as in benchmarks/compression.py), with 1 - cosine's ratio (without / with:
above 1, the correction removed that share of the error). Sizes barely move (the correction is two float16
numbers a channel, stored with the scales). BLAS at one thread.

    python benchmarks/bias_correction.py [--models ppocr_det,...] [--bits 8,6]

Writes benchmarks/results/bias_correction.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (_HERE, os.path.dirname(_HERE)) if p not in sys.path]

import numpy as np  # noqa: E402

import real_inputs as ri  # noqa: E402
from common import versions, write_result  # noqa: E402
from compression import sporeling_engine  # noqa: E402


def measure(name: str, widths: list[int], tmp: str) -> dict:
    import sporeling
    from sporeling.quant.compress import compress

    case = ri.case(name)
    float_spore = os.path.join(tmp, f"{name}.float.spore")
    sporeling.convert(case.path, float_spore, verbose=False)
    ref = ri.run_case(case, sporeling_engine(float_spore))
    rows = []
    for bits in widths:
        row = {"bits": bits}
        for label, corrected in (("with", True), ("without", False)):
            dst = os.path.join(tmp, f"{name}.{bits}.{label}.spore")
            report = compress(case.path, dst, method="fixed", bits=bits, bias_correction=corrected, check=False,
                              verbose=False)
            cos = ri.output_cosines(ri.run_case(case, sporeling_engine(dst)), ref)
            row[label] = {"bytes": report["output_bytes"], "cos_mean": min(c["mean"] for c in cos.values())}
        loss_with, loss_without = 1 - row["with"]["cos_mean"], 1 - row["without"]["cos_mean"]
        row["error_ratio"] = loss_without / loss_with if loss_with > 0 else None
        rows.append(row)
        ratio = f"{row['error_ratio']:.2f}x" if row["error_ratio"] else "-"
        print(f"  {name:24} {bits:>2} bits  cos with {row['with']['cos_mean']:.5f}  without "
              f"{row['without']['cos_mean']:.5f}  (1 - cos) without / with {ratio}", flush=True)
    return {"model": name, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(ri.TRAINED))
    ap.add_argument("--bits", default="8,6,5,4")
    ap.add_argument("--out", default=os.path.join(_HERE, "results", "bias_correction.json"))
    args = ap.parse_args(argv)
    widths = [int(b) for b in args.bits.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if ri.model_path(name) is None:
                print(f"  {name}: not cached, skipped", flush=True)
                continue
            results.append(measure(name, widths, tmp))
    ratios = [r["error_ratio"] for m in results for r in m["rows"] if r["error_ratio"]]
    if ratios:
        print(f"geometric mean of (1 - cos) without / with: {float(np.exp(np.mean(np.log(ratios)))):.2f}x "
              f"over {len(ratios)} model-widths; correction better in {sum(r > 1 for r in ratios)}")
    write_result(args.out, {"created": datetime.now(timezone.utc).isoformat(), "versions": versions(),
                            "models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

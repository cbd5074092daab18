"""Speed and coded size of sporeling.quant.fse (tANS) on quantized weights, one thread.

The symbols are 4-, 6- and 8-bit codes of Gaussian weights (symmetric, round to nearest, max-abs
scale, offset to unsigned, seeded), 1M, 4M and 16M of them, one uint8 byte each, so MB/s here is
millions of symbols (= code bytes) per second. Encode and decode are timed --repeat times each,
interleaved; the table shows the median and the best run (the one least disturbed by other work on
a shared machine). A plain np.take's ns per element, measured before and after, records the
machine's speed at the time: compare runs only when it matches. `coded/H` is the blob's size,
headers included, over n * H, the Shannon entropy of the symbols' own distribution. Targets from
issue 4: decode >= 100 MB/s, encode >= 40 MB/s, coded/H <= 1.01.

    python benchmarks/fse_speed.py                      # 1M, 4M, 16M x 4, 6, 8 bits
    python benchmarks/fse_speed.py --sizes 1048576 --bits 4,8 --repeat 15

Writes benchmarks/results/fse_speed.json.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402

from sporeling.quant.fse import decode, encode, entropy_bits, info  # noqa: E402
from sporeling.tools import atomic_write  # noqa: E402


def codes(bits: int, n: int, seed: int) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal(n)
    qmax = 2 ** (bits - 1) - 1
    q = np.clip(np.round(w * (qmax / np.abs(w).max())), -qmax - 1, qmax).astype(np.int64) + qmax + 1
    return q.astype(np.uint8)


def calibration_ns() -> float:
    """Best time of a plain NumPy gather (1M int64 indices into a 4096-entry table), ns per element:
    the machine's speed at the time of the run, to compare runs on shared or throttled machines."""
    rng = np.random.default_rng(0)
    table, idx = rng.integers(0, 1 << 40, 4096), rng.integers(0, 4096, 1 << 20)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        table.take(idx)
        times.append(time.perf_counter() - t0)
    return round(min(times) / len(idx) * 1e9, 3)


def measure(bits: int, n: int, repeat: int) -> dict:
    x = codes(bits, n, seed=bits)
    blob = encode(x)
    if not np.array_equal(decode(blob), x):
        raise SystemExit(f"round trip failed for {bits}-bit codes, n={n}")
    t_enc, t_dec = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        encode(x)
        t1 = time.perf_counter()
        decode(blob)
        t2 = time.perf_counter()
        t_enc.append(t1 - t0)
        t_dec.append(t2 - t1)
    h = entropy_bits(x)
    head = info(blob)
    return {
        "bits": bits, "symbols": n, "entropy_bits_per_symbol": round(h / n, 4),
        "coded_bytes": len(blob), "coded_over_entropy": round(8 * len(blob) / h, 5),
        "table_log": head["table_log"], "lanes": head["lanes"],
        "encode_MBps_median": round(n / statistics.median(t_enc) / 1e6, 1),
        "decode_MBps_median": round(n / statistics.median(t_dec) / 1e6, 1),
        "encode_MBps_best": round(n / min(t_enc) / 1e6, 1),
        "decode_MBps_best": round(n / min(t_dec) / 1e6, 1),
        "repeat": repeat,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1048576,4194304,16777216")
    ap.add_argument("--bits", default="4,6,8")
    ap.add_argument("--repeat", type=int, default=0, help="runs per case (default: 15, 9, 5 by size)")
    ap.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "fse_speed.json"))
    args = ap.parse_args()
    rows = []
    before = calibration_ns()
    print(f"calibration: np.take {before} ns/element")
    print(f"{'bits':>4} {'symbols':>9} {'H bits':>7} {'coded/H':>8} {'enc MB/s':>9} {'dec MB/s':>9}"
          f" {'(best enc':>10} {'dec)':>6}")
    for n in (int(v) for v in args.sizes.split(",")):
        for bits in (int(v) for v in args.bits.split(",")):
            repeat = args.repeat or (15 if n <= 1 << 20 else 9 if n <= 1 << 22 else 5)
            r = measure(bits, n, repeat)
            rows.append(r)
            print(f"{bits:>4} {n:>9} {r['entropy_bits_per_symbol']:>7.3f} {r['coded_over_entropy']:>8.4f}"
                  f" {r['encode_MBps_median']:>9.1f} {r['decode_MBps_median']:>9.1f}"
                  f" {r['encode_MBps_best']:>10.1f} {r['decode_MBps_best']:>6.1f}")
    after = calibration_ns()
    print(f"calibration after: np.take {after} ns/element")
    result = {"benchmark": "fse_speed", "unit": "MB/s = 1e6 uint8 symbols per second, one thread",
              "calibration_take_ns_per_element": [before, after],
              "machine": platform.processor() or platform.machine(), "numpy": np.__version__,
              "python": platform.python_version(), "cases": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1) + "\n"), mode="w")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

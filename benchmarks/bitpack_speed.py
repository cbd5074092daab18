"""Speed of sporeling.quant.bitpack: pack and unpack throughput per code width, in MB/s of codes.

The codes are random, uniform over [0, 2**bits), uint8 for widths up to 8 and uint16 above (so MB/s
counts 1 or 2 bytes per code), packed as one stream (axis=None) and per row of a (rows, 4607) array
(axis=0, as a conv weight's output channels; 4607 codes a row, so rows end mid-byte). Each figure is
the best of --repeat runs on one core.

    python benchmarks/bitpack_speed.py --size 4194304 --repeat 7

Writes benchmarks/results/bitpack_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402

from sporeling.quant.bitpack import code_dtype, pack, unpack  # noqa: E402
from sporeling.tools import atomic_write  # noqa: E402


def best_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(bits: int, size: int, axis: int | None, repeat: int) -> dict:
    row = 4608  # 512 x 3 x 3: one output channel of a typical conv kernel
    shape = (size,) if axis is None else (size // row, row - 1)  # 4607 codes: rows end mid-byte, the slow case
    codes = np.random.default_rng(bits).integers(0, 1 << bits, size=shape).astype(code_dtype(bits))
    packed = pack(codes, bits, axis)
    assert np.array_equal(unpack(packed, bits, shape, axis), codes)
    t_pack = best_seconds(lambda: pack(codes, bits, axis), repeat)
    t_unpack = best_seconds(lambda: unpack(packed, bits, shape, axis), repeat)
    return {"bits": bits, "axis": axis, "codes": codes.size, "code_bytes": codes.nbytes,
            "pack_MBps": round(codes.nbytes / t_pack / 1e6, 1), "unpack_MBps": round(codes.nbytes / t_unpack / 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1 << 22, help="codes per array (default 4M)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--bits", default=",".join(str(b) for b in range(1, 17)))
    ap.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results", "bitpack_speed.json"))
    args = ap.parse_args()
    rows = []
    print(f"{'bits':>4} {'layout':>10} {'pack MB/s':>10} {'unpack MB/s':>12}")
    for bits in (int(b) for b in args.bits.split(",")):
        for axis in (None, 0):
            r = measure(bits, args.size, axis, args.repeat)
            rows.append(r)
            layout = "stream" if axis is None else "per row"
            print(f"{bits:>4} {layout:>10} {r['pack_MBps']:>10.0f} {r['unpack_MBps']:>12.0f}", flush=True)
    atomic_write(args.out, lambda f: json.dump({"size": args.size, "repeat": args.repeat, "results": rows}, f,
                                               indent=1), mode="w")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

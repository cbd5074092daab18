"""The converter: a foreign model (.onnx, .tflite, or an older .spore) in, an optimized .spore out.

convert() reads the source into the IR, fixes the input shapes it is given (so that shape subgraphs
fold away), runs the graph passes with the IR verified after each, and writes the .spore file
atomically with its provenance: the source's name and SHA-256, the passes and what each did. It prints
what it did unless told not to, and returns the same figures as a dict. With check=True it also runs
the source graph and the converted one on the same random inputs and reports the largest difference.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import IO, Any

import numpy as np

from .errors import FeedError, SporelingError
from .ir import Graph
from .tools import file_sha256, human_bytes


def fix_input_shapes(graph: Graph, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Replaces the declared shapes of the named inputs; ranks must agree and known dims must match."""
    inputs = {v.name: v for v in graph.inputs if v.name not in graph.initializers}
    for name, shape in shapes.items():
        v = inputs.get(name)
        if v is None:
            raise FeedError(f"{source}: --input-shape names '{name}', but the inputs are {sorted(inputs)}")
        if v.shape is not None:
            if len(v.shape) != len(shape):
                raise FeedError(f"{source}: input '{name}' has rank {len(v.shape)}, --input-shape gives {len(shape)}")
            for declared, given in zip(v.shape, shape):
                if isinstance(declared, int) and declared >= 0 and declared != given:  # -1: dynamic
                    raise FeedError(f"{source}: input '{name}' is declared {list(v.shape)}, "
                                    f"--input-shape gives {list(shape)}")
        v.shape = tuple(shape)


def convert(src: str | os.PathLike, dst: str | os.PathLike, optimize: bool = True,
            input_shapes: dict[str, tuple[int, ...]] | None = None, check: bool = False,
            verbose: bool = True, stream: IO[str] | None = None) -> dict[str, Any]:
    """Converts `src` to the .spore file `dst`; returns a report (sizes, times, per-pass figures)."""
    from .format import save_spore
    from .model import load_graph
    from .passes import optimize as run_passes
    from .passes import recorded

    src, dst = os.fspath(src), os.fspath(dst)
    out = stream or sys.stdout
    say = (lambda s: print(s, file=out)) if verbose else (lambda s: None)
    start = time.perf_counter()
    graph = load_graph(src)
    load_ms = (time.perf_counter() - start) * 1000
    if input_shapes:
        fix_input_shapes(graph, input_shapes, src)
    original = copy.deepcopy(graph) if check else None
    nodes_in, params = len(graph.nodes), graph.parameter_count()
    say(f"read {src}: {nodes_in} nodes, {params:,} parameters, {human_bytes(os.path.getsize(src))} "
        f"({load_ms:.0f} ms)")
    log: list[dict[str, Any]] = []
    if optimize:
        run_passes(graph, log)
        width = max(len(e["pass"]) for e in log)
        for e in log:
            say(f"  {e['pass']:<{width}}  {e['rewrites']:>4} rewrites   nodes {e['nodes_before']:>5} -> "
                f"{e['nodes_after']:<5} {e['ms']:8.1f} ms")
    provenance = {"source": os.path.basename(src), "source_sha256": file_sha256(src),
                  "source_bytes": os.path.getsize(src), "optimized": bool(optimize), "passes": recorded(log),
                  "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()}}
    written = save_spore(graph, dst, provenance=provenance)
    report = {"source": src, "output": dst, "source_bytes": provenance["source_bytes"], "output_bytes": written,
              "nodes_before": nodes_in, "nodes_after": len(graph.nodes), "parameters": params, "passes": log,
              "seconds": round(time.perf_counter() - start, 3)}
    say(f"wrote {dst}: {len(graph.nodes)} nodes, {human_bytes(written)} "
        f"({written / max(report['source_bytes'], 1):.2f}x the source) in {report['seconds']:.2f} s")
    if check:
        report["max_abs_diff"] = _compare(original, dst, input_shapes or {})
        say(f"check: converted model matches the source within max abs diff {report['max_abs_diff']:.3g}")
    return report


def _compare(original: Graph, dst: str, shapes: dict) -> float:
    """Largest absolute difference between the source graph (no passes) and the written file."""
    from .model import Model, load
    from .tools import random_feeds

    converted = load(dst, optimize=False)
    feeds = random_feeds(converted, 0, shapes)
    try:
        ref = Model(original, "source").run(feeds)
    except SporelingError as e:
        sizes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
        raise type(e)(f"--check could not run the source on random inputs {sizes} (give --input-shape for "
                      f"symbolic dimensions): {e}") from e
    got = converted.run(feeds)
    worst = 0.0
    for name, value in ref.items():
        a, b = np.asarray(value), np.asarray(got[name])
        if a.dtype.kind in "fc" and a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        elif not np.array_equal(a, b):
            worst = float("inf")
    return worst

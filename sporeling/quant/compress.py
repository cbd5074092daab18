"""sporeling.compress: a model in, a .spore with quantized, entropy-coded weights out, with no dataset.

The source is read and optimized as by convert (BatchNorm folded into the weights first, so what is
quantized is what runs). Every weight worth it (should_quantize: float, 2-D or more, big enough) is
quantized per output channel (or per tensor), bias-corrected, and stored as the smallest of bit-packed
codes, FSE-coded codes and its float self. The report lists, per weight, the bits, the bits per weight
after coding and the relative RMS error, and in total the sizes and the ratio; with check (the default)
the compressed model and the float one run on the same seeded random inputs and each output's cosine
similarity is reported. Only the graph's own initializers are compressed, not those inside If/Loop/Scan
bodies (silero-vad keeps its weights there).

Methods: "fixed" gives every weight `bits` bits. "mixed" (the default) is the original's search
(sporeling/quant/mixed.py): an error target per tensor met by the coarsest step, the bits per weight
left to the FSE coder, and the target tuned to the largest one whose outputs keep a cosine of at least
target_cosine to the float model's on random sample inputs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import IO, Any

import numpy as np

from ..errors import SporelingError
from ..ir import Graph
from ..tools import human_bytes
from .encode import channel_axes, encode, quantize_tensor
from .quantize import MIN_QUANT_WEIGHT_SIZE, should_quantize

METHODS = ("mixed", "original", "fixed")


def compress(src: str | os.PathLike, dst: str | os.PathLike, *, method: str = "mixed", bits: int = 8,
             target_cosine: float = 0.995, bias_correction: bool = True, entropy: bool = True,
             per_tensor: bool = False, min_size: int | None = None,
             input_shapes: dict[str, tuple[int, ...]] | None = None, samples: int = 4,
             calib: str | os.PathLike | list[dict] | None = None, check: bool = True, verbose: bool = True,
             stream: IO[str] | None = None) -> dict[str, Any]:
    """Compresses `src` into the .spore file `dst`; returns the report (see the module docstring).
    input_shapes: shapes for the random sample inputs (symbolic dimensions), not fixed into the model.
    calib: sample inputs to judge the searches on instead of random ones (a list of feed dicts, an .npz
    whose arrays, keyed by input name, hold one sample per row, or a folder of such .npz files)."""
    from ..format import save_spore
    from ..model import load_graph
    from ..passes import optimize
    from ..tools import file_sha256

    src, dst = os.fspath(src), os.fspath(dst)
    say = (lambda s: print(s, file=stream or sys.stdout, flush=True)) if verbose else (lambda s: None)
    if method not in METHODS:
        raise SporelingError(f"compress: method must be one of {', '.join(METHODS)}, not {method!r}")
    if method == "fixed" and not 1 <= int(bits) <= 16:
        raise SporelingError(f"compress: bits must be from 1 to 16, not {bits}")
    if not 0 < target_cosine <= 1:
        raise SporelingError(f"compress: target cosine must be in (0, 1], not {target_cosine}")
    min_size = MIN_QUANT_WEIGHT_SIZE if min_size is None else int(min_size)
    start = time.perf_counter()
    graph = load_graph(src)
    log: list[dict] = []
    optimize(graph, log)
    axes = channel_axes(graph)
    chosen = {}
    for name, w in graph.initializers.items():
        axis = None if per_tensor else axes.get(name, 0)
        if should_quantize(name, w, min_size, axis=axis or 0):
            chosen[name] = axis
    summary: dict[str, Any] = {"method": method}
    if method == "fixed":
        quantized = {n: quantize_tensor(graph.initializers[n], bits, a, bias_correction=bias_correction)
                     for n, a in chosen.items()}
        summary["bits"] = bits
    else:
        quantized, summary = _search(method, graph, chosen, target_cosine, bias_correction, input_shapes or {},
                                     samples, load_calibration(calib), say)
    layers, encoded = [], {}
    for name, q in quantized.items():
        w = graph.initializers[name]
        enc = encode(q, entropy)
        keep = len(enc.payload) < w.nbytes
        if keep:
            encoded[name] = enc
        stored = len(enc.payload) if keep else w.nbytes
        layers.append({"name": name, "shape": list(w.shape), "bits": q.params.bits,
                       "codec": enc.codec if keep else "raw", "bits_per_weight": 8 * stored / w.size,
                       "error": q.error, "float_bytes": int(w.nbytes), "stored_bytes": stored})
    _print_layers(layers, say)
    settings = {k: v for k, v in summary.items() if k != "sensitivity"}
    provenance = {"source": os.path.basename(src), "source_sha256": file_sha256(src), "optimized": True,
                  "passes": log, "compression": {**settings, "bias_correction": bias_correction, "entropy": entropy,
                                                 "per_tensor": per_tensor}}
    written = save_spore(graph, dst, provenance=provenance, encoded=encoded)
    float_bytes = _float_size(graph, provenance)
    report = {"source": src, "output": dst, **summary, "source_bytes": os.path.getsize(src),
              "float_bytes": float_bytes, "output_bytes": written, "ratio": float_bytes / written,
              "layers": layers, "seconds": round(time.perf_counter() - start, 3)}
    say(f"wrote {dst}: {human_bytes(written)}, {report['ratio']:.2f}x smaller than the float model "
        f"({human_bytes(float_bytes)}); {len(encoded)} of {len(graph.initializers)} tensors quantized")
    if check:
        report["cosine"] = output_cosines(graph, dst, input_shapes or {})
        say("output cosine to float: " + ", ".join(f"{k} {v:.5f}" for k, v in report["cosine"].items()))
    return report


def _search(method: str, graph: Graph, chosen: dict[str, int | None], target_cosine: float, bias_correction: bool,
            shapes: dict, samples: int, calib: list[dict] | None, say) -> tuple[dict, dict]:
    """The mixed-bit searches, both judged by the worst output cosine to float on random sample inputs:
    "mixed" allocates levels globally by sensitivity (allocate.py), "original" holds every tensor to one
    tuned error target (mixed.py)."""
    from ..model import Model
    from ..tools import random_feeds
    from .allocate import Candidates, allocate
    from .mixed import TensorSearch, decoded, tune, with_weights

    reference = Model(graph, "float")
    feeds = calib or [random_feeds(reference, seed, shapes) for seed in range(samples)]
    try:
        expected = [reference.run(f) for f in feeds]
    except SporelingError as e:
        sizes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds[0].items())
        what = "the calibration inputs" if calib else "random inputs"
        raise type(e)(f"compress: the {method} search runs the model on {what} ({sizes}), and it failed; "
                      f"give inputs or input shapes (--calib, --input-shape) that fit it, or use --method fixed: "
                      f"{e}") from e

    def score(qs) -> float:
        model = Model(with_weights(graph, {n: decoded(q, graph.initializers[n].dtype) for n, q in qs.items()}),
                      "candidate")
        return worst_mean_agreement(expected, [model.run(f) for f in feeds])

    say(f"{method} search over {len(chosen)} tensors, for output cosine >= {target_cosine} on {len(feeds)} "
        f"{'calibration' if calib else 'random'} inputs")
    progress = lambda s: say("  " + s)  # noqa: E731
    summary: dict[str, Any] = {"method": method, "target_cosine": target_cosine}
    if method == "original":
        searches = {n: TensorSearch(graph.initializers[n], a, bias_correction) for n, a in chosen.items()}
        summary["target_error"], quantized, worst = tune(searches, score, target_cosine, progress=progress)
    else:
        cands = {n: Candidates(graph.initializers[n], a, bias_correction) for n, a in chosen.items()}
        quantized, worst, sens = allocate(cands, score, target_cosine, progress=progress)
        summary["sensitivity"] = {k: (float(v) if np.isfinite(v) else None) for k, v in sens.items()}
    summary.update(search_cosine=worst, met=worst >= target_cosine)
    if not summary["met"]:
        say(f"  even the finest levels leave the worst cosine at {worst:.5f} < {target_cosine}")
    return quantized, summary


def load_calibration(calib) -> list[dict] | None:
    """Sample feeds from a list of dicts, an .npz (one sample per row of every array), or a folder of
    .npz files (one sample each)."""
    if calib is None or isinstance(calib, list):
        return calib or None
    path = os.fspath(calib)
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".npz")) \
        if os.path.isdir(path) else [path]
    if not files:
        raise SporelingError(f"{path}: no .npz files of calibration inputs")
    samples = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise SporelingError(f"{f}: not a readable .npz of calibration inputs ({e})") from None
        if os.path.isdir(path):
            samples.append(arrays)
        else:
            rows = {len(a) for a in arrays.values()}
            if len(rows) != 1:
                raise SporelingError(f"{f}: every array needs the same number of samples (rows), got {sorted(rows)}")
            samples += [{k: a[i] for k, a in arrays.items()} for i in range(rows.pop())]
    return samples


def _print_layers(layers: list[dict], say) -> None:
    for x in layers:
        say(f"  {x['name'][:48]:<48} {str(x['shape']):<20} {x['bits']:>2}-bit codes -> "
            f"{x['bits_per_weight']:5.2f} b/w ({x['codec']})  error {x['error']:.4f}")


def _float_size(graph: Graph, provenance: dict) -> int:
    """The size of the same optimized graph saved with float weights: what the ratio is against."""
    from ..format import save_spore

    with tempfile.TemporaryDirectory() as tmp:
        return save_spore(graph, os.path.join(tmp, "float.spore"), provenance=provenance)


def output_cosines(graph: Graph, dst: str, shapes: dict, seed: int = 0) -> dict[str, float]:
    """Cosine similarity of each output of the compressed file to the float graph, on random inputs."""
    from ..model import Model, load
    from ..tools import random_feeds

    compressed = load(dst)
    feeds = random_feeds(compressed, seed, shapes)
    ref = Model(graph, "float").run(feeds)
    got = compressed.run(feeds)
    return {k: cosine(np.asarray(v), np.asarray(got[k])) for k, v in ref.items()}


SMALL_OUTPUT = 8  # outputs of fewer values are judged joined over the inputs


def worst_mean_agreement(expected: list[dict], got: list[dict]) -> float:
    """The figure the searches hold to the target: per output, the mean over the sample inputs of
    agreement(); then the worst output. The mean, as the target is judged: a probability output (PP-OCR
    rec's per-step softmax) flips a near-tie between two characters on some tiny change, which drops one
    input's cosine by a few hundredths at any bit width; the worst single input would be a coin toss.
    An output of fewer than SMALL_OUTPUT values (a face score) has a cosine of +-1 on its own, so its
    values over all inputs are joined and judged as one vector, as benchmarks/compression.py does."""
    worst = 1.0
    for k in expected[0]:
        refs, outs = [np.asarray(r[k]) for r in expected], [np.asarray(o[k]) for o in got]
        if refs[0].size < SMALL_OUTPUT:
            value = agreement(np.concatenate([r.ravel() for r in refs]), np.concatenate([o.ravel() for o in outs]))
        else:
            value = float(np.mean([agreement(r, o) for r, o in zip(refs, outs)]))
        worst = min(worst, value)
    return worst


def agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """What the searches hold to the target: the cosine similarity, and for an output dominated by a
    common offset (|mean| above the standard deviation) the smaller of that and the cosine of both
    outputs centred on the float output's mean. Cosine alone forgives large errors on top of a big
    offset (landmark coordinates around 100 px keep a cosine of 0.996 while moving 18 px); centring an
    output that is mostly small noise around zero (a text-probability map of a photo without text)
    would judge that noise alone."""
    plain = cosine(ref, got)
    if ref.dtype.kind not in "fc" or ref.size < 2:
        return plain
    work = ref.astype(np.float64)
    mean, spread = float(work.mean()), float(work.std())
    if not abs(mean) > spread:
        return plain
    return min(plain, cosine(work - mean, got.astype(np.float64) - mean))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):  # NaN in an output: agreement only if identical
        return 1.0 if np.array_equal(a, b, equal_nan=True) else 0.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))

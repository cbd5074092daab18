"""sporeling.compress: a model in, a .spore with quantized, entropy-coded weights out, with no dataset.

The source is read and optimized as by convert (BatchNorm folded into the weights first, so what is
quantized is what runs). Every weight worth it (should_quantize: float, 2-D or more, big enough) is
quantized per output channel (or per tensor), bias-corrected, and stored as the smallest of bit-packed
codes, FSE-coded codes and its float self. The report lists, per weight, the bits, the bits per weight
after coding and the relative RMS error, and in total the sizes and the ratio; with check (the default)
the compressed model and the float one run on the same seeded random input and each output's cosine
similarity is reported. The initializers of If/Loop/Scan bodies are compressed too (silero-vad keeps its
weights there), when their names are unique.

The float tensors left (biases, normalization parameters, tensors too small to quantize) are stored as
float16 when float16 holds them exactly; the searches also round the float32 ones that arithmetic reads
to float16 (encode.half_candidates), judged like the quantized weights and kept only when that alone costs
at most HALF_SHARE of the output error the target allows (PP-OCR cls: 12% smaller).

Methods: "fixed" gives every weight `bits` bits. "mixed" (the default) allocates levels per tensor by
measured sensitivity (allocate.py), each channel's step proportional to its RMS (mixed.quantize_step),
for the smallest model whose outputs keep `target_cosine` to the float model's, or, with `target_size`,
the least distortion within that size. "original" is MindSpore Lite's search (mixed.py): one error
target per tensor met by the coarsest step, the target tuned for `target_cosine`. The searches judge on
seeded random inputs (judge.py), and on the calibration inputs too when given, each group held to the target
apart (a recurrent model on its calibration stream alone). A model that keeps BatchNormalization statistics
and normalises nothing at run time is judged on inputs distilled from those statistics in place of the random
ones, alone or beside the calibration inputs (distill.py). The mixed search codes a dense layer over a flattened
feature map as the DCT of its weights along the map's positions where those code smaller (dct.py; rounding to
nearest only). With calibration inputs,
rounding="gptq" rounds the weights the search allocated GPTQ-style (gptq.py) and keeps that only where it
measures better. The mixed search's default rounding, "sums", rounds the 2-D convolution kernels that mix input
channels keeping each input channel's kernel sum, their response to a flat patch (mixed.kept_sums), with or
without calibration inputs; "nearest" rounds every weight to its nearest level.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import IO, Any

import numpy as np

from ..errors import SporelingError
from ..format.codecs_quant import encode_half
from ..ir import Graph
from ..tools import human_bytes
from .encode import channel_axes, conv_windows, encode, half_candidates, quantize_tensor
from .distill import DISTILL_SAMPLES
from .judge import (STREAM_SAMPLES, feedback_pairs, load_calibration, output_cosines, run_stream, sample_feeds,
                    symbolic_inputs, symbolic_note, worst_mean_agreement)
from .quantize import MIN_QUANT_WEIGHT_SIZE, should_quantize

METHODS = ("mixed", "original", "fixed")
ROUNDINGS = ("nearest", "gptq", "sums")
HALF_SHARE = 0.05  # float tensors go to float16 when that alone takes at most this share of the output error allowed
MB = 1_000_000  # target_size is in decimal megabytes, as model sizes are quoted


def compress(src: str | os.PathLike, dst: str | os.PathLike, *, method: str = "mixed", bits: int = 8,
             target_cosine: float = 0.995, target_size: float | None = None, bias_correction: bool = True,
             entropy: bool = True, per_tensor: bool = False, min_size: int | None = None,
             input_shapes: dict[str, tuple[int, ...]] | None = None, inputs: dict[str, Any] | None = None,
             samples: int = 4, seed: int = 0, calib: str | os.PathLike | list[dict] | None = None,
             rounding: str | None = None, distill: bool | None = None, dct: bool = True,
             feedback: dict[str, str] | None = None, plot: str | None = None,
             check: bool = True, verbose: bool = True, stream: IO[str] | None = None) -> dict[str, Any]:
    """Compresses `src` into the .spore file `dst`; returns the report (see the module docstring).
    target_size: MB (10**6 bytes) for the whole file; the mixed method then minimises output error within it.
    input_shapes: shapes for the random sample inputs (symbolic dimensions), not fixed into the model.
    inputs: values some inputs always take in the samples (e.g. {"sr": 16000}); the rest are random.
    samples, seed: how many random sample inputs the searches judge on, and the seed they are drawn from. The
    search ends where its last measurements pass or fail on them, so another seed gives another draw: up
    to a third in size on a small model, and on some a different cosine on real inputs (benchmarks/README.md
    measures three seeds); more samples vary less and cost time.
    distill: judge the searches on inputs distilled from the model's BatchNormalization statistics (distill.py;
    max(samples, DISTILL_SAMPLES) of them) in place of the random ones, beside the calibration inputs if any.
    None (the default): where distill.distill_refusal finds nothing against it (the statistics are there, one
    float input, no layer normalising at run time): closer to real inputs than noise, in both directions
    (PP-OCR det and cls: files 23% and 26% smaller at the cosine on real inputs; two BatchNorm CNNs trained on
    Fashion-MNIST: files 15-29% larger, where noise lost the accuracy of one); True: wherever the statistics
    are, PP-OCR rec's LayerNorms too (there it judged far too leniently: real cosine 0.982-0.992 at three
    seeds; benchmarks/README.md); False: never.
    Costs the distillation's forward and backward passes (about 40 s for PP-OCR det at 192x384 on one core).
    calib: sample inputs to judge the searches on (a list of feed dicts, an .npz whose arrays, keyed by input
    name, hold one sample per row, or a folder of such .npz files); the random samples (or distilled ones, see
    distill) are judged beside them, of the first one's shapes and with its non-float inputs, and both groups
    must keep the target (_random_beside);
    a recurrent model is judged on its calibration stream alone, and so is any model with samples=0 (for a
    calibration set large and varied enough that it is not fitted: a handful of inputs is).
    rounding: None (the default): "sums" for the mixed method, "nearest" for the others. "nearest": every weight
    to its nearest level, bias-corrected. "gptq" with calib and the mixed method: GPTQ on the layer statistics
    of the calibration inputs and the random ones judged beside them, so that it reaches the target with
    coarser levels on both (benchmarks/README.md: smaller files than rounding to nearest on the trained
    models, and they keep the target on held-out real inputs; on either group alone it fits that group).
    Distilled inputs beside the calibration ones stay out of its statistics: it fits them too.
    "sums", the mixed method only: rounding to nearest, but each 2-D convolution kernel that mixes input
    channels (encode.conv_windows) keeps every input channel's kernel sum, the kernel's response to a uniform
    patch, which real images are full of and white noise never shows (mixed.kept_sums; no bias correction on
    those kernels). The random-input judge cannot see that gain and sees the slightly larger weight error, so the
    files may come out slightly larger; on Fashion-MNIST's CNN the real cosine rose from 0.9945 to 0.9984 at one
    size, on PP-OCR det from 0.9987 to 0.9990, and over three seeds of the eight trained models the data-free
    search kept the target 23 times of 24 against 20, at 10.02x mean ratio against 10.04x (benchmarks/README.md).
    dct: let the mixed search store a dense layer over a flattened feature map as the codes of its weights' DCT
    along the map's positions where they code smaller (dct.py; a format 1.4 feature); False: never.
    feedback: a recurrent model's state, output name -> input name, that the searches carry from one sample
    input to the next, judging the model over a stream as it runs (the calibration inputs in their order, or
    STREAM_SAMPLES random ones from a zero state). None (the default) finds it (judge.feedback_pairs: Silero's
    stateN -> state); {} judges every input on its own.
    plot: a .png of every allocation the search measured (size against output agreement)."""
    from ..model import load_graph
    from ..passes import optimize, recorded
    from ..tools import file_sha256

    src, dst = os.fspath(src), os.fspath(dst)
    say = (lambda s: print(s, file=stream or sys.stdout, flush=True)) if verbose else (lambda s: None)
    rounding = rounding or ("sums" if method == "mixed" else "nearest")
    _check_options(method, bits, target_cosine, target_size, plot, rounding, calib is not None, samples)
    min_size = MIN_QUANT_WEIGHT_SIZE if min_size is None else int(min_size)
    start = time.perf_counter()
    graph = load_graph(src)
    feeds = None if method == "fixed" else load_calibration(calib)
    distilled = None
    # distilled inputs take the random ones' place, alone or beside the calibration ones
    if distill is not False and method != "fixed" and (feeds is None or samples > 0):
        distilled = _distilled(graph, bool(distill), feeds, input_shapes or {}, inputs,
                               max(samples, DISTILL_SAMPLES), seed, say)
    log: list[dict] = []
    optimize(graph, log)
    axes = channel_axes(graph)
    weights = graph.named_initializers()  # If/Loop/Scan bodies' too (silero-vad keeps its weights there)
    chosen = {}
    for name, w in weights.items():
        axis = None if per_tensor else axes.get(name, 0)
        if should_quantize(name, w, min_size, axis=axis or 0):
            chosen[name] = axis
    provenance = {"source": os.path.basename(src), "source_sha256": file_sha256(src), "optimized": True,
                  "passes": recorded(log)}
    float_bytes = _float_size(graph, provenance)
    if method == "fixed":
        quantized = {n: quantize_tensor(weights[n], bits, a, bias_correction=bias_correction)
                     for n, a in chosen.items()}
        summary: dict[str, Any] = {"method": method, "rounding": rounding, "bits": bits}
        layers, halved, written = _write(graph, quantized, summary, provenance, dst, entropy,
                                         bias_correction, per_tensor, say)
    else:
        # Bytes the quantized tensors do not decide: the graph, the float tensors, the file's framing.
        fixed_bytes = float_bytes - sum(weights[n].nbytes for n in chosen)
        if target_size is not None and target_size * MB <= fixed_bytes:
            raise SporelingError(f"compress: {target_size} MB cannot be met: the graph and the float tensors "
                                 f"alone take {fixed_bytes / MB:.3f} MB")
        source, over = graph, 0
        for attempt in range(SIZE_RETRIES + 1):
            budget = None if target_size is None else target_size * MB - fixed_bytes - over
            graph, weights = source, source.named_initializers()
            halves = half_candidates(graph, chosen)
            quantized, summary, halves = _search(method, graph, weights, chosen, target_cosine, budget,
                                                 bias_correction, input_shapes or {}, inputs, samples, seed, feeds,
                                                 rounding, feedback, halves, say, distilled, dct)
            if halves:  # stored as float16 below (encode_half), judged so by the search
                from .mixed import with_weights

                graph = with_weights(graph, halves)
                weights = graph.named_initializers()
            for p in summary.get("curve", []):
                p["file_bytes"] = p["code_bytes"] + fixed_bytes - sum(w.nbytes // 2 for w in halves.values())
            layers, halved, written = _write(graph, quantized, summary, provenance, dst, entropy,
                                             bias_correction, per_tensor, say)
            excess = 0 if target_size is None else written - int(target_size * MB)
            if excess <= 0 or attempt == SIZE_RETRIES or sum(x["stored_bytes"] for x in layers) > budget:
                break  # within the target; or the codes alone are over it: the search found nothing smaller
            # the file's own overhead (each tensor's entry, FSE's tables, the settings) ran past the estimate
            over += excess
            say(f"  {excess} B over {target_size} MB: searching again with {over} B less for the codes")
        if target_size is not None:
            summary["within_target_size"] = excess <= 0
            if excess > 0:
                say(f"  the file is {excess} B over {target_size} MB: no allocation the search knows codes smaller")
    report = {"source": src, "output": dst, **summary, "source_bytes": os.path.getsize(src),
              "half_saved_bytes": halved, "float_bytes": float_bytes, "output_bytes": written,
              "ratio": float_bytes / written, "layers": layers, "seconds": round(time.perf_counter() - start, 3)}
    say(f"wrote {dst}: {human_bytes(written)}, {report['ratio']:.2f}x smaller than the float model "
        f"({human_bytes(float_bytes)}); {sum(x['codec'] != 'raw' for x in layers)} of {len(weights)} tensors "
        f"quantized")
    if plot:
        from .plot import plot_curve

        plot_curve(report, plot)
        say(f"wrote {plot}")
    if check:
        if method == "fixed" and (loose := symbolic_inputs(
                [v for v in graph.inputs if v.name not in graph.initializers], input_shapes or {}, inputs)):
            say(symbolic_note(loose))
        report["cosine"] = output_cosines(graph, dst, input_shapes or {}, inputs)
        say("output cosine to float: " + ", ".join(f"{k} {v:.5f}" for k, v in report["cosine"].items()))
    return report


SIZE_RETRIES = 2  # searches again, with the excess off the budget, when a --target-size file comes out over it


def _write(graph, quantized: dict, summary: dict, provenance: dict, dst: str, entropy: bool, bias_correction: bool,
           per_tensor: bool, say) -> tuple[list[dict], int, int]:
    """Encodes the quantized tensors (and float16 ones where that is exact), says the per-layer table and
    writes the file: (the layers' rows, bytes saved by float16, bytes written)."""
    from ..format import save_spore

    weights = graph.named_initializers()
    layers, encoded = [], {}
    for name, q in quantized.items():
        w = weights[name]
        enc = encode(q, entropy)
        keep = len(enc.payload) < w.nbytes
        if keep:
            encoded[name] = enc
        stored = len(enc.payload) if keep else w.nbytes
        layers.append({"name": name, "shape": list(w.shape), "bits": q.params.bits, "dct": keep and q.dct is not None,
                       "codec": enc.codec if keep else "raw", "bits_per_weight": 8 * stored / w.size,
                       "error": q.error, "float_bytes": int(w.nbytes), "stored_bytes": stored})
    halved = 0
    # float32 holding float16 values (a folded Cast, or a float tensor the search rounded): float16 bytes
    for name, w in weights.items():
        half = None if name in quantized else encode_half(w)
        if half is not None:
            encoded[name], halved = half, halved + w.nbytes // 2
    _print_layers(layers, say)
    if halved:
        say(f"  {human_bytes(halved)} saved by storing float32 tensors whose values float16 holds exactly in "
            f"float16" + (f" ({summary['float16_tensors']} of them rounded to it)" if summary.get("float16_tensors")
                          else ""))
    settings = {k: v for k, v in summary.items() if k not in ("sensitivity", "curve")}
    provenance["compression"] = {**settings, "bias_correction": bias_correction, "entropy": entropy,
                                 "per_tensor": per_tensor}
    return layers, halved, save_spore(graph, dst, provenance=provenance, encoded=encoded)


def _check_options(method: str, bits: int, target_cosine: float, target_size: float | None, plot: str | None,
                   rounding: str, calibrated: bool, samples: int = 1):
    if method not in METHODS:
        raise SporelingError(f"compress: method must be one of {', '.join(METHODS)}, not {method!r}")
    if method == "fixed" and not 1 <= int(bits) <= 16:
        raise SporelingError(f"compress: bits must be from 1 to 16, not {bits}")
    least = 0 if calibrated else 1  # 0: judged on the calibration inputs alone
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < least:
        hint = "0: judged on the calibration inputs alone" if calibrated else "or 0 with calib"
        raise SporelingError(f"compress: samples must be a whole number of at least {least} ({hint}), not {samples!r}")
    if not 0 < target_cosine <= 1:
        raise SporelingError(f"compress: target cosine must be in (0, 1], not {target_cosine}")
    if target_size is not None and (method != "mixed" or not target_size > 0):
        raise SporelingError("compress: a target size needs --method mixed and a positive size in MB, not "
                             f"{method} and {target_size}")
    if plot is not None and method != "mixed":
        raise SporelingError(f"compress: --plot draws the mixed search's measurements; --method {method} has none")
    if rounding not in ROUNDINGS or (rounding == "gptq" and not (calibrated and method == "mixed")) or \
            (rounding == "sums" and method != "mixed"):
        raise SporelingError(f"compress: rounding is one of {', '.join(ROUNDINGS)}; gptq needs --calib and --method "
                             f"mixed, sums --method mixed; not {rounding!r} with method {method}"
                             f"{'' if calibrated else ' and no calib'}")


def _search(method: str, graph: Graph, weights: dict[str, np.ndarray], chosen: dict[str, int | None],
            target_cosine: float, budget: float | None, bias_correction: bool, shapes: dict, inputs: dict | None,
            samples: int, seed: int, calib: list[dict] | None, rounding: str, feedback: dict | None, halves: dict,
            say, distilled: tuple[list[dict], dict] | None = None, dct: bool = True) -> tuple[dict, dict, dict]:
    """The mixed-bit searches, judged by worst_mean_agreement on the sample inputs (a recurrent model's as a
    stream, its state fed back): "mixed" allocates levels globally by sensitivity (allocate.py), "original"
    holds every tensor to one tuned error target (mixed.py). halves: the float tensors rounded to float16
    (encode.half_candidates); they are kept, and every candidate is judged with them, when they alone cost
    at most HALF_SHARE of the target's output error. distilled: (feeds, what the distillation did) to judge on
    in place of the random inputs (distill.py). Returns (quantized, summary, the halves kept)."""
    from ..model import Model
    from .allocate import UNREACHED_LEVELS, Candidates, allocate
    from .mixed import TensorSearch, decoded, tune, with_weights

    reference = Model(graph, "float")
    feeds = calib or (distilled[0] if distilled else sample_feeds(reference, shapes, samples, inputs, seed))
    kind = "calibration" if calib else "distilled" if distilled else "random"
    loose = [] if calib else symbolic_inputs(reference.inputs, shapes, inputs)
    if loose:
        say(symbolic_note(loose))
    def failed(e: SporelingError):
        sizes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds[0].items())
        what = f"{kind} inputs"
        return type(e)(f"compress: the {method} search runs the model on {what} ({sizes}), and it failed; "
                       f"give inputs or input shapes (--calib, --input, --input-shape) that fit it, or use "
                       f"--method fixed: {e}")

    try:
        first = reference.run(feeds[0])
    except SporelingError as e:
        raise failed(e) from e
    pairs = _feedback(feedback, feeds[0], first)
    if pairs:  # a stream from a zero state (random samples) or from the first calibration input's state
        if not calib and (distilled or len(feeds) < STREAM_SAMPLES):  # a stream: from random inputs
            feeds, kind, distilled = sample_feeds(reference, shapes, max(STREAM_SAMPLES, samples), inputs, seed), \
                "random", None
        states = set(pairs.values())
        feeds = [{**feeds[0], **({} if calib else {k: np.zeros_like(feeds[0][k]) for k in states})}] + \
            [{k: v for k, v in f.items() if k not in states} for f in feeds[1:]]
    fed: list[dict] = []  # the feeds as the float model saw them, its state carried (GPTQ's statistics)
    try:
        expected = run_stream(reference, feeds, pairs, fed)
    except SporelingError as e:
        raise failed(e) from e
    # each group of sample inputs is held to the target on its own: (kind, feeds, the float outputs)
    groups = [(kind, feeds, expected)]
    if calib and not pairs and samples > 0:
        if distilled:
            groups.append(("distilled", distilled[0], [reference.run(f) for f in distilled[0]]))
        elif extra := _random_beside(reference, calib, shapes, inputs, samples, seed, say):
            groups.append(("random", *extra))
    if distilled and all(kind != "distilled" for kind, _, _ in groups):  # a stream: judged on random inputs
        distilled = None

    def agreement_with(replaced: dict) -> float:
        model = Model(with_weights(graph, replaced), "candidate")
        return min(worst_mean_agreement(want, run_stream(model, fs, pairs)) for _, fs, want in groups)

    if halves:
        value = agreement_with(halves)
        saved = sum(w.nbytes // 2 for w in halves.values())
        if 1.0 - value <= HALF_SHARE * (1.0 - target_cosine):
            say(f"  {len(halves)} float tensors go to float16 ({human_bytes(saved)} saved): worst output "
                f"agreement {value:.6f}")
        else:
            say(f"  the float tensors stay float32: float16 alone leaves the worst output agreement at {value:.6f}")
            halves = {}

    def score(qs, halves=halves) -> float:
        return agreement_with({**halves, **{n: decoded(q, weights[n].dtype) for n, q in qs.items()}})

    def probe(qs) -> float:  # a sensitivity probe: the one tensor quantized, every other float as it was
        return score(qs, {})

    goal = f"least output error within {budget / 1024:.0f} KiB of codes" if budget is not None else \
        f"output cosine >= {target_cosine}"
    stream = f", as a stream feeding {', '.join(f'{o} into {i}' for o, i in pairs.items())}" if pairs else ""
    judged = {kind: len(fs) for kind, fs, _ in groups}
    on = " and, apart, ".join(f"{n} {kind} inputs" for kind, n in judged.items())
    say(f"{method} search over {len(chosen)} tensors, for {goal} on {on}{stream}")
    progress = lambda s: say("  " + s)  # noqa: E731
    summary: dict[str, Any] = {"method": method, "target_cosine": target_cosine, "rounding": rounding,
                               "feedback": pairs, "judged_on": judged}
    if distilled:
        summary["distilled"] = distilled[1]
    if method == "original":
        searches = {n: TensorSearch(weights[n], a, bias_correction) for n, a in chosen.items()}
        summary["target_error"], quantized, worst = tune(searches, score, target_cosine, progress=progress)
    else:
        # GPTQ weighs each layer's inputs as the judged samples show them: calibration and random ones alike,
        # so that its rounding serves both groups the search holds to the target. Not distilled ones: GPTQ fits
        # what it sees, and fitted they stop being a check (PP-OCR det lost its held-out cosine, 0.9900)
        stats = fed + [f for kind, fs, _ in groups[1:] if kind != "distilled" for f in fs]
        rounders = _gptq_rounders(graph, chosen, stats, bias_correction, say) if rounding == "gptq" else {}
        transforms = _transforms(graph, weights, {n: a for n, a in chosen.items() if n not in rounders}, feeds[0],
                                 bias_correction, say) if dct else {}
        if transforms:
            summary["dct"] = {n: {"view": list(v), "axes": list(a)} for n, (v, a) in transforms.items()}
        windows = {n: k for n, k in conv_windows(graph, feeds[0]).items() if n in chosen and chosen[n] == 0} \
            if rounding == "sums" else {}
        if windows:
            summary["kernel_sums"] = sorted(windows)
            say(f"  {len(windows)} convolution kernels rounded keeping each input channel's kernel sum")
        cands = {n: Candidates(weights[n], a, bias_correction, rounders.get(n), transforms.get(n), windows.get(n, 1))
                 for n, a in chosen.items()}
        found = allocate(cands, score, target_cosine, progress=progress, budget=budget, probe=probe)
        quantized, worst = found.quantized, found.value
        summary["sensitivity"] = {k: (float(v) if np.isfinite(v) else None) for k, v in found.sensitivity.items()}
        summary["curve"] = found.curve
        if found.unreached:
            summary["unreached"] = found.unreached
            say(f"  {len(found.unreached)} tensors change no output on these samples (a branch they never take): "
                f"they get {UNREACHED_LEVELS} levels, not a judged width")
    summary.update(search_cosine=float(worst), met=bool(worst >= target_cosine))
    if budget is not None:
        summary["target_size_code_bytes"] = budget
    elif not summary["met"]:
        say(f"  even the finest levels leave the worst cosine at {worst:.5f} < {target_cosine}")
    summary["float16_tensors"] = len(halves)
    return quantized, summary, halves


def _distilled(graph: Graph, asked: bool, calib: list[dict] | None, shapes: dict, inputs: dict | None,
               samples: int, seed: int, say) -> tuple[list[dict], dict] | None:
    """Inputs distilled from the graph's BatchNormalization statistics (before they fold) where the model
    qualifies (distill.distill_refusal; `asked`: despite layers normalising at run time), of the shapes the
    random ones would take: beside calibration inputs, the first one's, with its non-float inputs fixed."""
    from .distill import batchnorm_statistics, distill_refusal, distilled_feeds

    if calib:
        shapes, inputs = _beside(calib[0], shapes, inputs)
    refusal = distill_refusal(graph, inputs, asked=asked)
    if refusal is None:
        if not asked:
            say("the model normalises with BatchNormalization alone: judged on inputs distilled from its statistics "
                "(--no-distill: on random ones)")
        return distilled_feeds(graph, shapes, inputs, samples, seed=seed, say=say)
    if asked or batchnorm_statistics(graph):
        say(f"random inputs judge, not distilled ones: {refusal}")
    return None


def _beside(first: dict, shapes: dict, inputs: dict | None) -> tuple[dict, dict]:
    """The shapes and fixed inputs of samples judged beside calibration inputs: each float input of the first
    one's shape (unless `shapes` says), its other inputs (settings, token ids) as they are, with `inputs`."""
    floats = {k: np.shape(v) for k, v in first.items() if np.asarray(v).dtype.kind == "f"}
    return {**floats, **shapes}, {**{k: v for k, v in first.items() if k not in floats}, **(inputs or {})}


def _random_beside(reference, calib: list[dict], shapes: dict, inputs: dict | None, samples: int, seed: int,
                   say) -> tuple[list[dict], list[dict]] | None:
    """Random sample inputs (and the float model's outputs on them) judged beside the calibration inputs: of
    the first calibration input's shapes, its non-float inputs (settings, token ids) as they are. A handful of
    calibration inputs is fitted, not sampled: the smallest model that keeps the target on them can miss it on
    the next input (benchmarks/README.md: PP-OCR det, rec and cls calibrated on half their real inputs missed
    on the other half). Random inputs reach every channel. None where the model has no float input, or where
    the float model gives random inputs non-finite outputs."""
    if all(np.asarray(v).dtype.kind != "f" for v in calib[0].values()):
        return None  # token ids and settings only: random samples would repeat the first calibration input
    shapes, fixed = _beside(calib[0], shapes, inputs)
    try:
        feeds = sample_feeds(reference, shapes, samples, fixed, seed)
        with np.errstate(all="ignore"):
            expected = [reference.run(f) for f in feeds]
    except SporelingError as e:
        say(f"  the random inputs beside the calibration ones fail to run ({e}): judged on the calibration alone")
        return None
    if not all(np.isfinite(np.asarray(v)).all() for out in expected for v in out.values()
               if np.asarray(v).dtype.kind == "f"):
        say("  the float model gives random inputs non-finite outputs: judged on the calibration inputs alone")
        return None
    return feeds, expected


def _feedback(feedback: dict | None, feed: dict, out: dict) -> dict[str, str]:
    """The state pairs (output -> input) to carry: found from one run when not given, checked when given."""
    if feedback is None:
        return feedback_pairs(feed, out)
    for o, i in feedback.items():
        if o not in out or i not in feed:
            raise SporelingError(f"compress: feedback {o}={i} needs an output {o!r} and an input {i!r} (outputs: "
                                 f"{', '.join(out)}; inputs: {', '.join(feed)})")
    return dict(feedback)


def _gptq_rounders(graph: Graph, chosen: dict, calib: list[dict], bias_correction: bool, say) -> dict:
    """name -> levels -> GPTQ-rounded codes (gptq.py), for the weights GPTQ can take: the graph's own,
    read by a Conv/Gemm/MatMul whose inputs the feeds (the calibration inputs and the random ones judged
    beside them) show in enough rows."""
    from .gptq import Calibrated

    start = time.perf_counter()
    top = {n: a for n, a in chosen.items() if n in graph.initializers}
    cal = Calibrated(graph, top, calib, bias_correction=bias_correction)
    usable = [n for n in top if cal.takes(n)]
    say(f"  GPTQ rounding: input statistics of {len(usable)} of {len(chosen)} tensors from {len(calib)} "
        f"sample inputs in {time.perf_counter() - start:.1f} s (the rest round to nearest)")
    return {n: (lambda levels, n=n: cal.quantize(n, levels)) for n in usable}


def _transforms(graph: Graph, weights: dict, chosen: dict, feed: dict, bias_correction: bool, say) -> dict:
    """name -> (view, axes) for the dense weights after a flatten whose DCT coefficients code smaller than
    they do (dct.py), judged per tensor."""
    from . import dct

    start = time.perf_counter()
    found = {}
    for name, (view, candidates) in dct.views(graph, chosen, feed).items():
        axes = dct.choose(weights[name], chosen[name], view, candidates, bias_correction)
        if axes is not None:
            found[name] = (view, axes)
            say(f"  {name}: its codes are of its DCT along {[view[a] for a in axes]} of its view {list(view)}, "
                f"which code smaller than the weights do ({time.perf_counter() - start:.1f} s)")
    return found


def _print_layers(layers: list[dict], say) -> None:
    for x in layers:
        codec = x["codec"] + (", of its DCT" if x.get("dct") else "")
        say(f"  {x['name'][:48]:<48} {str(x['shape']):<20} {x['bits']:>2}-bit codes -> "
            f"{x['bits_per_weight']:5.2f} b/w ({codec})  error {x['error']:.4f}")
    if layers:
        count = sum(int(np.prod(x["shape"])) for x in layers)
        stored = sum(x["stored_bytes"] for x in layers)
        mean_error = sum(x["error"] * np.prod(x["shape"]) for x in layers) / max(count, 1)
        say(f"  total: {len(layers)} tensors, {count:,} weights, {human_bytes(sum(x['float_bytes'] for x in layers))} "
            f"-> {human_bytes(stored)}, {8 * stored / max(count, 1):.2f} bits per weight, "
            f"weighted mean error {mean_error:.4f}")


def _float_size(graph: Graph, provenance: dict) -> int:
    """The size of the same optimized graph saved with float weights: what the ratio is against."""
    from ..format import save_spore

    with tempfile.TemporaryDirectory() as tmp:
        return save_spore(graph, os.path.join(tmp, "float.spore"), provenance=provenance)

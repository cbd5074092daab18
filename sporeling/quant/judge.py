"""How the searches and the check judge a compressed model: its outputs against the float model's.

agreement() is the cosine similarity of one output to the float one (and, for an output dominated by a
common offset, the cosine of both centred too); worst_mean_agreement() is the figure every search holds
to its target: per output the mean over the sample inputs, then the worst output. The sample inputs are
seeded random ones of the model's shapes (sample_feeds), with any input the caller fixes (a sample rate)
given its fixed value, and, when given, the calibration inputs too (load_calibration). A recurrent
model's samples are a stream: each step takes the state its own previous step produced (feedback_pairs
finds which output feeds which input, run_stream runs it), so errors that build up in the state count.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import SporelingError
from ..ir import Graph


def sample_feeds(model, shapes: dict, samples: int, fixed: dict | None = None, seed: int = 0) -> list[dict]:
    """`samples` seeded random feeds of the model's input shapes (or `shapes`), with `fixed` inputs set."""
    from ..tools import random_feeds

    fixed = {k: np.asarray(v) for k, v in (fixed or {}).items()}
    unknown = sorted(set(fixed) - {s.name for s in model.inputs})
    if unknown:
        raise SporelingError(f"compress: the model has no input {unknown[0]!r} "
                             f"(its inputs: {', '.join(s.name for s in model.inputs)})")
    return [{**random_feeds(model, seed + i, shapes), **fixed} for i in range(samples)]


def symbolic_inputs(specs, shapes: dict, fixed: dict | None = None) -> list[str]:
    """Of the input specs (name, shape), those with symbolic dimensions that random samples set to 1."""
    return [s.name for s in specs if s.name not in shapes and (fixed or {}).get(s.name) is None
            and any(not isinstance(d, int) for d in (s.shape or ()))]


def symbolic_note(names: list[str]) -> str:
    return (f"note: {', '.join(names)} {'has' if len(names) == 1 else 'have'} symbolic dimensions, which the "
            f"random samples set to 1; a real shape (--input-shape) judges the model as it will run")


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


def output_cosines(graph: Graph, dst: str, shapes: dict, fixed: dict | None = None, seed: int = 0) -> dict[str, float]:
    """Cosine similarity of each output of the compressed file to the float graph, on a random input."""
    from ..model import Model, load

    compressed = load(dst)
    feeds = sample_feeds(compressed, shapes, 1, fixed, seed)[0]
    with np.errstate(all="ignore"), warnings.catch_warnings():  # a 1x1 sample may pool nothing: NaN, said below
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = Model(graph, "float").run(feeds)
        got = compressed.run(feeds)
    return {k: cosine(np.asarray(v), np.asarray(got[k])) for k, v in ref.items()}


# A recurrent model is judged over a stream of this many inputs at least, its state fed back, when no
# calibration inputs are given: errors in the state build up over steps, and one step alone hides them
# (Silero VAD's mixed search judged step by step kept 0.98 on a real audio stream, not 0.995). And long
# enough that one lucky stream does not pass a model: over 16 random steps Silero's speech probability,
# near 0 on noise, is judged on a handful of small values; seeds 0-15 passed an allocation at 0.997 that
# scored 0.85-0.96 on five other 16-step streams and 0.984 on real audio. Over 32 steps the search picks
# a slightly smaller model that keeps 0.998 on the real stream.
STREAM_SAMPLES = 32
_STATE_SUFFIXES = ("out", "in", "new", "next", "prev", "init", "n", "0")


def feedback_pairs(feeds: dict, outputs: dict) -> dict[str, str]:
    """The outputs a recurrent model's caller feeds back as inputs (its state), output -> input, from one run
    (`feeds` -> `outputs`): a float output of the same shape and dtype as a float input whose name is that
    input's with a state suffix (Silero's state -> stateN; h -> hn, c0 -> cn, state_in -> state_out)."""
    pairs: dict[str, str] = {}
    for name, out in outputs.items():
        out = np.asarray(out)
        if out.dtype.kind != "f":
            continue
        for inp, value in feeds.items():
            value = np.asarray(value)
            if (inp not in pairs.values() and inp != name and value.dtype == out.dtype and value.shape == out.shape
                    and _stem(inp) == _stem(name)):
                pairs[name] = inp
                break
    return pairs


def _stem(name: str) -> str:
    stem = "".join(c for c in name.lower() if c.isalnum())
    cut = True
    while cut:
        cut = False
        for suffix in _STATE_SUFFIXES:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                stem, cut = stem[: -len(suffix)], True
    return stem


def run_stream(model, feeds: list[dict], feedback: dict[str, str], fed: list | None = None) -> list[dict]:
    """The model's outputs over the feeds; with feedback, as a stream carrying its own state from each step
    into the next (the first step takes the state its feed holds). `fed`, if given, receives each step's
    complete feeds, carried state included."""
    outs, carry = [], {}
    for f in feeds:
        f = {**f, **carry}
        if fed is not None:
            fed.append(f)
        out = model.run(f)
        outs.append(out)
        carry = {inp: np.asarray(out[o]) for o, inp in feedback.items()}
    return outs


SMALL_OUTPUT = 8  # outputs of fewer values are judged joined over the inputs


def worst_mean_agreement(expected: list[dict], got: list[dict]) -> float:
    """The figure the searches hold to the target: per output, the mean over the sample inputs of
    agreement(), less its standard error; then the worst output. The mean, as the target is judged: a
    probability output (PP-OCR rec's per-step softmax) flips a near-tie between two characters on some
    tiny change, which drops one input's cosine by a few hundredths at any bit width; the worst single
    input would be a coin toss. Less the standard error, because the search picks the smallest model
    that meets the target on these few inputs, and other inputs fall short of such a mean by about that
    much (PP-OCRv4 rec, data-free: held-out real cosine 0.9948 with the plain mean, 0.9971 with this).
    An output of fewer than SMALL_OUTPUT values (a face score) has a cosine of +-1 on its own, so its
    values over all inputs are joined and judged as one vector, as benchmarks/compression.py does, and
    its magnitude is held too (_energy_agreement)."""
    worst = 1.0
    for k in expected[0]:
        refs, outs = [np.asarray(r[k]) for r in expected], [np.asarray(o[k]) for o in got]
        if refs[0].size < SMALL_OUTPUT:
            ref, out = np.concatenate([r.ravel() for r in refs]), np.concatenate([o.ravel() for o in outs])
            value = min(agreement(ref, out), _energy_agreement(ref, out))
        else:
            values = np.array([agreement(r, o) for r, o in zip(refs, outs)])
            value = float(values.mean())
            if len(values) > 1:  # the mean less its standard error: what the next input can expect
                value -= float(values.std(ddof=1) / np.sqrt(len(values)))
        worst = min(worst, value)
    return worst


def _energy_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """1 - |got - ref|^2 / (2 |ref|^2): the cosine the error would leave if it were all at right angles to
    ref, so a change of magnitude counts too. A few joined scalars (one face score per input) have few
    directions to turn in; their cosine alone forgives a score that halves."""
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    energy = float(ref @ ref)
    if not np.isfinite(energy) or not np.isfinite(got).all():
        return 1.0 if np.array_equal(ref, got, equal_nan=True) else 0.0
    if energy == 0:
        return 1.0 if not got.any() else 0.0
    diff = got - ref
    return 1.0 - float(diff @ diff) / (2.0 * energy)


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

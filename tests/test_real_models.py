"""Real published models, run in sporeling and in onnxruntime on the same real-ish inputs.

The models come from scripts/fetch_assets.py (PP-OCRv4 detection and recognition and the PP-OCR
direction classifier from the rapidocr wheel, every Silero VAD variant from the silero-vad wheel);
a test skips when its asset cannot be had. OCR inputs are photos shipped with scikit-image, resized
and normalised the way PP-OCR prepares them; VAD inputs are a synthesised voiced signal cut into
the 512-sample chunks (plus 64 samples of left context) that Silero's own wrapper feeds, run once
from a zero state and then streamed chunk after chunk with each engine carrying its own state.

Every output must agree with onnxruntime within 1e-4 * max(1, max |onnxruntime output|).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import sporeling  # a broken package must fail here, not skip

from .assets import require

ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.assets

SILERO_MODELS = ["silero_vad", "silero_16k_op15", "silero_16k_sequence", "silero_half", "silero_op18_ifless",
                 "silero_openvino_16k"]
SAMPLE_RATE = 16000
CHUNK, CONTEXT = 512, 64  # Silero v5+ at 16 kHz: 512 new samples, each prefixed by the last 64 seen
STATE_FEEDBACK = {"stateN": "state", "hn": "h", "cn": "c"}  # output -> the input it becomes next chunk


# ---- engines ----

@functools.cache
def _ort_session(path: str):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3  # silero's exports carry unused initializers ORT warns about
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


@functools.cache
def _sporeling_model(path: str):
    return sporeling.load(path)


def run_engines(path: str, feeds: dict[str, np.ndarray], ort_feeds: dict | None = None) -> tuple[dict, dict]:
    """(sporeling outputs, onnxruntime outputs) by output name; onnxruntime gets ort_feeds when given."""
    sess = _ort_session(path)
    theirs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, ort_feeds or feeds)))
    ours = _sporeling_model(path).run(feeds)
    return ours, theirs


def assert_outputs_match(ours: dict, theirs: dict, what: str) -> None:
    for name, ref in theirs.items():
        assert name in ours, f"{what}: sporeling gave no output {name!r} (got {sorted(ours)})"
        got = np.asarray(ours[name])
        assert np.isfinite(ref).all(), f"{what}: onnxruntime's {name} is not finite: the input is unfit"
        assert got.dtype == ref.dtype, f"{what}: {name} dtype {got.dtype} vs onnxruntime {ref.dtype}"
        assert got.shape == ref.shape, f"{what}: {name} shape {got.shape} vs onnxruntime {ref.shape}"
        tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
        diff = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
        assert diff <= tol, f"{what}: {name} max abs diff {diff:.3g} > {tol:.3g}"


# ---- PP-OCR inputs ----

def load_photo(name: str) -> np.ndarray:
    """An skimage photo as uint8 BGR (H, W, 3): PP-OCR reads images with OpenCV, so BGR is what its
    models were trained on."""
    image_mod = pytest.importorskip("PIL.Image")
    rgb = np.asarray(image_mod.open(require("img_" + name)).convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _resize(bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    image_mod = pytest.importorskip("PIL.Image")
    return np.asarray(image_mod.fromarray(bgr).resize((width, height), image_mod.BILINEAR), dtype=np.float32)


def det_input(bgr: np.ndarray, limit_side: int = 640) -> np.ndarray:
    """PP-OCR's DetResizeForTest (longest side at most limit_side, both sides rounded to multiples of
    32) then NormalizeImage with the ImageNet mean/std, applied channel by channel to the BGR image."""
    h, w = bgr.shape[:2]
    ratio = min(1.0, limit_side / max(h, w))
    rh, rw = (max(32, int(round(s * ratio / 32)) * 32) for s in (h, w))
    x = _resize(bgr, rh, rw) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def line_input(bgr_crop: np.ndarray, height: int, max_width: int, pad: bool = True) -> np.ndarray:
    """PP-OCR's rec/cls resize: height fixed, width by aspect ratio up to max_width, values to [-1, 1],
    right-padded with zeros to max_width (or left at its own width when pad is False)."""
    h, w = bgr_crop.shape[:2]
    rw = min(max_width, math.ceil(height * w / h))
    x = (_resize(bgr_crop, height, rw) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, max_width if pad else rw), np.float32)
    out[:, :, :rw] = x.transpose(2, 0, 1)
    return out[None]


# ---- OCR tests ----

@pytest.mark.parametrize("photo", ["page", "coffee"])
def test_ppocr_det(photo):
    path = require("ppocr_det")
    x = det_input(load_photo(photo))
    ours, theirs = run_engines(path, {"x": x})
    assert_outputs_match(ours, theirs, f"PP-OCRv4 det on {photo} {x.shape}")


# The title line of skimage's page.png ("Region-based segmentation") and the first body line.
TITLE_LINE = (slice(0, 40), slice(0, 300))
BODY_LINE = (slice(42, 64), slice(0, 384))


@pytest.mark.parametrize("crop,max_width,pad", [(TITLE_LINE, 320, True), (BODY_LINE, 800, False)],
                         ids=["title-320-padded", "body-own-width"])
def test_ppocr_rec(crop, max_width, pad):
    path = require("ppocr_rec")
    x = line_input(load_photo("page")[crop], 48, max_width, pad)
    ours, theirs = run_engines(path, {"x": x})
    assert_outputs_match(ours, theirs, f"PP-OCRv4 rec {x.shape}")


def test_ppocr_rec_keeps_character_metadata():
    """The recogniser's character list travels in the model's metadata; the importer must keep it
    (checked on the imported graph, so it does not wait on kernels)."""
    from sporeling.frontends.onnx import load_onnx

    path = require("ppocr_rec")
    expected = _ort_session(path).get_modelmeta().custom_metadata_map["character"]
    assert len(expected.splitlines()) == 6623
    assert load_onnx(path).metadata.get("character") == expected


@pytest.mark.parametrize("upside_down", [False, True])
def test_ppocr_cls(upside_down):
    path = require("ppocr_cls")
    line = load_photo("page")[TITLE_LINE]
    if upside_down:
        line = np.ascontiguousarray(line[::-1, ::-1])
    x = line_input(line, 48, 192)
    ours, theirs = run_engines(path, {"x": x})
    assert_outputs_match(ours, theirs, f"PP-OCR cls {'180' if upside_down else '0'} deg")


# ---- Silero VAD ----

def voiced_audio(n_samples: int, seed: int = 0) -> np.ndarray:
    """A speech-like float32 signal: a gliding-pitch harmonic source shaped by three vowel-like formants,
    pulsing like syllables, after 64 ms of near-silence, with a little noise throughout."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SAMPLE_RATE
    f0 = 130.0 + 35.0 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    k = np.arange(1, 41)[:, None]
    freqs = k * f0[None, :]
    formants = sum(np.exp(-(((freqs - fc) / bw) ** 2)) for fc, bw in ((700, 130), (1220, 160), (2600, 250)))
    source = np.sum(np.sin(k * phase[None, :]) * (0.2 + formants) / k, axis=0)
    syllables = (t > 0.064) * (0.3 + 0.7 * np.abs(np.sin(np.pi * 4.0 * t)))
    signal = source * syllables
    signal = 0.5 * signal / max(float(np.abs(signal).max()), 1e-6) + 0.003 * rng.standard_normal(n_samples)
    return signal.astype(np.float32)


def audio_frames(n_chunks: int) -> np.ndarray:
    """(n_chunks, CONTEXT + CHUNK): each chunk prefixed with the previous chunk's last CONTEXT samples."""
    audio = np.concatenate([np.zeros(CONTEXT, np.float32), voiced_audio(n_chunks * CHUNK)])
    starts = np.arange(n_chunks) * CHUNK
    return audio[starts[:, None] + np.arange(CONTEXT + CHUNK)[None, :]]


def silero_feeds(path: str, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds for one call, by the model's input names, with every recurrent state zero."""
    feeds = {}
    for inp in _ort_session(path).get_inputs():
        if inp.name == "input":
            feeds["input"] = frames
        elif inp.name == "sr":
            feeds["sr"] = np.array(SAMPLE_RATE, np.int64)
        elif inp.name == "state":
            feeds["state"] = np.zeros((2, 1, 128), np.float32)
        elif inp.name in ("h", "c"):
            feeds[inp.name] = np.zeros((1, 1, 128), np.float32)
        else:
            raise AssertionError(f"unexpected silero input {inp.name}")
    return feeds


def _is_sequence_model(name: str) -> bool:
    return name == "silero_16k_sequence"  # takes (frames, 576) at once, with LSTM h/c instead of state


@pytest.mark.parametrize("name", SILERO_MODELS)
def test_silero_one_chunk(name):
    path = require(name)
    frames = audio_frames(8)[4:5]  # a voiced chunk
    ours, theirs = run_engines(path, silero_feeds(path, frames))
    assert_outputs_match(ours, theirs, f"{name} one chunk")


@pytest.mark.parametrize("name", SILERO_MODELS)
def test_silero_streaming(name):
    """Chunks in order, each engine feeding its own returned state into its next call, so errors that
    accumulate through the recurrence show."""
    path = require(name)
    frames = audio_frames(16)
    calls = np.split(frames, 4) if _is_sequence_model(name) else np.split(frames, len(frames))
    our_feeds = silero_feeds(path, calls[0])
    their_feeds = dict(our_feeds)
    speech_seen = []
    for step, chunk in enumerate(calls):
        our_feeds["input"] = their_feeds["input"] = chunk
        ours, theirs = run_engines(path, our_feeds, their_feeds)
        assert_outputs_match(ours, theirs, f"{name} streaming call {step}")
        for out_name, in_name in STATE_FEEDBACK.items():
            if out_name in theirs:
                our_feeds[in_name] = np.asarray(ours[out_name])
                their_feeds[in_name] = theirs[out_name]
        speech_seen.append(float(np.max(theirs["speech_probs" if _is_sequence_model(name) else "output"])))
    # The state really changes the outcome: the stream must not be a sequence of identical answers.
    assert max(speech_seen) > min(speech_seen)

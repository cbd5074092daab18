"""`sporeling demo`: PP-OCRv4's text recognizer reads a rendered line of text.

The image is preprocessed as PaddleOCR does (height 48, aspect kept, width padded to 320, pixels
scaled to [-1, 1]); the model's per-column class scores are decoded by CTC greedy decoding (take
the best class per column, merge repeats, drop the blank) with the character dictionary kept in
the model's metadata.
"""

from __future__ import annotations

import sys

import numpy as np

from .bench import ort_session
from .errors import SporelingError
from .tools import median_ms, timed

HEIGHT, WIDTH = 48, 320


def _pil():
    try:
        import PIL.Image
        import PIL.ImageDraw
        import PIL.ImageFont
    except ImportError:
        raise SporelingError("the demo draws its text with Pillow: pip install 'sporeling[all]'") from None
    return PIL


def render_text(text: str, height: int = HEIGHT) -> np.ndarray:
    """A grey image of black text on white, as a camera crop of a printed line would look."""
    pil = _pil()
    Image, ImageDraw, ImageFont = pil.Image, pil.ImageDraw, pil.ImageFont

    font = ImageFont.load_default(size=int(height * 0.7))
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("RGB", (right - left + 16, height), "white")
    ImageDraw.Draw(img).text((8 - left, (height - (bottom - top)) // 2 - top), text, fill="black", font=font)
    return np.asarray(img)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    Image = _pil().Image

    h, w = rgb.shape[:2]
    new_w = min(WIDTH, max(1, int(np.ceil(HEIGHT * w / h))))
    img = np.asarray(Image.fromarray(rgb).resize((new_w, HEIGHT), Image.BILINEAR), np.float32)
    x = np.zeros((1, 3, HEIGHT, WIDTH), np.float32)
    x[0, :, :, :new_w] = (img.transpose(2, 0, 1)[::-1] / 255.0 - 0.5) / 0.5  # RGB -> BGR, as Paddle reads
    return x


def ctc_decode(probs: np.ndarray, charset: list[str]) -> tuple[str, float]:
    """Greedy CTC: class 0 is the blank; repeats are merged; returns the text and its mean score."""
    best = probs.argmax(-1)
    score = probs.max(-1)
    keep = np.ones_like(best, bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    text = "".join(charset[i - 1] if 0 < i <= len(charset) else "" for i in best[keep])
    return text, float(score[keep].mean()) if keep.any() else 0.0


def charset_of(model) -> list[str]:
    chars = model.metadata.get("character", "").splitlines()
    return chars + [" "]  # PaddleOCR appends the space class


def _median_ms(fn, runs: int) -> float:
    return median_ms([timed(fn) for _ in range(runs)])


def run_demo(text: str = "Hello World 2024", threads: int | None = None, runs: int = 10) -> int:
    import sporeling
    from sporeling.assets import fetch

    def progress(asset, message):
        if not message.startswith("ok"):  # only news: fetching, fetched, failed
            print(f"  {asset.name + ': ' if asset else ''}{message}", file=sys.stderr, flush=True)

    path = fetch("ppocr_rec", report=progress)
    model = sporeling.load(path, threads=threads)
    x = preprocess(render_text(text))
    feeds = {model.inputs[0].name: x}
    probs = next(iter(model.run(feeds).values()))
    read, score = ctc_decode(probs[0], charset_of(model))
    ours = _median_ms(lambda: model.run(feeds), runs)
    print(f"PP-OCRv4 recognizer ({path})")
    print(f"  rendered text : {text!r}")
    print(f"  sporeling read: {read!r}  (confidence {score:.3f})")
    print(f"  sporeling     : {ours:7.2f} ms median of {runs} runs, {model.threads} thread(s)")
    try:
        sess = ort_session(path, model.threads)
    except SporelingError:
        print("  onnxruntime   : not installed (pip install onnxruntime to compare)")
    else:
        theirs = sess.run(None, feeds)[0]
        ms = _median_ms(lambda: sess.run(None, feeds), runs)
        diff = float(np.abs(theirs - probs).max())
        print(f"  onnxruntime   : {ms:7.2f} ms median of {runs} runs, read "
              f"{ctc_decode(theirs[0], charset_of(model))[0]!r}, max abs diff {diff:.2g}")
    return 0 if read == text else 1

"""Training data: readers for the forms a user brings, and a resumable order of mini-batches.

- IDX files (MNIST, Fashion-MNIST): a 4-byte magic (two zero bytes, a dtype code, the number of
  dimensions), the dimensions as big-endian uint32, then the values big-endian; raw or gzip'd (told
  apart by the gzip magic 1f 8b, not by the name). load_idx_dataset() reads a folder holding
  {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
- Image folders: one sub-folder per class, class index = position of its name in sorted order; the
  images are read with Pillow (an optional dependency) and resized to one size.
- .npz files with arrays x and y (or x_train/y_train and x_test/y_test, as Keras' mnist.npz), read
  without pickle.
load_dataset() tells these apart; every error names the file and what is wrong.

Batches gives the index arrays of the mini-batches, epoch after epoch. The permutation of epoch e is
a pure function of (seed, e), so its state is a handful of integers (epoch, batches done) that a
checkpoint stores as JSON, and a resumed run sees exactly the batches the uninterrupted one would.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zipfile
import zlib

import numpy as np

from ..errors import DataError
from ..tools import read_bytes

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES = re.compile(r"^(.*)images([-.])idx3-ubyte(\.gz)?$")
ACCEPTS = ("a folder of IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]), a *-images-idx3-ubyte[.gz] "
           "file with its labels file beside it, a folder with one sub-folder of images per class (optionally "
           "under train/ and test/), or a .npz file with arrays x and y (or x_train, y_train, x_test, y_test)")


# ---- IDX ----

def read_idx(path: str) -> np.ndarray:
    """The array an IDX file (raw or gzip'd) holds, in native byte order."""
    raw = read_bytes(path, DataError)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e or type(e).__name__})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise DataError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty file'})")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02X} (known: "
                        f"{', '.join(f'0x{c:02X}' for c in IDX_DTYPES)})")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions need {start} bytes, the file has "
                        f"{len(raw)})")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = np.dtype(IDX_DTYPES[code]).newbyteorder(">")
    need = math.prod(dims) * dtype.itemsize
    have = len(raw) - start
    if have < need:
        raise DataError(f"{path}: truncated IDX data: shape {list(dims)} needs {need} bytes, the file has {have}")
    if have > need:
        raise DataError(f"{path}: {have - need} trailing bytes after the IDX data of shape {list(dims)}")
    return np.frombuffer(raw, dtype, math.prod(dims), start).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: str, stems: list[str]) -> str | None:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
    return None


def _check_split(split: str) -> str:
    if split not in _SPLIT_PREFIX:
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    return _SPLIT_PREFIX[split]


def load_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, H, W) and labels uint8 (N,) from two IDX files, checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images (N, H, W), found {images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: expected uint8 labels (N,), found {labels.dtype} {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    return images, labels


def load_idx_dataset(folder: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One split of an MNIST-style folder: images uint8 (N, 28, 28), labels uint8 (N,)."""
    prefix = _check_split(split)
    found = []
    for kind, idx in (("images", "idx3"), ("labels", "idx1")):
        stems = [f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"]
        path = _find(folder, stems)
        if path is None:
            raise DataError(f"{folder}: no {stems[0]}[.gz] for the {split} split")
        found.append(path)
    return load_idx_pair(*found)


# ---- image folders ----

def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def _subfolders(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def load_image_folder(folder: str, size: tuple[int, int] | None = None,
                      grayscale: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 (N, H, W, 3) or (N, H, W) when grayscale, labels int64 (N,), class names; the images are
    resized (bilinear) to size (H, W), or to the first image's size."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")
    classes = _subfolders(folder)
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (expected one sub-folder of images per class)")
    paths, labels = [], []
    for index, name in enumerate(classes):
        sub = os.path.join(folder, name)
        files = sorted(f for f in os.listdir(sub) if f.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(sub, f)))
        if not files:
            raise DataError(f"{sub}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths += [os.path.join(sub, f) for f in files]
        labels += [index] * len(files)
    Image = _pillow()
    out = None
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                im = im.convert("L" if grayscale else "RGB")
                if out is None:
                    h, w = size or (im.height, im.width)
                    out = np.empty((len(paths), h, w) + (() if grayscale else (3,)), np.uint8)
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"{path}: not a readable image ({e})") from None
    return out, np.asarray(labels, np.int64), classes


# ---- any of them ----

def _load_npz(path: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            # a split's own arrays win (x_test in a file that also holds x); plain x and y are the one split
            keys = (f"x_{split}", f"y_{split}") if f"x_{split}" in z.files or "x" not in z.files else ("x", "y")
            if not all(k in z.files for k in keys):
                raise DataError(f"{path}: expected arrays x and y (or x_{split} and y_{split}); it holds "
                                f"{', '.join(z.files) or 'nothing'}")
            x, y = z[keys[0]], z[keys[1]]
            classes = [str(c) for c in z["classes"]] if "classes" in z.files else None
    except (OSError, ValueError, zlib.error, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file of plain arrays ({e})") from None
    if len(x) != len(y):
        raise DataError(f"{path}: {keys[0]} holds {len(x)} samples but {keys[1]} holds {len(y)}")
    return x, y, classes


def load_dataset(path: str, split: str = "train", size=None,
                 grayscale: bool = False) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(images, labels, class names or None) from any form data.py reads (see ACCEPTS). size and
    grayscale apply to image folders only; an image folder without train/ and test/ is one split."""
    _check_split(split)
    if os.path.isdir(path):
        names = os.listdir(path)
        if any(_IDX_IMAGES.match(n) for n in names):
            return (*load_idx_dataset(path, split), None)
        sub = os.path.join(path, split)
        if os.path.isdir(sub) and _subfolders(sub):
            return load_image_folder(sub, size, grayscale)
        if _subfolders(path):
            return load_image_folder(path, size, grayscale)
        raise DataError(f"{path}: a folder with neither IDX files nor class sub-folders; sporeling reads {ACCEPTS}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file or folder")
    m = _IDX_IMAGES.match(os.path.basename(path))
    if m:
        folder = os.path.dirname(path)
        stem = f"{m.group(1)}labels{m.group(2)}idx1-ubyte"
        labels = _find(folder, [stem])
        if labels is None:
            raise DataError(f"{path}: no labels file {stem}[.gz] beside it")
        return (*load_idx_pair(path, labels), None)
    if path.lower().endswith(".npz"):
        return _load_npz(path, split)
    raise DataError(f"{path}: not a data set sporeling reads; it reads {ACCEPTS}")


def to_nchw_float(images: np.ndarray, mean=0.0, std=1.0) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, C, H, W): scaled to [0, 1], then (x - mean) / std, with
    mean and std scalars or one value per channel. Float images are taken as already in [0, 1]."""
    x = np.asarray(images)
    if x.ndim not in (3, 4) or not (x.dtype == np.uint8 or x.dtype.kind == "f"):
        raise DataError(f"expected uint8 or float images (N, H, W) or (N, H, W, C), found {x.dtype} {list(x.shape)}")
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    out = np.empty(x.shape, np.float32)
    np.copyto(out, x, casting="unsafe")
    if x.dtype == np.uint8:
        out /= np.float32(255)
    mean, std = (np.asarray(v, np.float32).reshape(-1, 1, 1) for v in (mean, std))
    if mean.size not in (1, out.shape[1]) or std.size not in (1, out.shape[1]):
        raise DataError(f"mean and std need 1 or {out.shape[1]} values (one per channel), not {mean.size} "
                        f"and {std.size}")
    out -= mean
    out /= std
    return out


# ---- mini-batch order ----

class Batches:
    """Deterministic, resumable mini-batch order over n samples. Iterating yields the index arrays (int64) of
    the rest of the current epoch; a batch counts as done (position += 1) as it is handed out, so state()
    taken after training on it resumes with the next one. When the epoch is exhausted, epoch += 1 and
    position = 0; the next iteration walks the next epoch's permutation."""

    def __init__(self, n: int, batch: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False):
        if n < 1 or batch < 1:
            raise ValueError(f"Batches: n and batch must be >= 1, not n={n}, batch={batch}")
        if drop_last and batch > n:
            raise ValueError(f"Batches: batch {batch} > n {n} with drop_last leaves no batch at all")
        if seed < 0:
            raise ValueError(f"Batches: seed must be >= 0, not {seed}")
        self.n, self.batch, self.seed = int(n), int(batch), int(seed)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.batches_per_epoch = self.n // self.batch if drop_last else -(-self.n // self.batch)
        self.epoch = 0
        self.position = 0
        self._order = (None, None)  # (epoch, permutation) of the last epoch walked

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of an epoch: a pure function of (seed, epoch)."""
        if self._order[0] != epoch:
            perm = (np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                    else np.arange(self.n))
            self._order = (epoch, perm.astype(np.int64, copy=False))
        return self._order[1]

    def __iter__(self):
        perm = self.order(self.epoch)
        while self.position < self.batches_per_epoch:
            i = self.position
            self.position += 1
            yield perm[i * self.batch:(i + 1) * self.batch].copy()  # a copy: the caller may write to it
        self.epoch += 1
        self.position = 0

    def state(self) -> dict:
        return {"n": self.n, "batch": self.batch, "seed": self.seed, "shuffle": self.shuffle,
                "drop_last": self.drop_last, "epoch": self.epoch, "position": self.position}

    @classmethod
    def from_state(cls, state: dict) -> Batches:
        b = cls(state["n"], state["batch"], state["seed"], state["shuffle"], state["drop_last"])
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= b.batches_per_epoch:
            raise ValueError(f"Batches.from_state: epoch {epoch}, position {position} out of range "
                             f"({b.batches_per_epoch} batches per epoch)")
        b.epoch, b.position = epoch, position
        return b

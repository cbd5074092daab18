"""Training data readers (sporeling.train.data): IDX files of every dtype, raw and gzip'd, and each way one
can be broken; the real Fashion-MNIST files; image folders written here with Pillow (and the scikit-image
photos); .npz files; the dispatch between them; NCHW float conversion; the resumable Batches order."""

from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest

from sporeling.errors import DataError
from sporeling.train import data as D

from ..assets import require

Image = pytest.importorskip("PIL.Image")

CODES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}


def _idx_bytes(a: np.ndarray, code: int) -> bytes:
    """An IDX file written by hand from the format's description (independent of read_idx)."""
    header = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return header + a.astype(np.dtype(CODES[code]).newbyteorder(">")).tobytes()


def _write(path, blob: bytes) -> str:
    with open(path, "wb") as f:
        f.write(blob)
    return str(path)


# ---- IDX ----

@pytest.mark.parametrize("code", sorted(CODES), ids=lambda c: f"0x{c:02X}")
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_every_dtype_raw_and_gzip(tmp_path, code, gz):
    rng = np.random.default_rng(code)
    dtype = np.dtype(CODES[code])
    for shape in [(5,), (3, 4, 2), (2, 1, 3, 2), (0, 7)]:
        if dtype.kind == "f":
            a = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            a = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
        blob = _idx_bytes(a, code)
        path = _write(tmp_path / f"a{len(shape)}", gzip.compress(blob) if gz else blob)
        got = D.read_idx(path)
        assert got.dtype == dtype and got.dtype.isnative and got.shape == shape
        assert np.array_equal(got, a)
        got[...] = 0  # writable, its own memory


def test_gzip_is_told_by_its_magic_not_its_name(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz_named_raw = _write(tmp_path / "x-ubyte", gzip.compress(_idx_bytes(a, 0x08)))
    raw_named_gz = _write(tmp_path / "y-ubyte.gz", _idx_bytes(a, 0x08))
    assert np.array_equal(D.read_idx(gz_named_raw), a)
    assert np.array_equal(D.read_idx(raw_named_gz), a)


def test_read_idx_errors_name_the_file(tmp_path):
    good = _idx_bytes(np.arange(12, dtype=np.int16).reshape(3, 4), 0x0B)
    cases = {
        "missing": (None, "no such file"),
        "empty": (b"", "not an IDX file"),
        "bad-magic": (b"\x01\x00" + good[2:], "bad magic"),
        "unknown-dtype": (good[:2] + b"\x0A" + good[3:], "unknown IDX dtype code 0x0A"),
        "short-header": (good[:9], "truncated IDX header"),
        "truncated": (good[:-3], "truncated IDX data: shape [3, 4] needs 24 bytes, the file has 21"),
        "trailing": (good + b"\0\0", "2 trailing bytes"),
        "truncated-gz": (gzip.compress(good)[:-12], "corrupt or truncated gzip"),
        "garbage-gz": (b"\x1f\x8b" + b"\x07" * 40, "corrupt or truncated gzip"),
        "gz-of-trailing": (gzip.compress(good + b"\0"), "1 trailing bytes"),
    }
    for name, (blob, message) in cases.items():
        path = str(tmp_path / name) if blob is None else _write(tmp_path / name, blob)
        with pytest.raises(DataError) as e:
            D.read_idx(path)
        assert str(e.value).startswith(path + ":") and message in str(e.value), (name, str(e.value))


def _idx_folder(folder, n_train=6, n_test=4, gz=True, hw=(5, 3)) -> dict:
    rng = np.random.default_rng(0)
    made = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n,) + hw, dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, a, idx in (("images", images, "idx3"), ("labels", labels, "idx1")):
            blob = _idx_bytes(a, 0x08)
            _write(os.path.join(folder, f"{prefix}-{kind}-{idx}-ubyte" + (".gz" if gz else "")),
                   gzip.compress(blob) if gz else blob)
        made[prefix] = (images, labels)
    return made


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_load_idx_dataset_synthetic(tmp_path, gz):
    made = _idx_folder(str(tmp_path), gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = D.load_idx_dataset(str(tmp_path), split)
        assert np.array_equal(x, made[prefix][0]) and np.array_equal(y, made[prefix][1])
        x2, y2, classes = D.load_dataset(str(tmp_path), split)
        assert np.array_equal(x2, x) and np.array_equal(y2, y) and classes is None
    # a single images file with its labels beside it
    images_file = str(tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else "")))
    x3, y3, _ = D.load_dataset(images_file)
    assert np.array_equal(x3, made["t10k"][0]) and np.array_equal(y3, made["t10k"][1])


def test_load_idx_dataset_errors(tmp_path):
    folder = str(tmp_path)
    _idx_folder(folder)
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        D.load_idx_dataset(folder, "validation")
    # labels that do not match the images in count
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", gzip.compress(_idx_bytes(np.zeros(3, np.uint8), 0x08)))
    with pytest.raises(DataError, match="holds 4 images but .*t10k-labels-idx1-ubyte.gz holds 3 labels"):
        D.load_idx_dataset(folder, "test")
    # labels that are not 1-D uint8
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", gzip.compress(_idx_bytes(np.zeros((4, 1), np.uint8), 0x08)))
    with pytest.raises(DataError, match="expected uint8 labels"):
        D.load_idx_dataset(folder, "test")
    os.remove(tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte"):
        D.load_idx_dataset(folder, "test")
    os.remove(tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="no labels file train-labels-idx1-ubyte"):
        D.load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"))


@pytest.mark.assets
def test_real_fashion_mnist():
    files = {name: require(f"fmnist_{name}") for name in ("train_images", "train_labels", "test_images",
                                                          "test_labels")}
    train_x, train_y = D.read_idx(files["train_images"]), D.read_idx(files["train_labels"])
    test_x, test_y = D.read_idx(files["test_images"]), D.read_idx(files["test_labels"])
    assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000,)
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    assert train_x.dtype == test_x.dtype == train_y.dtype == np.uint8
    assert train_y.min() == 0 and train_y.max() == 9 and test_y.max() == 9
    assert np.array_equal(np.bincount(train_y, minlength=10), np.full(10, 6000))
    assert np.array_equal(np.bincount(test_y, minlength=10), np.full(10, 1000))
    assert train_x.max() == 255 and train_x.min() == 0 and 40 < train_x.mean() < 120  # photos, not noise
    folder = os.path.dirname(files["test_images"])
    x, y, classes = D.load_dataset(folder, "test")
    assert np.array_equal(x, test_x) and np.array_equal(y, test_y) and classes is None


# ---- image folders ----

def _image_folder(root) -> dict:
    """bird/ cat/ dog/ with PNGs of several modes and sizes, one JPEG, and things to ignore."""
    rng = np.random.default_rng(3)
    made = {}
    for cls in ("dog", "cat", "bird"):
        os.makedirs(root / cls)
    made["bird/a.png"] = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    made["bird/b.PNG"] = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    made["cat/c.png"] = rng.integers(0, 256, (12, 4, 3), dtype=np.uint8)     # another size: resized
    made["dog/d.png"] = rng.integers(0, 256, (6, 8), dtype=np.uint8)        # grayscale source
    made["dog/e.png"] = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)     # RGBA source
    for name, a in made.items():
        Image.fromarray(a).save(root / name)
    yy, xx = np.mgrid[0:6, 0:8]
    smooth = np.stack([yy * 40, xx * 30, 100 + yy * 10 + xx * 10], axis=-1).astype(np.uint8)
    Image.fromarray(smooth).save(root / "cat" / "f.jpg", quality=95, subsampling=0)
    made["cat/f.jpg"] = smooth
    (root / "cat" / "notes.txt").write_text("not an image")
    os.makedirs(root / ".hidden")
    Image.fromarray(made["bird/a.png"]).save(root / ".hidden" / "x.png")
    Image.fromarray(made["bird/a.png"]).save(root / "loose.png")           # not in a class folder
    return made


def test_load_image_folder_rgb(tmp_path):
    made = _image_folder(tmp_path)
    x, y, classes = D.load_image_folder(str(tmp_path))
    assert classes == ["bird", "cat", "dog"]
    assert x.shape == (6, 6, 8, 3) and x.dtype == np.uint8            # first image (bird/a.png) sets the size
    assert y.dtype == np.int64 and y.tolist() == [0, 0, 1, 1, 2, 2]  # cat: c.png, f.jpg; dog: d.png, e.png
    assert np.array_equal(x[0], made["bird/a.png"]) and np.array_equal(x[1], made["bird/b.PNG"])
    resized = Image.fromarray(made["cat/c.png"]).resize((8, 6), Image.Resampling.BILINEAR)
    assert np.array_equal(x[2], np.asarray(resized))
    assert np.abs(x[3].astype(int) - made["cat/f.jpg"]).max() <= 8   # JPEG: close, not exact
    assert np.array_equal(x[4], np.repeat(made["dog/d.png"][..., None], 3, axis=2))
    assert np.array_equal(x[5], made["dog/e.png"][..., :3])


def test_load_image_folder_size_and_grayscale(tmp_path):
    made = _image_folder(tmp_path)
    x, y, classes = D.load_image_folder(str(tmp_path), size=(5, 7), grayscale=True)
    assert x.shape == (6, 5, 7) and y.tolist() == [0, 0, 1, 1, 2, 2]
    expected = Image.fromarray(made["dog/d.png"]).resize((7, 5), Image.Resampling.BILINEAR)
    assert np.array_equal(x[4], np.asarray(expected))
    x2, y2, classes2 = D.load_dataset(str(tmp_path), size=(5, 7), grayscale=True)
    assert np.array_equal(x2, x) and np.array_equal(y2, y) and classes2 == classes


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        D.load_image_folder(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="no class sub-folders"):
        D.load_image_folder(str(tmp_path))
    os.makedirs(tmp_path / "cat")
    (tmp_path / "cat" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"cat: class folder holds no images"):
        D.load_image_folder(str(tmp_path))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "cat" / "ok.png")
    bad = _write(tmp_path / "cat" / "broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(DataError) as e:
        D.load_image_folder(str(tmp_path))
    assert str(e.value).startswith(bad + ": not a readable image")
    os.remove(bad)
    whole = open(tmp_path / "cat" / "ok.png", "rb").read()
    cut = _write(tmp_path / "cat" / "cut.png", whole[:len(whole) // 2])
    with pytest.raises(DataError, match=f"{cut}: not a readable image"):
        D.load_image_folder(str(tmp_path))


def test_missing_pillow_names_the_package(tmp_path, monkeypatch):
    import sys
    _image_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match="pip install pillow"):
        D.load_image_folder(str(tmp_path))


@pytest.mark.assets
def test_image_folder_of_real_photos(tmp_path):
    photos = {"food": ["img_coffee"], "people": ["img_astronaut"], "texture": ["img_brick", "img_grass"]}
    for cls, names in photos.items():
        os.makedirs(tmp_path / cls)
        for name in names:
            src = require(name)
            with open(src, "rb") as f, open(tmp_path / cls / os.path.basename(src), "wb") as g:
                g.write(f.read())
    x, y, classes = D.load_image_folder(str(tmp_path), size=(32, 48))
    assert classes == ["food", "people", "texture"] and y.tolist() == [0, 1, 2, 2]
    assert x.shape == (4, 32, 48, 3)
    with Image.open(require("img_coffee")) as im:
        assert np.array_equal(x[0], np.asarray(im.convert("RGB").resize((48, 32), Image.Resampling.BILINEAR)))


# ---- dispatch, npz ----

def test_load_dataset_train_test_image_folders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            os.makedirs(tmp_path / split / cls)
            for i in range(n):
                Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    x, y, classes = D.load_dataset(str(tmp_path), "test")
    assert x.shape == (4, 4, 4, 3) and y.tolist() == [0, 0, 1, 1] and classes == ["a", "b"]
    assert len(D.load_dataset(str(tmp_path), "train")[0]) == 6


def test_load_dataset_npz(tmp_path):
    x = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    y = np.arange(5, dtype=np.int64)
    np.savez(tmp_path / "plain.npz", x=x, y=y, classes=np.array(["a", "b", "c", "d", "e"]))
    got = D.load_dataset(str(tmp_path / "plain.npz"))
    assert np.array_equal(got[0], x) and np.array_equal(got[1], y) and got[2] == ["a", "b", "c", "d", "e"]
    np.savez_compressed(tmp_path / "keras.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    xt, yt, classes = D.load_dataset(str(tmp_path / "keras.npz"), "test")
    assert np.array_equal(xt, x[:2]) and np.array_equal(yt, y[:2]) and classes is None
    np.savez(tmp_path / "wrong.npz", images=x)
    with pytest.raises(DataError, match="wrong.npz: expected arrays x and y .* it holds images"):
        D.load_dataset(str(tmp_path / "wrong.npz"))
    np.savez(tmp_path / "uneven.npz", x=x, y=y[:4])
    with pytest.raises(DataError, match="uneven.npz: x holds 5 samples but y holds 4"):
        D.load_dataset(str(tmp_path / "uneven.npz"))
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}], dtype=object), y=y[:1])
    with pytest.raises(DataError, match="pickled.npz: not a readable .npz"):
        D.load_dataset(str(tmp_path / "pickled.npz"))
    _write(tmp_path / "fake.npz", b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="fake.npz: not a readable .npz"):
        D.load_dataset(str(tmp_path / "fake.npz"))


def test_load_dataset_says_what_it_accepts(tmp_path):
    _write(tmp_path / "data.csv", b"1,2,3\n")
    os.makedirs(tmp_path / "empty")
    for path in (tmp_path / "data.csv", tmp_path / "empty"):
        with pytest.raises(DataError) as e:
            D.load_dataset(str(path))
        assert str(e.value).startswith(str(path)) and "IDX" in str(e.value) and ".npz" in str(e.value)
        assert "sub-folder of images per class" in str(e.value)
    with pytest.raises(DataError, match="no such file or folder"):
        D.load_dataset(str(tmp_path / "nothing"))


# ---- to_nchw_float ----

def test_to_nchw_float():
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, (3, 5, 6), dtype=np.uint8)
    out = D.to_nchw_float(gray, mean=0.5, std=0.25)
    assert out.shape == (3, 1, 5, 6) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.allclose(out[:, 0], (gray / 255.0 - 0.5) / 0.25, rtol=0, atol=1e-5)
    assert D.to_nchw_float(gray).min() >= 0 and D.to_nchw_float(gray).max() <= 1
    rgb = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    out = D.to_nchw_float(rgb, mean, std)
    assert out.shape == (2, 3, 4, 5)
    for c in range(3):
        assert np.allclose(out[:, c], (rgb[..., c] / 255.0 - mean[c]) / std[c], rtol=0, atol=1e-5)
    floats = rgb.astype(np.float64) / 255
    assert np.allclose(D.to_nchw_float(floats), D.to_nchw_float(rgb), rtol=0, atol=1e-6)
    for bad in (np.zeros((3, 4), np.uint8), np.zeros((1, 2, 2, 1), np.int32)):
        with pytest.raises(DataError):
            D.to_nchw_float(bad)
    with pytest.raises(DataError, match="one per channel"):
        D.to_nchw_float(rgb, mean=[0.1, 0.2])


# ---- Batches ----

def test_batches_cover_every_index_once_per_epoch_and_differ_between_epochs():
    b = D.Batches(103, 10, seed=7)
    assert b.batches_per_epoch == 11
    epochs = []
    for e in range(3):
        assert b.epoch == e and b.position == 0
        batches = list(b)
        assert [len(i) for i in batches] == [10] * 10 + [3]
        assert all(i.dtype == np.int64 for i in batches)
        order = np.concatenate(batches)
        assert np.array_equal(np.sort(order), np.arange(103))
        assert np.array_equal(order, np.random.default_rng([7, e]).permutation(103))
        epochs.append(order)
    assert b.epoch == 3
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    other_seed = np.concatenate(list(D.Batches(103, 10, seed=8)))
    assert not np.array_equal(other_seed, epochs[0])


def test_batches_without_shuffle_and_with_drop_last():
    assert np.array_equal(np.concatenate(list(D.Batches(10, 4, shuffle=False))), np.arange(10))
    b = D.Batches(103, 10, seed=1, drop_last=True)
    assert b.batches_per_epoch == 10
    for e in range(2):
        batches = list(b)
        assert len(batches) == 10 and all(len(i) == 10 for i in batches)
        order = np.concatenate(batches)
        assert len(np.unique(order)) == 100
        assert np.array_equal(order, np.random.default_rng([1, e]).permutation(103)[:100])
    for args in [(0, 1), (5, 0), (3, 4, 0, True, True), (5, 2, -1)]:
        with pytest.raises(ValueError):
            D.Batches(*args)


def _take(b: D.Batches, k: int) -> list[np.ndarray]:
    """k batches across epoch ends, the way a training loop walks them."""
    out = []
    while len(out) < k:
        for idx in b:
            out.append(idx)
            if len(out) == k:
                break
    return out


@pytest.mark.parametrize("stop", [1, 4, 10, 11, 12, 25], ids=lambda s: f"after{s}")
def test_batches_resume_from_state_exactly(stop):
    straight = D.Batches(53, 5, seed=3)            # 11 batches per epoch
    reference = _take(straight, 40)
    first = D.Batches(53, 5, seed=3)
    head = _take(first, stop)
    state = json.loads(json.dumps(first.state()))
    assert state["position"] == (11 if stop % 11 == 0 else stop % 11)   # the epoch ends lazily
    assert state["epoch"] == (stop - 1) // 11
    resumed = D.Batches.from_state(state)
    assert resumed.state() == state
    tail = _take(resumed, 40 - stop)
    assert len(head + tail) == 40
    for a, b in zip(head + tail, reference):
        assert np.array_equal(a, b)
    assert resumed.epoch == straight.epoch and resumed.position == straight.position


def test_batches_from_state_checks_its_input():
    state = D.Batches(10, 3).state()
    with pytest.raises(ValueError):
        D.Batches.from_state({**state, "position": 5})
    with pytest.raises(ValueError):
        D.Batches.from_state({**state, "epoch": -1})


def test_batch_arrays_are_the_callers_to_change():
    b = D.Batches(8, 4, seed=0)
    first = next(iter(b))
    first[:] = -1
    b2 = D.Batches(8, 4, seed=0)
    b2.position = 1
    rest = list(b)  # continues this epoch from the same (unharmed) permutation
    assert np.array_equal(rest[0], list(b2)[0]) and (rest[0] >= 0).all()

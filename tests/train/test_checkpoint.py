"""Checkpoint files (sporeling.train.checkpoint): bit-exact round trips of every dtype and odd shape, atomic
replacement when a write fails half-way, clear errors naming the file for every kind of broken file, the
step-numbered folder helpers among junk files, and RNG state that continues draws exactly after JSON."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from sporeling.errors import CheckpointError, SporelingError
from sporeling.train import checkpoint as ck

safetensors_numpy = pytest.importorskip("safetensors.numpy")

DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64, np.complex64]


def _random(dtype, shape, rng) -> np.ndarray:
    """Random bits of the dtype (NaN payloads and all), so equality is a bit-level check."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    a = np.frombuffer(rng.bytes(nbytes), np.uint8).view(dtype) if dtype is not np.bool_ else rng.random(shape) < .5
    return a.reshape(shape).copy()


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype_and_shape(tmp_path, dtype):
    rng = np.random.default_rng(1)
    arrays = {f"{np.dtype(dtype).name}/{shape}": _random(dtype, shape, rng)
              for shape in [(), (0,), (3, 0, 2), (7,), (2, 3, 5)]}
    path = str(tmp_path / "c.safetensors")
    ck.write_checkpoint(path, arrays, {"step": 1})
    back, meta = ck.read_checkpoint(path)
    assert meta == {"step": 1}
    assert sorted(back) == sorted(arrays)
    for name, a in arrays.items():
        assert _same_bits(back[name], a), name
        assert back[name].flags.writeable


def test_non_contiguous_big_endian_unicode_names_nested_meta(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    arrays = {
        "conv.weight/转置": base.T,                       # F-ordered view
        "": base[::2, 1::3],                             # strided view, empty name
        "ünïcødé ✓ name": base.astype(">f4"),            # big-endian
        "a.b:c d": np.asfortranarray(rng.integers(0, 9, (3, 4, 5))),
    }
    meta = {"step": 12, "lr": 0.05, "history": [1.5, float("nan"), None, True],
            "nested": {"optimizer": {"kind": "adam", "betas": [0.9, 0.999]}, "名前": "値"},
            "big": 2 ** 80}
    path = str(tmp_path / "c.safetensors")
    ck.write_checkpoint(path, arrays, meta)
    back, got = ck.read_checkpoint(path)
    for name, a in arrays.items():
        assert np.array_equal(back[name], a) and back[name].dtype == a.dtype.newbyteorder("="), name
        assert back[name].flags.c_contiguous
    assert np.isnan(got["history"][1])
    got["history"][1] = meta["history"][1] = "nan"
    assert got == meta
    # a plain safetensors reader sees the same arrays: the file is ordinary safetensors
    plain = safetensors_numpy.load_file(path)
    assert np.array_equal(plain["conv.weight/转置"], base.T)


def test_bad_arguments_raise_value_error_and_write_nothing(tmp_path):
    path = str(tmp_path / "c.safetensors")
    for arrays, meta in [({"w": np.ones(2)}, {"step": np.int64(3)}),    # numpy int is not JSON
                         ({"w": np.ones(2)}, {"s": {1, 2}}),
                         ({"__metadata__": np.ones(2)}, {}),
                         ({"w": np.array(["a", "b"])}, {}),
                         ({"w": np.array([object()])}, {}),
                         ({"w": np.ones(2, np.complex128)}, {}),
                         ({3: np.ones(2)}, {})]:
        with pytest.raises(ValueError):
            ck.write_checkpoint(path, arrays, meta)
    assert os.listdir(tmp_path) == []


def _fail_half_way(monkeypatch):
    """Makes the next checkpoint write put half its bytes into the temp file, then fail as a full disk would."""
    real = ck.atomic_write

    class HalfFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "atomic_write", lambda path, write, mode="wb": real(path, lambda f: write(HalfFile(f)),
                                                                                     mode))


def test_failed_write_keeps_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = ck.checkpoint_path(str(tmp_path), 5)
    old = {"w": np.arange(10, dtype=np.float32)}
    ck.write_checkpoint(path, old, {"step": 5})
    before = open(path, "rb").read()
    _fail_half_way(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        ck.write_checkpoint(path, {"w": np.zeros(1000, np.float32)}, {"step": 6})
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    assert open(path, "rb").read() == before
    arrays, meta = ck.read_checkpoint(path)
    assert np.array_equal(arrays["w"], old["w"]) and meta == {"step": 5}


def test_write_replaces_an_existing_checkpoint(tmp_path):
    path = str(tmp_path / "c.safetensors")
    ck.write_checkpoint(path, {"w": np.ones(3)}, {"v": 1})
    ck.write_checkpoint(path, {"w": np.full(4, 2.0), "m": np.zeros(1)}, {"v": 2})
    arrays, meta = ck.read_checkpoint(path)
    assert meta == {"v": 2} and sorted(arrays) == ["m", "w"] and np.array_equal(arrays["w"], np.full(4, 2.0))


@pytest.fixture
def good(tmp_path):
    path = str(tmp_path / "good.safetensors")
    ck.write_checkpoint(path, {"w": np.arange(64, dtype=np.float32), "b": np.ones(3, np.float64)}, {"step": 1})
    return path, open(path, "rb").read()


def _broken(tmp_path, data: bytes, name="bad.safetensors") -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_broken_files_give_errors_naming_the_file(tmp_path, good):
    _, data = good
    header_len = int.from_bytes(data[:8], "little")
    flipped = bytearray(data)
    flipped[-5] ^= 0x10                                   # one bit of array data
    cases = {
        "empty": b"",
        "short": data[:6],
        "truncated-header": data[:8 + header_len // 2],
        "truncated-data": data[:-7],
        "trailing": data + b"\0" * 8,
        "text": b"this is a text file, not a checkpoint at all\n" * 4,
        "npz": open(_npz(tmp_path), "rb").read(),
        "flipped-bit": bytes(flipped),
        "header-garbage": data[:8] + b"\xff" * header_len + data[8 + header_len:],
    }
    for label, blob in cases.items():
        path = _broken(tmp_path, blob, f"{label}.safetensors")
        with pytest.raises(CheckpointError) as e:
            ck.read_checkpoint(path)
        assert path in str(e.value), label
    assert "checksum" in str(pytest.raises(CheckpointError, ck.read_checkpoint,
                                           str(tmp_path / "flipped-bit.safetensors")).value)


def _npz(tmp_path) -> str:
    path = str(tmp_path / "arrays.npz")
    np.savez(path, w=np.ones(3))
    return path


def test_missing_file_and_foreign_safetensors(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="nope.safetensors: no such"):
        ck.read_checkpoint(missing)
    plain = str(tmp_path / "plain.safetensors")
    safetensors_numpy.save_file({"w": np.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="plain.safetensors: .*without sporeling"):
        ck.read_checkpoint(plain)
    other = str(tmp_path / "other.safetensors")
    safetensors_numpy.save_file({"w": np.ones(2)}, other, metadata={"sporeling": '{"format": "something-else"}'})
    with pytest.raises(CheckpointError, match="other.safetensors: .*format"):
        ck.read_checkpoint(other)
    notjson = str(tmp_path / "notjson.safetensors")
    safetensors_numpy.save_file({"w": np.ones(2)}, notjson, metadata={"sporeling": "{oops"})
    with pytest.raises(CheckpointError, match="notjson.safetensors: .*JSON"):
        ck.read_checkpoint(notjson)


def test_newer_version_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "future.safetensors")
    monkeypatch.setattr(ck, "VERSION", ck.VERSION + 1)
    ck.write_checkpoint(path, {"w": np.ones(2)}, {})
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=f"future.safetensors: .*version {ck.VERSION + 1} is newer"):
        ck.read_checkpoint(path)


def test_missing_safetensors_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # makes `import safetensors` raise ImportError
    with pytest.raises(SporelingError, match=r"pip install 'sporeling\[train\]'"):
        ck.write_checkpoint(str(tmp_path / "c.safetensors"), {"w": np.ones(2)}, {})
    with pytest.raises(SporelingError, match=r"pip install 'sporeling\[train\]'"):
        ck.read_checkpoint(str(tmp_path / "c.safetensors"))


# ---- folders of checkpoints ----

def test_checkpoint_path_names():
    assert ck.checkpoint_path("runs/a", 123) == os.path.join("runs/a", "step-00000123.safetensors")
    assert ck.checkpoint_path("d", 0).endswith("step-00000000.safetensors")
    assert ck.checkpoint_path("d", 1234567890).endswith("step-1234567890.safetensors")
    with pytest.raises(ValueError):
        ck.checkpoint_path("d", -1)


def _touch(path: str, data: bytes = b"x"):
    with open(path, "wb") as f:
        f.write(data)


def test_latest_and_prune_among_junk(tmp_path):
    folder = str(tmp_path)
    assert ck.latest_checkpoint(folder) is None
    assert ck.latest_checkpoint(str(tmp_path / "missing")) is None
    ck.prune_checkpoints(str(tmp_path / "missing"))              # nothing to do, no error
    steps = [7, 12, 100, 99999999, 123456789]                   # the last sorts first as text
    for s in steps:
        ck.write_checkpoint(ck.checkpoint_path(folder, s), {"s": np.array(s)}, {"step": s})
    junk = [".tmp-abc123", "step-00000200.safetensors.tmp", "notes.txt", "step-abc.safetensors",
            "step-00000300.safetensors~", "xstep-00000400.safetensors"]
    for name in junk:
        _touch(os.path.join(folder, name))
    os.mkdir(os.path.join(folder, "step-00000500.safetensors"))  # a folder, not a checkpoint
    assert ck.latest_checkpoint(folder) == ck.checkpoint_path(folder, 123456789)
    assert ck.read_checkpoint(ck.latest_checkpoint(folder))[1] == {"step": 123456789}
    ck.prune_checkpoints(folder, keep=2)
    left = set(os.listdir(folder))
    assert {n for n in left if n not in junk} == {"step-99999999.safetensors", "step-123456789.safetensors",
                                                   "step-00000500.safetensors"}
    assert set(junk) <= left
    ck.prune_checkpoints(folder, keep=5)                          # fewer than keep: nothing goes
    assert ck.latest_checkpoint(folder) == ck.checkpoint_path(folder, 123456789)
    ck.prune_checkpoints(folder, keep=0)
    assert ck.latest_checkpoint(folder) is None and set(junk) <= set(os.listdir(folder))
    with pytest.raises(ValueError):
        ck.prune_checkpoints(folder, keep=-1)


def test_killed_write_leaves_a_temp_file_that_latest_ignores(tmp_path):
    folder = str(tmp_path)
    ck.write_checkpoint(ck.checkpoint_path(folder, 3), {"w": np.ones(4)}, {"step": 3})
    full = open(ck.checkpoint_path(folder, 3), "rb").read()
    _touch(os.path.join(folder, ".tmp-k1ll3d"), full[:len(full) // 2])   # what SIGKILL mid-write leaves
    assert ck.latest_checkpoint(folder) == ck.checkpoint_path(folder, 3)
    assert ck.read_checkpoint(ck.latest_checkpoint(folder))[1] == {"step": 3}


# ---- random generators ----

def _draws(gen: np.random.Generator) -> list[np.ndarray]:
    return [gen.random(5), gen.standard_normal(7), gen.integers(0, 2 ** 31, 3, dtype=np.int32),
            gen.integers(0, 10, 1, dtype=np.uint32), gen.permutation(20), gen.normal(size=(2, 2))]


@pytest.mark.parametrize("kind", ["PCG64", "PCG64DXSM"])
def test_generator_state_continues_draws_exactly(kind):
    gen = np.random.Generator(getattr(np.random, kind)(1234))
    _draws(gen)
    gen.integers(0, 10, 1, dtype=np.uint32)                     # leaves half a 64-bit word buffered
    state = json.loads(json.dumps(ck.generator_state(gen)))
    assert state["bit_generator"] == kind and state["has_uint32"] == 1
    resumed = ck.generator_from_state(state)
    for _ in range(3):
        for a, b in zip(_draws(gen), _draws(resumed)):
            assert _same_bits(a, b)


def test_generator_state_rejects_what_it_cannot_restore():
    with pytest.raises(ValueError, match="MT19937"):
        ck.generator_state(np.random.Generator(np.random.MT19937(0)))
    for bad in [{}, {"bit_generator": "MT19937", "state": {}, "has_uint32": 0, "uinteger": 0},
                {"bit_generator": "PCG64", "state": {"state": "x", "inc": "1"}, "has_uint32": 0, "uinteger": 0}]:
        with pytest.raises(CheckpointError):
            ck.generator_from_state(bad)

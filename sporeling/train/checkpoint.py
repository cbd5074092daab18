"""Training checkpoints: one safetensors file per checkpoint, its arrays (parameters, optimizer moments, ...)
as tensors and everything else (step, RNG state, data order, hyper-parameters) as JSON under the key
"sporeling" of the safetensors `__metadata__`. Arrays and JSON being one file, one atomic rename
(tools.atomic_write: temp file, fsync, rename) publishes both together: a run killed at any instant
leaves the previous checkpoint or the new one, never a mix. The JSON also holds a SHA-256 of the array
bytes, because safetensors checks only that its header is sound and would return flipped data bits as
they are. No pickle: arrays are raw little-endian bytes and the rest is JSON.

A folder of checkpoints holds step-00000123.safetensors files; latest_checkpoint() finds the newest by
step number (ignoring the .tmp-* files a killed write leaves and anything else), prune_checkpoints()
keeps the newest few. generator_state() turns a NumPy Generator into JSON (PCG64's 128-bit integers as
decimal strings, as JSON numbers lose precision past 2**53) so a resumed run draws the same numbers.

safetensors is the `[train]` extra, imported only when a checkpoint is read or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import re

import numpy as np

from ..errors import CheckpointError, SporelingError
from ..tools import atomic_write

FORMAT = "sporeling-checkpoint"
VERSION = 1
META_KEY = "sporeling"
_STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")
_BIT_GENERATORS = ("PCG64", "PCG64DXSM")


def _safetensors():
    try:
        import safetensors
    except ImportError:
        raise SporelingError("checkpoints need safetensors: pip install 'sporeling[train]'") from None
    return safetensors


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order (independent of the file's layout)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _prepared(name, value) -> np.ndarray:
    if not isinstance(name, str):
        raise ValueError(f"checkpoint array names must be strings, not {type(name).__name__} {name!r}")
    if name == "__metadata__":
        raise ValueError("'__metadata__' is reserved by safetensors and cannot name a checkpoint array")
    a = np.asarray(value)
    if a.dtype.kind not in "biufc":
        raise ValueError(f"checkpoint array '{name}' has dtype {a.dtype}, which safetensors cannot store")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    # safetensors reads straight from the data pointer, so strided views must become contiguous copies.
    # (Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.)
    return a if a.flags.c_contiguous else a.copy(order="C")


def write_checkpoint(path: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Writes arrays and the JSON-able meta to path, atomically and fsynced."""
    st = _safetensors()
    prepared = {name: _prepared(name, a) for name, a in arrays.items()}
    try:
        text = json.dumps({"format": FORMAT, "version": VERSION, "meta": meta, "sha256": _digest(prepared)})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: checkpoint meta is not JSON-able: {e}") from None
    try:
        specs = {name: st.TensorSpec(dtype=a.dtype.name, shape=a.shape, data_ptr=a.ctypes.data, data_len=a.nbytes)
                 for name, a in prepared.items()}
        data = st.serialize(specs, metadata={META_KEY: text})
    except st.SafetensorError as e:
        raise ValueError(f"{path}: safetensors cannot store these arrays: {e}") from None
    del specs  # its pointers are valid only while `prepared` lives
    atomic_write(path, lambda f: f.write(data))


def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of a checkpoint written by write_checkpoint; the arrays are writable and own their memory."""
    st = _safetensors()
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # pread, not mmap: the arrays get their own memory, so the file can be pruned while they live.
        with st.safe_open(path, framework="np", backend="pread") as f:
            header = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (st.SafetensorError, OSError, ValueError, KeyError, TypeError) as e:  # TypeError: e.g. bfloat16
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if META_KEY not in header:
        raise CheckpointError(f"{path}: a safetensors file without sporeling checkpoint metadata")
    try:
        doc = json.loads(header[META_KEY])
    except ValueError as e:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("version"), int):
        raise CheckpointError(f"{path}: checkpoint metadata is not of format '{FORMAT}'")
    if doc["version"] > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {doc['version']} is newer than this sporeling "
                              f"reads (up to {VERSION}); update sporeling")
    if doc.get("sha256") != _digest(arrays):
        raise CheckpointError(f"{path}: checkpoint arrays do not match their checksum (the file is corrupt)")
    return arrays, doc.get("meta")


def checkpoint_path(folder: str, step: int) -> str:
    if int(step) < 0:
        raise ValueError(f"checkpoint step must be >= 0, not {step}")
    return os.path.join(folder, f"step-{int(step):08d}.safetensors")


def _checkpoints(folder: str) -> list[tuple[int, str]]:
    """(step, path) of the checkpoint files in folder, oldest first; [] when the folder does not exist."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _STEP_FILE.match(name)
        if m and os.path.isfile(os.path.join(folder, name)):
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(folder: str) -> str | None:
    found = _checkpoints(folder)
    return found[-1][1] if found else None


STALE_TEMP_SECONDS = 600


def prune_checkpoints(folder: str, keep: int = 3) -> None:
    """Deletes all checkpoints of folder but the newest `keep` (by step number), and the temporary files of
    writes that a kill interrupted more than STALE_TEMP_SECONDS ago."""
    if keep < 0:
        raise ValueError(f"prune_checkpoints: keep must be >= 0, not {keep}")
    found = _checkpoints(folder)
    stale = []  # temporary files of writes a kill interrupted, left a while ago (not one under way now)
    now = time.time()
    for entry in (os.scandir(folder) if os.path.isdir(folder) else ()):
        if entry.name.startswith(".tmp-") and entry.is_file() and now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
            stale.append(entry.path)
    for path in [p for _, p in found[:max(0, len(found) - keep)]] + stale:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass  # already gone (another pruner): what we wanted


def generator_state(gen: np.random.Generator) -> dict:
    """The JSON-able state of gen's bit generator (PCG64 or PCG64DXSM, the ones default_rng gives)."""
    state = gen.bit_generator.state
    if state.get("bit_generator") not in _BIT_GENERATORS:
        raise ValueError(f"generator_state: only {', '.join(_BIT_GENERATORS)} are supported, "
                         f"not {state.get('bit_generator')}")
    return {"bit_generator": state["bit_generator"],
            "state": {k: str(int(v)) for k, v in state["state"].items()},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def generator_from_state(state: dict) -> np.random.Generator:
    """A Generator that continues exactly where the one generator_state() was taken from stood."""
    try:
        kind = state["bit_generator"]
        if kind not in _BIT_GENERATORS:
            raise ValueError(f"unsupported bit generator {kind!r}")
        bit_gen = getattr(np.random, kind)()
        bit_gen.state = {"bit_generator": kind, "state": {k: int(v) for k, v in state["state"].items()},
                         "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"not a valid generator state ({type(e).__name__}: {e})") from None
    return np.random.Generator(bit_gen)

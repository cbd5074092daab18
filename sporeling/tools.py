"""Helpers shared by the CLI, the demo and the benchmarks: example feeds, plan statistics, atomic
writes, timing."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from typing import Any, Callable

import numpy as np

from .errors import FeedError, SporelingError
from .runtime.session import RETURNS


MAX_RANDOM_INPUT_BYTES = 2 << 30


def concrete_shape(shape, default_dim: int = 1) -> tuple[int, ...]:
    """A declared shape with its symbolic or unknown dimensions set to default_dim."""
    return tuple(d if isinstance(d, int) and d >= 0 else default_dim for d in (shape or ()))


def parse_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """Parses NAME=1,3,224,224 options."""
    shapes = {}
    for spec in specs or []:
        name, _, dims = spec.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise FeedError(f"--input-shape '{spec}': expected NAME=D1,D2,... with integer dimensions") from None
        if not name or any(d < 0 for d in shapes[name]):
            raise FeedError(f"--input-shape '{spec}': expected NAME=D1,D2,... with non-negative dimensions")
    return shapes


def random_feeds(model, seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Inputs of the declared shapes (or those given in `shapes`) and dtypes: standard normal floats,
    small non-negative ints. Symbolic dimensions become 1."""
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    unknown = [k for k in shapes if k not in {s.name for s in model.inputs}]
    if unknown:
        raise FeedError(f"--input-shape: the model has no input '{unknown[0]}'")
    feeds = {}
    for spec in model.inputs:
        shape = shapes.get(spec.name) or concrete_shape(spec.shape)
        dt = spec.dtype or np.dtype(np.float32)
        nbytes = int(np.prod(shape, dtype=np.float64)) * dt.itemsize
        if nbytes > MAX_RANDOM_INPUT_BYTES:
            raise FeedError(f"input '{spec.name}': a random input of shape {list(shape)} would take "
                            f"{human_bytes(nbytes)}; give a smaller one with --input-shape or a file with --input")
        if dt.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            feeds[spec.name] = rng.integers(0, 10, size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise FeedError(f"input '{spec.name}': cannot make a random {dt} input; pass it with --input")
    return feeds


def load_feed_file(spec: str) -> tuple[str, np.ndarray]:
    """Parses NAME=FILE.npy (a .npy array; no pickled objects)."""
    if "=" not in spec:
        raise FeedError(f"--input '{spec}': expected NAME=FILE.npy")
    name, path = spec.split("=", 1)
    if not os.path.exists(path):
        raise FeedError(f"--input {name}: {path}: no such file")
    try:
        return name, np.load(path, allow_pickle=False)
    except Exception as e:
        raise FeedError(f"--input {name}: {path}: not a readable .npy file ({type(e).__name__})") from e


def read_bytes(path: str, error: type[Exception], what: str = "file") -> bytes:
    """A whole file's bytes; a missing, unreadable or directory path raises `error` naming it."""
    if os.path.isdir(path):
        raise error(f"{path}: is a directory, not a {what}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Writes through a temporary file in the same folder, fsyncs it, then renames it over path, so
    a crash leaves either the old file or the new one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    if any(getattr(a, "dtype", None) == object for a in arrays.values()):
        raise SporelingError(f"{path}: outputs of object dtype cannot be saved without pickle")
    atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def plan_stats(model, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Memory figures of the plan the model uses for these feeds."""
    plan = model.session.plan_for(model.session.check_feeds(feeds))
    arena = plan.arena
    steps = len(plan.steps)
    dynamic = sum(1 for st in plan.steps if st.mode == RETURNS)
    return {
        "steps": steps,
        "folded_nodes": plan.folded,
        "planned_tensors": len(arena.buffers),
        "steps_with_runtime_allocation": dynamic,
        "arena_bytes": arena.arena_size,
        "sum_of_tensors_bytes": arena.total_size,
        "live_lower_bound_bytes": arena.lower_bound,
    }


def median_ms(samples: list[float]) -> float:
    return float(np.median(samples) * 1e3) if samples else float("nan")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"

"""The public Model: a Graph plus the Session that runs it."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from .errors import ModelLoadError
from .ir import Graph
from .runtime.lazy import LazySession, has_lazy
from .runtime.session import Session
from .runtime.threads import apply_threads, default_threads


class TensorSpec(NamedTuple):
    name: str
    dtype: np.dtype | None
    shape: tuple | None


class Model:
    def __init__(self, graph: Graph, source: str = "model", threads: int | None = None):
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        self.graph = graph
        self.source = source
        self.threads = threads or default_threads()
        self.session = (LazySession if has_lazy(graph) else Session)(graph, source)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(v.name, v.dtype, v.shape) for v in self.session.inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(v.name, v.dtype, v.shape) for v in self.graph.outputs]

    @property
    def metadata(self) -> dict[str, str]:
        return self.graph.metadata

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        apply_threads(self.threads)
        return self.session.run(feeds)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.shape) if s.shape else ''}" for s in self.inputs)
        return f"<sporeling.Model {os.path.basename(self.source)} inputs=({ins}) nodes={len(self.graph.nodes)}>"


def _sniff(path: str) -> str:
    """The format of a model file, by its magic bytes first and its extension second."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read ({e.strerror or e})") from None
    from .format import MAGIC

    if head.startswith(MAGIC):
        return "spore"
    if head[4:8] == b"TFL3":
        return "tflite"
    ext = os.path.splitext(path.lower())[1]
    if ext in (".spore", ".tflite"):
        return ext[1:]
    if ext in (".onnx", ""):
        return "onnx"
    raise ModelLoadError(f"{path}: unknown model format '{ext}' (sporeling reads .onnx, .tflite and .spore)")


def load_graph(path: str | os.PathLike) -> Graph:
    """Reads a .onnx, .tflite or .spore file into a Graph, without running passes."""
    return _read(os.fspath(path))[0]


def _read(path: str, lazy: bool = False) -> tuple[Graph, bool]:
    """The graph, and whether the passes already ran on it (a .spore written by an optimizing convert)."""
    kind = _sniff(path)
    if kind == "spore":
        from .format import load_spore

        graph, provenance = load_spore(path, with_provenance=True, lazy=lazy)
        return graph, provenance.get("optimized") is True or has_lazy(graph)
    if kind == "tflite":
        from .frontends.tflite import load_tflite

        return load_tflite(path), False
    from .frontends.onnx import load_onnx

    return load_onnx(path), False


def load(path: str | os.PathLike, threads: int | None = None, optimize: bool = True, lazy: bool = False) -> Model:
    """Loads a model file (.onnx, .tflite or .spore) and prepares it to run. With optimize (the default) the graph
    passes run first (see sporeling.passes); outputs are the same up to float rounding. A .spore file that was
    optimized when it was converted is not optimized again.
    lazy: the quantized weights of a compressed .spore (sporeling.compress) stay compressed in memory and each
    is decoded just before the node that reads it, then dropped: resident memory stays near the file's size
    instead of the float model's, at the cost of decoding every weight on every run (sporeling.runtime.lazy;
    figures in benchmarks/README.md). Outputs are bit-identical to loading without it. A graph holding lazy
    weights runs as stored, without passes (compress stores it optimized). Other files load as usual."""
    path = os.fspath(path)
    graph, optimized = _read(path, lazy)
    if optimize and not optimized:
        from .passes import optimize as run_passes

        run_passes(graph)
    return Model(graph, path, threads)

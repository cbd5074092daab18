"""The public Model: a Graph plus the Session that runs it."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from .errors import ModelLoadError
from .ir import Graph
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
        self.session = Session(graph, source)

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


def load(path: str | os.PathLike, threads: int | None = None, optimize: bool = True) -> Model:
    """Loads a model file (.onnx) and prepares it to run. With optimize (the default) the graph
    passes run first: Identity/Dropout removal, Conv+BatchNorm folding, bias/residual/activation
    fusion, dead-code elimination; outputs are the same up to float rounding."""
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith(".onnx") or not os.path.splitext(lower)[1]:
        from .frontends.onnx import load_onnx

        graph = load_onnx(path)
    else:
        if not os.path.exists(path):
            raise ModelLoadError(f"{path}: no such file")
        raise ModelLoadError(f"{path}: unknown model format '{os.path.splitext(path)[1]}' (sporeling reads .onnx)")
    if optimize:
        from .passes import optimize as run_passes

        run_passes(graph)
    return Model(graph, path, threads)

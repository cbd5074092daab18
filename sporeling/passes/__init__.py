"""Graph passes. Each is a small rule in its own file: `run(graph) -> int` (how many rewrites it
made). `optimize` applies them in order and verifies the IR after every pass."""

from __future__ import annotations

import time

from ..ir import Graph, verify
from . import (
    dce,
    fold_constants,
    fold_conv_affine,
    fuse_activation,
    fuse_conv_bn,
    fuse_gelu,
    fuse_hardswish,
    fuse_matmul_bias,
    layout,
    remove_identity,
)

PIPELINE = [
    ("remove_identity", remove_identity.run),
    ("fold_constants", fold_constants.run),
    ("layout", layout.run),
    ("fuse_conv_bn", fuse_conv_bn.run),
    ("fold_conv_affine", fold_conv_affine.run),
    ("fuse_hardswish", fuse_hardswish.run),
    ("fuse_activation", fuse_activation.run),
    ("fuse_gelu", fuse_gelu.run),
    ("fuse_matmul_bias", fuse_matmul_bias.run),
    ("dce", dce.run),
]


def optimize(graph: Graph, log=None, _scope: frozenset[str] = frozenset()) -> Graph:
    """Runs the pipeline on every subgraph (If/Loop/Scan bodies), then on the graph itself. A body is
    verified with the names of its enclosing scope visible."""
    for node in graph.nodes:
        for body in node.subgraphs():
            optimize(body, None, frozenset(body.outer_names()))
            for domain, version in body.opsets.items():
                graph.opsets.setdefault(domain, version)
    for name, rule in PIPELINE:
        before, start = len(graph.nodes), time.perf_counter()
        changed = rule(graph)
        verify(graph, _scope)
        if log is not None:
            log.append({"pass": name, "rewrites": changed, "nodes_before": before, "nodes_after": len(graph.nodes),
                        "ms": round((time.perf_counter() - start) * 1000, 2)})
    return graph


def recorded(log: list[dict]) -> list[dict]:
    """The pass log as a file's provenance keeps it: without the timings, so that the same source and
    settings write the same bytes."""
    return [{k: v for k, v in e.items() if k != "ms"} for e in log]

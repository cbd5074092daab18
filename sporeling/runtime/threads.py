"""Explicit control of the BLAS thread pool (and any other native pool threadpoolctl can see).

sporeling's kernels run on the calling thread; the only parallelism is inside BLAS. threadpoolctl
(the [perf] extra) sets its thread count at run time; without it we can only ask through the
environment, which BLAS reads once at import, so a warning says the request may not take effect.
The setting is process-wide: it is applied when a model runs, and only when it changes.
"""

from __future__ import annotations

import os
import warnings

_current: int | None = None
_controller = None


def default_threads() -> int:
    """What is fastest here: one thread. On small per-op work OpenBLAS' extra threads cost more in
    wake-up and sync than they give (measured in benchmarks/latency.py), and on some 2-core VMs they
    hit pathological cases."""
    return 1


def apply_threads(n: int) -> None:
    global _current, _controller
    if n == _current:
        return
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)
        if _current is None:
            warnings.warn("threadpoolctl is not installed: BLAS thread count set through the environment only",
                          stacklevel=3)
        _current = n
        return
    if _controller is None:
        _controller = ThreadpoolController()
    _controller.limit(limits=n)
    _current = n


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: d.get(k) for k in ("internal_api", "num_threads", "version")} for d in threadpool_info()]

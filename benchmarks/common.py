"""Small helpers the benchmark scripts share: one-line errors and the library versions a result came from."""

from __future__ import annotations

import platform

import numpy as np


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:200]


def versions(*modules: str) -> dict[str, str]:
    """Python's, NumPy's and each module's version, or why it could not be imported."""
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in modules:
        try:
            found[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001  (a missing peer is a fact to record, not a failure)
            found[mod] = f"unavailable ({one_line(e)})"
    return found

"""Small helpers the benchmark scripts share: one-line errors, the library versions a result came from, and
this process's resident memory (current and peak) from /proc."""

from __future__ import annotations

import os
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


def status_kib(key: str) -> int:
    """A field of /proc/self/status in KiB: VmRSS (resident now), VmHWM (peak resident); 0 where absent."""
    with open("/proc/self/status") as f:
        return next((int(line.split()[1]) for line in f if line.startswith(key + ":")), 0)


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux 4.0+); False where the kernel or a sandbox does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def write_result(path: str, result: dict) -> None:
    """The benchmark's JSON result, written atomically (its folder made first); says where it went."""
    import json

    from sporeling.tools import atomic_write

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: json.dump(result, f, indent=1), mode="w")
    print(f"wrote {path}")

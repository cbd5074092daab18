"""Element types by name: the closed list a .spore file may name, and nothing else.

A file names a dtype by NumPy's name for it ("float32", "bool", "object" for strings). The reader never
hands a name from the file to np.dtype(): a crafted name could otherwise ask for an object array built
from raw bytes (pointers) or a field layout. The low-precision floats of ml_dtypes (bfloat16, float8_*,
int4...) are stored raw under their ml_dtypes names; reading them needs ml_dtypes, which the onnx
package brings along.
"""

from __future__ import annotations

import numpy as np

_NUMPY = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
          "float64", "complex64", "complex128", "object"]
BUILTIN: dict[str, np.dtype] = {name: np.dtype(name) for name in _NUMPY}

# ml_dtypes' types are plain fixed-size bit patterns, so the raw codec suits them as it suits float32.
ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e4m3",
             "float8_e3m4", "float8_e8m0fnu", "float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn", "int2", "uint2",
             "int4", "uint4")


def dtype_name(dt: np.dtype) -> str | None:
    """The name a file uses for dt, or None when .spore cannot hold it (structured, unicode, datetime)."""
    dt = np.dtype(dt)
    name = dt.name
    if name in BUILTIN and dt.kind == BUILTIN[name].kind and dt.itemsize == BUILTIN[name].itemsize:
        return name  # any byte order: the writer stores little-endian
    if name in ML_DTYPES and type(dt).__module__.startswith(("ml_dtypes", "numpy")):
        try:
            return name if dt == dtype_from_name(name) else None
        except ValueError:
            return None
    return None


def dtype_from_name(name: str) -> np.dtype:
    """The dtype a file's name stands for; ValueError with a reason if there is none here."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name in ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise ValueError(f"dtype {name} needs the ml_dtypes package (pip install ml_dtypes)") from None
        if hasattr(ml_dtypes, name):
            return np.dtype(getattr(ml_dtypes, name))
        raise ValueError(f"dtype {name} needs a newer ml_dtypes than {getattr(ml_dtypes, '__version__', '?')}")
    raise ValueError(f"unknown dtype {name!r}")

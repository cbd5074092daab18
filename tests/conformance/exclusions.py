"""Every case of the ONNX node suite that sporeling does not run, with the reason.

PATTERNS are substring rules for whole classes of cases; CASES are single cases. A case listed
here is skipped by the test and counted as excluded; every other case must pass.
"""

from __future__ import annotations

PATTERNS: list[tuple[str, str]] = [
    ("bfloat16", "bfloat16 tensors: NumPy has no bfloat16 dtype, and the runtime's only dependency is NumPy"),
    ("float8", "float8 tensors: NumPy has no float8 dtypes"),
    ("_e4m3", "float8 tensors: NumPy has no float8 dtypes"),
    ("_e5m2", "float8 tensors: NumPy has no float8 dtypes"),
    ("float4e2m1", "float4 tensors: NumPy has no float4 dtype"),
    ("_int4", "int4/uint4 tensors: NumPy has no 4-bit integer dtypes"),
    ("_uint4", "int4/uint4 tensors: NumPy has no 4-bit integer dtypes"),
    ("_int2", "int2/uint2 tensors: NumPy has no 2-bit integer dtypes"),
    ("_uint2", "int2/uint2 tensors: NumPy has no 2-bit integer dtypes"),
]

CASES: dict[str, str] = {}


def exclusion_reason(name: str) -> str | None:
    if name in CASES:
        return CASES[name]
    for pattern, reason in PATTERNS:
        if pattern in name:
            return reason
    return None

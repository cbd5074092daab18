"""Every case of the ONNX node suite that sporeling does not run, with the reason.

PATTERNS are substring rules (case-insensitive) for whole classes of cases; CASES are single cases. A case listed
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

_BERNOULLI = ("Bernoulli is random: the suite's expected values were drawn from NumPy's global random state "
              "when the suite was generated, not from the op's seed, so no kernel (onnxruntime included) can match")
_IMAGE_CODEC = ("ImageDecoder for JPEG/JPEG2000/PNG/WebP needs an image codec; NumPy has none and the runtime "
                "depends on NumPy only (BMP, PNM and uncompressed TIFF are decoded and pass)")

CASES: dict[str, str] = {
    **{f"test_bernoulli{s}": _BERNOULLI for s in ("", "_double", "_seed", "_expanded", "_double_expanded",
                                                   "_seed_expanded")},
    **{f"test_image_decoder_decode_{s}": _IMAGE_CODEC for s in ("jpeg_rgb", "jpeg_bgr", "jpeg_grayscale",
                                                                 "jpeg2k_rgb", "png_rgb", "webp_rgb")},
}


def exclusion_reason(name: str) -> str | None:
    if name in CASES:
        return CASES[name]
    low = name.lower()
    for pattern, reason in PATTERNS:
        if pattern in low:
            return reason
    return None

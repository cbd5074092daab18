"""ImageDecoder for the formats that need no codec: BMP (uncompressed 8-bit palette, 24- and 32-bit),
PNM (P2/P3/P5/P6 with 8-bit samples) and baseline TIFF (uncompressed, 8-bit, chunky RGB or gray
strips).

JPEG, JPEG 2000, PNG and WebP need entropy decoders and per-pixel predictors (PNG's Paeth filter
depends on the pixel to its left) that NumPy cannot express without a Python loop over pixels, and
the runtime depends on NumPy only; those inputs raise an error rather than return the empty tensor
the spec allows for undecodable data, so that a caller does not mistake them for a decoded image.

The result is uint8 [height, width, channels] in the requested pixel_format: RGB, BGR, or Grayscale
(ITU-R BT.601 luma, rounded).
"""

from __future__ import annotations

import numpy as np

from .registry import register_op


def _u16(b: bytes, at: int, order: str = "<") -> int:
    return int(np.frombuffer(b, f"{order}u2", 1, at)[0])


def _u32(b: bytes, at: int, order: str = "<") -> int:
    return int(np.frombuffer(b, f"{order}u4", 1, at)[0])


def _i32(b: bytes, at: int) -> int:
    return int(np.frombuffer(b, "<i4", 1, at)[0])


def _decode_bmp(b: bytes) -> np.ndarray:
    offset, dib = _u32(b, 10), _u32(b, 14)
    width, height = _i32(b, 18), _i32(b, 22)
    bpp, compression = _u16(b, 28), _u32(b, 30)
    if compression not in (0, 3) or bpp not in (8, 24, 32):
        raise ValueError(f"BMP with {bpp} bits per pixel and compression {compression} is not supported")
    rows, cols = abs(height), width
    stride = (cols * bpp // 8 + 3) // 4 * 4
    raster = np.frombuffer(b, np.uint8, rows * stride, offset).reshape(rows, stride)
    if bpp == 8:
        n_colors = _u32(b, 46) or 256
        palette = np.frombuffer(b, np.uint8, n_colors * 4, 14 + dib).reshape(n_colors, 4)
        rgb = palette[raster[:, :cols]][..., 2::-1]
    else:
        rgb = raster[:, : cols * bpp // 8].reshape(rows, cols, bpp // 8)[..., 2::-1]  # stored BGR(A)
    return rgb[::-1] if height > 0 else rgb  # positive height: bottom row first


def _pnm_tokens(b: bytes, count: int) -> tuple[list[int], int]:
    """The first `count` header integers of a PNM file and the offset just past the last one."""
    values, i = [], 2
    while len(values) < count:
        while b[i : i + 1].isspace():
            i += 1
        if b[i : i + 1] == b"#":
            i = b.index(b"\n", i) + 1
            continue
        j = i
        while j < len(b) and not b[j : j + 1].isspace():
            j += 1
        values.append(int(b[i:j]))
        i = j
    return values, i


def _decode_pnm(b: bytes) -> np.ndarray:
    kind = b[:2]
    if kind not in (b"P2", b"P3", b"P5", b"P6"):
        raise ValueError(f"PNM type {kind.decode(errors='replace')} is not supported")
    (width, height, maxval), end = _pnm_tokens(b, 3)
    channels = 3 if kind in (b"P3", b"P6") else 1
    n = width * height * channels
    if kind in (b"P5", b"P6"):
        if maxval > 255:
            raise ValueError("PNM with 16-bit samples is not supported")
        data = np.frombuffer(b, np.uint8, n, end + 1).astype(np.int64)
    else:
        data = np.array(b[end:].split()[:n], np.int64)
    if maxval != 255:
        data = (data * 255 + maxval // 2) // maxval
    image = data.astype(np.uint8).reshape(height, width, channels)
    return np.repeat(image, 3, axis=2) if channels == 1 else image


def _decode_tiff(b: bytes) -> np.ndarray:
    order = "<" if b[:2] == b"II" else ">"
    ifd = _u32(b, 4, order)
    tags: dict[int, list[int]] = {}
    for k in range(_u16(b, ifd, order)):
        at = ifd + 2 + 12 * k
        tag, typ, count = _u16(b, at, order), _u16(b, at + 2, order), _u32(b, at + 4, order)
        size = {1: 1, 3: 2, 4: 4}.get(typ)
        if size is None:
            continue
        dtype = {1: "u1", 3: f"{order}u2", 4: f"{order}u4"}[typ]
        where = at + 8 if size * count <= 4 else _u32(b, at + 8, order)
        tags[tag] = np.frombuffer(b, dtype, count, where).astype(np.int64).tolist()
    width, height = tags[256][0], tags[257][0]
    channels = tags.get(277, [1])[0]
    if tags.get(259, [1])[0] != 1 or set(tags.get(258, [8])) != {8} or tags.get(284, [1])[0] != 1:
        raise ValueError("only uncompressed 8-bit chunky TIFF is supported")
    data = b"".join(b[o : o + c] for o, c in zip(tags[273], tags[279]))
    image = np.frombuffer(data, np.uint8, width * height * channels).reshape(height, width, channels)
    if channels == 1:
        gray = image if tags.get(262, [1])[0] == 1 else 255 - image  # 0 = white is zero
        return np.repeat(gray, 3, axis=2)
    return image[..., :3]


def _format_of(b: bytes) -> str:
    if b[:2] == b"BM":
        return "bmp"
    if b[:1] == b"P" and b[1:2] in b"123456":
        return "pnm"
    if b[:4] in (b"II*\0", b"MM\0*"):
        return "tiff"
    if b[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if b[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        return "WebP"
    if b[4:8] == b"jP  " or b[:4] == b"\xff\x4f\xff\x51":
        return "JPEG 2000"
    return "unknown"


@register_op("ImageDecoder", since=20)
def image_decoder(encoded_stream, *, pixel_format: str = "RGB"):
    data = np.ascontiguousarray(encoded_stream, np.uint8).tobytes()
    fmt = _format_of(data)
    decoders = {"bmp": _decode_bmp, "pnm": _decode_pnm, "tiff": _decode_tiff}
    if fmt not in decoders:
        raise NotImplementedError(f"ImageDecoder: decoding {fmt} images is not supported (needs an image codec)")
    rgb = decoders[fmt](data)
    if pixel_format == "RGB":
        return np.ascontiguousarray(rgb)
    if pixel_format == "BGR":
        return np.ascontiguousarray(rgb[..., ::-1])
    if pixel_format == "Grayscale":
        luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.rint(luma).astype(np.uint8)[..., None]
    raise ValueError(f"ImageDecoder: unknown pixel_format '{pixel_format}'")

"""The byte layout of a .spore file: the fixed header, the section table, and the limits a reader enforces.

A file is a 64-byte header, then sections (each starting on a 64-byte boundary, the gaps zero), then the
section table. The header holds the magic, the format version, the file's size and where the table is;
each table entry names a section by an 8-byte ASCII tag and gives its offset, length and CRC-32. All
integers are little-endian. docs/format.md is the specification; this module only packs and unpacks
the fixed-size parts, checking every number against the file before anything uses it.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass

from ..errors import ModelLoadError

MAGIC = b"SPORE\x00\r\n"  # the NUL stops text tools; CR LF catches line-ending conversion
FORMAT_VERSION = (1, 4)  # (major, minor): a reader reads its own major and any minor of it
ALIGN = 64  # every section and every tensor viewed in place starts on a multiple of this
PACKED_OFFSETS = "packed-offsets"  # 1.2: decoded tensors may start anywhere (a document "requires" it)

HEADER = struct.Struct("<8sHHIQQIII16sI")  # magic maj min header_size file_size table_off count entry_size
HEADER_SIZE = HEADER.size  # table_crc reserved header_crc
ENTRY = struct.Struct("<8sIIQQ")  # tag flags crc32 offset length
ENTRY_SIZE = ENTRY.size
REQUIRED = 1  # section flag: a reader that does not know the tag must refuse the file

# Limits: each bounds work or memory by something the file itself pays for, or by a generous constant.
MAX_HEADER_SIZE = 4096
MAX_SECTIONS = 1024
MAX_ENTRY_SIZE = 1024
MAX_JSON_BYTES = 256 << 20

assert HEADER_SIZE == 64 and ENTRY_SIZE == 32


class SporeFormatError(ModelLoadError):
    """A .spore file is malformed, truncated, corrupt, too new, or uses an encoding this reader lacks
    (the message starts with the file's path); also raised when a graph cannot be saved as .spore."""


@dataclass
class Section:
    tag: str
    flags: int
    crc: int
    offset: int
    length: int

    @property
    def required(self) -> bool:
        return bool(self.flags & REQUIRED)


@dataclass
class Header:
    major: int
    minor: int
    header_size: int
    file_size: int
    table_offset: int
    count: int
    entry_size: int
    table_crc: int


def pad_to(n: int, align: int = ALIGN) -> int:
    return -n % align


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def pack_header(file_size: int, table_offset: int, count: int, table_crc: int,
                version: tuple[int, int] = FORMAT_VERSION) -> bytes:
    body = HEADER.pack(MAGIC, version[0], version[1], HEADER_SIZE, file_size, table_offset, count, ENTRY_SIZE,
                       table_crc, b"\0" * 16, 0)[:-4]
    return body + struct.pack("<I", crc32(body))


def pack_table(sections: list[Section]) -> bytes:
    return b"".join(ENTRY.pack(s.tag.encode("ascii").ljust(8, b"\0"), s.flags, s.crc, s.offset, s.length)
                    for s in sections)


def unpack_header(buf, file_size: int) -> Header:
    """The header of a file of file_size bytes whose first bytes are buf; raises ValueError with what is
    wrong (the caller adds the path)."""
    if file_size < HEADER_SIZE or len(buf) < HEADER_SIZE:
        raise ValueError(f"{file_size} bytes is too short for a .spore file (the header alone is {HEADER_SIZE})")
    if bytes(buf[:8]) != MAGIC:
        raise ValueError("not a .spore file (bad magic bytes)")
    major, minor, header_size = struct.unpack_from("<HHI", buf, 8)
    # The major version is checked before anything else: a newer major may lay the header out differently.
    if major != FORMAT_VERSION[0]:
        raise ValueError(f"was written by format {major}.x; this sporeling reads {FORMAT_VERSION[0]}.x"
                         + (": upgrade sporeling" if major > FORMAT_VERSION[0] else ""))
    if not HEADER_SIZE <= header_size <= min(MAX_HEADER_SIZE, file_size) or header_size % 8:
        raise ValueError(f"header size {header_size} is invalid")
    if len(buf) < header_size:
        raise ValueError("header is truncated")
    (stored,) = struct.unpack_from("<I", buf, header_size - 4)
    if crc32(buf[: header_size - 4]) != stored:
        raise ValueError("header checksum mismatch (the file is corrupt)")
    _, _, _, _, size, table_offset, count, entry_size, table_crc, _, _ = HEADER.unpack_from(buf, 0)
    if size != file_size:
        raise ValueError(f"the header says the file is {size} bytes but it is {file_size} (truncated or appended to)")
    if not ENTRY_SIZE <= entry_size <= MAX_ENTRY_SIZE or entry_size % 8:
        raise ValueError(f"section table entry size {entry_size} is invalid")
    if count > MAX_SECTIONS:
        raise ValueError(f"{count} sections is more than the limit of {MAX_SECTIONS}")
    if table_offset < header_size or table_offset + count * entry_size > file_size:
        raise ValueError(f"the section table ({count} entries at offset {table_offset}) lies outside the file")
    return Header(major, minor, header_size, file_size, table_offset, count, entry_size, table_crc)


def unpack_table(buf, head: Header) -> dict[str, Section]:
    """The sections by tag, each checked to lie inside the file, after the header and the table's own
    bytes, and apart from every other section."""
    start, end = head.table_offset, head.table_offset + head.count * head.entry_size
    if crc32(buf[start:end]) != head.table_crc:
        raise ValueError("section table checksum mismatch (the file is corrupt)")
    sections: dict[str, Section] = {}
    for k in range(head.count):
        raw_tag, flags, crc, offset, length = ENTRY.unpack_from(buf, start + k * head.entry_size)
        tag_bytes = raw_tag.rstrip(b"\0")
        if not tag_bytes or not all(0x21 <= c < 0x7F for c in tag_bytes) or b"\0" in tag_bytes:
            raise ValueError(f"section table entry {k} has an invalid tag {raw_tag!r}")
        tag = tag_bytes.decode("ascii")
        if tag in sections:
            raise ValueError(f"section {tag} appears twice")
        if offset < head.header_size or offset + length > head.file_size:
            raise ValueError(f"section {tag} (offset {offset}, {length} bytes) lies outside the file")
        sections[tag] = Section(tag, flags, crc, offset, length)
    spans = sorted((s.offset, s.offset + s.length, s.tag) for s in sections.values() if s.length)
    spans.append((start, end, "the section table"))
    spans.sort()
    for (_, a_end, a), (b_start, _, b) in itertools.pairwise(spans):
        if b_start < a_end:
            raise ValueError(f"{a} and {b} overlap")
    return sections

""".spore: sporeling's own single-file model format (docs/format.md is the specification).

One file holds a 64-byte header (magic, format version, checksums), the tensor data (each tensor on a
64-byte boundary, so raw tensors load as views of the memory-mapped file, without a copy), the graph
as JSON, the provenance (producer, source file and its SHA-256, passes applied) as JSON, and a section
table. Every part has a CRC-32. Tensor bytes go through one codec table (codecs.py).

    save_spore(graph, path, provenance={...}, encoded={name: Encoded}) -> bytes written (atomically)
    load_spore(path, verify=True) -> Graph
    read_info(path) -> dict, without reading tensor data
"""

from .codecs import CODECS, Codec, register_codec
from .codecs_quant import Encoded
from .layout import FORMAT_VERSION, MAGIC, SporeFormatError
from .reader import load_spore, read_info
from .writer import save_spore

__all__ = ["CODECS", "FORMAT_VERSION", "MAGIC", "Codec", "Encoded", "SporeFormatError", "load_spore", "read_info", "register_codec",
           "save_spore"]

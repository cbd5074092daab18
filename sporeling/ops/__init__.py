"""Importing this package registers every kernel family with the registry."""

import importlib

from .registry import Info, OpDef, lookup, register_op, registered_ops

_FAMILIES = [
    "elementwise", "activation", "shape", "reduce", "matmul", "conv", "pool", "norm", "resize", "rnn",
    "quant", "control", "sequence", "misc", "fused",
]
for _name in _FAMILIES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _e:  # a family not written yet
        if _e.name != f"{__name__}.{_name}":
            raise

__all__ = ["Info", "OpDef", "lookup", "register_op", "registered_ops"]

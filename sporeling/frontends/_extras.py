"""The optional packages the frontends stand on (onnx, tflite), imported only when used, with an error
that says which extra to install."""

from __future__ import annotations

import importlib

from ..errors import ModelLoadError, SporelingError


def import_extra(module: str, extra: str, purpose: str, error: type[SporelingError] = ModelLoadError):
    """Imports `module` (dotted names import their parents too) and returns its top-level package."""
    top = module.split(".")[0]
    try:
        package = importlib.import_module(top)  # first: a submodule cached alone would hide a missing parent
        importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise error(f"{purpose} needs the {top} package: pip install 'sporeling[{extra}]'") from e
    return package

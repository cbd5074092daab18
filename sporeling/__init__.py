"""sporeling: a lightweight neural-network engine in Python with NumPy."""

from . import ops as _ops  # noqa: F401  (registers every kernel)
from .errors import SporelingError
from .ir import Graph, Node, ValueInfo
from .convert import convert
from .model import Model, TensorSpec, load
from .quant.compress import compress

__version__ = "0.1.0"
__all__ = ["load", "convert", "compress", "Model", "TensorSpec", "Graph", "Node", "ValueInfo", "SporelingError", "__version__"]

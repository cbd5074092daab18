from .graph import Graph, Node, ValueInfo
from .verify import toposort, verify

__all__ = ["Graph", "Node", "ValueInfo", "verify", "toposort"]

from .graph import Graph, Node, ValueInfo, unique_name
from .verify import toposort, verify

__all__ = ["Graph", "Node", "ValueInfo", "verify", "toposort", "unique_name"]

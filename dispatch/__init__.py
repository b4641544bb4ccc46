"""dispatch: place each operator of an ONNX model on a GPU or an ASIC, and report what follows."""

from __future__ import annotations

from dispatch.analysis import analyze
from dispatch.api import Dispatcher
from dispatch.cost import Cost, OpCost
from dispatch.errors import DispatchError
from dispatch.frontend import load
from dispatch.ir import Graph, Node, Value

__all__ = ["Dispatcher", "load", "analyze", "Graph", "Node", "Value", "OpCost", "Cost", "DispatchError"]
__version__ = "0.1.0"

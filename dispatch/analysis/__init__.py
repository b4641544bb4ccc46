"""Per-operator analysis: one table maps op_type to a function(node) -> OpCost.

Adding an operator is one function in the module that owns its class plus one line in `OPS`.
An op_type with no entry still gets its bytes counted and is flagged `modeled=False`.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatch.analysis.common import bytes_only
from dispatch.analysis.linear import conv, gemm, matmul
from dispatch.cost import OpCost
from dispatch.ir import Graph, Node

__all__ = ["OPS", "analyze_node", "analyze", "supported_ops"]

OpFn = Callable[[Node], OpCost]

OPS: dict[str, OpFn] = {
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": matmul,
}


def supported_ops() -> list[str]:
    return sorted(OPS)


def analyze_node(node: Node) -> OpCost:
    fn = OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if fn is None:
        return bytes_only(node, op_class="other", modeled=False)
    return fn(node)


def analyze(graph: Graph) -> list[OpCost]:
    """OpCost of every node, aligned with graph.nodes."""
    return [analyze_node(n) for n in graph.nodes]

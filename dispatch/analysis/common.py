"""Helpers shared by the analysis functions: byte counts of a node's inputs and outputs."""

from __future__ import annotations

from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["io_bytes", "param_bytes", "bytes_only", "out_size"]


def io_bytes(node: Node) -> tuple[int, int]:
    """(bytes read, bytes written): the sizes of every present input and every output."""
    return (sum(v.nbytes for v in node.present_inputs), sum(v.nbytes for v in node.outputs))


def param_bytes(node: Node) -> int:
    """Bytes of the node's constant inputs (weights, biases, folded constants)."""
    return sum(v.nbytes for v in node.present_inputs if v.is_const)


def out_size(node: Node, i: int = 0) -> int:
    return node.outputs[i].size if i < len(node.outputs) else 0


def bytes_only(node: Node, *, op_class: str, flops: int = 0, macs: int = 0, free: bool = False,
               modeled: bool = True) -> OpCost:
    """An OpCost whose bytes are the node's inputs and outputs; free views move no bytes."""
    r, w = io_bytes(node)
    if free:
        r = w = 0
    return OpCost(flops=flops, macs=macs, bytes_read=r, bytes_written=w, param_bytes=param_bytes(node),
                  op_class=op_class, free=free, modeled=modeled)

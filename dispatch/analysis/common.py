"""Helpers shared by the analysis functions: byte counts of inputs and outputs, sizes, broadcasting."""

from __future__ import annotations

import math

from dispatch.cost import OpCost
from dispatch.ir import Node, Value

__all__ = ["io_bytes", "param_bytes", "bytes_only", "out_size", "static", "broadcast_size", "rows"]


def io_bytes(node: Node) -> tuple[int, int]:
    """(bytes read, bytes written): the sizes of every present input and every output."""
    return (sum(v.nbytes for v in node.present_inputs), sum(v.nbytes for v in node.outputs))


def param_bytes(node: Node) -> int:
    """Bytes of the node's constant inputs (weights, biases, folded constants)."""
    return sum(v.nbytes for v in node.present_inputs if v.is_const)


def out_size(node: Node, i: int = 0) -> int:
    return node.outputs[i].size if i < len(node.outputs) else 0


def static(*values: Value | None) -> bool:
    """True when every value is present and has a fully known shape."""
    return all(v is not None and v.static for v in values)


def broadcast_size(node: Node) -> int:
    """Elements of output 0; when inference left it unknown, the numpy broadcast of the static inputs (0 if
    neither is known)."""
    if node.outputs and node.outputs[0].static:
        return node.outputs[0].size
    ins = node.present_inputs
    if not ins or not all(v.static for v in ins):
        return 0
    rank = max(len(v.shape) for v in ins)
    dims = [1] * rank
    for v in ins:
        for k, d in enumerate(v.shape, start=rank - len(v.shape)):
            if d != 1:
                if dims[k] not in (1, d):
                    return 0
                dims[k] = d
    return math.prod(dims)


def rows(shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    """(rows, row length) of a shape split at `axis` (negative: from the end): prod before, prod after."""
    axis = axis + len(shape) if axis < 0 else axis
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def bytes_only(node: Node, *, op_class: str, flops: int = 0, macs: int = 0, free: bool = False,
               modeled: bool = True, bytes_read: int | None = None) -> OpCost:
    """An OpCost whose bytes are the node's inputs and outputs (or `bytes_read` when given: an op that touches
    only part of an input); free views move no bytes."""
    r, w = io_bytes(node)
    if bytes_read is not None:
        r = bytes_read
    if free:
        r = w = 0
    return OpCost(flops=flops, macs=macs, bytes_read=r, bytes_written=w, param_bytes=param_bytes(node),
                  op_class=op_class, free=free, modeled=modeled)

"""Pooling (op_class "reduction"): FLOPs = kernel size per output element.

A max pool does one compare per kernel element, an average pool one add per kernel element (the last one
standing for the division), whatever the padding: kernel size × output size. (ptflops counts a pool as its
input size instead, which equals this only for non-overlapping windows.)
"""

from __future__ import annotations

import math

from dispatch.analysis.common import bytes_only, static
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["pool", "lp_pool", "global_pool", "global_lp_pool"]


def _kernel(node: Node) -> int:
    return math.prod(int(k) for k in node.attr("kernel_shape", []))


def pool(node: Node) -> OpCost:
    """MaxPool/AveragePool: output size × prod(kernel_shape)."""
    out = node.outputs[0]
    k = _kernel(node)
    if not out.static or not k:
        return bytes_only(node, op_class="reduction", modeled=False)
    return bytes_only(node, op_class="reduction", flops=out.size * k)


def lp_pool(node: Node) -> OpCost:
    """LpPool: per kernel element |x|^p (abs, pow) and a sum; the root and division fold into the last add:
    output size × 3·prod(kernel_shape)."""
    out = node.outputs[0]
    k = _kernel(node)
    if not out.static or not k:
        return bytes_only(node, op_class="reduction", modeled=False)
    return bytes_only(node, op_class="reduction", flops=3 * out.size * k)


def global_pool(node: Node) -> OpCost:
    """GlobalAveragePool/GlobalMaxPool: the kernel is the whole spatial extent: input size."""
    x = node.input(0)
    if not static(x):
        return bytes_only(node, op_class="reduction", modeled=False)
    return bytes_only(node, op_class="reduction", flops=x.size)


def global_lp_pool(node: Node) -> OpCost:
    """GlobalLpPool: 3 per input element, as LpPool."""
    x = node.input(0)
    if not static(x):
        return bytes_only(node, op_class="reduction", modeled=False)
    return bytes_only(node, op_class="reduction", flops=3 * x.size)

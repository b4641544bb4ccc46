"""Reductions (op_class "reduction"): FLOPs = a·N + b·R for an input of N elements reduced to R outputs.

Summing, multiplying, or comparing N elements into R results costs N − R operations; we count N (one per
input element, so that a reduction costs like the element-wise pass it is), plus one per output for a final
division, root or log.
"""

from __future__ import annotations

from dispatch.analysis.common import bytes_only, static
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["REDUCE_FLOPS", "reduce", "cumsum"]

# op_type -> (FLOPs per input element, FLOPs per output element)
REDUCE_FLOPS: dict[str, tuple[int, int]] = {
    "ReduceSum": (1, 0),
    "ReduceMax": (1, 0),
    "ReduceMin": (1, 0),
    "ReduceProd": (1, 0),
    "ArgMax": (1, 0),
    "ArgMin": (1, 0),
    "ReduceMean": (1, 1),  # sum, then one division per output
    "ReduceSumSquare": (2, 0),  # square, sum
    "ReduceL1": (2, 0),  # abs, sum
    "ReduceL2": (2, 1),  # square, sum; sqrt per output
    "ReduceLogSum": (1, 1),  # sum; log per output
    "ReduceLogSumExp": (2, 1),  # exp, sum; log per output
}


def reduce(node: Node) -> OpCost:
    """Reduce*/ArgMax/ArgMin: per-input and per-output FLOPs from REDUCE_FLOPS."""
    x, out = node.input(0), node.outputs[0]
    if not static(x, out):
        return bytes_only(node, op_class="reduction", modeled=False)
    a, b = REDUCE_FLOPS[node.op_type]
    return bytes_only(node, op_class="reduction", flops=a * x.size + b * out.size)


def cumsum(node: Node) -> OpCost:
    """CumSum: one add per element along the axis: N."""
    x = node.input(0)
    if not static(x):
        return bytes_only(node, op_class="reduction", modeled=False)
    return bytes_only(node, op_class="reduction", flops=x.size)

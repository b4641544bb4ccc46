"""Dense linear algebra: Conv, MatMul, Gemm. MACs = output size × reduction length, bias excluded."""

from __future__ import annotations

from dispatch.analysis.common import bytes_only
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["conv", "matmul", "gemm"]


def conv(node: Node) -> OpCost:
    """Conv: reduction length = C_in/groups · prod(kernel); FLOPs = 2·MACs + one add per output for bias."""
    w = node.inputs[1]
    out = node.outputs[0]
    if w is None or not w.static or not out.static:
        return bytes_only(node, op_class="conv", modeled=False)
    reduction = 1
    for d in w.shape[1:]:  # W is (C_out, C_in/groups, k1, k2, ...)
        reduction *= d
    macs = out.size * reduction
    bias = out.size if node.input(2) is not None else 0
    return bytes_only(node, op_class="conv", flops=2 * macs + bias, macs=macs)


def matmul(node: Node) -> OpCost:
    """MatMul with numpy semantics: reduction length is A's last dim (1-D A: its only dim)."""
    a, out = node.inputs[0], node.outputs[0]
    if a is None or not a.static or not out.static:
        return bytes_only(node, op_class="gemm", modeled=False)
    k = a.shape[-1] if a.shape else 1
    macs = out.size * k
    return bytes_only(node, op_class="gemm", flops=2 * macs, macs=macs)


def gemm(node: Node) -> OpCost:
    """Gemm Y = alpha·A'·B' + beta·C: K from A' (transA); the alpha scale and the beta·C add are element-wise."""
    a, out = node.inputs[0], node.outputs[0]
    if a is None or not a.static or not out.static:
        return bytes_only(node, op_class="gemm", modeled=False)
    k = a.shape[0] if node.attr("transA", 0) else a.shape[1]
    macs = out.size * k
    extra = 0
    if node.attr("alpha", 1.0) != 1.0:
        extra += out.size
    if node.input(2) is not None and node.attr("beta", 1.0) != 0.0:
        extra += out.size * (2 if node.attr("beta", 1.0) != 1.0 else 1)
    return bytes_only(node, op_class="gemm", flops=2 * macs + extra, macs=macs)

"""Normalizations and softmax (op_class "normalization"): FLOPs from the formula each ONNX spec gives.

N is the input size, R the number of groups normalised separately (rows). Reductions count as in
reduction.py: a sum over N elements costs N, a mean N + R (one division per row).
"""

from __future__ import annotations

import math

from dispatch.analysis.common import bytes_only, rows, static
from dispatch.analysis.linear import SOFTMAX_FLOPS_PER_ELEMENT
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["batchnorm", "layernorm", "instancenorm", "groupnorm", "rmsnorm", "lpnorm", "mvn", "lrn",
           "softmax", "logsoftmax", "hardmax"]


def _norm(node: Node, flops: int) -> OpCost:
    return bytes_only(node, op_class="normalization", flops=flops)


def _unknown(node: Node) -> OpCost:
    return bytes_only(node, op_class="normalization", modeled=False)


def batchnorm(node: Node) -> OpCost:
    """BatchNormalization at inference, folded to y = x·a + b per channel: 2 per element (as ptflops'
    bn_flops_counter_hook counts an affine batch norm), plus 5 per channel to fold a = scale/√(var + eps)
    (add, sqrt, div) and b = B − mean·a (mul, sub)."""
    x = node.input(0)
    if not static(x) or len(x.shape) < 2:
        return _unknown(node)
    return _norm(node, 2 * x.size + 5 * x.shape[1])


def _mean_var_affine(n: int, r: int, bias: bool) -> int:
    """The LayerNormalization spec's computation: Mean = ReduceMean(X) (N + R), D = X − Mean (N),
    DD = D·D (N), Var = ReduceMean(DD) (N + R), + epsilon (R), Sqrt (R), Reciprocal (R), D·InvStdDev (N),
    ·Scale (N), + B (N): 7N + 5R with a bias, 6N + 5R without."""
    return (7 if bias else 6) * n + 5 * r


def layernorm(node: Node) -> OpCost:
    """LayerNormalization over the axes from `axis` (default −1) on: rows = prod(shape[:axis])."""
    x = node.input(0)
    if not static(x) or not x.shape:
        return _unknown(node)
    r, _ = rows(x.shape, int(node.attr("axis", -1)))
    return _norm(node, _mean_var_affine(x.size, r, node.input(2) is not None))


def instancenorm(node: Node) -> OpCost:
    """InstanceNormalization: mean and variance per (n, c) over the spatial dims, scale and bias per channel:
    the LayerNormalization count with R = N·C."""
    x = node.input(0)
    if not static(x) or len(x.shape) < 2:
        return _unknown(node)
    return _norm(node, _mean_var_affine(x.size, x.shape[0] * x.shape[1], True))


def groupnorm(node: Node) -> OpCost:
    """GroupNormalization: mean and variance per (n, group): the LayerNormalization count, R = N·groups."""
    x, groups = node.input(0), node.attr("num_groups")
    if not static(x) or len(x.shape) < 2 or not groups:
        return _unknown(node)
    return _norm(node, _mean_var_affine(x.size, x.shape[0] * int(groups), True))


def rmsnorm(node: Node) -> OpCost:
    """RMSNormalization (opset 23): x / √(mean(x²) + eps) · scale: square N, mean N + R, add R, sqrt R,
    div N, scale N = 4N + 3R."""
    x = node.input(0)
    if not static(x) or not x.shape:
        return _unknown(node)
    r, _ = rows(x.shape, int(node.attr("axis", -1)))
    return _norm(node, 4 * x.size + 3 * r)


def lpnorm(node: Node) -> OpCost:
    """LpNormalization along `axis`: p = 2: square N, sum N, sqrt R, divide N = 3N + R; p = 1: abs N, sum N,
    divide N = 3N."""
    x = node.input(0)
    if not static(x) or not x.shape:
        return _unknown(node)
    axis = int(node.attr("axis", -1))
    r = x.size // max(x.shape[axis], 1)
    return _norm(node, 3 * x.size + (r if int(node.attr("p", 2)) == 2 else 0))


def mvn(node: Node) -> OpCost:
    """MeanVarianceNormalization over `axes` (default [0, 2, 3]), its spec's function body: ReduceMean(X)
    (N + R), Pow(mean, 2) (R), Pow(X, 2) (N), ReduceMean (N + R), Sub (R), Sqrt (R), X − mean (N),
    + epsilon (R), Div (N) = 5N + 6R."""
    x = node.input(0)
    if not static(x):
        return _unknown(node)
    axes = node.attr("axes", [0, 2, 3])
    try:
        group = math.prod(x.shape[a] for a in axes)
    except IndexError:
        return _unknown(node)
    r = x.size // max(group, 1)
    return _norm(node, 5 * x.size + 6 * r)


def lrn(node: Node) -> OpCost:
    """LRN: per element, a sum of `size` squares across channels (size muls, size − 1 adds), then
    x / (bias + alpha/size · sum)^beta (mul, add, pow, div): 2·size + 3."""
    x = node.input(0)
    if not static(x):
        return _unknown(node)
    return _norm(node, (2 * int(node.attr("size", 1)) + 3) * x.size)


def softmax(node: Node) -> OpCost:
    """Softmax: ReduceMax, Sub, Exp, ReduceSum, Div (the opset-13 function body): 5 per element."""
    x = node.input(0)
    if not static(x):
        return _unknown(node)
    return _norm(node, SOFTMAX_FLOPS_PER_ELEMENT * x.size)


def logsoftmax(node: Node) -> OpCost:
    """LogSoftmax: ReduceMax N, Sub N, Exp N, ReduceSum N, Log R, Sub N = 5N + R, with R the rows along
    `axis` (default −1, the opset-13 default; older opsets coerce to 2-D at axis 1, same N)."""
    x = node.input(0)
    if not static(x) or not x.shape:
        return _unknown(node)
    axis = int(node.attr("axis", -1))
    r = x.size // max(x.shape[axis], 1)
    return _norm(node, 5 * x.size + r)


def hardmax(node: Node) -> OpCost:
    """Hardmax: one compare per element to find each row's maximum, then a one-hot write: N."""
    x = node.input(0)
    if not static(x):
        return _unknown(node)
    return _norm(node, x.size)

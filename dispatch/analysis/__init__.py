"""Per-operator analysis: one table maps op_type to a function(node) -> OpCost.

Adding an operator is one function in the module that owns its class plus one line in `OPS` (or one entry
in a per-element cost table such as elementwise.UNARY_FLOPS). An op_type with no entry still gets its bytes
counted and is flagged `modeled=False` ("no compute model"); so does a node whose shapes are unknown.
"""

from __future__ import annotations

from collections.abc import Callable

from dispatch.analysis.common import bytes_only
from dispatch.analysis.elementwise import (
    BINARY_FLOPS,
    UNARY_FLOPS,
    VARIADIC,
    binary,
    clip,
    gelu,
    resize,
    unary,
    variadic,
)
from dispatch.analysis.linear import attention, conv, conv_transpose, einsum, gemm, matmul
from dispatch.analysis.movement import MOVEMENT, VIEWS, gather, movement, shape, slice_, view
from dispatch.analysis.normalization import (
    batchnorm,
    groupnorm,
    hardmax,
    instancenorm,
    layernorm,
    logsoftmax,
    lpnorm,
    lrn,
    mvn,
    rmsnorm,
    softmax,
)
from dispatch.analysis.pooling import global_lp_pool, global_pool, lp_pool, pool
from dispatch.analysis.quant import conv_integer, matmul_integer, qlinear_conv, qlinear_matmul
from dispatch.analysis.recurrent import GATES, recurrent
from dispatch.analysis.reduction import REDUCE_FLOPS, cumsum, reduce
from dispatch.cost import OpCost
from dispatch.ir import Graph, Node

__all__ = ["OPS", "analyze_node", "analyze", "supported_ops"]

OpFn = Callable[[Node], OpCost]

OPS: dict[str, OpFn] = {
    # linear.py: MACs = output size × reduction length
    "Conv": conv,
    "ConvInteger": conv_integer,  # quant.py: int8 MACs (mac_dtype "int8")
    "QLinearConv": qlinear_conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": matmul,
    "MatMulInteger": matmul_integer,
    "QLinearMatMul": qlinear_matmul,
    "Einsum": einsum,
    "Attention": attention,
    # recurrent.py: MACs = directions · seq · batch · gates·H · (I + H)
    **dict.fromkeys(GATES, recurrent),
    # normalization.py
    "BatchNormalization": batchnorm,
    "LayerNormalization": layernorm,
    "InstanceNormalization": instancenorm,
    "GroupNormalization": groupnorm,
    "RMSNormalization": rmsnorm,
    "LpNormalization": lpnorm,
    "MeanVarianceNormalization": mvn,
    "LRN": lrn,
    "Softmax": softmax,
    "LogSoftmax": logsoftmax,
    "Hardmax": hardmax,
    # pooling.py
    "MaxPool": pool,
    "AveragePool": pool,
    "LpPool": lp_pool,
    "GlobalAveragePool": global_pool,
    "GlobalMaxPool": global_pool,
    "GlobalLpPool": global_lp_pool,
    # reduction.py
    **dict.fromkeys(REDUCE_FLOPS, reduce),
    "CumSum": cumsum,
    # elementwise.py
    **dict.fromkeys(UNARY_FLOPS, unary),
    **dict.fromkeys(BINARY_FLOPS, binary),
    **dict.fromkeys(VARIADIC, variadic),
    "Clip": clip,
    "Gelu": gelu,
    "Resize": resize,
    "Upsample": resize,
    # movement.py: bytes only; views are free
    **dict.fromkeys(MOVEMENT, movement),
    **dict.fromkeys(VIEWS, view),
    "Gather": gather,
    "GatherElements": gather,
    "GatherND": gather,
    "Slice": slice_,
    "Shape": shape,
    "Size": shape,
}


def supported_ops() -> list[str]:
    return sorted(OPS)


def analyze_node(node: Node) -> OpCost:
    """The node's OpCost; bytes only and modeled=False for an op_type with no entry or a custom domain."""
    fn = OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if fn is None:
        return bytes_only(node, op_class="other", modeled=False)
    try:
        return fn(node)
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError):
        # attributes the spec does not allow (the checker passed them): count bytes, never crash the report
        return bytes_only(node, op_class="other", modeled=False)


def analyze(graph: Graph) -> list[OpCost]:
    """OpCost of every node, aligned with graph.nodes."""
    return [analyze_node(n) for n in graph.nodes]

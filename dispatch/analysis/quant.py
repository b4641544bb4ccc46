"""Integer (quantized) GEMMs and convs: MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv.

MACs count as for the float ops in linear.py (output size × reduction length, bias excluded) and carry
``mac_dtype="int8"``: 8-bit operands (int8 or uint8) accumulated in int32, so a report and the ASIC's cost
model can tell them from float MACs. FLOPs are 2 × MACs plus, for the QLinear ops, the requantisation of
every output (scale multiply, zero point add: 2 per output) and the bias add (1 per output when present);
zero-point corrections are not counted (a backend folds them into the bias). QuantizeLinear and
DequantizeLinear are element-wise (elementwise.py).
"""

from __future__ import annotations

import dataclasses

from dispatch.analysis.linear import conv_integer as _conv_integer
from dispatch.analysis.linear import matmul as _matmul
from dispatch.analysis.linear import qlinear_conv as _qlinear_conv
from dispatch.analysis.linear import qlinear_matmul as _qlinear_matmul
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["INT8", "conv_integer", "matmul_integer", "qlinear_conv", "qlinear_matmul"]

INT8 = "int8"
REQUANT_FLOPS = 2  # per output: scale multiply (with rounding), zero point add (with saturation)


def _int8(c: OpCost, extra: int = 0) -> OpCost:
    if not c.modeled:
        return dataclasses.replace(c, mac_dtype=INT8)
    return dataclasses.replace(c, flops=c.flops + extra, mac_dtype=INT8)


def matmul_integer(node: Node) -> OpCost:
    """MatMulInteger(A, B, a_zp, b_zp) -> int32: output size · K int8 MACs."""
    return _int8(_matmul(node))


def conv_integer(node: Node) -> OpCost:
    """ConvInteger(x, w, x_zp, w_zp) -> int32: N·C_out·∏out · C_in/groups·∏k int8 MACs."""
    return _int8(_conv_integer(node))


def qlinear_matmul(node: Node) -> OpCost:
    """QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp): int8 MACs + requantisation."""
    return _int8(_qlinear_matmul(node), REQUANT_FLOPS * node.outputs[0].size)


def qlinear_conv(node: Node) -> OpCost:
    """QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B): int8 MACs, bias + requantisation."""
    return _int8(_qlinear_conv(node), REQUANT_FLOPS * node.outputs[0].size)

"""Element-wise operators: FLOPs = output size × a per-element cost (op_class "elementwise").

The per-element cost convention is "one FLOP per basic operation": every add, subtract, multiply, divide,
compare, select, min/max and every elementary function (exp, log, sqrt, pow, erf, tanh, sin, ...) counts 1;
a composite activation counts the basic operations of its defining formula in the ONNX operator spec
(written next to each entry). The base is ptflops' (ptflops/pytorch_ops.py counts an activation as one
FLOP per output element); we spell out composite activations instead of counting them 1. Casts count 0.
Binary ops broadcast, so the output size counts; an n-input variadic op (Sum, Max, Min, Mean) does n−1
operations per output element (Mean one division more).
"""

from __future__ import annotations

from dispatch.analysis.common import broadcast_size, bytes_only, static
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["UNARY_FLOPS", "BINARY_FLOPS", "VARIADIC", "unary", "binary", "variadic", "clip", "gelu",
           "resize", "RESIZE_MODES"]

# FLOPs per output element of single-tensor ops (extra inputs such as scales do not change the count).
UNARY_FLOPS: dict[str, int] = {
    **dict.fromkeys(("Abs", "Neg", "Reciprocal", "Sqrt", "Exp", "Log", "Erf", "Tanh", "Sin", "Cos", "Tan",
                     "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Floor", "Ceil",
                     "Round", "Sign", "Not", "BitwiseNot", "IsNaN", "IsInf"), 1),  # one elementary operation
    "Relu": 1,  # max(x, 0)
    "ThresholdedRelu": 1,  # x > alpha ? x : 0 (one compare-select)
    "LeakyRelu": 2,  # x < 0 ? alpha·x : x (compare, mul)
    "Elu": 4,  # x < 0 ? alpha·(exp(x) − 1) : x (compare, exp, sub, mul)
    "Selu": 5,  # gamma·(x <= 0 ? alpha·exp(x) − alpha : x) (compare, exp, mul, sub, mul)
    "Celu": 7,  # max(0, x) + min(0, alpha·(exp(x/alpha) − 1)) (div, exp, sub, mul, min, max, add)
    "Sigmoid": 4,  # 1/(1 + exp(−x)) (neg, exp, add, reciprocal)
    "HardSigmoid": 4,  # max(0, min(1, alpha·x + beta)) (mul, add, min, max)
    "HardSwish": 5,  # x·HardSigmoid(x) (HardSigmoid 4, mul)
    "Softplus": 3,  # log(exp(x) + 1)
    "Softsign": 3,  # x/(1 + |x|) (abs, add, div)
    "Mish": 5,  # x·tanh(softplus(x)) (softplus 3, tanh, mul)
    "Shrink": 3,  # x < −lambd ? x + bias : x > lambd ? x − bias : 0 (2 compares, add/sub)
    "DequantizeLinear": 2,  # (x − zero_point)·scale
    "QuantizeLinear": 5,  # saturate(round(x/scale) + zero_point) (div, round, add, 2 clamps)
    "Cast": 0,  # a conversion, no arithmetic
    "CastLike": 0,
}

# FLOPs per output element of binary (broadcasting) ops.
BINARY_FLOPS: dict[str, int] = {
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Pow", "Mod", "BitShift", "Equal", "Less", "LessOrEqual",
                     "Greater", "GreaterOrEqual", "And", "Or", "Xor", "BitwiseAnd", "BitwiseOr",
                     "BitwiseXor"), 1),
    "PRelu": 2,  # x < 0 ? slope·x : x (compare, mul)
    "Where": 1,  # condition ? X : Y (one select)
}

# n-input ops: n−1 binary operations per output element, plus one division for Mean.
VARIADIC: dict[str, int] = {"Sum": 0, "Max": 0, "Min": 0, "Mean": 1}


def _elementwise(node: Node, per_element: int) -> OpCost:
    n = broadcast_size(node)
    if not n:
        return bytes_only(node, op_class="elementwise", modeled=False)
    return bytes_only(node, op_class="elementwise", flops=per_element * n)


def unary(node: Node) -> OpCost:
    """Output size × UNARY_FLOPS[op_type]."""
    return _elementwise(node, UNARY_FLOPS[node.op_type])


def binary(node: Node) -> OpCost:
    """Broadcast output size × BINARY_FLOPS[op_type]."""
    return _elementwise(node, BINARY_FLOPS[node.op_type])


def variadic(node: Node) -> OpCost:
    """Sum/Max/Min/Mean of n inputs: (n − 1) operations per output element, Mean one division more."""
    n = len(node.present_inputs)
    return _elementwise(node, n - 1 + (VARIADIC[node.op_type] if n > 1 else 0))


def clip(node: Node) -> OpCost:
    """Clip: one min or max per bound given (inputs 1 and 2 from opset 11, attributes before)."""
    bounds = sum(a in node.attrs for a in ("min", "max")) + sum(node.input(i) is not None for i in (1, 2))
    return _elementwise(node, bounds)


def gelu(node: Node) -> OpCost:
    """Gelu (opset 20): approximate="none": 0.5·x·(1 + erf(x/√2)), 5 per element (div, erf, add, mul, mul);
    "tanh": 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), 9 per element (x³ 2 muls, mul, add, mul, tanh, add,
    mul, mul)."""
    return _elementwise(node, 9 if node.attr("approximate", "none") == "tanh" else 5)


# Resize/Upsample: an output element interpolates 2 (linear) or 4 (cubic) points along each resized axis,
# 2^r or 4^r points in all for r resized axes; a weighted sum of p points is p multiplies and p − 1 adds.
RESIZE_MODES: dict[str, int] = {"nearest": 0, "linear": 2, "bilinear": 2, "cubic": 4}


def resize(node: Node) -> OpCost:
    """Resize/Upsample: nearest gathers (movement, 0 FLOPs); linear/cubic cost 2·p − 1 FLOPs per output
    element with p = RESIZE_MODES[mode]^r points, r = number of axes whose size changes (0: a copy)."""
    x, out = node.input(0), node.outputs[0]
    mode = str(node.attr("mode", "nearest")).lower()
    if mode not in RESIZE_MODES or not static(x, out) or len(x.shape) != len(out.shape):
        return bytes_only(node, op_class="movement", modeled=False)
    r = sum(1 for a, b in zip(x.shape, out.shape, strict=True) if a != b)
    if RESIZE_MODES[mode] == 0 or r == 0:
        return bytes_only(node, op_class="movement")
    points = RESIZE_MODES[mode] ** r
    return bytes_only(node, op_class="elementwise", flops=(2 * points - 1) * out.size)

"""Dense linear algebra: Conv, ConvTranspose, MatMul, Gemm, Einsum, Attention and their integer forms.

MACs = output size × reduction length, bias excluded; FLOPs = 2 × MACs plus the element-wise work (bias add,
alpha/beta scaling). This is the convention of fvcore's and PyTorch's FlopCounterMode for convolutions and
matmuls (torch/utils/flop_counter.py: conv_flop_count, mm_flop), which count a multiply-add as two FLOPs.
"""

from __future__ import annotations

import math
import string

from dispatch.analysis.common import bytes_only, static
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["conv", "conv_integer", "qlinear_conv", "conv_transpose", "matmul", "qlinear_matmul", "gemm",
           "einsum", "attention", "SOFTMAX_FLOPS_PER_ELEMENT"]

# Softmax per element: ReduceMax, Sub, Exp, ReduceSum, Div (the ONNX Softmax-13 function body). Shared with
# normalization.softmax so that Attention counts its softmax the same way.
SOFTMAX_FLOPS_PER_ELEMENT = 5


def _conv(node: Node, w_index: int, bias_index: int | None) -> OpCost:
    """Conv: reduction length = C_in/groups · prod(kernel); FLOPs = 2·MACs + one add per output for bias.

    W is (C_out, C_in/groups, k1, k2, ...), so groups, depthwise, dilations, strides and pads are all
    accounted for by W's shape and the output's shape (padded positions are multiplied like any other).
    """
    w, out = node.input(w_index), node.outputs[0]
    if not static(w, out):
        return bytes_only(node, op_class="conv", modeled=False)
    macs = out.size * math.prod(w.shape[1:])
    bias = out.size if bias_index is not None and node.input(bias_index) is not None else 0
    return bytes_only(node, op_class="conv", flops=2 * macs + bias, macs=macs)


def conv(node: Node) -> OpCost:
    """Conv(X, W, B): N·C_out·OH·OW · C_in/groups·kH·kW MACs."""
    return _conv(node, 1, 2)


def conv_integer(node: Node) -> OpCost:
    """ConvInteger(x, w, x_zero_point, w_zero_point): as Conv, no bias."""
    return _conv(node, 1, None)


def qlinear_conv(node: Node) -> OpCost:
    """QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B): as Conv, W at 3, bias at 8."""
    return _conv(node, 3, 8)


def conv_transpose(node: Node) -> OpCost:
    """ConvTranspose: every input element is multiplied by C_out/groups · prod(kernel) weights.

    W is (C_in, C_out/groups, k1, ...), so MACs = N·C_in·H·W · C_out/groups·kH·kW (as fvcore's
    conv_flop_count with transposed=True); bias adds one per output.
    """
    x, w, out = node.input(0), node.input(1), node.outputs[0]
    if not static(x, w, out):
        return bytes_only(node, op_class="conv", modeled=False)
    macs = x.size * math.prod(w.shape[1:])
    bias = out.size if node.input(2) is not None else 0
    return bytes_only(node, op_class="conv", flops=2 * macs + bias, macs=macs)


def _matmul_k(a_index: int, b_index: int, node: Node) -> int:
    """The reduction length of A @ B with numpy semantics: A's last dim (a 1-D A: its only dim), else B's
    second-to-last (a 1-D B: its only dim). 0 when neither shape is known."""
    a, b = node.input(a_index), node.input(b_index)
    if a is not None and a.shape and a.static:
        return a.shape[-1]
    if b is not None and b.shape and b.static:
        return b.shape[-2] if len(b.shape) >= 2 else b.shape[0]
    return 0


def _matmul(node: Node, a_index: int, b_index: int) -> OpCost:
    out = node.outputs[0]
    k = _matmul_k(a_index, b_index, node)
    if not out.static or not k:
        return bytes_only(node, op_class="gemm", modeled=False)
    macs = out.size * k  # batch dims broadcast into the output; a 1-D operand's dim is dropped from it
    return bytes_only(node, op_class="gemm", flops=2 * macs, macs=macs)


def matmul(node: Node) -> OpCost:
    """MatMul(A, B) (also MatMulInteger): output size · K."""
    return _matmul(node, 0, 1)


def qlinear_matmul(node: Node) -> OpCost:
    """QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp): as MatMul with B at 3."""
    return _matmul(node, 0, 3)


def gemm(node: Node) -> OpCost:
    """Gemm Y = alpha·A'·B' + beta·C: K from A' (transA); alpha scaling and beta·C are element-wise."""
    a, b, out = node.input(0), node.input(1), node.outputs[0]
    if static(a):
        k = a.shape[0] if node.attr("transA", 0) else a.shape[1]
    elif static(b):
        k = b.shape[1] if node.attr("transB", 0) else b.shape[0]
    else:
        k = 0
    if not out.static or not k:
        return bytes_only(node, op_class="gemm", modeled=False)
    macs = out.size * k
    extra = 0
    if node.attr("alpha", 1.0) != 1.0:
        extra += out.size
    if node.input(2) is not None and node.attr("beta", 1.0) != 0.0:
        extra += out.size * (2 if node.attr("beta", 1.0) != 1.0 else 1)
    return bytes_only(node, op_class="gemm", flops=2 * macs + extra, macs=macs)


def _einsum_terms(equation: str, n_inputs: int) -> tuple[list[str], str] | None:
    """Input terms and the output term of an equation; the implicit output (no '->') is the letters that
    appear once, in alphabetical order, after the ellipsis if any (numpy's rule)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_inputs:
        return None
    if not arrow:
        letters = "".join(terms).replace("...", "")
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        rhs = ("..." if "..." in lhs else "") + "".join(once)
    return terms, rhs


def einsum(node: Node) -> OpCost:
    """Einsum with two operands: MACs = product of the sizes of all indices (the ellipsis counts as its
    broadcast batch); one operand: a sum over the dropped indices (input size adds) or a pure permutation.
    Three or more operands have no single contraction order and are left unmodeled."""
    ins = node.inputs
    parsed = _einsum_terms(str(node.attr("equation", "")), len(ins))
    if parsed is None or not static(*ins) or len(ins) > 2:
        return bytes_only(node, op_class="gemm" if len(ins) == 2 else "reduction", modeled=False)
    terms, rhs = parsed
    sizes: dict[str, int] = {}
    ellipses: list[tuple[int, ...]] = []
    for term, v in zip(terms, ins, strict=True):
        shape = v.shape
        before, dots, after = term.partition("...")
        n_ell = len(shape) - len(before) - len(after) if dots else 0
        if n_ell < 0 or (not dots and len(term) != len(shape)) or \
                any(c not in string.ascii_letters for c in before + after):
            return bytes_only(node, op_class="gemm", modeled=False)
        if dots:
            ellipses.append(tuple(shape[len(before):len(before) + n_ell]))
        dims = list(shape[:len(before)]) + list(shape[len(shape) - len(after):])
        for c, d in zip(before + after, dims, strict=True):
            if sizes.get(c, d) not in (d, 1) and d != 1:
                return bytes_only(node, op_class="gemm", modeled=False)
            sizes[c] = max(sizes.get(c, 1), d)
    batch = 1
    if ellipses:
        rank = max(len(e) for e in ellipses)
        dims = [1] * rank
        for e in ellipses:
            for k, d in enumerate(e, start=rank - len(e)):
                dims[k] = max(dims[k], d)
        batch = math.prod(dims)
    total = math.prod(sizes.values()) * batch
    if len(ins) == 1:
        summed = set(sizes) - set(rhs.replace("...", ""))
        if not summed:
            return bytes_only(node, op_class="movement")
        return bytes_only(node, op_class="reduction", flops=total)
    return bytes_only(node, op_class="gemm", flops=2 * total, macs=total)


def attention(node: Node) -> OpCost:
    """Attention (opset 23): Q·Kᵀ and P·V MACs = B·Hq·S·L·(D + Dv) with L = past + current keys; per score
    one scale multiply, the softmax's 5 (see SOFTMAX_FLOPS_PER_ELEMENT), one add for a mask or causal mask
    and 3 for a soft cap (softcap·tanh(x/softcap)). Q/K/V are 4-D (B, H, S, D) or 3-D (B, S, H·D) with
    q_num_heads/kv_num_heads."""
    q, k, v, out = node.input(0), node.input(1), node.input(2), node.outputs[0]
    if not static(q, k, v, out):
        return bytes_only(node, op_class="gemm", modeled=False)
    qs, ks, vs = q.shape, k.shape, v.shape
    if len(qs) == 4 and len(ks) == 4 and len(vs) == 4:
        b, hq, s, d = qs
        length, dv = ks[2], vs[3]
    elif len(qs) == 3 and node.attr("q_num_heads") and node.attr("kv_num_heads"):
        hq = int(node.attr("q_num_heads"))
        b, s, d = qs[0], qs[1], qs[2] // hq
        length, dv = ks[1], vs[2] // int(node.attr("kv_num_heads"))
    else:
        return bytes_only(node, op_class="gemm", modeled=False)
    past = node.input(4)
    if past is not None:
        if not past.static or len(past.shape) != 4:
            return bytes_only(node, op_class="gemm", modeled=False)
        length += past.shape[2]
    scores = b * hq * s * length
    macs = scores * (d + dv)
    per_score = 1 + SOFTMAX_FLOPS_PER_ELEMENT
    if node.input(3) is not None or node.attr("is_causal", 0):
        per_score += 1
    if node.attr("softcap", 0.0):
        per_score += 3
    return bytes_only(node, op_class="gemm", flops=2 * macs + per_score * scores, macs=macs)

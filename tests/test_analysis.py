"""Per-operator analysis: golden counts on single-node models loaded through dispatch.frontend.load.

Every expected number carries its arithmetic. Conventions (dispatch/analysis/*): MACs = output size ×
reduction length for Conv/ConvTranspose/MatMul/Gemm/Einsum/Attention, FLOPs = 2·MACs + element-wise work;
element-wise ops cost FLOPs per output element from elementwise.UNARY_FLOPS/BINARY_FLOPS; movement ops
cost bytes only; views are free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import models
from dispatch.analysis import OPS, analyze, analyze_node
from dispatch.cost import OP_CLASSES, OpCost
from dispatch.frontend import load
from dispatch.ir import Graph, Node

OPSET = 17
F32 = 4  # bytes per float32 element
I64 = 8


@dataclass(frozen=True)
class In:
    """A graph input of a given shape and dtype (a plain tuple means float32)."""

    shape: tuple[int | str, ...]
    dtype: type = np.float32


def build(op: str, inputs: list[object], *, n_out: int = 1, opset: int = OPSET, domain: str = "",
          **attrs: object) -> onnx.ModelProto:
    """A one-node model: tuple/In -> graph input, ndarray -> initializer, None -> omitted optional input."""
    names, graph_inputs, inits = [], [], []
    for i, spec in enumerate(inputs):
        name = f"x{i}"
        if spec is None:
            names.append("")
            continue
        names.append(name)
        if isinstance(spec, np.ndarray):
            inits.append(onnx.numpy_helper.from_array(spec, name))
        else:
            spec = spec if isinstance(spec, In) else In(tuple(spec))
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype)), list(spec.shape)))
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name="op", domain=domain, **attrs)
    graph = helper.make_graph([node], "t", graph_inputs,
                              [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    # onnx.checker wants typed outputs: take them from onnx's inference, else input 0's type.
    inferred = onnx.shape_inference.infer_shapes(model)
    for out, inf in zip(model.graph.output, inferred.graph.output, strict=True):
        if inf.type.tensor_type.HasField("shape"):
            out.CopyFrom(inf)
        else:
            out.type.CopyFrom(graph_inputs[0].type)
    return model


def cost(op: str, inputs: list[object], **kw: object) -> tuple[Node, OpCost]:
    """Load the one-node model through the frontend and analyse its only node."""
    graph = load(build(op, inputs, **kw))
    assert len(graph.nodes) == 1, [n.op_type for n in graph.nodes]
    node = graph.nodes[0]
    c = analyze_node(node)
    assert c.op_class in OP_CLASSES
    return node, c


def w(*shape: int) -> np.ndarray:
    return np.ones(shape, dtype=np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# -- Conv ------------------------------------------------------------------------------------------------
def test_conv_plain():
    _, c = cost("Conv", [(1, 64, 56, 56), w(64, 64, 3, 3)], pads=[1, 1, 1, 1])
    assert c.macs == 1 * 64 * 56 * 56 * 64 * 3 * 3  # N·C_out·OH·OW · C_in/g·kH·kW
    assert c.flops == 2 * c.macs  # no bias
    assert c.op_class == "conv" and c.modeled
    assert c.param_bytes == 64 * 64 * 9 * F32
    assert c.bytes_read == (64 * 56 * 56 + 64 * 64 * 9) * F32  # X + W
    assert c.bytes_written == 64 * 56 * 56 * F32


def test_conv_bias_adds_one_flop_per_output():
    _, c = cost("Conv", [(1, 3, 8, 8), w(16, 3, 3, 3), w(16)])
    out = 16 * 6 * 6  # no padding: 8 − 3 + 1 = 6
    assert c.macs == out * 3 * 3 * 3
    assert c.flops == 2 * c.macs + out  # + bias add


def test_conv_grouped():
    _, c = cost("Conv", [(1, 32, 28, 28), w(64, 8, 3, 3)], group=4, pads=[1, 1, 1, 1])
    assert c.macs == 1 * 64 * 28 * 28 * (32 // 4) * 3 * 3  # C_in/groups = 8


def test_conv_depthwise_strided():
    _, c = cost("Conv", [(1, 32, 56, 56), w(32, 1, 3, 3)], group=32, strides=[2, 2], pads=[1, 1, 1, 1])
    assert c.macs == 32 * 28 * 28 * 1 * 3 * 3  # OH = (56 + 2 − 3)//2 + 1 = 28; C_in/g = 1


def test_conv_dilated():
    _, c = cost("Conv", [(1, 16, 32, 32), w(16, 16, 3, 3)], dilations=[2, 2])
    assert c.macs == 16 * 28 * 28 * 16 * 3 * 3  # OH = 32 − 2·(3 − 1) = 28


def test_conv_strided_batch():
    _, c = cost("Conv", [(2, 3, 224, 224), w(64, 3, 7, 7)], strides=[2, 2], pads=[3, 3, 3, 3])
    assert c.macs == 2 * 64 * 112 * 112 * 3 * 7 * 7  # ResNet stem: OH = (224 + 6 − 7)//2 + 1 = 112


def test_conv_asymmetric_pads_and_auto_pad_1d():
    _, c = cost("Conv", [(1, 4, 10), w(8, 4, 3)], auto_pad="SAME_UPPER", strides=[2])
    assert c.macs == 8 * 5 * 4 * 3  # OW = ceil(10/2) = 5
    _, c = cost("Conv", [(1, 4, 10), w(8, 4, 3)], pads=[0, 2])
    assert c.macs == 8 * 10 * 4 * 3  # OW = 10 + 0 + 2 − 3 + 1 = 10


def test_conv_3d():
    _, c = cost("Conv", [(1, 2, 4, 8, 8), w(4, 2, 3, 3, 3)], pads=[1] * 6)
    assert c.macs == 4 * 4 * 8 * 8 * 2 * 27  # C_out·D·H·W · C_in·kD·kH·kW


def test_conv_transpose():
    _, c = cost("ConvTranspose", [(1, 16, 8, 8), w(16, 8, 4, 4)], strides=[2, 2], pads=[1, 1, 1, 1])
    assert c.macs == 1 * 16 * 8 * 8 * 8 * 4 * 4  # input size · C_out/g·kH·kW; output is 1×8×16×16
    assert c.bytes_written == 8 * 16 * 16 * F32  # OH = 2·(8 − 1) + 4 − 2 = 16
    assert c.flops == 2 * c.macs


def test_conv_transpose_grouped_with_bias():
    _, c = cost("ConvTranspose", [(1, 16, 8, 8), w(16, 4, 3, 3), w(8)], group=2)
    assert c.macs == 16 * 8 * 8 * 4 * 3 * 3  # W is (C_in, C_out/g, k, k): C_out = 4·2 = 8
    assert c.flops == 2 * c.macs + 8 * 10 * 10  # + bias on the 1×8×10×10 output (8 − 1 + 3 = 10)


# -- MatMul / Gemm / Einsum / Attention ------------------------------------------------------------------
def test_matmul_2d():
    _, c = cost("MatMul", [(64, 128), w(128, 256)])
    assert c.macs == 64 * 128 * 256  # M·K·N
    assert c.flops == 2 * 64 * 128 * 256
    assert c.op_class == "gemm" and c.param_bytes == 128 * 256 * F32


def test_matmul_batched_broadcast():
    _, c = cost("MatMul", [(2, 1, 8, 16), (3, 16, 4)])
    assert c.macs == 2 * 3 * 8 * 4 * 16  # output 2×3×8×4 (batch dims broadcast) · K = 16


def test_matmul_1d_operands():
    _, c = cost("MatMul", [(16,), (2, 16, 4)])
    assert c.macs == 2 * 4 * 16  # 1-D A is a row vector: output 2×4, K = 16
    _, c = cost("MatMul", [(2, 8, 16), (16,)])
    assert c.macs == 2 * 8 * 16  # 1-D B is a column vector: output 2×8
    _, c = cost("MatMul", [(16,), (16,)])
    assert c.macs == 16  # dot product: a scalar, K = 16


def test_gemm_trans_a_with_bias():
    _, c = cost("Gemm", [(128, 64), w(128, 256), w(256)], transA=1)
    assert c.macs == 64 * 256 * 128  # A' is 64×128: M·N·K
    assert c.flops == 2 * c.macs + 64 * 256  # + C broadcast add (beta = 1)


def test_gemm_trans_b_alpha_beta():
    _, c = cost("Gemm", [(8, 32), w(16, 32), w(8, 16)], transB=1, alpha=0.5, beta=2.0)
    assert c.macs == 8 * 16 * 32
    assert c.flops == 2 * c.macs + 8 * 16 + 2 * 8 * 16  # alpha scale; beta multiply and add


def test_gemm_no_bias():
    _, c = cost("Gemm", [(4, 10), w(10, 3)])
    assert c.macs == 4 * 3 * 10 and c.flops == 2 * c.macs


def test_einsum_batched_matmul():
    _, c = cost("Einsum", [(2, 8, 16), (2, 16, 4)], equation="bij,bjk->bik")
    assert c.macs == 2 * 8 * 16 * 4  # product of all index sizes b·i·j·k
    assert c.flops == 2 * c.macs and c.op_class == "gemm"


def test_einsum_attention_scores_and_implicit_output():
    _, c = cost("Einsum", [(2, 12, 128, 64), (2, 12, 128, 64)], equation="bhqd,bhkd->bhqk")
    assert c.macs == 2 * 12 * 128 * 128 * 64  # b·h·q·k·d
    _, c = cost("Einsum", [(8, 16), (16, 4)], equation="ij,jk")
    assert c.macs == 8 * 16 * 4  # implicit output "ik"


def test_einsum_ellipsis_broadcast():
    _, c = cost("Einsum", [(3, 1, 8, 16), (5, 16, 4)], equation="...ij,...jk->...ik")
    assert c.macs == 3 * 5 * 8 * 16 * 4  # the ellipsis broadcasts (3,1) with (5,) to (3,5)


def test_einsum_single_operand():
    _, c = cost("Einsum", [(6, 7)], equation="ij->i")
    assert c.flops == 6 * 7 and c.macs == 0 and c.op_class == "reduction"  # one add per input element
    _, c = cost("Einsum", [(6, 7)], equation="ij->ji")
    assert c.flops == 0 and c.op_class == "movement"  # a transpose


def test_einsum_three_operands_unmodeled():
    _, c = cost("Einsum", [(2, 3), (3, 4), (4, 5)], equation="ij,jk,kl->il")
    assert not c.modeled and c.bytes_read == (6 + 12 + 20) * F32


def test_attention_4d():
    _, c = cost("Attention", [(2, 4, 8, 16), (2, 4, 10, 16), (2, 4, 10, 32)], opset=23)
    scores = 2 * 4 * 8 * 10  # B·H·S·L
    assert c.macs == scores * (16 + 32)  # Q·Kᵀ (D = 16) and P·V (Dv = 32)
    assert c.flops == 2 * c.macs + scores * (1 + 5)  # scale, softmax


def test_attention_3d_heads_causal():
    _, c = cost("Attention", [(2, 8, 64), (2, 8, 64), (2, 8, 64)], opset=23, q_num_heads=4, kv_num_heads=4,
                is_causal=1)
    scores = 2 * 4 * 8 * 8  # B·Hq·S·L with D = 64/4 = 16
    assert c.macs == scores * (16 + 16)
    assert c.flops == 2 * c.macs + scores * (1 + 5 + 1)  # scale, softmax, causal mask


def test_integer_and_qlinear_forms():
    _, c = cost("MatMulInteger", [In((4, 8), np.uint8), np.ones((8, 3), np.uint8)])
    assert c.macs == 4 * 3 * 8
    _, c = cost("ConvInteger", [In((1, 2, 5, 5), np.uint8), np.ones((4, 2, 3, 3), np.uint8)])
    assert c.macs == 4 * 3 * 3 * 2 * 9 and c.flops == 2 * c.macs  # no bias input


# -- recurrent (the corpus's LSTM/GRU counted 0 MACs before) -----------------------------------------------
def test_lstm_bidirectional_with_bias():
    # X [seq 5, batch 2, I 3], H 4, 2 directions: W [2, 16, 3], R [2, 16, 4], B [2, 32]
    _, c = cost("LSTM", [(5, 2, 3), w(2, 16, 3), w(2, 16, 4), w(2, 32)], hidden_size=4,
                direction="bidirectional")
    steps = 2 * 5 * 2  # directions · seq · batch
    assert c.macs == steps * 16 * (3 + 4)  # gates·H · (I + H) = 16 · 7 → 2,240
    assert c.flops == 2 * c.macs + steps * (16 + 32 + 9 * 4)  # gate sums, Wb + Rb, 9 per unit
    assert c.op_class == "gemm" and c.modeled


def test_gru_batch_first_and_rnn_without_bias():
    # layout 1: X [batch 2, seq 7, I 3]; GRU gates 3 · H 5 = 15
    _, c = cost("GRU", [(2, 7, 3), w(1, 15, 3), w(1, 15, 5)], hidden_size=5, layout=1,
                linear_before_reset=1)
    assert c.macs == 7 * 2 * 15 * (3 + 5)  # 1,680
    assert c.flops == 2 * c.macs + 7 * 2 * (15 + 8 * 5)
    _, c = cost("RNN", [(4, 1, 6), w(1, 2, 6), w(1, 2, 2)], hidden_size=2)
    assert c.macs == 4 * 1 * 2 * (6 + 2) and c.flops == 2 * c.macs + 4 * (2 + 1 * 2)  # H = 2


# -- normalization ---------------------------------------------------------------------------------------
def test_batchnorm():
    _, c = cost("BatchNormalization", [(1, 64, 56, 56), w(64), w(64), w(64), w(64)])
    assert c.flops == 2 * 64 * 56 * 56 + 5 * 64  # x·a + b per element; a, b folded per channel
    assert c.op_class == "normalization" and c.macs == 0


def test_layernorm():
    n, r = 2 * 128 * 768, 2 * 128
    _, c = cost("LayerNormalization", [(2, 128, 768), w(768), w(768)])
    assert c.flops == 7 * n + 5 * r  # spec formula: 7 per element, 5 per row
    _, c = cost("LayerNormalization", [(2, 128, 768), w(768)])
    assert c.flops == 6 * n + 5 * r  # no bias
    _, c = cost("LayerNormalization", [(2, 128, 768), w(128, 768), w(128, 768)], axis=1)
    assert c.flops == 7 * n + 5 * 2  # rows = prod(shape[:1]) = 2


def test_softmax_and_logsoftmax():
    n = 2 * 12 * 128 * 128
    _, c = cost("Softmax", [(2, 12, 128, 128)], axis=-1)
    assert c.flops == 5 * n  # max, sub, exp, sum, div
    _, c = cost("LogSoftmax", [(2, 12, 128, 128)], axis=-1)
    assert c.flops == 5 * n + 2 * 12 * 128  # + one log per row


def test_other_norms():
    n = 2 * 8 * 16 * 16
    _, c = cost("InstanceNormalization", [(2, 8, 16, 16), w(8), w(8)])
    assert c.flops == 7 * n + 5 * 2 * 8  # rows = N·C
    _, c = cost("GroupNormalization", [(2, 8, 4, 4), w(8), w(8)], num_groups=4, opset=21)
    assert c.flops == 7 * (2 * 8 * 16) + 5 * 2 * 4  # rows = N·groups
    _, c = cost("RMSNormalization", [(2, 16, 64), w(64)], opset=23)
    assert c.flops == 4 * (2 * 16 * 64) + 3 * (2 * 16)  # 4 per element, 3 per row
    _, c = cost("LpNormalization", [(4, 10)], axis=-1, p=2)
    assert c.flops == 3 * 40 + 4  # square, sum, divide per element; sqrt per row
    _, c = cost("MeanVarianceNormalization", [(2, 3, 4, 5)])
    assert c.flops == 5 * 120 + 6 * 3  # axes (0, 2, 3) leave 3 groups
    _, c = cost("LRN", [(1, 8, 4, 4)], size=3)
    assert c.flops == (2 * 3 + 3) * 128  # size squares and adds, then mul, add, pow, div
    _, c = cost("Hardmax", [(3, 7)])
    assert c.flops == 21


# -- pooling and reductions ------------------------------------------------------------------------------
def test_maxpool():
    _, c = cost("MaxPool", [(1, 64, 112, 112)], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    assert c.flops == 64 * 56 * 56 * 3 * 3  # output size · kernel size compares
    assert c.op_class == "reduction"


def test_averagepool_and_lppool():
    _, c = cost("AveragePool", [(1, 64, 56, 56)], kernel_shape=[2, 2], strides=[2, 2])
    assert c.flops == 64 * 28 * 28 * 4  # output size · kernel size adds
    _, c = cost("LpPool", [(1, 4, 8, 8)], kernel_shape=[2, 2], strides=[2, 2])
    assert c.flops == 3 * 4 * 4 * 4 * 4  # abs, pow, add per kernel element


def test_global_pools():
    _, c = cost("GlobalAveragePool", [(1, 2048, 7, 7)])
    assert c.flops == 2048 * 7 * 7  # input size
    assert c.bytes_written == 2048 * F32
    _, c = cost("GlobalMaxPool", [(1, 2048, 7, 7)])
    assert c.flops == 2048 * 7 * 7


def test_reductions():
    _, c = cost("ReduceMean", [(2, 3, 4)], axes=[-1], keepdims=1)
    assert c.flops == 24 + 6  # N adds + R divisions
    _, c = cost("ReduceSum", [(2, 3, 4), ints(1)], keepdims=0)
    assert c.flops == 24  # N
    _, c = cost("ReduceL2", [(2, 3, 4)], axes=[0, 1])
    assert c.flops == 2 * 24 + 4  # square and add per element, sqrt per output
    _, c = cost("ReduceLogSumExp", [(2, 3, 4)], axes=[2])
    assert c.flops == 2 * 24 + 6
    _, c = cost("ArgMax", [(5, 7)], axis=1)
    assert c.flops == 35 and c.bytes_written == 5 * I64
    _, c = cost("CumSum", [(5, 7), ints(1)])
    assert c.flops == 35


# -- element-wise ----------------------------------------------------------------------------------------
def test_binary_broadcasting():
    _, c = cost("Add", [(2, 3, 4), w(4)])
    assert c.flops == 2 * 3 * 4  # output size
    assert c.bytes_read == (24 + 4) * F32 and c.bytes_written == 24 * F32
    _, c = cost("Mul", [(8, 1, 6), (7, 1)])
    assert c.flops == 8 * 7 * 6  # both sides broadcast: output 8×7×6
    assert c.op_class == "elementwise"


@pytest.mark.parametrize(("op", "per"), [("Div", 1), ("Sub", 1), ("Pow", 1), ("Sqrt", 1), ("Exp", 1),
                                         ("Erf", 1), ("Tanh", 1), ("Relu", 1), ("Sigmoid", 4),
                                         ("LeakyRelu", 2), ("HardSwish", 5), ("Softplus", 3), ("Elu", 4)])
def test_elementwise_per_element_cost(op: str, per: int):
    binary = op in ("Div", "Sub", "Pow")
    _, c = cost(op, [(3, 10)] + ([w(10)] if binary else []))
    assert c.flops == per * 30  # output size · per-element cost
    assert c.macs == 0


def test_gelu_modes():
    _, c = cost("Gelu", [(4, 8)], opset=20)
    assert c.flops == 5 * 32  # x/√2, erf, +1, ·x, ·0.5
    _, c = cost("Gelu", [(4, 8)], opset=20, approximate="tanh")
    assert c.flops == 9 * 32


def test_where_clip_cast_variadic():
    _, c = cost("Where", [In((3, 1), np.bool_), (1, 4), np.array(0.0, np.float32)])
    assert c.flops == 3 * 4  # one select per broadcast output element
    _, c = cost("Clip", [(10,), np.array(0, np.float32), np.array(6, np.float32)])
    assert c.flops == 2 * 10  # min and max
    _, c = cost("Clip", [(10,), np.array(0, np.float32)])
    assert c.flops == 10  # only a lower bound
    _, c = cost("Clip", [(10,)], opset=10, min=0.0, max=6.0)
    assert c.flops == 2 * 10  # opset < 11: bounds are attributes
    _, c = cost("Cast", [(10,)], to=TensorProto.FLOAT16)
    assert c.flops == 0 and c.bytes_read == 10 * F32 and c.bytes_written == 10 * 2
    _, c = cost("Sum", [(5,), (5,), (5,)])
    assert c.flops == 2 * 5  # n − 1 adds
    _, c = cost("Mean", [(5,), (5,), (5,)])
    assert c.flops == 3 * 5  # n − 1 adds + 1 division
    _, c = cost("PRelu", [(2, 5), w(5)])
    assert c.flops == 2 * 10


def test_resize_modes():
    scales = np.array([1, 1, 2, 2], np.float32)
    out = 1 * 3 * 16 * 16
    _, c = cost("Resize", [(1, 3, 8, 8), None, scales], mode="nearest")
    assert c.flops == 0 and c.op_class == "movement"
    _, c = cost("Resize", [(1, 3, 8, 8), None, scales], mode="linear")
    assert c.flops == (2 * 2 ** 2 - 1) * out  # 4 points over 2 resized axes: 4 mul + 3 add
    _, c = cost("Resize", [(1, 3, 8, 8), None, scales], mode="cubic")
    assert c.flops == (2 * 4 ** 2 - 1) * out  # 16 points


# -- movement and views ----------------------------------------------------------------------------------
def test_movement_costs_bytes_only():
    _, c = cost("Transpose", [(2, 3, 4)], perm=[2, 0, 1])
    assert (c.flops, c.bytes_read, c.bytes_written, c.op_class) == (0, 24 * F32, 24 * F32, "movement")
    _, c = cost("Concat", [(2, 3), (2, 5)], axis=1)
    assert c.bytes_read == (6 + 10) * F32 and c.bytes_written == 16 * F32
    _, c = cost("Split", [(4, 6), ints(2, 4)], n_out=2, axis=1)
    assert c.bytes_read == 24 * F32 + 2 * I64 and c.bytes_written == 24 * F32
    _, c = cost("Expand", [(3, 1), ints(2, 3, 4)])
    assert c.bytes_written == 24 * F32 and c.flops == 0
    _, c = cost("Pad", [(2, 3), ints(1, 1, 1, 1)])
    assert c.bytes_written == 4 * 5 * F32
    _, c = cost("Tile", [(2, 3), ints(2, 2)])
    assert c.bytes_written == 24 * F32
    _, c = cost("Dropout", [(2, 3)])
    assert c.op_class == "movement" and c.bytes_written == 6 * F32 and c.flops == 0


def test_gather_reads_only_the_rows_it_picks():
    table = np.zeros((1000, 64), np.float32)
    _, c = cost("Gather", [table, In((2, 5), np.int64)], axis=0)
    assert c.bytes_read == 2 * 5 * I64 + 2 * 5 * 64 * F32  # indices + the 10 rows
    assert c.param_bytes == 1000 * 64 * F32  # the table is still a parameter
    assert c.bytes_written == 10 * 64 * F32


def test_slice_reads_only_what_it_keeps():
    _, c = cost("Slice", [(10, 20), ints(0, 0), ints(5, 10)])
    assert c.bytes_read == 5 * 10 * F32 + 2 * 2 * I64  # kept block + starts, ends
    assert c.bytes_written == 50 * F32


def test_shape_reads_no_data():
    # Shape of a tensor whose size depends on data (NonZero) is not folded away.
    model = build("NonZero", [(4, 4)])
    model.graph.node.append(helper.make_node("Shape", ["y0"], ["s"], name="shape"))
    model.graph.output.append(helper.make_tensor_value_info("s", TensorProto.INT64, [None]))
    graph = load(model)
    c = analyze_node(graph.node("shape"))
    assert c.bytes_read == 0 and c.bytes_written == 2 * I64  # a rank-2 shape


@pytest.mark.parametrize(("op", "inputs", "attrs"), [
    ("Reshape", [(2, 3, 4), ints(6, 4)], {}),
    ("Squeeze", [(2, 1, 4), ints(1)], {}),
    ("Unsqueeze", [(2, 4), ints(0)], {}),
    ("Flatten", [(2, 3, 4)], {"axis": 1}),
    ("Identity", [(2, 3)], {}),
])
def test_views_are_free(op: str, inputs: list[object], attrs: dict[str, object]):
    _, c = cost(op, inputs, **attrs)
    assert c.free and c.op_class == "view"
    assert (c.flops, c.bytes_read, c.bytes_written) == (0, 0, 0)


# -- unknown ops and unknown shapes ----------------------------------------------------------------------
def test_unknown_op_is_listed_with_bytes():
    _, c = cost("TopK", [(10,), ints(3)], n_out=2)
    assert not c.modeled and c.op_class == "other" and c.flops == 0
    assert c.bytes_read == 10 * F32 + 1 * I64  # X + K
    assert c.bytes_written == 3 * F32 + 3 * I64  # values + indices


def test_unknown_shapes_never_crash():
    # NonZero's output is (2, n) with n known only at run time: the sizes after it are unknown, so the compute
    # ops get no model and count 0 bytes for the unknown tensors.
    model = build("NonZero", [(4, 4)])
    model.graph.node.extend([helper.make_node("Cast", ["y0"], ["f"], to=TensorProto.FLOAT, name="cast"),
                             helper.make_node("Transpose", ["f"], ["t"], perm=[1, 0], name="transpose"),
                             helper.make_node("Relu", ["t"], ["r"], name="relu"),
                             helper.make_node("MatMul", ["r", "m"], ["mm"], name="mm")])
    model.graph.initializer.append(onnx.numpy_helper.from_array(w(2, 3), "m"))
    model.graph.output.append(helper.make_tensor_value_info("mm", TensorProto.FLOAT, [None, None]))
    graph = load(model)
    relu, mm = analyze_node(graph.node("relu")), analyze_node(graph.node("mm"))
    assert not relu.modeled and relu.flops == 0 and relu.op_class == "elementwise"
    assert not mm.modeled and mm.macs == 0  # output (n, 3) unknown
    assert mm.bytes_read == 2 * 3 * F32 and mm.param_bytes == 2 * 3 * F32  # only the weight is known


def test_every_registered_op_survives_unknown_shapes():
    """Each OPS function on a node with no shape information: bytes only, never an exception."""
    for op in OPS:
        model = helper.make_model(helper.make_graph(
            [helper.make_node(op, ["a", "b", "c"], ["y", "z"], name="n")], "g",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, None) for x in "abc"],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]))
        node = Graph(model).nodes[0]  # built directly: no checker, no inference, every shape unknown
        c = analyze_node(node)
        assert c.op_class in OP_CLASSES and c.flops == 0 and c.macs == 0, op


def test_opcosts_add_up():
    graph = load(models.build("tiny_cnn"))
    costs = analyze(graph)
    total = sum(costs)
    assert total.macs == sum(c.macs for c in costs) and total.flops == sum(c.flops for c in costs)
    assert len(costs) == len(graph.nodes)


# -- the zoo ---------------------------------------------------------------------------------------------
# Goals from issue 2 "Must show" (torchvision/fvcore counts; BERT-base at s = 128: per layer Q,K,V,O
# 4·s·h² + attention 2·s²·h + FFN 2·s·h·4h = 931,135,488, × 12 layers = 11,173,625,856).
GOALS = {"resnet18": 1.814e9, "resnet50": 4.089e9, "mobilenet_v2": 0.301e9, "bert": 11.17e9, "gpt2": 11.17e9}


def _zoo_macs(name: str) -> int:
    return sum(c.macs for c in analyze(load(models.build(name))))


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_transformer", "mlp"])
def test_tiny_zoo_macs_match_torch(name: str):
    ours, theirs = _zoo_macs(name), models.torch_macs(name)
    assert ours == pytest.approx(theirs, rel=0.01)  # same module, independent counter (FlopCounterMode)


def test_mlp_macs_exact():
    assert _zoo_macs("mlp") == 784 * 512 + 512 * 256 + 256 * 10  # three Gemms at batch 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GOALS))
def test_zoo_macs_match_goals_and_torch(name: str):
    ours = _zoo_macs(name)
    assert ours == pytest.approx(GOALS[name], rel=0.01)
    assert ours == pytest.approx(models.torch_macs(name), rel=0.01)

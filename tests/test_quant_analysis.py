"""Analysis of the integer ops (dispatch/analysis/quant.py): golden MAC and FLOP counts, MACs tagged int8."""

from __future__ import annotations

import numpy as np

from dispatch.cost import OpCost
from tests.test_analysis import In, cost

U8, I8 = np.uint8, np.int8


def _s(v: float = 0.1) -> np.ndarray:
    return np.array(v, np.float32)


def _zp(dt=U8, v: int = 0) -> np.ndarray:
    return np.array(v, dt)


def test_qlinear_conv_int8_macs_with_bias_and_requantisation():
    # x (1, 8, 14, 14) uint8, w (16, 8, 3, 3) int8 per channel, pads 1: output (1, 16, 14, 14), 3,136 values
    ins = [In((1, 8, 14, 14), U8), _s(), _zp(), np.ones((16, 8, 3, 3), I8), np.full(16, 0.1, np.float32),
           np.zeros(16, I8), _s(0.2), _zp(), np.zeros(16, np.int32)]
    _, c = cost("QLinearConv", ins, pads=[1, 1, 1, 1])
    assert c.macs == 16 * 14 * 14 * (8 * 3 * 3)  # output size · C_in·kH·kW = 3,136 · 72 = 225,792
    assert c.flops == 2 * c.macs + 16 * 14 * 14 * (1 + 2)  # + bias add + requantisation (scale, zero point)
    assert c.mac_dtype == "int8" and c.op_class == "conv"


def test_qlinear_conv_grouped_without_bias():
    # depthwise: group 8, w (8, 1, 3, 3), stride 2 on 9x9 unpadded: output (2, 8, 4, 4)
    ins = [In((2, 8, 9, 9), U8), _s(), _zp(), np.ones((8, 1, 3, 3), I8), _s(), _zp(I8), _s(), _zp()]
    _, c = cost("QLinearConv", ins, group=8, strides=[2, 2])
    assert c.macs == 2 * 8 * 4 * 4 * (1 * 3 * 3)  # 256 outputs · 9 = 2,304
    assert c.flops == 2 * c.macs + 2 * 256  # requantisation only


def test_matmul_integer_int8_macs():
    # BERT's dynamically quantised projection: (1, 128, 768) uint8 @ (768, 3072) int8 -> int32
    _, c = cost("MatMulInteger", [In((1, 128, 768), U8), np.ones((768, 3072), I8), _zp(), _zp(I8)])
    assert c.macs == 128 * 3072 * 768  # output size · K = 393,216 · 768 = 301,989,888
    assert c.flops == 2 * c.macs and c.mac_dtype == "int8" and c.op_class == "gemm"


def test_qlinear_matmul_and_conv_integer():
    _, c = cost("QLinearMatMul", [In((4, 6, 10), U8), _s(), _zp(), np.ones((10, 5), I8), _s(), _zp(I8), _s(),
                                  _zp()])
    assert c.macs == 4 * 6 * 5 * 10  # 120 outputs · K 10 = 1,200
    assert c.flops == 2 * 1200 + 2 * 120
    _, c = cost("ConvInteger", [In((1, 3, 6, 6), U8), np.ones((2, 3, 2, 2), U8)])
    assert c.macs == 2 * 5 * 5 * (3 * 2 * 2) and c.mac_dtype == "int8"  # 50 outputs · 12 = 600


def test_float_macs_stay_untagged_and_sums_say_mixed():
    _, f = cost("MatMul", [(2, 3), np.ones((3, 4), np.float32)])
    assert f.mac_dtype == "" and f.macs == 24
    q = OpCost(macs=10, mac_dtype="int8")
    assert (q + q).mac_dtype == "int8" and (f + q).mac_dtype == "mixed"
    assert (q + OpCost(bytes_read=4)).mac_dtype == "int8"  # a term without MACs does not change it

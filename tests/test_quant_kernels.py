"""The ASIC's integer kernels (targets/asic/qkernels.py) bit-exact against onnxruntime's CPU kernels.

Tiny one-node models with random scales and zero points, per tensor and per channel, uint8 and int8
activations. Weights are drawn in [-64, 63] (7 bits, as `reduce_range` quantisation makes them) so that
onnxruntime's AVX2 u8s8 kernels, whose pairwise int16 sums saturate for full-range weights, compute the
exact int32 sums on machines without VNNI too; the activations use their whole 8-bit range.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispatch.errors import DispatchError
from targets.asic.qkernels import QKERNELS, qlinear_matmul, requantize

RNG = np.random.default_rng(7)
ELEM = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
        np.dtype(np.int32): TensorProto.INT32, np.dtype(np.float32): TensorProto.FLOAT}


def _ort(op: str, inputs: list[np.ndarray | None], out_dtype, attrs: dict | None = None) -> np.ndarray:
    """onnxruntime's CPU result of a one-node model; every present input is an initializer but the first."""
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    x = inputs[0]
    graph = helper.make_graph(
        [node], "q", [helper.make_tensor_value_info("i0", ELEM[x.dtype], x.shape)],
        [helper.make_tensor_value_info("y", ELEM[np.dtype(out_dtype)], None)],
        [numpy_helper.from_array(v, n) for n, v in zip(names[1:], inputs[1:], strict=True) if v is not None])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"i0": x})[0]


def _act(shape, dt) -> tuple[np.ndarray, np.ndarray]:
    info = np.iinfo(dt)
    x = RNG.integers(info.min, info.max + 1, shape).astype(dt)
    return x, np.array(RNG.integers(info.min // 2, info.max // 2 + 1), dt)


def _weights(shape) -> np.ndarray:
    return RNG.integers(-64, 64, shape).astype(np.int8)


def _scale(*shape) -> np.ndarray:
    return np.exp(RNG.uniform(-9, -2, shape)).astype(np.float32)


def _y_scale(x_scale: np.ndarray, w_scale: np.ndarray) -> np.ndarray:
    """An output scale under which the sums (about ±16,000 here: 36 products of |x| ≤ 128 and |w| ≤ 64 at
    random signs, standard deviation √36·74·37) land in roughly ±[30, 120] steps, so that the outputs
    spread over the 8-bit range and some saturate."""
    return np.array(x_scale * np.max(w_scale) / RNG.uniform(0.002, 0.008), np.float32)


@pytest.mark.parametrize("x_dt", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("geometry", [
    {},  # 3x3, no padding
    {"pads": [1, 1, 1, 1], "strides": [2, 2]},
    {"pads": [1, 0, 2, 1], "dilations": [2, 1]},
    {"group": 2, "pads": [1, 1, 1, 1]},
])
def test_qlinear_conv_bit_exact(x_dt, per_channel, geometry):
    group = geometry.get("group", 1)
    c, m = 4, 6
    saturated = 0
    for trial in range(4):  # fresh scales and zero points each time
        x, x_zp = _act((2, c, 7, 6), x_dt)
        w = _weights((m, c // group, 3, 3))
        w_zp = np.zeros(m if per_channel else (), np.int8)  # onnxruntime takes symmetric int8 filters
        w_scale = _scale(m) if per_channel else _scale()
        y_dt = x_dt  # onnxruntime: the output type is the input's
        y_zp = np.array(RNG.integers(-20, 20) + (128 if y_dt is np.uint8 else 0), y_dt)
        x_scale = _scale()
        bias = RNG.integers(-5000, 5000, m).astype(np.int32) if trial < 3 else None
        ins = [x, x_scale, x_zp, w, w_scale, w_zp, _y_scale(x_scale, w_scale), y_zp, bias]
        if bias is None:
            ins = ins[:8]
        attrs = {"kernel_shape": [3, 3], **geometry}
        ref = _ort("QLinearConv", ins, y_dt, attrs)
        got = QKERNELS["QLinearConv"](ins, attrs)[0]
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)
        info = np.iinfo(y_dt)
        saturated += int((ref == info.min).sum() + (ref == info.max).sum())
    assert saturated > 0  # the saturation is exercised


@pytest.mark.parametrize("a_dt", [np.uint8, np.int8])
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("shapes", [((5, 33), (33, 7)), ((2, 3, 5, 16), (16, 9))])
def test_qlinear_matmul_bit_exact(a_dt, per_column, shapes):
    sa, sb = shapes
    n = sb[-1]
    for _ in range(4):
        a, a_zp = _act(sa, a_dt)
        b = _weights(sb)
        b_zp = np.zeros(n if per_column else (), np.int8)
        b_scale = _scale(n) if per_column else _scale()
        y_dt = a_dt  # onnxruntime: the output type is A's
        y_zp = np.array(RNG.integers(-20, 20) + (128 if y_dt is np.uint8 else 0), y_dt)
        a_scale = _scale()
        ins = [a, a_scale, a_zp, b, b_scale, b_zp, _y_scale(a_scale, b_scale), y_zp]
        ref = _ort("QLinearMatMul", ins, y_dt)
        got = QKERNELS["QLinearMatMul"](ins, {})[0]
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("a_dt", [np.uint8, np.int8])
@pytest.mark.parametrize("b_zp_kind", ["none", "scalar", "column"])
def test_matmul_integer_bit_exact(a_dt, b_zp_kind):
    a, a_zp = _act((3, 4, 40), a_dt)
    b = _weights((40, 6))
    b_zp = {"none": None, "scalar": np.array(5, np.int8),
            "column": RNG.integers(-9, 9, 6).astype(np.int8)}[b_zp_kind]
    ins = [a, b, a_zp, b_zp] if b_zp is not None else [a, b, a_zp]
    ref = _ort("MatMulInteger", ins, np.int32)
    got = QKERNELS["MatMulInteger"](ins, {})[0]
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref)


def test_matmul_integer_written_out():
    # (A - 1) @ (B - 2) with A = [[1, 2], [3, 4]], B = [[2, 3], [4, 5]]: [[0, 1], [2, 3]] @ [[0, 1], [2, 3]]
    # = [[0·0 + 1·2, 0·1 + 1·3], [2·0 + 3·2, 2·1 + 3·3]] = [[2, 3], [6, 11]]
    a = np.array([[1, 2], [3, 4]], np.uint8)
    b = np.array([[2, 3], [4, 5]], np.int8)
    y = QKERNELS["MatMulInteger"]([a, b, np.array(1, np.uint8), np.array(2, np.int8)], {})[0]
    np.testing.assert_array_equal(y, np.array([[2, 3], [6, 11]], np.int32))


@pytest.mark.parametrize("x_dt", [np.uint8, np.int8])
def test_conv_integer_bit_exact(x_dt):
    x, x_zp = _act((1, 3, 9, 8), x_dt)
    w = _weights((5, 3, 2, 3))
    ins = [x, w, x_zp, np.array(3, np.int8)]
    attrs = {"pads": [1, 1, 0, 2], "strides": [1, 2]}
    ref = _ort("ConvInteger", ins, np.int32, attrs)
    got = QKERNELS["ConvInteger"](ins, attrs)[0]
    np.testing.assert_array_equal(got, ref)


def test_requantize_rounds_half_to_even_and_saturates():
    # acc · 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5 -> 0, 2, 2, -0, -2 (ties to even); + zp 10 -> 10, 12, 12, 10, 8;
    # 600 · 0.5 + 10 = 310 -> 255 and -600 · 0.5 + 10 = -290 -> 0 (uint8 saturation).
    acc = np.array([1, 3, 5, -1, -3, 600, -600], np.int32)
    y = requantize(acc, np.float32(0.5), np.array(10, np.uint8))
    np.testing.assert_array_equal(y, np.array([10, 12, 12, 10, 8, 255, 0], np.uint8))


def test_bad_operands_are_one_sentence():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(DispatchError, match="int8 or uint8"):
        QKERNELS["MatMulInteger"]([a, a.T], {})
    q = np.ones((2, 3), np.uint8)
    with pytest.raises(DispatchError, match="must match"):
        QKERNELS["MatMulInteger"]([q, q.T, np.array(0, np.int8)], {})
    s = np.float32(0.1)
    with pytest.raises(DispatchError, match="per column"):
        qlinear_matmul(q, s, np.uint8(0), q.T.astype(np.int8), np.ones(5, np.float32), np.int8(0), s,
                       np.uint8(0))


@pytest.mark.parametrize("y_dt", [np.uint8, np.int8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_and_dequantize_linear_bit_exact(y_dt, per_axis):
    x = (RNG.standard_normal((2, 5, 6, 3)) * 4).astype(np.float32)
    x[0, 0, 0, :] = [0.5, 1.5, -2.5]  # ties at scale 1 (per tensor, below): to even, 0, 2, -2
    x[1, :, 0, 0], x[1, :, 0, 1] = 1e4, -1e4  # saturate both ways
    info = np.iinfo(y_dt)
    if per_axis:  # along axis 1 (the default)
        scale = np.exp(RNG.uniform(-4, 0, 5)).astype(np.float32)
        zp = RNG.integers(info.min // 2, info.max // 2, 5).astype(y_dt)
    else:
        scale, zp = np.array(1.0, np.float32), np.array(3, y_dt)
    q = _ort("QuantizeLinear", [x, scale, zp], y_dt)
    np.testing.assert_array_equal(QKERNELS["QuantizeLinear"]([x, scale, zp], {})[0], q)
    assert (q == info.min).any() and (q == info.max).any()
    if not per_axis:
        np.testing.assert_array_equal(q[0, 0, 0, :].astype(int) - 3, [0, 2, -2])
    d = _ort("DequantizeLinear", [q, scale, zp], np.float32)
    np.testing.assert_array_equal(QKERNELS["DequantizeLinear"]([q, scale, zp], {})[0], d)


def test_dequantize_int32_bias_bit_exact():
    # A QDQ model's bias: int32 with zero point 0 and scale x_scale · w_scale per channel (axis 0)
    b = RNG.integers(-2**20, 2**20, 6).astype(np.int32)
    scale = _scale(6)
    ref = _ort("DequantizeLinear", [b, scale, np.zeros(6, np.int32)], np.float32, {"axis": 0})
    got = QKERNELS["DequantizeLinear"]([b, scale, np.zeros(6, np.int32)], {"axis": 0})[0]
    np.testing.assert_array_equal(got, ref)


def _qdq_graph() -> onnx.ModelProto:
    """x (float) -> Q -> DQ -> Conv(DQ(w int8, per channel), DQ(b int32)) -> Q -> DQ -> y, and the same
    quantized activation -> DQ -> MatMul(DQ(m int8)) -> Q -> DQ -> z: quantize_static's QDQ form."""
    x_s, w_s, m_s = np.float32(0.05), _scale(4), np.float32(0.02)
    inits = {"xs": np.array(x_s), "xz": np.array(128, np.uint8), "w": _weights((4, 3, 3, 3)), "ws": w_s,
             "wz": np.zeros(4, np.int8), "b": RNG.integers(-300, 300, 4).astype(np.int32),
             "bs": (x_s * w_s).astype(np.float32), "bz": np.zeros(4, np.int32),
             "ys": np.array(0.04, np.float32), "yz": np.array(120, np.uint8),
             "m": _weights((8, 5)), "ms": np.array(m_s), "mz": np.array(0, np.int8),
             "zs": np.array(0.03, np.float32), "zz": np.array(100, np.uint8)}
    mk = helper.make_node
    nodes = [mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             mk("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             mk("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             mk("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
             mk("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             mk("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             mk("DequantizeLinear", ["cq", "ys", "yz"], ["y"]),
             mk("DequantizeLinear", ["m", "ms", "mz"], ["md"]),
             mk("MatMul", ["xd", "md"], ["mm"], name="matmul"),
             mk("QuantizeLinear", ["mm", "zs", "zz"], ["mq"]),
             mk("DequantizeLinear", ["mq", "zs", "zz"], ["z"])]
    graph = helper.make_graph(nodes, "qdq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 8]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 6, 5])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_qdq_patterns_run_as_onnxruntimes_fused_integer_kernels():
    # On the ASIC, DequantizeLinear -> Conv / MatMul -> QuantizeLinear runs as QLinearConv / QLinearMatMul:
    # bit-identical to onnxruntime, which fuses the same patterns (its default, extended optimisations); the
    # weights' DequantizeLinear steps are dropped. Random inputs spread over 10 trials.
    from dispatch.frontend import load
    from targets.base import make_target

    model = _qdq_graph()
    g = load(model)
    asic = make_target("asic", "edge-npu")
    assert all(asic.supports(n) for n in g.nodes), [asic.unsupported_reason(n) for n in g.nodes]
    program = asic.compile(g, g.nodes, ["x"], ["y", "z"])
    kernels = {getattr(s.kernel, "__name__", "") for s in program.steps}
    assert {"_qlinear_conv_kernel", "_qlinear_matmul_kernel"} <= kernels
    dequantize = [s for s in program.steps if getattr(s.kernel, "__name__", "") == "_dequantize_kernel"]
    # y and z only: xd's readers (Conv, MatMul) are both fused, and the weights' and the bias's are unread
    assert [s.outputs for s in dequantize] == [("y",), ("z",)]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for _ in range(10):
        x = (RNG.standard_normal((1, 3, 6, 8)) * 3).astype(np.float32)
        ours = program({"x": x})
        y, z = sess.run(["y", "z"], {"x": x})
        np.testing.assert_array_equal(ours["y"], y)
        np.testing.assert_array_equal(ours["z"], z)


def test_long_reductions_chunk_exactly():
    # Full-range operands: |A - 0| <= 255 and |B - (-128)| <= 255, so float32 stays exact for chunks of
    # K <= (2^24 - 1) // 255² = 258: K = 2000 runs in 8 chunks. The reference is NumPy's int64 matmul.
    a = RNG.integers(0, 256, (3, 2000)).astype(np.uint8)
    b = RNG.integers(-128, 128, (2000, 4)).astype(np.int8)
    got = QKERNELS["MatMulInteger"]([a, b, np.array(0, np.uint8), np.array(-128, np.int8)], {})[0]
    want = a.astype(np.int64) @ (b.astype(np.int64) + 128)
    np.testing.assert_array_equal(got, want.astype(np.int32))
    # A conv over 600 input channels of 3x3 taps: chunks of (2^24 - 1) // (255 · 128 · 9) = 571 channels (the
    # bound comes from the dtypes' ranges; the values are 7-bit, see the module docstring)
    x, _ = _act((1, 600, 5, 5), np.uint8)
    w = _weights((2, 600, 3, 3))
    ins = [x, w, np.array(0, np.uint8), np.array(0, np.int8)]
    np.testing.assert_array_equal(QKERNELS["ConvInteger"](ins, {"pads": [1, 1, 1, 1]})[0],
                                  _ort("ConvInteger", ins, np.int32, {"pads": [1, 1, 1, 1]}))

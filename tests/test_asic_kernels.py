"""The ASIC's NumPy kernels against onnxruntime (CPU) on single-node models, plus golden numbers."""

from __future__ import annotations

import itertools
from typing import Any

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from dispatch.errors import DispatchError
from targets.asic.kernels import (
    KERNELS,
    add,
    add_bias,
    batchnorm,
    clip,
    conv,
    fold_batchnorm,
    gemm,
    matmul,
    relu,
)

RNG = np.random.default_rng(1234)
_ONNX_TYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.float16): TensorProto.FLOAT16,
}


def ort_nodes(nodes: list, feeds: dict[str, np.ndarray | None], outputs: list[str], opset: int = 17) -> list:
    """Runs a graph of `nodes` in onnxruntime on CPU; a None feed is an omitted optional input."""
    present = {k: v for k, v in feeds.items() if v is not None}
    first = next(iter(present.values()))
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info(k, _ONNX_TYPES[v.dtype], v.shape) for k, v in present.items()],
        [helper.make_tensor_value_info(o, _ONNX_TYPES[first.dtype], None) for o in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(outputs, present)


def ort_single(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any], opset: int = 17) -> Any:
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    node = helper.make_node(op, names, ["y"], **attrs)
    return ort_nodes([node], {n: a for n, a in zip(names, inputs, strict=True) if n}, ["y"], opset)[0]


def conv_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict[str, Any]) -> np.ndarray:
    """onnxruntime's Conv; onnx's reference evaluator where ORT refuses (dilations with auto_pad SAME_*)."""
    if attrs.get("auto_pad", "NOTSET").startswith("SAME") and any(d != 1 for d in attrs.get("dilations", [])):
        names = ["x", "w"] + (["b"] if b is not None else [])
        node = helper.make_node("Conv", names, ["y"], **attrs)
        return ReferenceEvaluator(node).run(None, dict(zip(names, [x, w, b], strict=False)))[0]
    return ort_single("Conv", [x, w, b], attrs)


def randn(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


# ---- Conv ------------------------------------------------------------------------------------------

CONV_CASES = {
    # name: (x shape, w shape, attrs)
    "1d_stride_pad_dilation": ((2, 4, 17), (6, 4, 3), {"strides": [2], "pads": [1, 2], "dilations": [2]}),
    "1d_groups": ((1, 6, 20), (9, 2, 4), {"group": 3}),
    "2d_basic": ((1, 3, 12, 11), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "2d_batch_groups_strides": ((2, 6, 9, 10), (4, 3, 3, 2), {"group": 2, "strides": [2, 1]}),
    "2d_depthwise": ((1, 8, 10, 10), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    "2d_depthwise_multiplier": ((2, 4, 9, 9), (8, 1, 3, 3), {"group": 4, "strides": [2, 2]}),
    "2d_depthwise_many_groups": ((1, 512, 7, 7), (512, 1, 3, 3), {"group": 512, "pads": [1, 1, 1, 1]}),
    "2d_dilations": ((1, 3, 15, 13), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 3, 2, 3]}),
    "2d_asymmetric_pads_strides": ((1, 2, 11, 12), (3, 2, 3, 4), {"pads": [0, 1, 2, 3], "strides": [2, 3]}),
    "2d_kernel_shape_given": ((1, 2, 8, 8), (3, 2, 2, 3), {"kernel_shape": [2, 3]}),
    "2d_1x1": ((1, 16, 7, 7), (8, 16, 1, 1), {}),
    "2d_1x1_stride2": ((1, 16, 14, 14), (32, 16, 1, 1), {"strides": [2, 2]}),
    "2d_7x7_stem": ((1, 3, 32, 32), (8, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    "2d_same_upper": ((1, 3, 10, 9), (4, 3, 4, 3), {"auto_pad": "SAME_UPPER", "strides": [3, 2]}),
    "2d_same_lower": ((1, 3, 10, 9), (4, 3, 4, 3), {"auto_pad": "SAME_LOWER", "strides": [3, 2]}),
    "2d_same_upper_dilated": ((1, 2, 9, 9), (3, 2, 2, 2), {"auto_pad": "SAME_UPPER", "dilations": [2, 3]}),
    "2d_same_lower_dilated": ((1, 2, 9, 9), (3, 2, 2, 2), {"auto_pad": "SAME_LOWER", "dilations": [2, 3]}),
    "2d_valid": ((1, 3, 10, 9), (4, 3, 3, 2), {"auto_pad": "VALID", "strides": [2, 2]}),
    "3d_basic": ((1, 2, 6, 7, 8), (3, 2, 2, 3, 3), {}),
    "3d_strides_pads_dilations": (
        (1, 2, 6, 7, 8),
        (3, 2, 2, 3, 3),
        {"strides": [1, 2, 1], "pads": [1, 0, 1, 0, 1, 1], "dilations": [1, 1, 2]},
    ),
    "3d_groups": ((2, 4, 5, 5, 5), (4, 2, 3, 3, 3), {"group": 2}),
    "3d_same_upper": ((1, 2, 5, 6, 7), (2, 2, 2, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 2, 2]}),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_matches_onnxruntime(name: str, bias: bool) -> None:
    x_shape, w_shape, attrs = CONV_CASES[name]
    x, w = randn(*x_shape), randn(*w_shape)
    b = randn(w_shape[0]) if bias else None
    got = KERNELS["Conv"]([x, w, b], attrs)[0]
    want = conv_reference(x, w, b, attrs)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_golden_3x3_ones() -> None:
    # All-ones 1x1x4x4 input, all-ones 3x3 kernel, pads 1: each output counts the in-bounds taps of its
    # 3x3 window: corners 2*2 = 4, edges 2*3 = 6, interior 3*3 = 9; plus bias 0.5.
    y = conv(
        np.ones((1, 1, 4, 4), np.float32),
        np.ones((1, 1, 3, 3), np.float32),
        np.array([0.5], np.float32),
        pads=[1, 1, 1, 1],
    )
    want = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]], np.float32) + 0.5
    np.testing.assert_array_equal(y[0, 0], want)


def test_conv_same_lower_puts_odd_pad_first() -> None:
    # Input [1, 2, 3, 4], kernel [1, 1], stride 1, SAME: total pad = (4-1)*1 + 2 - 4 = 1.
    # SAME_UPPER pads at the end: [1+2, 2+3, 3+4, 4+0] = [3, 5, 7, 4];
    # SAME_LOWER pads at the start: [0+1, 1+2, 2+3, 3+4] = [1, 3, 5, 7].
    x = np.array([[[1, 2, 3, 4]]], np.float32)
    w = np.ones((1, 1, 2), np.float32)
    np.testing.assert_array_equal(conv(x, w, auto_pad="SAME_UPPER")[0, 0], [3, 5, 7, 4])
    np.testing.assert_array_equal(conv(x, w, auto_pad="SAME_LOWER")[0, 0], [1, 3, 5, 7])


@st.composite
def conv_configs(draw: st.DrawFn) -> tuple:
    nd = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 2, 3]))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = [draw(st.integers(1, 3)) for _ in range(nd)]
    dil = [draw(st.integers(1, 2)) for _ in range(nd)]
    strides = [draw(st.integers(1, 3)) for _ in range(nd)]
    auto_pad = draw(st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = [draw(st.integers(0, 2)) for _ in range(2 * nd)]
    # Input at least as large as the dilated kernel so every mode has an output.
    size = [(ki - 1) * di + 1 + draw(st.integers(0, 5)) for ki, di in zip(k, dil, strict=True)]
    attrs: dict[str, Any] = {"group": group, "dilations": dil, "strides": strides, "auto_pad": auto_pad}
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    return (draw(st.integers(1, 2)), cg * group, *size), (mg * group, cg, *k), attrs


@settings(max_examples=25, deadline=None)
@given(conv_configs())
def test_conv_property_matches_onnxruntime(config: tuple) -> None:
    x_shape, w_shape, attrs = config
    x, w, b = randn(*x_shape), randn(*w_shape), randn(w_shape[0])
    np.testing.assert_allclose(conv(x, w, b, **attrs), conv_reference(x, w, b, attrs), rtol=1e-4, atol=1e-4)


# ---- MatMul ----------------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((2, 3, 4), (4, 5)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 6)),
    ((5, 3, 4), (1, 4, 2)),
    ((1, 3, 4), (2, 4, 5)),
    ((4,), (4, 5)),
    ((4,), (2, 4, 3)),
    ((3, 4), (4,)),
    ((2, 3, 4), (4,)),
    ((4,), (4,)),
    ((12, 16, 8), (12, 8, 16)),
]


@pytest.mark.parametrize("a_shape,b_shape", MATMUL_SHAPES, ids=[f"{a}x{b}" for a, b in MATMUL_SHAPES])
def test_matmul_matches_onnxruntime(a_shape: tuple, b_shape: tuple) -> None:
    a, b = randn(*a_shape), randn(*b_shape)
    got = KERNELS["MatMul"]([a, b], {})[0]
    want = ort_single("MatMul", [a, b], {})
    assert got.shape == want.shape == np.matmul(a, b).shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_matmul_non_contiguous_operands() -> None:
    # Strided views (every other column) must give the same numbers as their contiguous copies.
    a, b = randn(6, 10)[:, ::2], randn(3, 5, 8)[:, :, 1::2]
    np.testing.assert_allclose(matmul(a, b), np.ascontiguousarray(a) @ np.ascontiguousarray(b), rtol=1e-6)


# ---- Gemm ------------------------------------------------------------------------------------------

M, K, N = 3, 5, 4
C_SHAPES = {"none": None, "scalar": (), "vec_n": (N,), "row": (1, N), "col": (M, 1), "full": (M, N)}


@pytest.mark.parametrize(
    "trans_a,trans_b,alpha,beta,c_shape",
    list(itertools.product([0, 1], [0, 1], [1.0, 0.5], [1.0, 0.25, 0.0], list(C_SHAPES))),
)
def test_gemm_matches_onnxruntime(
    trans_a: int, trans_b: int, alpha: float, beta: float, c_shape: str
) -> None:
    a = randn(*((K, M) if trans_a else (M, K)))
    b = randn(*((N, K) if trans_b else (K, N)))
    c = None if C_SHAPES[c_shape] is None else randn(*C_SHAPES[c_shape])
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta}
    got = KERNELS["Gemm"]([a, b, c], attrs)[0]
    want = ort_single("Gemm", [a, b, c], attrs)
    assert got.shape == (M, N)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gemm_golden() -> None:
    # A = [[1, 2]], B = [[3], [4]], C = [10]: alpha*(1*3 + 2*4) + beta*10 = 2*11 + 0.5*10 = 27.
    y = gemm(
        np.array([[1, 2]], np.float32),
        np.array([[3], [4]], np.float32),
        np.array([10], np.float32),
        alpha=2.0,
        beta=0.5,
    )
    np.testing.assert_array_equal(y, [[27.0]])


# ---- Precision: fp16 / bf16 accumulate in fp32, fp64 stays fp64 -------------------------------------


def test_fp16_matmul_accumulates_in_fp32() -> None:
    # ones(1, 4096) @ ones(4096, 1): fp32 accumulation gives 4096 (exact in fp16: 2^12); an fp16
    # accumulator stops at 2048, where 2048 + 1 rounds back to 2048 (fp16 spacing there is 2).
    a = np.ones((1, 4096), np.float16)
    y = matmul(a, a.T.copy())
    assert y.dtype == np.float16
    assert float(y[0, 0]) == 4096.0


def test_fp16_conv_accumulates_in_fp32() -> None:
    # 512 channels x 3x3 taps of 1*1 = 4608 = 4.5 * 1024, exact in fp16 (spacing 4 in [4096, 8192)).
    x = np.ones((1, 512, 3, 3), np.float16)
    y = conv(x, x.copy())
    assert y.dtype == np.float16 and y.shape == (1, 1, 1, 1)
    assert float(y[0, 0, 0, 0]) == 4608.0


@pytest.mark.parametrize("op", ["MatMul", "Gemm", "Conv"])
def test_fp16_matches_fp32_reference(op: str) -> None:
    # fp16 inputs: the fp32 result on the same (upcast) values, rounded once to fp16.
    if op == "Conv":
        x, w = randn(1, 8, 9, 9, dtype=np.float16), randn(4, 8, 3, 3, dtype=np.float16)
        inputs, attrs = [x, w], {"pads": [1] * 4}
    else:
        inputs, attrs = [randn(7, 64, dtype=np.float16), randn(64, 5, dtype=np.float16)], {}
    got = KERNELS[op](inputs, attrs)[0]
    want = ort_single(op, [i.astype(np.float32) for i in inputs], attrs).astype(np.float16)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_bfloat16_matmul_keeps_dtype() -> None:
    a = randn(4, 32).astype(ml_dtypes.bfloat16)
    b = randn(32, 3).astype(ml_dtypes.bfloat16)
    y = matmul(a, b)
    assert y.dtype == ml_dtypes.bfloat16
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(ml_dtypes.bfloat16)
    np.testing.assert_allclose(y.astype(np.float32), want.astype(np.float32), rtol=2**-7)


def test_float64_stays_float64() -> None:
    a, b = randn(5, 7, dtype=np.float64), randn(7, 3, dtype=np.float64)
    y = matmul(a, b)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ort_single("MatMul", [a, b], {}), rtol=1e-12)
    x, w = randn(1, 2, 6, 6, dtype=np.float64), randn(3, 2, 3, 3, dtype=np.float64)
    # onnxruntime has no float64 Conv on CPU: onnx's reference evaluator instead.
    want = ReferenceEvaluator(helper.make_node("Conv", ["x", "w"], ["y"])).run(None, {"x": x, "w": w})[0]
    np.testing.assert_allclose(conv(x, w), want, rtol=1e-12, atol=1e-12)


# ---- Epilogues and BatchNormalization ----------------------------------------------------------------


def _bn_params(c: int) -> list[np.ndarray]:
    return [randn(c), randn(c), randn(c), RNG.uniform(0.5, 2.0, c).astype(np.float32)]


def test_fold_batchnorm_equals_conv_then_bn() -> None:
    x, w, b = randn(2, 4, 9, 9), randn(6, 4, 3, 3), randn(6)
    scale, bias, mean, var = _bn_params(6)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y"], epsilon=1e-3),
    ]
    want = ort_nodes(nodes, {"x": x, "w": w, "b": b, "s": scale, "bb": bias, "m": mean, "v": var}, ["y"])[0]
    w2, b2 = fold_batchnorm(w, b, scale, bias, mean, var, 1e-3)
    assert w2.dtype == b2.dtype == np.float32
    np.testing.assert_allclose(conv(x, w2, b2, pads=[1, 1, 1, 1], strides=[2, 2]), want, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_without_conv_bias_golden() -> None:
    # w = 2, no bias; BN scale 3, bias 1, mean 4, var 8, eps 1: k = 3 / sqrt(8 + 1) = 1,
    # so w2 = 2 * 1 = 2 and b2 = (0 - 4) * 1 + 1 = -3.
    one = np.ones(1, np.float32)
    w2, b2 = fold_batchnorm(2 * np.ones((1, 1, 1, 1), np.float32), None, 3 * one, one, 4 * one, 8 * one, 1.0)
    np.testing.assert_array_equal(w2.ravel(), [2.0])
    np.testing.assert_array_equal(b2, [-3.0])


@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 7), (1, 5, 4, 4), (1, 5, 2, 3, 3)])
def test_batchnorm_matches_onnxruntime(shape: tuple) -> None:
    x = randn(*shape)
    params = _bn_params(shape[1])
    got = KERNELS["BatchNormalization"]([x, *params], {"epsilon": 1e-4})[0]
    np.testing.assert_allclose(
        got, ort_single("BatchNormalization", [x, *params], {"epsilon": 1e-4}), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(got, batchnorm(x, *params, 1e-4))


def test_relu_and_add_match_onnxruntime() -> None:
    x, b = randn(2, 3, 4), randn(3, 1)
    np.testing.assert_array_equal(KERNELS["Relu"]([x], {})[0], ort_single("Relu", [x], {}))
    np.testing.assert_allclose(KERNELS["Add"]([x, b], {})[0], ort_single("Add", [x, b], {}), rtol=1e-6)
    half = np.array([-1.5, 0.0, 2.0], np.float16)
    np.testing.assert_array_equal(relu(half), np.array([0, 0, 2], np.float16))


def test_add_legacy_axis_broadcast() -> None:
    # Opset 6 Add with broadcast=1, axis=1: B of shape (3,) lines up with A's axis 1 of (2, 3, 4)
    # (onnxruntime no longer implements Add-6, so the spec's arithmetic is the reference).
    a, b = randn(2, 3, 4), randn(3)
    np.testing.assert_array_equal(KERNELS["Add"]([a, b], {"broadcast": 1, "axis": 1})[0], a + b[:, None])


def test_add_bias() -> None:
    x, bc, bl = randn(2, 3, 4, 4), randn(3), randn(4)
    np.testing.assert_allclose(add_bias(x, bc), x + bc[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(add_bias(x, bl, axis=-1), x + bl, rtol=1e-6)
    np.testing.assert_allclose(add(x, bl), x + bl, rtol=1e-6)


CLIP_CASES = {
    # name: (opset, inputs after x as (lo, hi) or None, attrs)
    "v6_attrs": (6, None, {"min": -0.5, "max": 0.7}),
    "v6_min_only": (6, None, {"min": 0.1}),
    "v6_defaults": (6, None, {}),
    "v13_inputs": (13, (-0.5, 0.7), {}),
    "v13_min_only": (13, (-0.2, None), {}),
    "v13_max_only": (13, (None, 0.3), {}),
    "v13_min_above_max": (13, (0.5, -0.5), {}),
    "v13_none": (13, (None, None), {}),
}


@pytest.mark.parametrize("name", list(CLIP_CASES))
def test_clip_matches_onnxruntime(name: str) -> None:
    opset, bounds, attrs = CLIP_CASES[name]
    x = randn(3, 7)
    inputs: list[np.ndarray | None] = [x]
    if bounds is not None:
        inputs += [None if v is None else np.array(v, np.float32) for v in bounds]
    got = KERNELS["Clip"](inputs, attrs)[0]
    np.testing.assert_array_equal(got, ort_single("Clip", inputs, attrs, opset=opset))


def test_clip_golden() -> None:
    # ONNX Clip: min(max(x, lo), hi); with lo > hi every value becomes hi.
    x = np.array([-2.0, 0.5, 3.0], np.float32)
    np.testing.assert_array_equal(clip(x, -1.0, 1.0), [-1.0, 0.5, 1.0])
    np.testing.assert_array_equal(clip(x, 1.0, -1.0), [-1.0, -1.0, -1.0])
    np.testing.assert_array_equal(clip(x, hi=0.0), [-2.0, 0.0, 0.0])


# ---- The table and bad input -----------------------------------------------------------------------


def test_kernels_table_keys() -> None:
    assert set(KERNELS) == {"MatMul", "Gemm", "Conv", "Relu", "Clip", "Add", "BatchNormalization"}


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: matmul(randn(3, 4), randn(5, 2)), "inner dimensions"),
        (lambda: matmul(randn(2, 3, 4), randn(3, 4, 2)), "batch dimensions"),
        (lambda: matmul(np.ones((2, 2), np.int64), np.ones((2, 2), np.int64)), "int64"),
        (lambda: matmul(randn(2, 2), randn(2, 2, dtype=np.float64)), "different dtypes"),
        (lambda: gemm(randn(3, 4), randn(4, 5), randn(2, 5)), "does not broadcast"),
        (lambda: gemm(randn(3, 4), randn(3, 5)), "transA"),
        (lambda: conv(randn(1, 4, 5, 5), randn(2, 3, 3, 3), group=2), "group=2"),
        (lambda: conv(randn(1, 2, 5, 5), randn(2, 2, 3, 3), auto_pad="SAME"), "SAME_UPPER"),
        (lambda: conv(randn(1, 2, 2, 2), randn(2, 2, 3, 3)), "larger than the padded input"),
        (lambda: conv(randn(1, 2, 5, 5), randn(2, 2, 3, 3), pads=[1, 1]), "pads must be 4"),
        (lambda: conv(randn(1, 2, 5, 5), randn(2, 2, 3, 3), kernel_shape=[2, 2]), "kernel_shape"),
        (lambda: KERNELS["BatchNormalization"]([randn(1, 2), *_bn_params(2)], {"training_mode": 1}), "mode"),
        (lambda: KERNELS["Gemm"]([randn(2, 2)], {}), "first 2 inputs"),
    ],
)
def test_bad_input_raises_dispatch_error(call: Any, message: str) -> None:
    with pytest.raises(DispatchError, match=message):
        call()

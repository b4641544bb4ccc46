"""The calibration cases: small ONNX models, one per operator shape worth timing, and how to build them.

Each case is one model with its class, feeds, the node the cost model prices (`primary`) and the onnxruntime
kernels that are its time (`kernels`). The set covers GEMMs and convolutions across sizes, element-wise ops,
reductions, normalisations, data movement and views, plus the patterns onnxruntime fuses into one kernel
(MatMul+Add -> Gemm, MatMul+Div -> FusedMatMul, Add+LayerNormalization -> SkipLayerNormalization, the Erf
GELU -> Gelu).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["Case", "calibration_cases", "neg_chain"]

@dataclass(frozen=True)
class Case:
    """A small model to time: its class, the model, how to make its feeds, which node the cost model prices
    (`primary`, default the first) and which onnxruntime kernels (profile op_name) are its time (`kernels`,
    default all but layout reorders)."""

    name: str
    op_class: str
    model: onnx.ModelProto
    feeds: Callable[[], dict[str, np.ndarray]]
    primary: str = ""
    kernels: tuple[str, ...] = ()
    repeat: int = 1  # the model holds this many copies of the primary node; a case time is one copy's


_F = TensorProto.FLOAT


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, Sequence[int]]],
    output: str,
    inits: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "calibration",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_empty_tensor_value_info(output)],
        initializer=list(inits),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    vi = next(v for v in (*inferred.graph.value_info, *inferred.graph.output) if v.name == output)
    m.graph.output[0].CopyFrom(vi)
    return m


def _rand(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _const(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(arr, name)


def _feeds(**shapes: Sequence[int]) -> Callable[[], dict[str, np.ndarray]]:
    return lambda: {k: _rand(s, i) for i, (k, s) in enumerate(shapes.items())}


def _unary(op: str, shape: Sequence[int], **attrs: Any) -> Case:
    return Case(
        f"{op}{list(shape)}",
        "elementwise",
        _model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", _F, shape)], "y"),
        _feeds(x=shape),
    )


def _binary(op: str, a: Sequence[int], b: Sequence[int]) -> Case:
    return Case(
        f"{op}{list(a)}x{list(b)}",
        "elementwise",
        _model([helper.make_node(op, ["a", "b"], ["y"])], [("a", _F, a), ("b", _F, b)], "y"),
        _feeds(a=a, b=b),
    )


def _matmul(a: Sequence[int], w: Sequence[int], const_w: bool = True) -> Case:
    if const_w:
        m = _model(
            [helper.make_node("MatMul", ["x", "W"], ["y"])], [("x", _F, a)], "y", [_const("W", _rand(w, 1))]
        )
        feeds = _feeds(x=a)
    else:
        m = _model([helper.make_node("MatMul", ["x", "W"], ["y"])], [("x", _F, a), ("W", _F, w)], "y")
        feeds = _feeds(x=a, W=w)
    return Case(f"MatMul{list(a)}x{list(w)}", "gemm", m, feeds)


def _gemm(m: int, k: int, n: int) -> Case:
    model = _model(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)],
        [("x", _F, (m, k))],
        "y",
        [_const("W", _rand((n, k), 1)), _const("B", _rand((n,), 2))],
    )
    return Case(f"Gemm[{m},{k}]x[{k},{n}]", "gemm", model, _feeds(x=(m, k)))


def _conv(c: int, hw: int, co: int, k: int, stride: int = 1, group: int = 1) -> Case:
    pad = k // 2
    node = helper.make_node(
        "Conv",
        ["x", "W", "B"],
        ["y"],
        kernel_shape=[k, k],
        strides=[stride, stride],
        pads=[pad] * 4,
        group=group,
    )
    model = _model(
        [node],
        [("x", _F, (1, c, hw, hw))],
        "y",
        [_const("W", _rand((co, c // group, k, k), 1) * 0.1), _const("B", _rand((co,), 2))],
    )
    tag = "dw" if group == c and group > 1 else f"g{group}" if group > 1 else ""
    return Case(f"Conv{tag}{k}x{k}s{stride}[{c}@{hw}]->{co}", "conv", model, _feeds(x=(1, c, hw, hw)))


def _single(
    name: str,
    cls: str,
    node: onnx.NodeProto,
    inputs: list[tuple[str, int, Sequence[int]]],
    feeds: Callable[[], dict[str, np.ndarray]],
    inits: Sequence[onnx.TensorProto] = (),
) -> Case:
    return Case(name, cls, _model([node], inputs, node.output[0], inits), feeds)


def _view(op: str, shape: Sequence[int], inits: Sequence[onnx.TensorProto] = ()) -> Case:
    nodes = [
        helper.make_node("Neg", ["x"], ["a"]),
        helper.make_node(op, ["a", *(i.name for i in inits)], ["b"]),
        helper.make_node("Neg", ["b"], ["y"]),
    ]
    return Case(
        f"{op}{list(shape)}",
        "view",
        _model(nodes, [("x", _F, shape)], "y", inits),
        _feeds(x=shape),
        primary=op,
        kernels=(op,),
    )


def _conv_chain(c: int, hw: int, n: int = 8) -> Case:
    """n 3x3 convolutions c -> c, each with a ReLU, in a row: small convolutions as a CNN runs them (their
    inputs fresh from the previous one, in onnxruntime's NCHWc layout), timed per convolution."""
    nodes, inits = [], []
    for i in range(n):
        nodes += [
            helper.make_node(
                "Conv", [f"a{i}", f"W{i}", f"B{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1] * 4
            ),
            helper.make_node("Relu", [f"c{i}"], [f"a{i + 1}"]),
        ]
        inits += [_const(f"W{i}", _rand((c, c, 3, 3), i) * 0.1), _const(f"B{i}", _rand((c,), i))]
    model = _model(nodes, [("a0", _F, (1, c, hw, hw))], f"a{n}", inits)
    return Case(
        f"Conv3x3 chain x{n}[{c}@{hw}]",
        "conv",
        model,
        _feeds(a0=(1, c, hw, hw)),
        "Conv",
        ("Conv", "FusedConv"),
        n,
    )


def _i64(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return _const(name, np.array(values, dtype=np.int64))


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return _const(name, np.array(value, np.float32))


# Patterns onnxruntime fuses into one kernel (see targets.fusion): timed as that kernel.
def _matmul_bias(a: Sequence[int], k: int, n: int) -> Case:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["t"]), helper.make_node("Add", ["t", "B"], ["y"])]
    m = _model(nodes, [("x", _F, a)], "y", [_const("W", _rand((k, n), 1)), _const("B", _rand((n,), 2))])
    # MatMulAddFusion: a Gemm (Reshapes around it for an N-D input are priced by the cost model as views).
    return Case(f"MatMul+Add{list(a)}x[{k},{n}]", "gemm", m, _feeds(x=a), "MatMul", ("Gemm",))


def _matmul_scale(q: Sequence[int], kt: Sequence[int]) -> Case:
    nodes = [helper.make_node("MatMul", ["q", "k"], ["t"]), helper.make_node("Div", ["t", "s"], ["y"])]
    m = _model(nodes, [("q", _F, q), ("k", _F, kt)], "y", [_scalar("s", 8.0)])
    return Case(f"MatMul+Div{list(q)}x{list(kt)}", "gemm", m, _feeds(q=q, k=kt), "MatMul", ("FusedMatMul",))


def _skip_layernorm(shape: Sequence[int]) -> Case:
    d = shape[-1]
    nodes = [
        helper.make_node("Add", ["x", "r"], ["t"]),
        helper.make_node("LayerNormalization", ["t", "g", "b"], ["y"], axis=-1),
    ]
    m = _model(
        nodes,
        [("x", _F, shape), ("r", _F, shape)],
        "y",
        [_const("g", _rand((d,), 1)), _const("b", _rand((d,), 2))],
    )
    return Case(
        f"Add+LayerNormalization{list(shape)}",
        "normalization",
        m,
        _feeds(x=shape, r=shape),
        "LayerNormalization",
        ("SkipLayerNormalization",),
    )


def _gelu(shape: Sequence[int]) -> Case:
    """x · 0.5 · (1 + erf(x / √2)) as torch exports it; GeluFusion makes it one Gelu kernel."""
    nodes = [
        helper.make_node("Div", ["x", "r2"], ["a"]),
        helper.make_node("Erf", ["a"], ["b"]),
        helper.make_node("Add", ["b", "one"], ["c"]),
        helper.make_node("Mul", ["x", "c"], ["d"]),
        helper.make_node("Mul", ["d", "half"], ["y"]),
    ]
    m = _model(
        nodes,
        [("x", _F, shape)],
        "y",
        [_scalar("r2", math.sqrt(2)), _scalar("one", 1.0), _scalar("half", 0.5)],
    )
    return Case(f"GELU(Erf){list(shape)}", "elementwise", m, _feeds(x=shape), "Erf", ("Gelu",))


def calibration_cases() -> list[Case]:
    """The representative set; sizes span the zoo (batch 1 CNNs at 224², transformers at sequence 128)."""
    return list(_all_cases())


@functools.cache
def _all_cases() -> tuple[Case, ...]:
    return (
        # GEMMs: GEMVs (batch-1 MLP and classifier heads), transformer projections, square sizes, batched.
        _matmul((1, 784), (784, 512)),
        _matmul((1, 256), (256, 10)),
        _gemm(1, 2048, 1000),
        _gemm(1, 512, 1000),
        _matmul((16, 32), (32, 32)),
        _matmul((64, 64), (64, 64)),
        _matmul((256, 256), (256, 256)),
        _matmul((512, 512), (512, 512)),
        _matmul((1, 128, 768), (768, 768)),
        _matmul((1, 128, 768), (768, 3072)),
        _matmul((1, 128, 3072), (3072, 768)),
        _matmul((1, 128, 768), (768, 2304)),
        _matmul((1, 12, 128, 64), (1, 12, 64, 128), const_w=False),
        _matmul((1, 12, 128, 128), (1, 12, 128, 64), const_w=False),
        _matmul((1, 2, 16, 16), (1, 2, 16, 16), const_w=False),
        _matmul_bias((1, 128, 768), 768, 768),
        _matmul_bias((1, 128, 768), 768, 3072),
        _matmul_bias((1, 128, 3072), 3072, 768),
        _matmul_bias((1, 16, 32), 32, 96),
        _matmul_bias((1, 16, 128), 128, 32),
        _matmul_scale((1, 12, 128, 64), (1, 12, 64, 128)),
        _matmul_scale((1, 2, 16, 16), (1, 2, 16, 16)),
        # Convolutions: ResNet stem, 3x3 and 1x1 stages, MobileNet depthwise and pointwise, tiny CNN.
        _conv(3, 224, 64, 7, 2),
        _conv(64, 56, 64, 3),
        _conv(128, 28, 128, 3),
        _conv(256, 14, 256, 3),
        _conv(512, 7, 512, 3),
        _conv(64, 56, 128, 3, 2),
        _conv(256, 56, 64, 1),
        _conv(64, 56, 256, 1),
        _conv(1024, 14, 256, 1),
        _conv(512, 7, 2048, 1),
        _conv(32, 112, 32, 3, group=32),
        _conv(144, 56, 144, 3, group=144),
        _conv(384, 14, 384, 3, group=384),
        _conv(960, 7, 960, 3, group=960),
        _conv(16, 112, 96, 1),
        _conv(320, 7, 1280, 1),
        _conv(3, 32, 16, 3),
        _conv(16, 16, 32, 3, 2),
        _conv(16, 16, 16, 3),
        _conv(32, 8, 32, 3),
        _conv_chain(16, 16),
        _conv_chain(32, 8),
        _conv(16, 16, 16, 3, group=4),
        _conv(128, 28, 128, 3, group=32),
        # Element-wise, from tiny to beyond the last-level cache.
        _binary("Add", (1, 16, 32), (1, 16, 32)),
        _binary("Add", (1, 64, 56, 56), (1, 64, 56, 56)),
        _binary("Add", (1, 128, 768), (1, 128, 768)),
        _binary("Add", (1, 128, 3072), (3072,)),
        _binary("Add", (1, 256, 56, 56), (1, 256, 56, 56)),
        _binary("Add", (4096, 4096), (4096, 4096)),
        _binary("Mul", (1, 128, 3072), (1, 128, 3072)),
        _binary("Div", (1, 12, 128, 128), (1,)),
        _unary("Relu", (1, 64, 112, 112)),
        _unary("Relu", (1, 512)),
        _unary("Erf", (1, 128, 3072)),
        _unary("Tanh", (1, 128, 3072)),
        _unary("Sigmoid", (1, 256, 28, 28)),
        _gelu((1, 128, 3072)),
        _gelu((1, 16, 128)),
        _single(
            "Clip[1,96,112,112]",
            "elementwise",
            helper.make_node("Clip", ["x", "lo", "hi"], ["y"]),
            [("x", _F, (1, 96, 112, 112))],
            _feeds(x=(1, 96, 112, 112)),
            [_const("lo", np.array(0, np.float32)), _const("hi", np.array(6, np.float32))],
        ),
        _single(
            "Where[1,12,128,128]",
            "elementwise",
            helper.make_node("Where", ["c", "x", "z"], ["y"]),
            [("c", TensorProto.BOOL, (1, 1, 128, 128)), ("x", _F, (1, 12, 128, 128))],
            lambda: {"c": np.tril(np.ones((1, 1, 128, 128), bool)), "x": _rand((1, 12, 128, 128))},
            [_const("z", np.array(-1e4, np.float32))],
        ),
        # Reductions and pooling.
        _single(
            "GlobalAveragePool[1,2048,7,7]",
            "reduction",
            helper.make_node("GlobalAveragePool", ["x"], ["y"]),
            [("x", _F, (1, 2048, 7, 7))],
            _feeds(x=(1, 2048, 7, 7)),
        ),
        _single(
            "GlobalAveragePool[1,32,8,8]",
            "reduction",
            helper.make_node("GlobalAveragePool", ["x"], ["y"]),
            [("x", _F, (1, 32, 8, 8))],
            _feeds(x=(1, 32, 8, 8)),
        ),
        _single(
            "MaxPool3x3s2[1,64,112,112]",
            "reduction",
            helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
            [("x", _F, (1, 64, 112, 112))],
            _feeds(x=(1, 64, 112, 112)),
        ),
        _single(
            "ReduceMean[1,128,768]",
            "reduction",
            helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1]),
            [("x", _F, (1, 128, 768))],
            _feeds(x=(1, 128, 768)),
        ),
        _single(
            "ReduceSum[1024,1024]",
            "reduction",
            helper.make_node("ReduceSum", ["x", "ax"], ["y"], keepdims=0),
            [("x", _F, (1024, 1024))],
            _feeds(x=(1024, 1024)),
            [_i64("ax", [1])],
        ),
        # Normalisations.
        _single(
            "LayerNormalization[1,128,768]",
            "normalization",
            helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
            [("x", _F, (1, 128, 768))],
            _feeds(x=(1, 128, 768)),
            [_const("g", _rand((768,), 1)), _const("b", _rand((768,), 2))],
        ),
        _single(
            "LayerNormalization[1,16,32]",
            "normalization",
            helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
            [("x", _F, (1, 16, 32))],
            _feeds(x=(1, 16, 32)),
            [_const("g", _rand((32,), 1)), _const("b", _rand((32,), 2))],
        ),
        _skip_layernorm((1, 128, 768)),
        _skip_layernorm((1, 16, 32)),
        _single(
            "Softmax[1,12,128,128]",
            "normalization",
            helper.make_node("Softmax", ["x"], ["y"], axis=-1),
            [("x", _F, (1, 12, 128, 128))],
            _feeds(x=(1, 12, 128, 128)),
        ),
        _single(
            "Softmax[1,2,16,16]",
            "normalization",
            helper.make_node("Softmax", ["x"], ["y"], axis=-1),
            [("x", _F, (1, 2, 16, 16))],
            _feeds(x=(1, 2, 16, 16)),
        ),
        _single(
            "BatchNormalization[1,64,56,56]",
            "normalization",
            helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
            [("x", _F, (1, 64, 56, 56))],
            _feeds(x=(1, 64, 56, 56)),
            [
                _const("s", _rand((64,), 1)),
                _const("b", _rand((64,), 2)),
                _const("m", _rand((64,), 3)),
                _const("v", np.abs(_rand((64,), 4)) + 1),
            ],
        ),
        # Data movement.
        _single(
            "Transpose[1,128,12,64]",
            "movement",
            helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1, 3]),
            [("x", _F, (1, 128, 12, 64))],
            _feeds(x=(1, 128, 12, 64)),
        ),
        _single(
            "Transpose[1,12,128,64]T",
            "movement",
            helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2]),
            [("x", _F, (1, 12, 128, 64))],
            _feeds(x=(1, 12, 128, 64)),
        ),
        _single(
            "Transpose[1,2,16,16]",
            "movement",
            helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1, 3]),
            [("x", _F, (1, 2, 16, 16))],
            _feeds(x=(1, 2, 16, 16)),
        ),
        _single(
            "Gather[8192,768][1,128]",
            "movement",
            helper.make_node("Gather", ["E", "i"], ["y"]),
            [("i", TensorProto.INT64, (1, 128))],
            lambda: {"i": np.random.default_rng(0).integers(0, 8192, (1, 128), dtype=np.int64)},
            [_const("E", _rand((8192, 768), 1))],
        ),
        _single(
            "Concat2x[1,64,56,56]",
            "movement",
            helper.make_node("Concat", ["a", "b"], ["y"], axis=1),
            [("a", _F, (1, 64, 56, 56)), ("b", _F, (1, 64, 56, 56))],
            _feeds(a=(1, 64, 56, 56), b=(1, 64, 56, 56)),
        ),
        _single(
            "Split3[1,128,2304]",
            "movement",
            helper.make_node("Split", ["x", "s"], ["y", "y1", "y2"], axis=-1),
            [("x", _F, (1, 128, 2304))],
            _feeds(x=(1, 128, 2304)),
            [_i64("s", [768] * 3)],
        ),
        _single(
            "Slice[1,256,56,56]",
            "movement",
            helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"]),
            [("x", _F, (1, 256, 56, 56))],
            _feeds(x=(1, 256, 56, 56)),
            [_i64("st", [0]), _i64("en", [128]), _i64("ax", [1])],
        ),
        # Views: no data moves, only the kernel call remains. Between two Negs, so that onnxruntime may
        # alias the buffer as it does inside a model (a graph input to a graph output must be copied).
        _view("Reshape", (1, 16, 32), [_i64("s", [1, 16, 4, 8])]),
        _view("Flatten", (1, 64, 1, 1)),
        _view("Unsqueeze", (1, 16), [_i64("ax", [1])]),
    )


def neg_chain(k: int) -> Case:
    """k Neg ops on 16 floats in a row: wall-clock grows by one op's dispatch + kernel per link."""
    nodes = [helper.make_node("Neg", [f"t{i}"], [f"t{i + 1}"]) for i in range(k)]
    return Case(
        f"Neg chain x{k}", "elementwise", _model(nodes, [("t0", _F, (1, 16))], f"t{k}"), _feeds(t0=(1, 16))
    )

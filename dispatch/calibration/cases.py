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
from dataclasses import dataclass, replace
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
    streamed: bool = False  # its weights, as in a large model, do not stay in the cache between runs


_F = TensorProto.FLOAT
# A case whose weights take 1 MB or more holds as many copies of its node, each with its own weights, as make
# STREAM_BYTES (twice the 32 MiB last-level cache of targets/specs/host-cpu.toml) of weights in all, so that
# its weights stream from memory on every run, as a large model's do (a GEMM with hot weights runs about a
# quarter faster here: benchmarks/results/calibration.md, "Weight residency").
STREAM_BYTES = 64e6
MAX_COPIES = 64


def _streamed(case: Case, weight_bytes: int) -> Case:
    """`case` with its node(s) copied, each copy reading the same inputs and its own weights (scaled by a
    different factor, so that no two initializers are equal), when its weights take 1 MB or more."""
    if weight_bytes < 1e6:
        return case
    copies = min(MAX_COPIES, math.ceil(STREAM_BYTES / weight_bytes))
    g = case.model.graph
    keep = {v.name for v in g.input}
    nodes, inits, outs = [], [], []
    for i in range(copies):

        def ren(name: str, i: int = i) -> str:
            return name if not name or name in keep else f"{name}_{i}"

        for node in g.node:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            n.input[:] = [ren(x) for x in node.input]
            n.output[:] = [ren(x) for x in node.output]
            nodes.append(n)
        for t in g.initializer:
            arr = onnx.numpy_helper.to_array(t)
            inits.append(
                _const(ren(t.name), arr * np.float32(1 + 1e-3 * i) if arr.dtype == np.float32 else arr)
            )
        outs += [ren(v.name) for v in g.output]
    graph = helper.make_graph(
        nodes, "calibration", list(g.input), [helper.make_empty_tensor_value_info(o) for o in outs], inits
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    shapes = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for out in m.graph.output:
        out.CopyFrom(shapes[out.name])
    return replace(
        case, name=f"{case.name} x{copies} streamed", model=m, repeat=copies * case.repeat, streamed=True
    )


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
        return _streamed(Case(f"MatMul{list(a)}x{list(w)}", "gemm", m, feeds), 4 * math.prod(w))
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
    return _streamed(Case(f"Gemm[{m},{k}]x[{k},{n}]", "gemm", model, _feeds(x=(m, k))), 4 * n * k)


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
    case = Case(f"Conv{tag}{k}x{k}s{stride}[{c}@{hw}]->{co}", "conv", model, _feeds(x=(1, c, hw, hw)))
    return _streamed(case, 4 * co * (c // group) * k * k)


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
    return _streamed(
        Case(f"MatMul+Add{list(a)}x[{k},{n}]", "gemm", m, _feeds(x=a), "MatMul", ("Gemm",)), 4 * k * n
    )


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
    """The representative set, at synthetic shapes: each kind of layer the zoo and the corpus hold (batch-1
    CNNs near 224², transformers near sequence 128 and width 768, tiny models) at sizes next to theirs but
    equal to none of them (spatial 192/120/60/30/15/9, channels 12..1800, sequence 96 and 12, width 640 and
    40), so that predictions of whole models are judged out of sample (benchmarks/bench_calibration.py
    checks that no node of a case has the op type and input shapes of a node of a judged model)."""
    return list(_all_cases())


@functools.cache
def _all_cases() -> tuple[Case, ...]:
    return (
        # GEMMs: GEMVs (batch-1 MLP and classifier heads), transformer projections, square sizes, batched.
        _matmul((1, 720), (720, 480)),
        _matmul((1, 320), (320, 12)),
        _gemm(1, 1800, 900),
        _gemm(1, 576, 900),
        _matmul((12, 40), (40, 40)),
        _matmul((72, 72), (72, 72)),
        _matmul((240, 240), (240, 240)),
        _matmul((480, 480), (480, 480)),
        _matmul((1, 96, 640), (640, 640)),
        _matmul((1, 96, 640), (640, 2560)),
        _matmul((1, 96, 2560), (2560, 640)),
        _matmul((1, 96, 640), (640, 1920)),
        _matmul((1, 10, 96, 64), (1, 10, 64, 96), const_w=False),
        _matmul((1, 10, 96, 96), (1, 10, 96, 64), const_w=False),
        _matmul((1, 3, 12, 12), (1, 3, 12, 12), const_w=False),
        _matmul_bias((1, 96, 640), 640, 640),
        _matmul_bias((1, 96, 640), 640, 2560),
        _matmul_bias((1, 96, 2560), 2560, 640),
        _matmul_bias((1, 12, 40), 40, 120),
        _matmul_bias((1, 12, 160), 160, 40),
        _matmul_scale((1, 10, 96, 64), (1, 10, 64, 96)),
        _matmul_scale((1, 3, 12, 12), (1, 3, 12, 12)),
        # Convolutions: a stem, 3x3 and 1x1 stages, depthwise and pointwise, grouped, tiny CNN layers.
        _conv(3, 192, 48, 7, 2),
        _conv(72, 60, 72, 3),
        _conv(144, 30, 144, 3),
        _conv(240, 15, 240, 3),
        _conv(480, 9, 480, 3),
        _conv(72, 60, 144, 3, 2),
        _conv(240, 60, 72, 1),
        _conv(72, 60, 240, 1),
        _conv(960, 15, 240, 1),
        _conv(480, 9, 1800, 1),
        _conv(40, 120, 40, 3, group=40),
        _conv(120, 60, 120, 3, group=120),
        _conv(360, 15, 360, 3, group=360),
        _conv(840, 9, 840, 3, group=840),
        _conv(24, 120, 72, 1),
        _conv(360, 9, 1440, 1),
        _conv(3, 36, 12, 3),
        _conv(12, 18, 24, 3, 2),
        _conv(12, 18, 12, 3),
        _conv(24, 9, 24, 3),
        _conv_chain(12, 18),
        _conv_chain(24, 9),
        _conv(16, 18, 16, 3, group=4),
        _conv(120, 30, 120, 3, group=30),
        # Element-wise, from tiny to beyond the last-level cache.
        _binary("Add", (1, 12, 40), (1, 12, 40)),
        _binary("Add", (1, 72, 60, 60), (1, 72, 60, 60)),
        _binary("Add", (1, 96, 640), (1, 96, 640)),
        _binary("Add", (1, 96, 2560), (2560,)),
        _binary("Add", (1, 240, 60, 60), (1, 240, 60, 60)),
        _binary("Add", (3600, 3600), (3600, 3600)),
        _binary("Mul", (1, 96, 2560), (1, 96, 2560)),
        _binary("Div", (1, 10, 96, 96), (1,)),
        _unary("Relu", (1, 72, 120, 120)),
        _unary("Relu", (1, 480)),
        _unary("Erf", (1, 96, 2560)),
        _unary("Tanh", (1, 96, 2560)),
        _unary("Sigmoid", (1, 240, 30, 30)),
        _gelu((1, 96, 2560)),
        _gelu((1, 12, 160)),
        _single(
            "Clip[1,88,120,120]",
            "elementwise",
            helper.make_node("Clip", ["x", "lo", "hi"], ["y"]),
            [("x", _F, (1, 88, 120, 120))],
            _feeds(x=(1, 88, 120, 120)),
            [_const("lo", np.array(0, np.float32)), _const("hi", np.array(6, np.float32))],
        ),
        _single(
            "Where[1,10,96,96]",
            "elementwise",
            helper.make_node("Where", ["c", "x", "z"], ["y"]),
            [("c", TensorProto.BOOL, (1, 1, 96, 96)), ("x", _F, (1, 10, 96, 96))],
            lambda: {"c": np.tril(np.ones((1, 1, 96, 96), bool)), "x": _rand((1, 10, 96, 96))},
            [_const("z", np.array(-1e4, np.float32))],
        ),
        # Reductions and pooling.
        _single(
            "GlobalAveragePool[1,1800,9,9]",
            "reduction",
            helper.make_node("GlobalAveragePool", ["x"], ["y"]),
            [("x", _F, (1, 1800, 9, 9))],
            _feeds(x=(1, 1800, 9, 9)),
        ),
        _single(
            "GlobalAveragePool[1,24,9,9]",
            "reduction",
            helper.make_node("GlobalAveragePool", ["x"], ["y"]),
            [("x", _F, (1, 24, 9, 9))],
            _feeds(x=(1, 24, 9, 9)),
        ),
        _single(
            "MaxPool3x3s2[1,72,120,120]",
            "reduction",
            helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
            [("x", _F, (1, 72, 120, 120))],
            _feeds(x=(1, 72, 120, 120)),
        ),
        _single(
            "ReduceMean[1,96,640]",
            "reduction",
            helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1]),
            [("x", _F, (1, 96, 640))],
            _feeds(x=(1, 96, 640)),
        ),
        _single(
            "ReduceSum[960,960]",
            "reduction",
            helper.make_node("ReduceSum", ["x", "ax"], ["y"], keepdims=0),
            [("x", _F, (960, 960))],
            _feeds(x=(960, 960)),
            [_i64("ax", [1])],
        ),
        # Normalisations.
        _single(
            "LayerNormalization[1,96,640]",
            "normalization",
            helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
            [("x", _F, (1, 96, 640))],
            _feeds(x=(1, 96, 640)),
            [_const("g", _rand((640,), 1)), _const("b", _rand((640,), 2))],
        ),
        _single(
            "LayerNormalization[1,12,40]",
            "normalization",
            helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
            [("x", _F, (1, 12, 40))],
            _feeds(x=(1, 12, 40)),
            [_const("g", _rand((40,), 1)), _const("b", _rand((40,), 2))],
        ),
        _skip_layernorm((1, 96, 640)),
        _skip_layernorm((1, 12, 40)),
        _single(
            "Softmax[1,10,96,96]",
            "normalization",
            helper.make_node("Softmax", ["x"], ["y"], axis=-1),
            [("x", _F, (1, 10, 96, 96))],
            _feeds(x=(1, 10, 96, 96)),
        ),
        _single(
            "Softmax[1,3,12,12]",
            "normalization",
            helper.make_node("Softmax", ["x"], ["y"], axis=-1),
            [("x", _F, (1, 3, 12, 12))],
            _feeds(x=(1, 3, 12, 12)),
        ),
        _single(
            "BatchNormalization[1,72,60,60]",
            "normalization",
            helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
            [("x", _F, (1, 72, 60, 60))],
            _feeds(x=(1, 72, 60, 60)),
            [
                _const("s", _rand((72,), 1)),
                _const("b", _rand((72,), 2)),
                _const("m", _rand((72,), 3)),
                _const("v", np.abs(_rand((72,), 4)) + 1),
            ],
        ),
        # Data movement.
        _single(
            "Transpose[1,96,10,64]",
            "movement",
            helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1, 3]),
            [("x", _F, (1, 96, 10, 64))],
            _feeds(x=(1, 96, 10, 64)),
        ),
        _single(
            "Transpose[1,10,96,64]T",
            "movement",
            helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2]),
            [("x", _F, (1, 10, 96, 64))],
            _feeds(x=(1, 10, 96, 64)),
        ),
        _single(
            "Transpose[1,3,12,12]",
            "movement",
            helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1, 3]),
            [("x", _F, (1, 3, 12, 12))],
            _feeds(x=(1, 3, 12, 12)),
        ),
        _single(
            "Gather[8000,640][1,96]",
            "movement",
            helper.make_node("Gather", ["E", "i"], ["y"]),
            [("i", TensorProto.INT64, (1, 96))],
            lambda: {"i": np.random.default_rng(0).integers(0, 8000, (1, 96), dtype=np.int64)},
            [_const("E", _rand((8000, 640), 1))],
        ),
        _single(
            "Concat2x[1,72,60,60]",
            "movement",
            helper.make_node("Concat", ["a", "b"], ["y"], axis=1),
            [("a", _F, (1, 72, 60, 60)), ("b", _F, (1, 72, 60, 60))],
            _feeds(a=(1, 72, 60, 60), b=(1, 72, 60, 60)),
        ),
        _single(
            "Split3[1,96,1920]",
            "movement",
            helper.make_node("Split", ["x", "s"], ["y", "y1", "y2"], axis=-1),
            [("x", _F, (1, 96, 1920))],
            _feeds(x=(1, 96, 1920)),
            [_i64("s", [640] * 3)],
        ),
        _single(
            "Slice[1,240,60,60]",
            "movement",
            helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"]),
            [("x", _F, (1, 240, 60, 60))],
            _feeds(x=(1, 240, 60, 60)),
            [_i64("st", [0]), _i64("en", [120]), _i64("ax", [1])],
        ),
        # Views: no data moves, only the kernel call remains. Between two Negs, so that onnxruntime may
        # alias the buffer as it does inside a model (a graph input to a graph output must be copied).
        _view("Reshape", (1, 12, 40), [_i64("s", [1, 12, 5, 8])]),
        _view("Flatten", (1, 72, 1, 1)),
        _view("Unsqueeze", (1, 18), [_i64("ax", [1])]),
    )


def neg_chain(k: int) -> Case:
    """k Neg ops on 16 floats in a row: wall-clock grows by one op's dispatch + kernel per link."""
    nodes = [helper.make_node("Neg", [f"t{i}"], [f"t{i + 1}"]) for i in range(k)]
    return Case(
        f"Neg chain x{k}", "elementwise", _model(nodes, [("t0", _F, (1, 16))], f"t{k}"), _feeds(t0=(1, 16))
    )

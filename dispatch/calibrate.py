"""Calibrate the onnxruntime targets' cost model on the execution provider actually present.

`calibrate("cpu")` builds a representative set of small ONNX models: GEMMs and convolutions across sizes,
element-wise ops, reductions, normalisations, data movement and views, plus the patterns onnxruntime fuses
into one kernel (MatMul+Add -> Gemm, MatMul+Div -> FusedMatMul, Add+LayerNormalization ->
SkipLayerNormalization, the Erf GELU -> Gelu). Each runs on the target's provider twice over:

* with onnxruntime's profiler (SessionOptions.enable_profiling): the per-node "kernel_time" events ("dur",
  µs) say which kernels ran and what share of a run the case's own kernels take;
* without it: the wall-clock time of InferenceSession.run, since the profiler adds a few µs to every
  kernel_time it records (measured here too, from a chain of 64 tiny ops).

A case's time is (its wall time - that of a one-op model timed just before, less the op) x its kernels'
share, the share taken after removing the profiler's per-event cost; each case runs in three passes (one
when quick) and keeps its fastest, so a burst of load from other processes loses. The session call and
the cost of one more tiny op come from a straight line (numpy.linalg.lstsq) through the wall times of
chains of 1 to 256 Neg ops. Per op class, the roofline's compute and memory efficiencies and a fixed cost
per op are fitted by scipy.optimize.least_squares on log(predicted / measured) (relative errors with a
1 µs floor; bounds in log space; a few starting points) over the class's plain cases, those whose
kernel is the op itself. Then, per onnxruntime kernel and roofline bound, the median ratio of measured to
predicted busy time is kept as a factor: fused kernels (SkipLayerNormalization is ten times slower than
LayerNormalization in this build) and plain ones that stray from their class (Where).

The result is a Profile, saved as JSON (provider, onnxruntime version, machine, date, fitted values, fit
residuals per case) under `profile_dir()`: $DISPATCH_CACHE/profiles, else ~/.cache/dispatch/profiles.
Targets pick up a profile for their spec and provider from there, else from those shipped in
targets/profiles/.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from dispatch.errors import DispatchError
from dispatch.fileio import write_text

__all__ = [
    "ClassFit",
    "Profile",
    "Case",
    "profile_dir",
    "SHIPPED_DIR",
    "profile_filename",
    "find_profile",
    "calibration_cases",
    "measure_case",
    "wall_time",
    "Timing",
    "calibrate",
    "main_calibrate",
    "KIND_DEFAULTS",
]

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "targets" / "profiles"
KIND_DEFAULTS = {"cpu": "host-cpu", "gpu": "h100-sxm"}  # `--target cpu` means the host-cpu preset
_SKIP_OPS = ("ReorderInput", "ReorderOutput")  # NCHWc layout plumbing, amortised over a chain of convs


# -- the profile --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassFit:
    """Fitted figures for one op class: efficiencies (fractions of the spec's peak and bandwidth) and the
    fixed cost per op in µs (kernel fixed cost + executor dispatch)."""

    compute: float
    memory: float
    overhead_us: float
    cases: int = 0
    rms_log_error: float = 0.0
    fitted: tuple[str, ...] = ()  # which of compute/memory/overhead the data determined


@dataclass(frozen=True)
class Profile:
    """A calibration result for one spec on one execution provider."""

    spec: str
    provider: str
    ort_version: str
    machine: Mapping[str, Any]
    date: str
    session_us: float
    dispatch_us: float
    classes: Mapping[str, ClassFit]
    method: str
    kernel_scale: Mapping[str, float] = field(default_factory=dict)  # 'Kernel/compute|memory' -> factor
    residuals: Mapping[str, Any] = field(default_factory=dict)
    quick: bool = False
    path: str | None = None  # where it was loaded from or saved to (not stored in the file)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        d["schema"] = "dispatch.profile/1"
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], path: str | None = None) -> Profile:
        try:
            classes = {
                k: ClassFit(**{**v, "fitted": tuple(v.get("fitted", ()))}) for k, v in d["classes"].items()
            }
            return cls(
                spec=d["spec"],
                provider=d["provider"],
                ort_version=d["ort_version"],
                machine=d["machine"],
                date=d["date"],
                session_us=float(d["session_us"]),
                dispatch_us=float(d.get("dispatch_us", 0.0)),
                classes=classes,
                method=d["method"],
                kernel_scale={k: float(v) for k, v in d.get("kernel_scale", {}).items()},
                residuals=d.get("residuals", {}),
                quick=bool(d.get("quick", False)),
                path=path,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DispatchError(
                f"Profile '{path}' is not a calibration profile (missing or bad {e}); "
                "recreate it with 'python -m dispatch calibrate'."
            ) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        p = Path(path)
        if not p.is_file():
            raise DispatchError(
                f"Profile file '{p}' does not exist; run 'python -m dispatch calibrate' or "
                "give the path of a saved profile."
            )
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DispatchError(
                f"Profile '{p}' is not valid JSON ({e}); recreate it with 'python -m dispatch calibrate'."
            ) from None
        return cls.from_json(data, str(p))

    def save(self, path: str | os.PathLike[str]) -> Profile:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_text(p, json.dumps(self.to_json(), indent=1) + "\n", "the profile")
        return replace(self, path=str(p))

    def describe(self) -> str:
        here = _machine()
        same = all(self.machine.get(k) == here.get(k) for k in ("processor", "cpu_count", "system"))
        return (
            f"{self.path or 'in memory'} (fitted {self.date[:10]} on {self.provider}, onnxruntime "
            f"{self.ort_version}, {'this machine' if same else 'another machine: ' + str(self.machine)})"
        )


def profile_dir() -> Path:
    """Where calibration saves profiles: $DISPATCH_CACHE/profiles, else ~/.cache/dispatch/profiles."""
    env = os.environ.get("DISPATCH_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "dispatch") / "profiles"


def profile_filename(spec: str, provider: str) -> str:
    return f"{spec}--{provider}.json"


def find_profile(spec: str, provider: str) -> Profile | None:
    """The saved profile for this spec and provider: the user's first, then the one shipped, else None."""
    name = profile_filename(spec, provider)
    for d in (profile_dir(), SHIPPED_DIR):
        if (d / name).is_file():
            return Profile.load(d / name)
    return None


def _machine() -> dict[str, Any]:
    proc = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                proc = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "system": platform.system(),
        "platform": platform.platform(),
        "processor": proc,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


# -- the cases ----------------------------------------------------------------------------------------
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


# Patterns onnxruntime fuses into one kernel (see targets.gpu.absorbed_by): timed as that kernel.
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


def _chain(k: int) -> Case:
    """k Neg ops on 16 floats in a row: wall-clock grows by one op's dispatch + kernel per link."""
    nodes = [helper.make_node("Neg", [f"t{i}"], [f"t{i + 1}"]) for i in range(k)]
    return Case(
        f"Neg chain x{k}", "elementwise", _model(nodes, [("t0", _F, (1, 16))], f"t{k}"), _feeds(t0=(1, 16))
    )


# -- measuring ----------------------------------------------------------------------------------------
# The percentile of the repeats taken as a case's time, so that moments when other processes take the core
# count less than a median would let them.
QUANTILE = 25


@dataclass(frozen=True)
class Timing:
    """One case on one provider: profiled kernel time of the case's kernels and of all kernels (medians
    over runs, s), how many of the case's kernels ran, and the unprofiled wall time of a run (s)."""

    timed_s: float
    all_s: float
    count: int
    count_all: int
    wall_s: float

    def op_seconds(self, session_s: float, bias_s: float = 0.0) -> float:
        """The case's kernels' share of the unprofiled run, less the session call. `bias_s`, what the profiler
        adds to each kernel_time, comes off every kernel before the shares are taken."""
        timed = max(self.timed_s - self.count * bias_s, 0.0)
        rest = max(self.all_s - self.timed_s - (self.count_all - self.count) * bias_s, 0.0)
        share = timed / (timed + rest) if timed + rest > 0 else 1.0
        return max(self.wall_s - session_s, 0.0) * share


def measure_case(
    case: Case, provider: str, repeats: int, threads: int | None = None, warmup: int = 3
) -> Timing:
    """Profile `repeats` runs (onnxruntime's kernel_time events) and time as many unprofiled ones."""
    import onnxruntime as ort

    from targets.gpu import _provider_list, session_options

    feeds = case.feeds()
    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads, profile_prefix=str(Path(tmp) / "calib"))
        sess = ort.InferenceSession(case.model.SerializeToString(), so, providers=_provider_list(provider))
        for _ in range(warmup + repeats):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )[warmup:]
    kernels = [
        (e["ts"], e["dur"], e.get("args", {}).get("op_name", ""))
        for e in events
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
    ]

    def timed(op: str) -> bool:
        return op in case.kernels if case.kernels else op not in _SKIP_OPS

    per_timed, per_all, counts, counts_all = [], [], [], []
    for lo, hi in runs:
        inside = [(d, op) for ts, d, op in kernels if lo <= ts <= hi]
        per_timed.append(sum(d for d, op in inside if timed(op)))
        per_all.append(sum(d for d, _ in inside))
        counts.append(sum(timed(op) for _, op in inside))
        counts_all.append(len(inside))
    if not runs or not max(counts):
        raise DispatchError(
            f"onnxruntime ran none of the kernels {case.kernels or 'expected'} for calibration "
            f"case '{case.name}'; its fusions differ from this version's, so update the case."
        )
    wall = wall_time(case, provider, repeats, threads)
    return Timing(
        float(np.median(per_timed)) * 1e-6,
        float(np.median(per_all)) * 1e-6,
        int(np.median(counts)),
        int(np.median(counts_all)),
        wall,
    )


def wall_time(
    case: Case,
    provider: str,
    repeats: int,
    threads: int | None = None,
    warmup: int = 5,
    min_seconds: float = 0.05,
) -> float:
    """The QUANTILE-th percentile of the wall-clock seconds of InferenceSession.run, without profiling, over
    `repeats` runs or as many more as fill `min_seconds` (at most 2000), so that µs-long cases get enough."""
    import onnxruntime as ort

    from targets.gpu import _provider_list, session_options

    sess = ort.InferenceSession(
        case.model.SerializeToString(), session_options(threads), providers=_provider_list(provider)
    )
    feeds = case.feeds()
    t0 = time.perf_counter()
    for _ in range(warmup):
        sess.run(None, feeds)
    per_run = (time.perf_counter() - t0) / warmup
    ts = []
    for _ in range(int(min(max(repeats, min_seconds / max(per_run, 1e-7)), max(repeats, 2000)))):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ts.append(time.perf_counter() - t0)
    return float(np.percentile(ts, QUANTILE))


# -- fitting ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Point:
    name: str
    op_class: str
    kernel: str
    flops: float
    act_bytes: float
    weight_bytes: float
    bw_act: float  # bandwidth levels for this case as it ran (bytes/s)
    bw_weight: float
    peak: float
    measured_s: float
    plain: bool = True  # the kernel is the op itself, not a fusion of it with its neighbours

    def terms(self, compute: float, memory: float) -> tuple[float, float]:
        """(compute time, memory time) of the roofline."""
        if self.op_class == "view":
            return 0.0, 0.0
        t_mem = self.act_bytes / (self.bw_act * memory) + self.weight_bytes / (self.bw_weight * memory)
        return self.flops / (self.peak * compute), t_mem

    def busy(self, compute: float, memory: float) -> float:
        return max(self.terms(compute, memory))

    def scale_key(self, compute: float, memory: float) -> str:
        """The kernel_scale key: which kernel, and which roofline bound this case sits on."""
        t_c, t_m = self.terms(compute, memory)
        return f"{self.kernel}/{'compute' if t_c >= t_m else 'memory'}"


# A case's time is the difference of two wall-clock percentiles of runs of different models, good to about
# a µs: relative errors are taken with this floor, so that a 0.1 µs op measured at 0.3 µs does not count as
# a factor of three.
NOISE_FLOOR_S = 1e-6


def _log_err(predicted_s: float, measured_s: float) -> float:
    return math.log((predicted_s + NOISE_FLOOR_S) / (measured_s + NOISE_FLOOR_S))


def _fit_class(
    points: list[_Point], start: tuple[float, float, float], min_overhead_s: float = 1e-8
) -> tuple[float, float, float, tuple[str, ...]]:
    """Least squares on log(predicted / measured) over (log compute, log memory, log overhead), bounded."""
    from scipy.optimize import least_squares

    names = ("compute", "memory", "overhead")
    view = points[0].op_class == "view"
    free = [
        not view and any(p.flops for p in points),
        not view and any(p.act_bytes + p.weight_bytes for p in points),
        True,
    ]
    x0 = np.log(np.array(start))
    lo = np.log(np.array([1e-4, 1e-4, max(min_overhead_s, 1e-8)]))
    hi = np.log(np.array([1.0, 20.0, 1e-2]))  # memory may beat the spec's bandwidth figures
    idx = [i for i in range(3) if free[i]]

    def full(z: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[idx] = z
        return x

    def resid(z: np.ndarray) -> np.ndarray:
        c, m, o = np.exp(full(z))
        return np.array([_log_err(p.busy(c, m) + o, p.measured_s) for p in points])

    # Plain squared log errors (the odd kernels are fitted separately, see `_kernel_scales`), from a few
    # starting points: where a case switches from memory- to compute-bound its error stops depending on
    # the memory efficiency, which leaves flat valleys a single start can settle in.
    best = None
    for m0 in (start[1], 0.1, 1.0):
        x = x0.copy()
        x[1] = math.log(m0)
        z0 = np.clip(x[idx], lo[idx] + 1e-9, hi[idx] - 1e-9)
        res = least_squares(resid, z0, bounds=(lo[idx], hi[idx]))
        if best is None or res.cost < best.cost:
            best = res
    c, m, o = np.exp(full(best.x))
    return float(c), float(m), float(o), tuple(names[i] for i in idx)


def _kernel_scales(points: list[_Point], classes: Mapping[str, ClassFit]) -> dict[str, float]:
    """Per kernel and bound ('SkipLayerNormalization/memory'): the median ratio of measured to predicted
    busy time over its cases whose busy time is at least their fixed cost and 4 µs, clipped to [0.1, 30].
    A kernel's compute-bound and memory-bound cases get separate factors, since one kernel may be good at
    one and not the other (a Gemm kernel runs GEMVs near bandwidth and large GEMMs below peak)."""
    ratios: dict[str, list[float]] = {}
    for p in points:
        f = classes[p.op_class]
        busy = p.busy(f.compute, f.memory)
        o = f.overhead_us * 1e-6
        if busy >= max(o, 4 * NOISE_FLOOR_S) and p.measured_s > o:
            ratios.setdefault(p.scale_key(f.compute, f.memory), []).append((p.measured_s - o) / busy)
    return {k: float(np.clip(np.median(v), 0.1, 30.0)) for k, v in sorted(ratios.items())}


def _resolve(target_or_preset: Any) -> Any:
    from targets.base import Target, load_spec, make_target
    from targets.gpu import OrtTarget

    if isinstance(target_or_preset, Target):
        if not isinstance(target_or_preset, OrtTarget):
            raise DispatchError(
                f"Target '{target_or_preset.name}' is a {target_or_preset.kind} target; "
                "only the onnxruntime targets (gpu, cpu) can be calibrated."
            )
        target = target_or_preset
        return type(target)(target.name, target.spec, profile=False, threads=target.threads or 0)
    preset = KIND_DEFAULTS.get(str(target_or_preset), target_or_preset)
    spec = load_spec(preset)
    if spec.kind not in ("gpu", "cpu"):
        raise DispatchError(
            f"'{target_or_preset}' is a {spec.kind} preset; only the onnxruntime targets can be "
            f"calibrated: cpu ({KIND_DEFAULTS['cpu']}) or a gpu preset."
        )
    target = make_target(str(target_or_preset), preset, profile=False)
    return target


def calibrate(
    target_or_preset: Any = "cpu",
    out: str | os.PathLike[str] | None = None,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
) -> Profile:
    """Time the calibration cases on the target's provider, fit, save and return the Profile.

    `target_or_preset`: "cpu" (the host-cpu preset), a gpu/cpu preset name or spec file, or an OrtTarget.
    `out`: a .json file or a directory; default `profile_dir()`. `quick`: one pass, fewer repeats (~10 s).
    """
    import onnxruntime as ort

    from dispatch.analysis import analyze_node
    from dispatch.frontend import load
    from targets.gpu import element_flops, kernel_of, op_class

    target = _resolve(target_or_preset)
    if target.kind == "gpu" and target.provider == "CPUExecutionProvider":
        raise DispatchError(
            f"No GPU execution provider is available here (only "
            f"{', '.join(ort.get_available_providers())}); calibrating '{target.spec.name}' "
            "would fit CPU timings to GPU figures, so calibrate the cpu target instead "
            "(--target cpu)."
        )
    say = log or (lambda s: None)
    model = target.base_model
    repeats = 10 if quick else 30
    t_start = time.perf_counter()

    # The session call and the cost of one more tiny op: a straight line through the wall-clock times of
    # chains of 1 to 256 Neg ops on 16 floats (intercept: the session call; slope: dispatch + tiny kernel).
    ks = (1, 16, 64, 256)
    passes = 1 if quick else 3  # each case's time is its fastest pass: a pass that ran under load loses
    chain_repeats = 40 if quick else 100
    # Three interleaved passes even when quick: a burst of load doubles a chain's time and bends the line.
    walls = [math.inf] * len(ks)
    for _ in range(3):
        for i, k in enumerate(ks):
            walls[i] = min(walls[i], wall_time(_chain(k), target.provider, chain_repeats, target.threads))
    (session_s, per_op_s), *_ = np.linalg.lstsq(np.array([[1.0, k] for k in ks]), np.array(walls), rcond=None)
    per_op_s = max(float(per_op_s), 0.0)
    session_s = max(walls[0] - per_op_s, 0.0)  # the one-op chain less its op
    chain = measure_case(_chain(64), target.provider, repeats, target.threads)
    if chain.count != 64:
        raise DispatchError(
            f"onnxruntime ran {chain.count} kernels for a chain of 64 Neg ops; the chain fit "
            "needs them unfused."
        )
    bias_s = max(chain.timed_s / 64 - per_op_s, 0.0)  # what profiling adds to one kernel_time
    say(
        f"  session call {session_s * 1e6:.2f} µs, one more tiny op {per_op_s * 1e6:.3f} µs, profiler "
        f"adds {bias_s * 1e6:.2f} µs per kernel"
    )

    cases = calibration_cases()
    analysed = []
    for case in cases:
        g = load(case.model)
        node = next(n for n in g.nodes if n.op_type == (case.primary or g.nodes[0].op_type))
        op = analyze_node(node)
        cls = op_class(node, op)
        if cls != case.op_class:
            raise DispatchError(
                f"Calibration case '{case.name}' is class '{cls}' for the cost model but "
                f"'{case.op_class}' in the case table; fix the table."
            )
        analysed.append((node, op, cls))
    # A case's time is its run less a one-op run measured just before (less that op), so that the session
    # call cancels even when the machine's speed drifts; the fastest of the passes is kept.
    one_op = _chain(1)
    best = [math.inf] * len(cases)
    for _ in range(passes):
        for i, case in enumerate(cases):
            ref = wall_time(one_op, target.provider, chain_repeats, target.threads, min_seconds=0.01)
            timing = measure_case(case, target.provider, repeats, target.threads)
            best[i] = min(best[i], timing.op_seconds(ref - per_op_s, bias_s) / case.repeat)

    points: list[_Point] = []
    for case, (node, op, cls), measured in zip(cases, analysed, best, strict=True):
        weights = float(min(op.param_bytes, op.bytes_read))
        acts = float(op.bytes_moved) - weights
        warm = acts + weights <= model.cache_bytes  # repeated runs of one small model keep it in cache
        points.append(
            _Point(
                case.name,
                cls,
                kernel_of(node),
                element_flops(node, op),
                acts,
                weights,
                model.bandwidth(acts),
                model.bandwidth(weights, warm),
                model.peak_flops["fp32"],
                measured,
                kernel_of(node) == node.op_type,
            )
        )
        say(f"  {case.name:<42} {cls:<13} {kernel_of(node):<22} {measured * 1e6:10.2f} µs")

    # Each class is fitted on its plain cases, those whose kernel is the op itself, so that a fused kernel
    # (SkipLayerNormalization is ten times slower than LayerNormalization here) does not drag its class's
    # efficiencies; then every kernel gets its factor against the fitted class.
    classes: dict[str, ClassFit] = {}
    for cls in sorted({p.op_class for p in points}):
        pts = [p for p in points if p.op_class == cls]
        if cls == "view":
            # A view kernel moves nothing, as trivial as one more tiny op: its cost is the Neg chains' slope,
            # which is better determined than the sub-µs difference its own cases give (kept as a check).
            classes[cls] = ClassFit(1.0, 1.0, per_op_s * 1e6, len(pts), 0.0, ())
            continue
        plain = [p for p in pts if p.plain] or pts
        base = model.classes[cls]
        start = (min(base.compute, 0.99), min(base.memory, 0.99), max(base.overhead_s, per_op_s, 1e-7))
        # every kernel costs at least what one more tiny op does
        c, m, o, fitted = _fit_class(plain, start, min_overhead_s=per_op_s)
        classes[cls] = ClassFit(c, m, o * 1e6, len(pts), 0.0, fitted)
    scales = _kernel_scales(points, classes)

    cases_out = []
    for p in points:
        f = classes[p.op_class]
        pred = (
            p.busy(f.compute, f.memory) * scales.get(p.scale_key(f.compute, f.memory), 1.0)
            + f.overhead_us * 1e-6
        )
        cases_out.append(
            {
                "case": p.name,
                "class": p.op_class,
                "kernel": p.kernel,
                "gflop": round(p.flops / 1e9, 5),
                "mbytes": round((p.act_bytes + p.weight_bytes) / 1e6, 4),
                "measured_us": round(p.measured_s * 1e6, 3),
                "predicted_us": round(pred * 1e6, 3),
            }
        )
    for cls, f in classes.items():
        errs = [
            _log_err(d["predicted_us"] * 1e-6, d["measured_us"] * 1e-6)
            for d in cases_out
            if d["class"] == cls
        ]
        classes[cls] = replace(f, rms_log_error=float(np.sqrt(np.mean(np.square(errs)))))
    all_err = [_log_err(d["predicted_us"] * 1e-6, d["measured_us"] * 1e-6) for d in cases_out]
    residuals = {
        "rms_log_error": float(np.sqrt(np.mean(np.square(all_err)))),
        "noise_floor_us": NOISE_FLOOR_S * 1e6,
        "max_abs_relative_error": float(max(abs(math.expm1(e)) for e in all_err)),
        "chain_lengths": list(ks),
        "chain_wall_us": [round(w * 1e6, 3) for w in walls],
        "profiler_bias_us": round(bias_s * 1e6, 3),
        "quantile": QUANTILE,
        "repeats": repeats,
        "passes": passes,
        "threads": target.threads or "default",
        "cases": cases_out,
        "seconds": round(time.perf_counter() - t_start, 1),
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    profile = Profile(
        spec=target.spec.name,
        provider=target.provider,
        ort_version=ort.__version__,
        machine=_machine(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        session_us=session_s * 1e6,
        dispatch_us=per_op_s * 1e6,
        classes=classes,
        method="case time = (wall-clock run - a one-op run + that op) x the case kernels' share of the "
        "profiled kernel_time, fastest of the passes; per class scipy.optimize.least_squares on "
        "log(predicted/measured) over its plain cases; per kernel and bound the median measured/predicted "
        "busy time; session call and per-op cost: numpy.linalg.lstsq on Neg chains",
        kernel_scale=scales,
        residuals=residuals,
        quick=quick,
    )
    dest = Path(out) if out is not None else profile_dir()
    if dest.suffix != ".json":
        dest = dest / profile_filename(profile.spec, profile.provider)
    return profile.save(dest)


def main_calibrate(argv: Sequence[str] | None = None) -> int:
    """`python -m dispatch calibrate [--target cpu] [--out PATH] [--quick]`; prints what it fitted."""
    ap = argparse.ArgumentParser(
        prog="python -m dispatch calibrate",
        description="Fit the cost model of an onnxruntime target to this machine.",
    )
    ap.add_argument(
        "--target",
        default="cpu",
        help="cpu (the host-cpu preset), a gpu preset (needs a GPU provider) or a spec .toml",
    )
    ap.add_argument("--out", default=None, help=f"profile .json or directory (default {profile_dir()})")
    ap.add_argument("--quick", action="store_true", help="one pass instead of three, fewer repeats (~10 s)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print each case's measured time")
    args = ap.parse_args(list(argv) if argv is not None else None)
    try:
        prof = calibrate(args.target, args.out, args.quick, log=print if args.verbose else None)
    except DispatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"calibrated {prof.spec} on {prof.provider} (onnxruntime {prof.ort_version}) in "
        f"{prof.residuals['seconds']} s; saved {prof.path}"
    )
    print(f"  session call {prof.session_us:.1f} µs, dispatch per op {prof.dispatch_us:.2f} µs")
    print(f"  {'class':<14}{'compute':>9}{'memory':>9}{'fixed µs':>10}{'cases':>7}{'rms log err':>13}")
    for cls, f in prof.classes.items():
        print(
            f"  {cls:<14}{f.compute:>9.3f}{f.memory:>9.3f}{f.overhead_us:>10.2f}{f.cases:>7}"
            f"{f.rms_log_error:>13.3f}"
        )
    print("  kernel busy-time factors: " + ", ".join(f"{k} {v:.2f}" for k, v in prof.kernel_scale.items()))
    r = prof.residuals
    print(
        f"  all cases: rms log error {r['rms_log_error']:.3f}, "
        f"worst |rel err| {r['max_abs_relative_error']:.0%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main_calibrate())

"""Throughput of the ASIC's NumPy kernels against onnxruntime's CPU kernels, per layer and on whole models.

Layers: every distinct conv shape of ResNet-50 (torchvision v1.5, batch 1, 224x224; He et al. 2016,
table 1, with the stride on the 3x3 conv) and of MobileNetV2 (torchvision, width 1.0, 224x224; Sandler
et al. 2018, table 2: a 3x3/2 stem, 17 inverted residual blocks of 1x1 expand (except the first), 3x3
depthwise and 1x1 project, a final 1x1 to 1280), and the GEMMs of one BERT-base encoder layer (sequence
128, hidden 768, 12 heads of 64, FFN 3072; Devlin et al. 2019). Each layer runs as a single-node ONNX model
in onnxruntime (weights as initializers, as in a real model, so ORT may prepack them; default graph
optimisations, which on x86 include its NCHWc conv layout) and through `targets.asic.kernels`.
Runs are interleaved (ours, ORT, ours, ...) after a warm-up; the median of the repeats is reported.
Aggregates weight each layer by how often it occurs in the network (53 convs and 4.09 GMAC for ResNet-50,
52 convs and 0.30 GMAC for MobileNetV2): ratio = total ORT time / total our time (our throughput as a
fraction of ORT's), by model and by layer class (stem, 1x1, 3x3, depthwise, GEMM).

Whole models (--models): `Dispatcher(model, strategy="only:asic")` (every node the ASIC supports runs
through the NumPy kernels; MaxPool, GlobalAveragePool and Flatten stay on the onnxruntime CPU target)
against one onnxruntime InferenceSession of the whole model, interleaved, wall time per run.

Baseline (--baseline FILE, e.g. `git show 4b061e6:targets/asic/kernels.py > /tmp/kernels_before.py`): an
earlier kernels.py, loaded as its own module and timed interleaved with the current one: its `conv` and
`matmul` per layer, and for whole models a Dispatcher compiled with its KERNELS table and without the
in-place epilogues (`INPLACE_KERNELS` emptied while it is built), which is how the ASIC target ran before.

Memory: glibc returns a freed block of more than M_TRIM_THRESHOLD (dynamic, from 128 KiB) at the top of the
heap to the OS, so a kernel called alone in a loop page-faults its temporaries in again on every call (1-2
µs a page on this VM), which a whole-model run does not (2 minor faults per ResNet-50 run, measured with
getrusage). The benchmark therefore raises M_MMAP_THRESHOLD to 32 MiB and M_TRIM_THRESHOLD to 1 GiB with
mallopt at start, for every side alike (onnxruntime allocates from its own arena anyway);
--no-malloc-tuning measures with glibc's defaults.

Threads: numpy's OpenBLAS takes its thread count from OPENBLAS_NUM_THREADS (all CPUs when unset) at
import; ORT's intra-op threads default to the same number so both sides use the same cores:

    git show 4b061e6:targets/asic/kernels.py > /tmp/kernels_before.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_kernels.py --repeats 21 --model-repeats 21 \\
        --models resnet50,mobilenet_v2 --baseline /tmp/kernels_before.py  # -> results/kernels.md
    python benchmarks/bench_kernels.py ... --out benchmarks/results/kernels_2threads.md

OpenBLAS splits each GEMM statically between its threads, so on a machine where other processes
compete for the cores its multi-threaded times degrade far more than ORT's (which balances work
dynamically); the load average is written next to the results for that reason. With one thread, the
CPU time of the calling thread (`time.thread_time`, which ORT's single-threaded runs also spend on the
caller) is reported besides the wall time: it does not count the time other processes hold the core.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from targets.asic import kernels  # noqa: E402


@dataclass(frozen=True)
class ConvLayer:
    """One conv shape: C_in -> C_out in `group` groups, square k x k kernel at stride s, padding k // 2,
    on an h x h input."""

    name: str
    count: int  # occurrences in the network
    c_in: int
    c_out: int
    k: int
    stride: int
    h: int
    group: int = 1

    @property
    def h_out(self) -> int:
        # floor((h + 2p - k) / s) + 1 with p = k // 2
        return (self.h + 2 * (self.k // 2) - self.k) // self.stride + 1

    @property
    def flop(self) -> float:
        # 2 FLOP per MAC; MACs = C_out * h_out^2 * (C_in / group) * k^2
        return 2.0 * self.c_out * self.h_out**2 * (self.c_in // self.group) * self.k**2

    @property
    def kind(self) -> str:
        if self.group > 1 and self.group == self.c_in:
            return "depthwise"
        if self.c_in == 3:
            return "stem"
        return f"{self.k}x{self.k}"


@dataclass(frozen=True)
class MatMulLayer:
    """A (batch x) M x K @ K x N product; `const_b` marks a weight matrix (an initializer in ORT)."""

    name: str
    count: int  # occurrences in one BERT-base encoder layer
    batch: int
    m: int
    k: int
    n: int
    const_b: bool
    kind = "GEMM"

    @property
    def flop(self) -> float:
        return 2.0 * self.batch * self.m * self.k * self.n


Layer = ConvLayer | MatMulLayer

# ResNet-50 (torchvision, v1.5). Stages of 3, 4, 6, 3 bottlenecks (1x1 reduce, 3x3, 1x1 expand);
# the first block of stages 2-4 strides in its 3x3 and has a strided 1x1 downsample; stage 1's first
# block has a 1x1 64->256 downsample, the same shape as its expand convs. 53 convs in all.
RESNET50: tuple[ConvLayer, ...] = (
    ConvLayer("stem 7x7/2 3->64 @224", 1, 3, 64, 7, 2, 224),
    ConvLayer("s1 1x1 64->64 @56", 1, 64, 64, 1, 1, 56),
    ConvLayer("s1 3x3 64->64 @56", 3, 64, 64, 3, 1, 56),
    ConvLayer("s1 1x1 64->256 @56 (+ds)", 4, 64, 256, 1, 1, 56),
    ConvLayer("s1 1x1 256->64 @56", 2, 256, 64, 1, 1, 56),
    ConvLayer("s2 1x1 256->128 @56", 1, 256, 128, 1, 1, 56),
    ConvLayer("s2 3x3/2 128->128 @56", 1, 128, 128, 3, 2, 56),
    ConvLayer("s2 1x1 128->512 @28", 4, 128, 512, 1, 1, 28),
    ConvLayer("s2 ds 1x1/2 256->512 @56", 1, 256, 512, 1, 2, 56),
    ConvLayer("s2 1x1 512->128 @28", 3, 512, 128, 1, 1, 28),
    ConvLayer("s2 3x3 128->128 @28", 3, 128, 128, 3, 1, 28),
    ConvLayer("s3 1x1 512->256 @28", 1, 512, 256, 1, 1, 28),
    ConvLayer("s3 3x3/2 256->256 @28", 1, 256, 256, 3, 2, 28),
    ConvLayer("s3 1x1 256->1024 @14", 6, 256, 1024, 1, 1, 14),
    ConvLayer("s3 ds 1x1/2 512->1024 @28", 1, 512, 1024, 1, 2, 28),
    ConvLayer("s3 1x1 1024->256 @14", 5, 1024, 256, 1, 1, 14),
    ConvLayer("s3 3x3 256->256 @14", 5, 256, 256, 3, 1, 14),
    ConvLayer("s4 1x1 1024->512 @14", 1, 1024, 512, 1, 1, 14),
    ConvLayer("s4 3x3/2 512->512 @14", 1, 512, 512, 3, 2, 14),
    ConvLayer("s4 1x1 512->2048 @7", 3, 512, 2048, 1, 1, 7),
    ConvLayer("s4 ds 1x1/2 1024->2048 @14", 1, 1024, 2048, 1, 2, 14),
    ConvLayer("s4 1x1 2048->512 @7", 2, 2048, 512, 1, 1, 7),
    ConvLayer("s4 3x3 512->512 @7", 2, 512, 512, 3, 1, 7),
)


def _dw(c: int, stride: int, h: int, count: int) -> ConvLayer:
    return ConvLayer(f"dw 3x3{'/2' if stride > 1 else ''} {c} @{h}", count, c, c, 3, stride, h, group=c)


def _pw(c_in: int, c_out: int, h: int, count: int) -> ConvLayer:
    return ConvLayer(f"1x1 {c_in}->{c_out} @{h}", count, c_in, c_out, 1, 1, h)


# MobileNetV2 (torchvision): stages (expansion t, channels c, blocks n, stride s) = (1,16,1,1), (6,24,2,2),
# (6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1); the first block of a stage strides in its
# depthwise conv and its expand reads the previous stage's channels. 1 stem + 17 depthwise + 34 1x1 = 52.
MOBILENETV2: tuple[ConvLayer, ...] = (
    ConvLayer("stem 3x3/2 3->32 @224", 1, 3, 32, 3, 2, 224),
    _dw(32, 1, 112, 1), _pw(32, 16, 112, 1),
    _pw(16, 96, 112, 1), _dw(96, 2, 112, 1), _pw(96, 24, 56, 1),
    _pw(24, 144, 56, 2), _dw(144, 1, 56, 1), _pw(144, 24, 56, 1),
    _dw(144, 2, 56, 1), _pw(144, 32, 28, 1),
    _pw(32, 192, 28, 3), _dw(192, 1, 28, 2), _pw(192, 32, 28, 2),
    _dw(192, 2, 28, 1), _pw(192, 64, 14, 1),
    _pw(64, 384, 14, 4), _dw(384, 1, 14, 4), _pw(384, 64, 14, 3),
    _pw(384, 96, 14, 1),
    _pw(96, 576, 14, 3), _dw(576, 1, 14, 2), _pw(576, 96, 14, 2),
    _dw(576, 2, 14, 1), _pw(576, 160, 7, 1),
    _pw(160, 960, 7, 3), _dw(960, 1, 7, 3), _pw(960, 160, 7, 2),
    _pw(960, 320, 7, 1),
    _pw(320, 1280, 7, 1),
)

# BERT-base encoder layer, sequence 128: Q, K, V and output projections (4 x 128x768x768), FFN up
# (128x768x3072) and down (128x3072x768), attention scores Q.K^T (12 heads x 128x64x128) and
# context scores.V (12 x 128x128x64).
BERT: tuple[MatMulLayer, ...] = (
    MatMulLayer("bert QKV/out proj 128x768x768", 4, 1, 128, 768, 768, True),
    MatMulLayer("bert FFN up 128x768x3072", 1, 1, 128, 768, 3072, True),
    MatMulLayer("bert FFN down 128x3072x768", 1, 1, 128, 3072, 768, True),
    MatMulLayer("bert attn QK^T 12x128x64x128", 1, 12, 128, 64, 128, False),
    MatMulLayer("bert attn AV 12x128x128x64", 1, 12, 128, 128, 64, False),
)

NETWORKS: dict[str, tuple[Layer, ...]] = {"resnet50": RESNET50, "mobilenet_v2": MOBILENETV2, "bert": BERT}
KINDS = ("stem", "1x1", "3x3", "depthwise", "GEMM")


def tune_malloc() -> bool:
    """Keep freed memory in the heap (see the module docstring): M_TRIM_THRESHOLD (-1) 1 GiB and
    M_MMAP_THRESHOLD (-3) 32 MiB, glibc's largest (mallopt(3)). False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-1, 1 << 30)) and bool(libc.mallopt(-3, 32 << 20))
    except (OSError, AttributeError):
        return False


def load_kernels(path: Path) -> ModuleType:
    """An earlier kernels.py as a module of its own (it imports dispatch.errors from this tree)."""
    spec = importlib.util.spec_from_file_location("baseline_kernels", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _session(model: onnx.ModelProto | str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # ORT's pool threads otherwise spin after each run and starve the BLAS threads of the next call.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _model(node: onnx.NodeProto, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph([node], "bench", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


Case = dict[str, Callable[[], object]]


def conv_case(layer: ConvLayer, rng: np.random.Generator, threads: int, base: ModuleType | None) -> Case:
    x = rng.standard_normal((1, layer.c_in, layer.h, layer.h), dtype=np.float32)
    w = rng.standard_normal((layer.c_out, layer.c_in // layer.group, layer.k, layer.k), dtype=np.float32)
    b = rng.standard_normal(layer.c_out, dtype=np.float32)
    p = layer.k // 2
    attrs = {"kernel_shape": [layer.k] * 2, "strides": [layer.stride] * 2, "pads": [p] * 4,
             "group": layer.group}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    f = TensorProto.FLOAT
    model = _model(
        node,
        [helper.make_tensor_value_info("x", f, x.shape)],
        [helper.make_tensor_value_info("y", f, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    sess = _session(model, threads)
    ort_y = sess.run(None, {"x": x})[0]
    case: Case = {"ours": lambda: kernels.conv(x, w, b, **attrs), "ort": lambda: sess.run(None, {"x": x})}
    if base is not None:
        case["before"] = lambda: base.conv(x, w, b, **attrs)
    for key in ("ours", "before"):
        if key in case:
            got = case[key]()
            np.testing.assert_allclose(got, ort_y, rtol=1e-3, atol=1e-3 * float(np.abs(ort_y).max()))
    return case


def matmul_case(layer: MatMulLayer, rng: np.random.Generator, threads: int, base: ModuleType | None) -> Case:
    a_shape = (layer.batch, layer.m, layer.k) if layer.batch > 1 else (layer.m, layer.k)
    b_shape = (layer.batch, layer.k, layer.n) if layer.batch > 1 else (layer.k, layer.n)
    a = rng.standard_normal(a_shape, dtype=np.float32)
    b = rng.standard_normal(b_shape, dtype=np.float32)
    f = TensorProto.FLOAT
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    inputs = [helper.make_tensor_value_info("a", f, a.shape)]
    inits = [numpy_helper.from_array(b, "b")] if layer.const_b else []
    if not layer.const_b:
        inputs.append(helper.make_tensor_value_info("b", f, b.shape))
    model = _model(node, inputs, [helper.make_tensor_value_info("y", f, None)], inits)
    sess = _session(model, threads)
    feeds = {"a": a} if layer.const_b else {"a": a, "b": b}
    np.testing.assert_allclose(kernels.matmul(a, b), sess.run(None, feeds)[0], rtol=1e-3, atol=1e-3)
    case: Case = {"ours": lambda: kernels.matmul(a, b), "ort": lambda: sess.run(None, feeds)}
    if base is not None:
        case["before"] = lambda: base.matmul(a, b)
    return case


@dataclass(frozen=True)
class Timing:
    """Median wall and CPU seconds (and the minimum wall seconds) of each side, keyed "ours", "ort", ..."""

    wall: dict[str, float]
    cpu: dict[str, float]
    wall_min: dict[str, float]


def interleaved(fns: Case, repeats: int, warmup: int = 3) -> Timing:
    """Times the functions in turn, `repeats` rounds, after `warmup` calls of each; the order of the sides
    flips every round so that a drift in load hits them alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for i in range(repeats):
        for k in keys if i % 2 == 0 else keys[::-1]:
            c0, t0 = time.thread_time(), time.perf_counter()
            fns[k]()
            t1, c1 = time.perf_counter(), time.thread_time()
            wall[k].append(t1 - t0)
            cpu[k].append(c1 - c0)
    med = statistics.median
    return Timing({k: med(v) for k, v in wall.items()}, {k: med(v) for k, v in cpu.items()},
                  {k: min(v) for k, v in wall.items()})


# -- whole models --------------------------------------------------------------------------------------------
def model_case(name: str, threads: int, base: ModuleType | None) -> tuple[Case, dict[str, object]]:
    """Dispatcher(name, strategy="only:asic") against one onnxruntime session of the model (and, with a
    baseline, a Dispatcher compiled with the baseline's kernels and no in-place epilogues)."""
    from dispatch.api import Dispatcher
    from models import build, example_inputs
    from targets.base import DEFAULT_TARGETS, make_target

    feeds = example_inputs(name)
    sess = _session(str(build(name)), threads)
    names = [o.name for o in sess.get_outputs()]

    def dispatcher() -> Dispatcher:
        targets = {k: make_target(k, p, threads=threads) if k == "gpu" else p
                   for k, p in DEFAULT_TARGETS.items()}
        return Dispatcher(name, targets, strategy="only:asic")  # type: ignore[arg-type]

    ours = dispatcher()
    ref = dict(zip(names, sess.run(names, feeds), strict=True))
    info: dict[str, object] = {
        "convs": sum(n.op_type == "Conv" for n in ours.graph.nodes),
        "asic_nodes": sum(t == "asic" for t in ours.plan.assignment.values()),
        "nodes": len(ours.graph.nodes),
        "max_abs_err": max(float(np.abs(ours.run(feeds)[k] - v).max()) for k, v in ref.items()),
    }
    case: Case = {"ours": lambda: ours.run(feeds), "ort": lambda: sess.run(names, feeds)}
    if base is not None:
        saved_kernels, saved_inplace = dict(kernels.KERNELS), dict(kernels.INPLACE_KERNELS)
        kernels.KERNELS.update(base.KERNELS)
        kernels.INPLACE_KERNELS.clear()
        try:
            before = dispatcher()  # compiled now: its steps keep the baseline's kernel functions
        finally:
            kernels.KERNELS.update(saved_kernels)
            kernels.INPLACE_KERNELS.update(saved_inplace)
        case["before"] = lambda: before.run(feeds)
    return case, info


# -- report --------------------------------------------------------------------------------------------------
def blas_info() -> str:
    """Which BLAS numpy uses: threadpoolctl when installed, else numpy's build config plus, for the
    OpenBLAS numpy bundles (a DYNAMIC_ARCH build), the kernel it picked at run time."""
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
            f"{i.get('num_threads')} threads)"
            for i in threadpool_info()
        )
    except ImportError:
        pass
    cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    core = "unknown"
    for path in glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*")):
        lib = ctypes.CDLL(path)
        for fn in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            if hasattr(lib, fn):
                getattr(lib, fn).restype = ctypes.c_char_p
                core = getattr(lib, fn)().decode()
                break
    return f"{cfg['name']} {cfg['version']}, run-time kernel {core}"


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}" if den > 0 else "-"


def render(
    rows: list[tuple[str, Layer, Timing]],
    whole: list[tuple[str, dict[str, object], Timing]],
    header: list[str],
    cpu_ok: bool,
) -> str:
    before = any("before" in t.wall for _, _, t in rows) or any("before" in t.wall for *_, t in whole)
    lines = ["# ASIC NumPy kernels vs onnxruntime CPU", "", *header, ""]
    if rows:
        lines += [
            "## Per layer",
            "",
            "`ratio`: ORT time / our time from the medians (our throughput as a fraction of ORT's); "
            "`cpu ratio`: the same from the calling thread's CPU time"
            + ("; `before`: the baseline kernels' ratio, timed in the same rounds." if before else "."),
            "",
            "| network | layer | class | count | GFLOP | ours GFLOP/s | ORT GFLOP/s | ratio | cpu ratio "
            + ("| before | before cpu ratio |" if before else "|"),
            "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if before else ""),
        ]
        for net, layer, t in rows:
            w, c = t.wall, t.cpu
            cells = [net, layer.name, layer.kind, str(layer.count), f"{layer.flop / 1e9:.3f}",
                     f"{layer.flop / w['ours'] / 1e9:.1f}", f"{layer.flop / w['ort'] / 1e9:.1f}",
                     _ratio(w["ort"], w["ours"]), _ratio(c["ort"], c["ours"]) if cpu_ok else "-"]
            if before:
                cells += [_ratio(w["ort"], w["before"]), _ratio(c["ort"], c["before"]) if cpu_ok else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "## Aggregates (each layer x count)",
            "",
            "Times are sums of medians x count; `ratio` = ORT ms / ours ms"
            + ("; `before ms` and `before ratio`: the baseline kernels." if before else "."),
            "",
            "| network | class | layers | GFLOP | ours ms | ORT ms | ratio | cpu ratio "
            + ("| before ms | before ratio | speed-up |" if before else "|"),
            "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if before else ""),
        ]
        for net in [n for n in NETWORKS if any(r[0] == n for r in rows)] + ["all"]:
            for kind in (*KINDS, None):
                sel = [(lay, t) for g, lay, t in rows
                       if (net == "all" or g == net) and (kind is None or lay.kind == kind)]
                if not sel or (net == "all" and kind is not None):
                    continue
                tot = {k: sum(lay.count * t.wall[k] for lay, t in sel) for k in sel[0][1].wall}
                cpu = {k: sum(lay.count * t.cpu[k] for lay, t in sel) for k in sel[0][1].cpu}
                cells = [net, kind or "**all**", str(sum(lay.count for lay, _ in sel)),
                         f"{sum(lay.count * lay.flop for lay, _ in sel) / 1e9:.3f}",
                         f"{tot['ours'] * 1e3:.2f}",
                         f"{tot['ort'] * 1e3:.2f}", _ratio(tot["ort"], tot["ours"]),
                         _ratio(cpu["ort"], cpu["ours"]) if cpu_ok else "-"]
                if before:
                    cells += [f"{tot['before'] * 1e3:.2f}", _ratio(tot["ort"], tot["before"]),
                              _ratio(tot["before"], tot["ours"])]
                lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Goal (issue 3): ratio >= 0.5 in aggregate."]
    if whole:
        lines += [
            "",
            "## Whole models: `Dispatcher(model, strategy=\"only:asic\")` vs one onnxruntime session",
            "",
            "Wall time per run (median); `ASIC / ORT` = our time over onnxruntime's (issue 5's goal for "
            "ResNet-50: <= 2); `cpu`: the same from the calling thread's CPU time"
            + ("; `before`: the baseline kernels, without in-place epilogues." if before else "."),
            "",
            "| model | nodes on the ASIC | ORT ms | ASIC ms | ASIC / ORT | cpu ASIC / ORT "
            + ("| before ms | before / ORT | speed-up | max abs err |" if before else "| max abs err |"),
            "|---|---|---:|---:|---:|---:|" + ("---:|---:|---:|---:|" if before else "---:|"),
        ]
        for name, info, t in whole:
            w, c = t.wall, t.cpu
            cells = [name, f"{info['asic_nodes']}/{info['nodes']} ({info['convs']} convs)",
                     f"{w['ort'] * 1e3:.1f}", f"{w['ours'] * 1e3:.1f}", _ratio(w["ours"], w["ort"]),
                     _ratio(c["ours"], c["ort"]) if cpu_ok else "-"]
            if before:
                cells += [f"{w['before'] * 1e3:.1f}", _ratio(w["before"], w["ort"]),
                          _ratio(w["before"], w["ours"])]
            cells.append(f"{info['max_abs_err']:.2g}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    blas_threads = int(os.environ.get("OPENBLAS_NUM_THREADS") or os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=blas_threads, help="ORT intra-op threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kernels.md")
    parser.add_argument("--only", default=",".join(NETWORKS),
                        help=f"comma-separated layer sets from {', '.join(NETWORKS)}, or 'none'")
    parser.add_argument("--models", default="", help="whole models to run, e.g. resnet50,mobilenet_v2")
    parser.add_argument("--model-repeats", type=int, default=15)
    parser.add_argument("--baseline", type=Path, default=None, help="an earlier kernels.py to compare with")
    parser.add_argument("--baseline-label", default=None, help="what --baseline is, for the report")
    parser.add_argument("--no-malloc-tuning", action="store_true")
    args = parser.parse_args(argv)
    nets = [] if args.only == "none" else args.only.split(",")
    if unknown := [n for n in nets if n not in NETWORKS]:
        parser.error(f"unknown layer set(s) {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")

    tuned = False if args.no_malloc_tuning else tune_malloc()
    base = load_kernels(args.baseline) if args.baseline else None
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    rows: list[tuple[str, Layer, Timing]] = []
    for net in nets:
        for layer in NETWORKS[net]:
            make = conv_case if isinstance(layer, ConvLayer) else matmul_case
            t = interleaved(make(layer, rng, args.threads, base), args.repeats)  # type: ignore[arg-type]
            rows.append((net, layer, t))
            print(f"  {net} {layer.name}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in t.wall.items()),
                  file=sys.stderr)
    whole: list[tuple[str, dict[str, object], Timing]] = []
    for name in [m for m in args.models.split(",") if m]:
        case, info = model_case(name, args.threads, base)
        t = interleaved(case, args.model_repeats, warmup=2)
        whole.append((name, info, t))
        print(f"  {name}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.wall.items()), file=sys.stderr)

    load_after = os.getloadavg()
    header = [
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}",
        f"- numpy {np.__version__}, BLAS: {blas_info()}, {blas_threads} threads "
        f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})",
        f"- onnxruntime {ort.__version__}, CPUExecutionProvider, intra_op_num_threads={args.threads}, "
        "inter_op_num_threads=1, no spinning, default graph optimisations; weights as initializers",
        f"- fp32, batch 1; {args.repeats} interleaved rounds per layer, {args.model_repeats} per model, "
        "after warm-ups; GFLOP/s from the median time",
        f"- glibc malloc tuning (see the script's docstring): {'on' if tuned else 'off'}",
        f"- baseline: {args.baseline_label or args.baseline}" if args.baseline else "- baseline: none",
        f"- 1-minute load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"(the machine has {os.cpu_count()} CPUs; above that, other processes compete for them)",
    ]
    if blas_threads > 1 and max(load_before[0], load_after[0]) > (os.cpu_count() or 1):
        header += [
            "",
            "Warning: the load average exceeded the CPU count, so other processes held cores during the "
            "run; multi-threaded OpenBLAS (static split, its threads wait for each other) is then far "
            "slower than usual and these ratios understate ours. Rerun on an idle machine, or with "
            "OPENBLAS_NUM_THREADS=1 for a comparison that contention does not skew.",
        ]
    text = render(rows, whole, header, cpu_ok=args.threads == 1 and blas_threads == 1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

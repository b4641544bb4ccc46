"""Throughput of the ASIC's NumPy kernels against onnxruntime's CPU Conv and MatMul.

Layers: every distinct conv shape of ResNet-50 (torchvision v1.5, batch 1, 224x224; He et al. 2016,
table 1, with the stride on the 3x3 conv) and the GEMMs of one BERT-base encoder layer (sequence 128,
hidden 768, 12 heads of 64, FFN 3072; Devlin et al. 2019). Each layer runs as a single-node ONNX model
in onnxruntime (weights as initializers, as in a real model, so ORT may prepack them; default graph
optimisations, which on x86 include its NCHWc conv layout) and through `targets.asic.kernels`.
Runs are interleaved (ours, ORT, ours, ...) after a warm-up; the median of the repeats is reported.
Aggregates weight each layer by how often it occurs in the network (53 convs, 4.09 GMAC for
ResNet-50): ratio = total ORT time / total our time (our throughput as a fraction of ORT's).

Threads: numpy's OpenBLAS takes its thread count from OPENBLAS_NUM_THREADS (all CPUs when unset) at
import; ORT's intra-op threads default to the same number so both sides use the same cores:

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_kernels.py --repeats 21       # -> results/kernels.md
    python benchmarks/bench_kernels.py --repeats 21 --out benchmarks/results/kernels_2threads.md

OpenBLAS splits each GEMM statically between its threads, so on a machine where other processes
compete for the cores its multi-threaded times degrade far more than ORT's (which balances work
dynamically); the load average is written next to the results for that reason.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from targets.asic.kernels import conv, matmul  # noqa: E402


@dataclass(frozen=True)
class ConvLayer:
    """One conv shape: C_in -> C_out, square k x k kernel at stride s, padding k // 2, on h x h input."""

    name: str
    count: int  # occurrences in ResNet-50
    c_in: int
    c_out: int
    k: int
    stride: int
    h: int

    @property
    def h_out(self) -> int:
        # floor((h + 2p - k) / s) + 1 with p = k // 2
        return (self.h + 2 * (self.k // 2) - self.k) // self.stride + 1

    @property
    def flop(self) -> float:
        # 2 FLOP per MAC; MACs = C_out * h_out^2 * C_in * k^2
        return 2.0 * self.c_out * self.h_out**2 * self.c_in * self.k**2


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

    @property
    def flop(self) -> float:
        return 2.0 * self.batch * self.m * self.k * self.n


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


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # ORT's pool threads otherwise spin after each run and starve the BLAS threads of the next call.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _model(node: onnx.NodeProto, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph([node], "bench", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def conv_case(layer: ConvLayer, rng: np.random.Generator, threads: int) -> tuple[Callable, Callable]:
    x = rng.standard_normal((1, layer.c_in, layer.h, layer.h), dtype=np.float32)
    w = rng.standard_normal((layer.c_out, layer.c_in, layer.k, layer.k), dtype=np.float32)
    b = rng.standard_normal(layer.c_out, dtype=np.float32)
    p = layer.k // 2
    attrs = {"kernel_shape": [layer.k] * 2, "strides": [layer.stride] * 2, "pads": [p] * 4}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    f = TensorProto.FLOAT
    model = _model(
        node,
        [helper.make_tensor_value_info("x", f, x.shape)],
        [helper.make_tensor_value_info("y", f, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    sess = _session(model, threads)
    ours_y = conv(x, w, b, **attrs)
    ort_y = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(ours_y, ort_y, rtol=1e-3, atol=1e-3 * float(np.abs(ort_y).max()))
    return (lambda: conv(x, w, b, **attrs)), (lambda: sess.run(None, {"x": x}))


def matmul_case(layer: MatMulLayer, rng: np.random.Generator, threads: int) -> tuple[Callable, Callable]:
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
    np.testing.assert_allclose(matmul(a, b), sess.run(None, feeds)[0], rtol=1e-3, atol=1e-3)
    return (lambda: matmul(a, b)), (lambda: sess.run(None, feeds))


@dataclass(frozen=True)
class Timing:
    """Median and minimum seconds of our kernel and of onnxruntime for one layer."""

    ours_median: float
    ort_median: float
    ours_min: float
    ort_min: float


def interleaved(ours: Callable, theirs: Callable, repeats: int, warmup: int = 3) -> Timing:
    """Times `ours` and `theirs` alternately, `repeats` times each, after `warmup` calls of each."""
    for _ in range(warmup):
        ours()
        theirs()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        theirs()
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_theirs.append(t2 - t1)
    return Timing(statistics.median(t_ours), statistics.median(t_theirs), min(t_ours), min(t_theirs))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    blas_threads = int(os.environ.get("OPENBLAS_NUM_THREADS") or os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=blas_threads, help="ORT intra-op threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kernels.md")
    parser.add_argument("--only", choices=["resnet", "bert"], default=None)
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    rows: list[tuple[str, ConvLayer | MatMulLayer, Timing]] = []
    layers: list[tuple[str, ConvLayer | MatMulLayer]] = []
    if args.only in (None, "resnet"):
        layers += [("resnet50", layer) for layer in RESNET50]
    if args.only in (None, "bert"):
        layers += [("bert", layer) for layer in BERT]
    for group, layer in layers:
        make = conv_case if isinstance(layer, ConvLayer) else matmul_case
        ours, theirs = make(layer, rng, args.threads)
        t = interleaved(ours, theirs, args.repeats)
        rows.append((group, layer, t))
        print(
            f"  {layer.name}: ours {t.ours_median * 1e3:.3f} ms, ORT {t.ort_median * 1e3:.3f} ms",
            file=sys.stderr,
        )

    lines = [
        "# ASIC NumPy kernels vs onnxruntime CPU",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}",
        f"- numpy {np.__version__}, BLAS: {blas_info()}, {blas_threads} threads "
        f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})",
        f"- onnxruntime {ort.__version__}, CPUExecutionProvider, intra_op_num_threads={args.threads}, "
        "inter_op_num_threads=1, no spinning, default graph optimisations; weights as initializers",
        f"- fp32, batch 1; {args.repeats} interleaved runs after 3 warm-ups; GFLOP/s from the median time",
        f"- 1-minute load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after "
        f"(the machine has {os.cpu_count()} CPUs; above that, other processes compete for them)",
        "",
        "| layer | count | GFLOP | ours GFLOP/s | ORT GFLOP/s | ratio ours/ORT | ratio of min times |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _, layer, t in rows:
        lines.append(
            f"| {layer.name} | {layer.count} | {layer.flop / 1e9:.3f} "
            f"| {layer.flop / t.ours_median / 1e9:.1f} | {layer.flop / t.ort_median / 1e9:.1f} "
            f"| {t.ort_median / t.ours_median:.2f} "
            f"| {t.ort_min / t.ours_min:.2f} |"
        )
    lines += [
        "",
        "| aggregate (each layer x count) | GFLOP | ours ms | ORT ms | ratio ORT time / ours "
        "| ratio of min times |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in ("resnet50", "bert", None):
        sel = [(layer, t) for g, layer, t in rows if label is None or g == label]
        if not sel:
            continue
        flop = sum(layer.count * layer.flop for layer, _ in sel)
        ours = sum(layer.count * t.ours_median for layer, t in sel)
        ort_ = sum(layer.count * t.ort_median for layer, t in sel)
        ours_min = sum(layer.count * t.ours_min for layer, t in sel)
        ort_min = sum(layer.count * t.ort_min for layer, t in sel)
        title = {"resnet50": "ResNet-50 convs", "bert": "BERT-base layer GEMMs", None: "all"}[label]
        lines.append(
            f"| {title} | {flop / 1e9:.3f} | {ours * 1e3:.2f} | {ort_ * 1e3:.2f} | {ort_ / ours:.2f} "
            f"| {ort_min / ours_min:.2f} |"
        )
    lines += ["", "Goal (issue 3): ratio >= 0.5 in aggregate."]
    if blas_threads > 1 and max(load_before[0], os.getloadavg()[0]) > (os.cpu_count() or 1):
        lines += [
            "",
            "Warning: the load average exceeded the CPU count, so other processes held cores during the "
            "run; multi-threaded OpenBLAS (static split, its threads wait for each other) is then far "
            "slower than usual and these ratios understate ours. Rerun on an idle machine, or with "
            "OPENBLAS_NUM_THREADS=1 for a comparison that contention does not skew.",
        ]
    lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Runtime benchmarks: dispatch overhead, ResNet-50 on the simulated ASIC, and peak memory on BERT.

    python benchmarks/bench_runtime.py [overhead|asic|memory|all] [--write]

Every ratio is measured within one process run, with the two sides interleaved (ABAB…, the order flipped
on every pair) so that drifts in clock speed or background load hit both alike; the figures are medians.
Memory is measured in fresh subprocesses (ru_maxrss is a high-water mark for the whole process), one for
each side. `--write` also writes benchmarks/results/runtime.md.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from dispatch.api import Dispatcher  # noqa: E402
from dispatch.runtime import host_description  # noqa: E402
from models import build, example_inputs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "runtime.md"


NOTES = """## Reading the figures

- Overhead: the layers between a plain session and Dispatcher.run are the target's executable (a dict of
  feeds, one session.run), Runtime.run (host copies of the planned input and output transfers, the
  environment dict) and Dispatcher.run (feed check, shape-signature lookup).
- ASIC: the NumPy kernels spend their time in OpenBLAS GEMMs. OpenBLAS's threads synchronise on every call,
  so on a busy machine (see `load`) a call waits for whichever thread was descheduled; one BLAS thread per
  process avoids that. The choice belongs to whoever deploys the ASIC kernels (OPENBLAS_NUM_THREADS, or a
  thread cap inside the target).
- Memory: the loaded Graph holds each weight once, as the NumPy constants the ASIC kernels read
  (Graph.model keeps typed placeholders); sessions get those arrays through add_external_initializers.
  onnxruntime's CPU provider still builds buffers of its own (pre-packed GEMM weights), about what a plain
  session holds, so the Dispatcher's live memory is about twice the weights where a plain session needs
  one; the sub-model extraction itself keeps no copy. The peak is the frontend's loading (shape inference
  and constant folding work on the whole model).
"""


def interleaved(fns: dict[str, Callable[[], object]], n: int, warmup: int) -> dict[str, list[float]]:
    """Wall time of each function, n times each, alternating A B / B A, after `warmup` calls of each."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    keys = list(fns)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    clock = time.perf_counter
    gc.disable()
    try:
        for i in range(n):
            for k in keys if i % 2 == 0 else keys[::-1]:
                f = fns[k]
                t0 = clock()
                f()
                samples[k].append(clock() - t0)
    finally:
        gc.enable()
    return samples


def plain_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """What a user without dispatch would write: the original file, default options, the CPU provider."""
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _targets(threads: int | None) -> dict[str, object]:
    """The default targets, with the onnxruntime-backed one limited to `threads` intra-op threads if given."""
    from targets.base import DEFAULT_TARGETS, make_target

    if not threads:
        return dict(DEFAULT_TARGETS)
    return {name: make_target(name, preset, threads=threads) if name == "gpu" else preset
            for name, preset in DEFAULT_TARGETS.items()}


def _paired(samples: dict[str, list[float]], a: str, b: str) -> tuple[float, float]:
    """Median over adjacent pairs of a/b and of a − b (each pair ran back to back, under the same load)."""
    ratios = [x / y for x, y in zip(samples[a], samples[b], strict=True)]
    diffs = [x - y for x, y in zip(samples[a], samples[b], strict=True)]
    return statistics.median(ratios), statistics.median(diffs)


# -- overhead ------------------------------------------------------------------------------------------------
def bench_overhead(name: str, n: int, warmup: int, threads: int | None = None,
                   layers: bool = False) -> dict[str, object]:
    """Dispatcher.run with every node on the onnxruntime-backed target vs a plain InferenceSession.run.

    With `layers`, also the layers in between: the target's executable alone and Runtime.run.
    """
    feeds = example_inputs(name)
    load = os.getloadavg()[0]
    sess = plain_session(build(name), threads)
    out_names = [o.name for o in sess.get_outputs()]
    with Dispatcher(name, _targets(threads), strategy="only:gpu") as d:  # type: ignore[arg-type]
        segs = d.plan.segments
        entry = d._default
        fns: dict[str, Callable[[], object]] = {}
        fns["plain InferenceSession.run"] = lambda: sess.run(out_names, feeds)
        if layers:
            seg_exe = entry.runtime._steps[0].run
            fns["target executable"] = lambda: seg_exe(feeds)
            fns["Runtime.run"] = lambda: entry.runtime.run(feeds)
        fns["Dispatcher.run"] = lambda: d.run(feeds)
        s = interleaved(fns, n, warmup)
        ref = sess.run(out_names, feeds)
        got = d.run(feeds)
        same = all(np.array_equal(got[k], v) for k, v in zip(out_names, ref, strict=True))
        provider = d.targets["gpu"].provider
    med = {k: statistics.median(v) for k, v in s.items()}
    ratio, added = _paired(s, "Dispatcher.run", "plain InferenceSession.run")
    return {"model": name, "segments": len(segs), "n": n, "threads": threads or "default",
            "provider": provider, "identical_outputs": same, "median_s": med,
            "ratio_of_medians": med["Dispatcher.run"] / med["plain InferenceSession.run"],
            "added_s": med["Dispatcher.run"] - med["plain InferenceSession.run"],
            "paired_ratio": ratio, "paired_added_s": added, "load_before": load}


# -- ResNet-50 on the simulated ASIC -------------------------------------------------------------------------
def _asic_probe(strategy: str, n: int, warmup: int) -> dict[str, object]:
    """In this process: Dispatcher.run of ResNet-50 with `strategy` vs onnxruntime, interleaved pairs."""
    name = "resnet50"
    feeds = example_inputs(name)
    sess = plain_session(build(name))
    out_names = [o.name for o in sess.get_outputs()]
    load = os.getloadavg()[0]
    with Dispatcher(name, strategy=strategy) as d:
        convs = [nd.name for nd in d.graph.nodes if nd.op_type == "Conv"]
        on_asic = sum(d.plan.assignment[c] == "asic" for c in convs)
        s = interleaved({"onnxruntime CPU": lambda: sess.run(out_names, feeds),
                         "Dispatcher.run": lambda: d.run(feeds)}, n, warmup)
        paired_ratio, _ = _paired(s, "Dispatcher.run", "onnxruntime CPU")
        v = d.validate(feeds)
        m = d.measure(feeds, repeat=max(3, n // 2), warmup=1)
    by_target: dict[str, float] = {}
    for seg in m.segments:
        key = f"{seg.target} ({seg.provider})"
        by_target[key] = by_target.get(key, 0.0) + seg.seconds
    med = {k: statistics.median(v) for k, v in s.items()}
    return {"strategy": strategy, "convs": len(convs), "convs_on_asic": on_asic,
            "segments": len(m.segments), "transfers": len(m.transfers), "n": n, "median_s": med,
            "ratio_of_medians": med["Dispatcher.run"] / med["onnxruntime CPU"], "paired_ratio": paired_ratio,
            "validated": v.ok, "max_abs_err": v.max_abs_err, "by_target_s": by_target,
            "transfers_s": sum(t.seconds for t in m.transfers), "overhead_s": m.overhead_s,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"), "load_before": load}


def bench_asic(strategy: str, n: int, warmup: int, blas_threads: int | None) -> dict[str, object]:
    """`_asic_probe` in a fresh process, with OPENBLAS_NUM_THREADS set when `blas_threads` is given (OpenBLAS
    reads it once, at load)."""
    env = dict(os.environ)
    env.pop("OPENBLAS_NUM_THREADS", None)
    if blas_threads:
        env["OPENBLAS_NUM_THREADS"] = str(blas_threads)
    cmd = [sys.executable, __file__, "_asic", strategy, str(n), str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- memory --------------------------------------------------------------------------------------------------
def _status_mib(key: str) -> float:
    """A figure of /proc/self/status in MiB: VmRSS (resident now) or VmHWM (peak resident of this program).

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child started by a
    process holding gigabytes would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def _rss_probe(kind: str, name: str) -> None:
    """In a fresh process: build one side, run once, print VmRSS now and the peak (VmHWM) as JSON."""
    feeds = example_inputs(name)
    path = build(name)
    before = _status_mib("VmRSS")
    if kind == "plain":
        sess = plain_session(path)
        sess.run(None, feeds)
        keep: object = sess
    else:
        keep = Dispatcher(path, strategy=kind)
        keep.run(feeds)  # type: ignore[attr-defined]
    gc.collect()
    after = _status_mib("VmRSS")
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, so RSS counts live data only
    row = {"kind": kind, "model": name, "before_mib": before, "after_mib": after,
           "live_mib": _status_mib("VmRSS"), "peak_mib": _status_mib("VmHWM"),
           "model_bytes": path.stat().st_size, "graph_model_mib": 0.0, "graph_consts_mib": 0.0}
    if isinstance(keep, Dispatcher):  # after the readings: ByteSize may serialise the model to count it
        g = keep.graph
        row["graph_model_mib"] = g.model.ByteSize() / 2**20
        consts = sum(v.const.nbytes for v in g.values.values() if v.const is not None)
        row["graph_consts_mib"] = consts / 2**20
    print(json.dumps(row))
    del keep


def bench_memory(name: str, kinds: tuple[str, ...]) -> list[dict[str, object]]:
    rows = []
    for kind in kinds:
        out = subprocess.run([sys.executable, __file__, "_rss", kind, name], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


# -- output --------------------------------------------------------------------------------------------------
def _us(s: float) -> str:
    return f"{s * 1e6:,.1f} µs"


def _ms(s: float) -> str:
    return f"{s * 1e3:,.2f} ms"


def _verdicts(results: dict[str, object]) -> list[str]:
    """The targets of issue 5, each checked against the figures below."""
    out = []
    for r in results.get("overhead", []):  # type: ignore[attr-defined]
        if r["model"] in ("resnet50", "bert"):
            ok = abs(r["paired_ratio"] - 1) <= 0.05
            out.append(f"- {r['model']}, onnxruntime threads {r['threads']}: Dispatcher.run / "
                       f"InferenceSession.run = {r['paired_ratio']:.3f} → within 5 %: "
                       f"{'yes' if ok else 'no'}")
        else:
            ok = r["paired_added_s"] < 50e-6
            out.append(f"- {r['model']}: Dispatcher.run adds {r['paired_added_s'] * 1e6:.1f} µs → "
                       f"under 50 µs: {'yes' if ok else 'no'}")
    for r in results.get("asic", []):  # type: ignore[attr-defined]
        ok = r["paired_ratio"] < 2
        out.append(f"- ResNet-50 {r['strategy']} ({r['convs_on_asic']}/{r['convs']} convs on the ASIC), BLAS "
                   f"threads {r['blas_threads']}: {r['paired_ratio']:.2f}× onnxruntime → within 2×: "
                   f"{'yes' if ok else 'no'}")
    return out


def render(results: dict[str, object]) -> str:
    lines = ["# Runtime benchmarks", "",
             f"Machine: {host_description()}; onnxruntime {ort.__version__}, numpy {np.__version__}. "
             "Produced by `python benchmarks/bench_runtime.py all --write`.", "",
             "Every figure here is a wall time **measured on this machine**, by the provider named; "
             "none is a prediction for the planned hardware (H100, TPU-like array).", ""]
    verdicts = _verdicts(results)
    if verdicts:
        lines += ["## Targets", "", *verdicts, ""]
    if "overhead" in results:
        lines += ["## Dispatch overhead (all nodes on the onnxruntime-backed target, `only:gpu`)", "",
                  "Interleaved; medians. `ratio` and `added`: median over adjacent pairs of Dispatcher.run / "
                  "plain run and of their difference; `ratio of medians` for comparison. Threads: "
                  "onnxruntime intra-op threads on both sides.", "",
                  "| model | provider | threads | pairs | load | plain InferenceSession.run | "
                  "target executable | Runtime.run | Dispatcher.run | ratio | ratio of medians | added | "
                  "outputs identical |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["overhead"]:  # type: ignore[union-attr]
            m = r["median_s"]
            fmt = _us if m["plain InferenceSession.run"] < 1e-3 else _ms
            cells = [r["model"], r["provider"], r["threads"], r["n"], f"{r['load_before']:.1f}",
                     fmt(m["plain InferenceSession.run"]),
                     fmt(m["target executable"]) if "target executable" in m else "",
                     fmt(m["Runtime.run"]) if "Runtime.run" in m else "", fmt(m["Dispatcher.run"]),
                     f"{r['paired_ratio']:.3f}", f"{r['ratio_of_medians']:.3f}", _us(r["paired_added_s"]),
                     r["identical_outputs"]]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    if "asic" in results:
        lines += ["## ResNet-50, convolutions on the simulated ASIC (NumPy kernels), vs onnxruntime CPU", "",
                  "Interleaved pairs; `ratio`: median over pairs of Dispatcher.run / onnxruntime. Time by "
                  "target and transfers: medians from Dispatcher.measure. `BLAS threads`: "
                  "OPENBLAS_NUM_THREADS of the process (NumPy's matmul under the ASIC kernels); `load`: "
                  "1-minute load average "
                  "before the run.", "",
                  "| strategy | BLAS threads | load | convs on asic | segments | transfers | "
                  "onnxruntime CPU | Dispatcher.run | ratio | ratio of medians | validated (max abs err) | "
                  "time by target | "
                  "transfers (host copies) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["asic"]:  # type: ignore[union-attr]
            m = r["median_s"]
            by = ", ".join(f"{k}: {_ms(v)}" for k, v in r["by_target_s"].items())
            cells = [r["strategy"], r["blas_threads"], f"{r['load_before']:.1f}",
                     f"{r['convs_on_asic']}/{r['convs']}", r["segments"], r["transfers"],
                     _ms(m["onnxruntime CPU"]), _ms(m["Dispatcher.run"]), f"{r['paired_ratio']:.2f}",
                     f"{r['ratio_of_medians']:.2f}",
                     f"{r['validated']} ({r['max_abs_err']:.2g})", by, _ms(r["transfers_s"])]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    if "memory" in results:
        lines += ["## Peak memory on BERT (fresh process each; one run)", "",
                  "`before`: RSS after imports and reading the example inputs; `after`: RSS after one run; "
                  "`live`: RSS after glibc's malloc_trim(0) returned freed heap pages; "
                  "`peak`: VmHWM (high-water mark of resident memory). `Graph.model` and `Graph constants`: "
                  "bytes the loaded Graph holds (its ModelProto with embedded initializers, and the NumPy "
                  "arrays of Value.const); the rest of `live` above `before` is onnxruntime's.", "",
                  "| side | model file | before | after | live | peak | Graph.model | Graph constants | "
                  "onnxruntime and the rest |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["memory"]:  # type: ignore[union-attr]
            side = "plain InferenceSession" if r["kind"] == "plain" else f"Dispatcher (strategy {r['kind']})"
            rest = r["live_mib"] - r["before_mib"] - r["graph_model_mib"] - r["graph_consts_mib"]
            cells = [side, f"{r['model_bytes'] / 2**20:,.0f} MiB", f"{r['before_mib']:,.0f} MiB",
                     f"{r['after_mib']:,.0f} MiB", f"{r['live_mib']:,.0f} MiB", f"{r['peak_mib']:,.0f} MiB",
                     f"{r['graph_model_mib']:,.0f} MiB", f"{r['graph_consts_mib']:,.0f} MiB",
                     f"{rest:,.0f} MiB"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(NOTES)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["_rss"]:
        _rss_probe(argv[1], argv[2])
        return 0
    if argv[:1] == ["_asic"]:
        print(json.dumps(_asic_probe(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", default="all", choices=["overhead", "asic", "memory", "all"])
    p.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test)")
    args = p.parse_args(argv)
    q = args.quick
    results: dict[str, object] = {}
    if args.what in ("overhead", "all"):
        tiny, big = (300, 10) if q else (3000, 60)
        results["overhead"] = [bench_overhead("tiny_cnn", tiny, 50, layers=True),
                               bench_overhead("mlp", tiny, 50, layers=True)]
        for threads in (None, 1):
            results["overhead"] += [bench_overhead("resnet50", big, 3, threads),  # type: ignore[operator]
                                    bench_overhead("bert", big, 3, threads)]
    if args.what in ("asic", "all"):
        results["asic"] = [bench_asic(s, 4 if q else 12, 2, blas) for blas in (None, 1)
                           for s in ("only:asic", "optimal")]
    if args.what in ("memory", "all"):
        results["memory"] = bench_memory("bert", ("plain", "only:gpu", "optimal"))
    text = render(results)
    print(text)
    if args.write:
        RESULTS.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

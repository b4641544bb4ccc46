"""Predicted against measured whole-model latency on onnxruntime's CPU provider, for every zoo model.

Predicted: the sum over the model's nodes of the calibrated cpu target's cost (targets.gpu.CpuTarget, spec
host-cpu, with the profile `dispatch.calibration` saved; nodes onnxruntime fuses into a neighbour cost
nothing), plus one session call. Measured: the median wall time of InferenceSession.run on the whole model,
with the target's own session options (ORT_ENABLE_ALL, its thread count), after a warm-up, in rounds
over all models (the median of the round medians). The goal is
|predicted / measured - 1| <= 20% for each model.

    python benchmarks/bench_calibration.py [--calibrate] [--quick] [--repeats 20] [--rounds 3]
        [--models bert,gpt2] [--wait] [--rss] [--out benchmarks/results/calibration.md]

--calibrate fits a new profile first (into $DISPATCH_CACHE/profiles, or --profile PATH); otherwise the
saved profile for host-cpu on the CPU provider is used (user cache first, then targets/profiles/).
--rss also measures the resident memory that compiling all of BERT as one segment adds, with the weights
shared with the Graph (what CpuTarget.compile does) and embedded in the sub-model (onnx protobuf copy).
The machine may be shared: the 1-minute load average is written next to each result, and with --wait the
script first waits (up to five minutes) for it to fall below 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnxruntime as ort  # noqa: E402

import models  # noqa: E402
from dispatch.analysis import analyze_node  # noqa: E402
from dispatch.calibration import Profile, calibrate  # noqa: E402
from dispatch.frontend import load  # noqa: E402
from dispatch.ir import Graph  # noqa: E402
from targets.base import make_target  # noqa: E402
from targets.gpu import OrtTarget, absorbed_by, op_class, session_options  # noqa: E402

GOAL = 0.20


def predict(target: OrtTarget, graph: Graph) -> tuple[float, dict[str, float], int]:
    """(seconds, seconds per op class, nodes onnxruntime fuses away) for the whole graph as one segment."""
    total = target.segment_overhead().latency_s
    by_class: dict[str, float] = {}
    absorbed = 0
    for node in graph.nodes:
        op = analyze_node(node)
        t = target.cost(node, op).latency_s
        fused = target.fusion(node, op)  # one segment holds every fusion pair: the saving always applies
        if fused is not None:
            t -= fused[1].latency_s
        total += t
        absorbed += absorbed_by(node) is not None
        cls = op_class(node, op)
        by_class[cls] = by_class.get(cls, 0.0) + t
    return total, by_class, absorbed


def measure(
    path: Path, feeds: dict[str, np.ndarray], threads: int | None, repeats: int
) -> tuple[float, float]:
    """(median, min) wall seconds of InferenceSession.run on the whole model."""
    sess = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, feeds)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), float(min(ts))


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("VmRSS:", "VmHWM:"):
            fields[parts[0]] = int(parts[1]) / 1024  # kB
    return fields["VmRSS:"], fields["VmHWM:"]


def _rss_child(mode: str) -> None:
    """In a fresh process: load BERT, compile it whole, print the RSS and peak RSS the compile added."""
    import gc

    from targets.subgraph import extract

    g = load(models.build("bert"))
    gc.collect()
    r0, h0 = _rss_mb()
    inputs, outputs = [v.name for v in g.inputs], [v.name for v in g.outputs]
    if mode == "shared":
        exe = make_target("cpu", "host-cpu", profile=False).compile(g, g.nodes, inputs, outputs)
    else:
        exe = ort.InferenceSession(
            extract(g, g.nodes, inputs, outputs).SerializeToString(), providers=["CPUExecutionProvider"]
        )
    gc.collect()
    r1, h1 = _rss_mb()
    print(f"{r0:.0f} {r1 - r0:.0f} {h1 - h0:.0f} {g.param_bytes / 2**20:.0f}", exe is not None)


def rss_report() -> list[str]:
    out = {}
    for mode in ("shared", "embedded"):
        res = subprocess.run(
            [sys.executable, __file__, "--_rss", mode], capture_output=True, text=True, check=True
        )
        out[mode] = [float(x) for x in res.stdout.split()[:4]]
    base, _, _, params = out["shared"]
    return [
        "",
        f"Memory (BERT, {params:.0f} MiB of weights; {base:.0f} MiB resident after loading the Graph): "
        "compiling the whole model as one segment adds",
        "",
        "| weights | resident (MiB) | peak (MiB) |",
        "|---|---:|---:|",
        f"| shared with the Graph (`add_external_initializers`, what `compile` does) | "
        f"{out['shared'][1]:.0f} | {out['shared'][2]:.0f} |",
        f"| embedded in the sub-model (`targets.subgraph.extract`) | {out['embedded'][1]:.0f} | "
        f"{out['embedded'][2]:.0f} |",
        "",
        "What remains with shared weights is onnxruntime's own: MLAS pre-packs each GEMM's weight matrix.",
    ]


def _wait_quiet(limit_s: float = 300.0) -> None:
    t0 = time.time()
    while os.getloadavg()[0] > 1.0 and time.time() - t0 < limit_s:
        time.sleep(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(models.list_models()))
    ap.add_argument("--repeats", type=int, default=20, help="timed runs per model and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all models")
    ap.add_argument("--calibrate", action="store_true", help="fit a new profile first")
    ap.add_argument("--quick", action="store_true", help="with --calibrate: the quick case set")
    ap.add_argument("--profile", default=None, help="profile to use (or to write with --calibrate)")
    ap.add_argument("--wait", action="store_true", help="first wait up to five minutes for a load below 1")
    ap.add_argument("--rss", action="store_true", help="also measure the memory compiling BERT adds")
    ap.add_argument("--out", default=None, help="markdown file for the tables")
    ap.add_argument("--_rss", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._rss:
        _rss_child(args._rss)
        return 0

    if args.wait:
        _wait_quiet()
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    if args.calibrate:
        prof = calibrate("cpu", out=args.profile, quick=args.quick)
        print(f"calibrated in {time.perf_counter() - t0:.1f} s -> {prof.path}")
    else:
        prof = Profile.load(args.profile) if args.profile else None
    target = make_target("cpu", "host-cpu", profile=prof)
    if target.profile is None:
        print("no calibrated profile found; run with --calibrate", file=sys.stderr)
        return 2
    default = make_target("cpu", "host-cpu", profile=False)

    names = args.models.split(",")
    # Rounds over all models, so that a burst of load on a shared machine hits one round of each model
    # rather than all the repeats of one; a model's measured time is the median of its round medians.
    rounds: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    loads: dict[str, float] = {}
    for _ in range(args.rounds):
        for name in names:
            loads[name] = max(loads.get(name, 0.0), os.getloadavg()[0])
            rounds[name].append(
                measure(models.build(name), models.example_inputs(name), target.threads, args.repeats)
            )
    rows = []
    for name in names:
        graph = load(models.build(name))
        pred, by_class, absorbed = predict(target, graph)
        pred_default, _, _ = predict(default, graph)
        med = float(np.median([m for m, _ in rounds[name]]))
        best = min(b for _, b in rounds[name])
        load_now = loads[name]
        err = pred / med - 1
        rows.append((name, len(graph.nodes), absorbed, pred, pred_default, med, best, err, load_now))
        biggest = sorted(by_class.items(), key=lambda kv: -kv[1])[:3]
        top = ", ".join(f"{k} {v * 1e3:.3f}" for k, v in biggest)
        print(
            f"{name:<17} predicted {pred * 1e3:9.3f} ms  measured {med * 1e3:9.3f} ms "
            f"(min {best * 1e3:.3f})  "
            f"error {err:+6.1%}  [spec defaults {pred_default * 1e3:.3f} ms]  load {load_now:.2f}  ({top} ms)"
        )

    ok = sum(abs(r[7]) <= GOAL for r in rows)
    p = target.profile
    cmd = " ".join(["python benchmarks/bench_calibration.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# Calibrated cost model: predicted vs measured whole-model latency (CPU provider)",
        "",
        f"`{cmd}` on {platform.platform()}, {os.cpu_count()} CPUs, onnxruntime {ort.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; 1-minute load average {load_start:.2f} at the start.",
        "",
        f"Target `cpu`: spec `host-cpu` on {target.provider}, {target.threads or 'default'} intra-op "
        f"thread(s); profile {p.describe()}.",
        "Predicted = Σ per-node cost (nodes onnxruntime fuses into a neighbour cost nothing) + one session "
        f"call. Measured = median over {args.rounds} rounds of the median of {args.repeats} "
        "`InferenceSession.run` calls on the whole model, same session options; load avg = the highest "
        "1-minute load average seen at the start of a round.",
        f"Goal: |error| ≤ {GOAL:.0%} for every model: met for {ok} of {len(rows)}.",
        "",
        "| model | nodes | fused away | predicted (ms) | spec defaults (ms) | measured median (ms) | "
        "measured min (ms) | error | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, absorbed, pred, pdef, med, best, err, la in rows:
        lines.append(
            f"| {name} | {n} | {absorbed} | {pred * 1e3:.3f} | {pdef * 1e3:.3f} | {med * 1e3:.3f} | "
            f"{best * 1e3:.3f} | {err:+.1%} | {la:.2f} |"
        )
    lines += [
        "",
        "Fitted profile, per op class (efficiencies as fractions of the spec's peak FLOP/s and bandwidths; "
        "fixed cost per op):",
        "",
        "| class | compute | memory | fixed (µs) | cases | rms log error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cls, f in p.classes.items():
        lines.append(
            f"| {cls} | {f.compute:.3f} | {f.memory:.3f} | {f.overhead_us:.2f} | {f.cases} | "
            f"{f.rms_log_error:.3f} |"
        )
    odd = {k: v for k, v in p.kernel_scale.items() if not 0.8 <= v <= 1.25}
    lines += [
        "",
        f"Session call {p.session_us:.1f} µs; one more tiny op {p.dispatch_us:.2f} µs; all "
        f"{len(p.residuals.get('cases', []))} calibration cases: rms log error "
        f"{p.residuals.get('rms_log_error', 0):.3f}. Kernel busy-time factors outside [0.8, 1.25]: "
        + (", ".join(f"{k} {v:.2f}" for k, v in odd.items()) or "none")
        + ".",
    ]
    if args.rss:
        lines += rss_report()
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

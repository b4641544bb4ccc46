"""Planning time: synthetic graphs of 1k, 10k and 50k nodes, and the largest zoo model with the real targets.

    python benchmarks/bench_partition.py [--sizes 1000,10000,50000] [--repeat 3] [--only real] [--write]

Timed, each as the median of `repeat` runs in this process:
* problem: Problem.build, which asks every target about every node (support, cost, fusion partner, weight
  bytes) and builds the arrays;
* solve: the strategy alone (optimal: exhaustive search on small problems, else a lower bound from the min
  cut (two targets) or the HiGHS MILP (three), candidate plans and segment moves);
* plan: build_plan (convex segments, transfers, figures, list schedule);
* total = problem + solve + plan, the figure the goals speak of (issue 10, real presets and two targets:
  10k nodes <= 2 s, 50k <= 15 s; before it, on the roofline targets: 10k <= 1 s, 50k <= 10 s).
Graph generation, ONNX loading and the per-node analysis are not planning and are reported apart.

Synthetic graphs (models/synthetic.py) contain an fp16 island that the real targets cannot run on this
machine (onnxruntime's CPU provider has no fp16 MatMul; the ASIC runs bf16/fp32), so they are planned on the
roofline targets below, with the public peak figures of an H100 SXM (TF32 495 TFLOP/s, 3.35 TB/s), a TPU v4
(275 TFLOP/s, 1.2 TB/s) and, for three targets, an element-wise unit; the zoo model uses the real presets.

Real presets (issue 10): the same graphs with the fp16 island widened to fp32 (`fp32_island`: weights cast,
Cast-to-float16 becomes Cast-to-float; node count and structure unchanged) are planned with `optimal` on the
real targets, gpu=h100-sxm + asic=tpu-v4-like (goals: 10,000 nodes within 2 s, 50,000 within 15 s) and with
cpu=host-cpu as a third, for every objective. `--only real` runs just that part (no --write).
`--write` also writes benchmarks/results/partition.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import dispatch.partition.heft as heft_mod  # noqa: E402
import dispatch.plan as plan_mod  # noqa: E402
import dispatch.problem as problem_mod  # noqa: E402
from dispatch.analysis import analyze  # noqa: E402
from dispatch.cost import Cost, OpCost  # noqa: E402
from dispatch.errors import DispatchError  # noqa: E402
from dispatch.frontend import load  # noqa: E402
from dispatch.ir import Graph, Node  # noqa: E402
from dispatch.partition import OBJECTIVES, resolve_strategy  # noqa: E402
from dispatch.plan import build_plan  # noqa: E402
from dispatch.problem import Problem  # noqa: E402
from targets.base import DEFAULT_TARGETS, Executable, Link, Target, TargetSpec, make_target  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "partition.md"
NVLINK = Link(900e9, 0.5e-6, 10.0)  # H100 NVLink 900 GB/s (datasheet); 0.5 us and 10 pJ/B assumed
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Erf", "Neg", "Sqrt", "Pow", "Where"}


class Roofline(Target):
    """latency = max(flops / peak, bytes / bandwidth) + launch; energy = latency · active_w."""

    kind = "roofline"
    provider = "none (benchmark target)"

    def __init__(self, name: str, peak: float, bw: float, launch_s: float, active_w: float,
                 ops: set[str] | None = None, segment_s: float = 2e-6) -> None:
        super().__init__(name, TargetSpec(name, self.kind, "benchmark roofline", "<bench>", NVLINK,
                                          active_w / 3, active_w))
        self.peak, self.bw, self.launch_s, self.ops, self.segment_s = peak, bw, launch_s, ops, segment_s

    def unsupported_reason(self, node: Node) -> str | None:
        return None if self.ops is None or node.op_type in self.ops else f"{self.name} has no {node.op_type}"

    def cost(self, node: Node, op: OpCost) -> Cost:
        lat = max(op.flops / self.peak, op.bytes_moved / self.bw) + self.launch_s
        return Cost(lat, lat * self.spec.active_w)

    def segment_overhead(self) -> Cost:
        return Cost(self.segment_s, self.segment_s * self.spec.idle_w)

    def compile(self, graph: Graph, nodes: Sequence[Node], inputs: Sequence[str],
                outputs: Sequence[str]) -> Executable:
        raise DispatchError("The benchmark's roofline targets only price nodes.")


def roofline_targets(three: bool) -> dict[str, Target]:
    """Two: a GPU and an ASIC that also runs element-wise ops. Three: the ASIC keeps only the matrix ops and a
    vector unit takes the element-wise ones, so every target competes for some nodes."""
    matrix = {"MatMul", "Gemm", "Conv"}
    t: dict[str, Target] = {
        "gpu": Roofline("gpu", 495e12, 3.35e12, 4e-6, 700.0),  # H100 SXM TF32 / HBM3, ~4 us CUDA launch
        "asic": Roofline("asic", 275e12, 1.2e12, 0.2e-6, 192.0, matrix if three else matrix | _ELEMENTWISE),
    }
    if three:
        t["vec"] = Roofline("vec", 20e12, 2e12, 0.1e-6, 50.0, _ELEMENTWISE)  # a vector unit (illustrative)
    return t


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def time_strategy(graph: Graph, ops: list[OpCost], targets: dict[str, Target], strategy: str, repeat: int,
                  objective: str = "latency", **opts: Any) -> dict[str, Any]:
    t_prob, p = median_time(lambda: Problem.build(graph, ops, targets, objective), repeat)
    fn, fixed = resolve_strategy(strategy)
    t_solve, a = median_time(lambda: fn(p, **fixed, **opts), repeat)
    t_plan, pl = median_time(lambda: build_plan(p, a, strategy), repeat)
    on = {name: int(sum(1 for v in pl.assignment.values() if v == name)) for name in targets}
    return {"nodes": len(graph.nodes), "tensors": len(p.t_prod), "problem_s": t_prob, "solve_s": t_solve,
            "plan_s": t_plan, "total_s": t_prob + t_solve + t_plan, "segments": len(pl.segments),
            "transfers": len(pl.transfers), "optimal": pl.optimal, "gap": pl.gap, "on": on,
            "latency_s": pl.predicted.latency_s, "notes": pl.notes}


@contextlib.contextmanager
def collector_left_on() -> Any:
    """Replace no_gc by a no-op, to measure what pausing the garbage collector saves."""
    saved = problem_mod.no_gc
    mods = (problem_mod, plan_mod, heft_mod)
    for m in mods:
        m.no_gc = contextlib.nullcontext  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m in mods:
            m.no_gc = saved  # type: ignore[attr-defined]


def gc_probe(n: int, mode: str) -> None:
    """In a fresh process: load a synthetic graph, then plan it once (optimal, two targets); print seconds.

    This is the common case (load a model, plan it) and the one where the collector's full passes over the
    freshly loaded graph cost most; a long-running process that has already collected may not see them."""
    g, ops, _ = synthetic(n)
    with collector_left_on() if mode == "on" else contextlib.nullcontext():
        seconds = plan_once(g, ops)
    print(json.dumps({"seconds": seconds, "objects": len(gc.get_objects())}))


def plan_once(g: Graph, ops: list[OpCost]) -> float:
    """Seconds for problem + optimal + build_plan on the two roofline targets."""
    t0 = time.perf_counter()
    p = Problem.build(g, ops, roofline_targets(False), "latency")
    fn, _ = resolve_strategy("optimal")
    build_plan(p, fn(p), "optimal")
    return time.perf_counter() - t0


def gc_rows_in_process(g: Graph, ops: list[OpCost], repeat: int) -> list[str]:
    """Planning repeated in one process (as compare_strategies or a re-planning Dispatcher does), collector
    paused and left on, interleaved; medians."""
    out: dict[str, list[float]] = {"paused": [], "on": []}
    for i in range(2 * repeat):
        for mode in ("paused", "on") if i % 2 == 0 else ("on", "paused"):
            with collector_left_on() if mode == "on" else contextlib.nullcontext():
                out[mode].append(plan_once(g, ops))
    n, objects = len(g.nodes), len(gc.get_objects())
    return [f"| {n} nodes, planned repeatedly in one process, collector {mode} | {objects} | "
            f"{statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |" for mode, v in out.items()]


def gc_rows(n: int, repeat: int) -> list[str]:
    """Fresh processes, collector paused (as shipped) and left on, alternating; medians."""
    out: dict[str, list[float]] = {"paused": [], "on": []}
    objects = 0
    for i in range(repeat):
        for mode in ("paused", "on") if i % 2 == 0 else ("on", "paused"):
            cmd = [sys.executable, __file__, "--gc-probe", f"{n}:{mode}"]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())
            out[mode].append(r["seconds"])
            objects = r["objects"]
    return [f"| {n} nodes, first plan in a fresh process, collector {mode} | {objects} | "
            f"{statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |" for mode, v in out.items()]


def fp32_island(model: onnx.ModelProto) -> int:
    """Widen the synthetic graph's fp16 island to fp32 in place, so the real targets run every node: fp16
    weights become fp32, and a Cast to float16 becomes a Cast to float (a no-op cast that keeps the node).
    Returns the number of Casts changed."""
    g = model.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == onnx.TensorProto.FLOAT16:
            wide = numpy_helper.to_array(t).astype(np.float32)
            g.initializer[i].CopyFrom(numpy_helper.from_array(wide, t.name))
    changed = 0
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == onnx.TensorProto.FLOAT16:
                a.i = onnx.TensorProto.FLOAT
                changed += 1
    return changed


def real_targets(three: bool) -> dict[str, Target]:
    """The presets: gpu=h100-sxm, asic=tpu-v4-like (DEFAULT_TARGETS), and cpu=host-cpu as a third."""
    t = {k: make_target(k, v) for k, v in DEFAULT_TARGETS.items()}
    if three:
        t["cpu"] = make_target("cpu", "host-cpu")
    return t


def real_rows(sizes: Sequence[int], repeat: int, limit: float) -> tuple[list[str], list[str]]:
    """optimal on the real presets, every objective, two and three targets: (table rows, summary lines)."""
    rows, summary = [], []
    for n in sizes:
        g, ops, _ = synthetic(n, fp32=True)
        reps = repeat if n <= 10000 else 1
        for three in (False, True):
            targets = real_targets(three)
            label = ", ".join(f"{k}={t.spec.name}" for k, t in targets.items())
            totals = []
            for objective in OBJECTIVES:
                r = time_strategy(g, ops, targets, "optimal", reps, objective, time_limit_s=limit)
                totals.append(f"{objective} {r['total_s']:.2f} s" + ("" if r["optimal"] else " (not proven)"))
                rows.append(fmt_row(f"synthetic {n} fp32, {label}, {objective}", r))
                print(rows[-1], flush=True)
            goal = {10000: 2.0, 50000: 15.0}.get(n) if not three else None
            summary.append(f"* {len(g.nodes)} nodes, {len(targets)} real targets: " + ", ".join(totals)
                           + (f"; goal <= {goal:g} s." if goal else "."))
    return rows, summary


def synthetic(n: int, fp32: bool = False) -> tuple[Graph, list[OpCost], dict[str, float]]:
    from models.synthetic import synthetic_model

    t0 = time.perf_counter()
    model = synthetic_model(n, 0, seq=64, hidden=32)
    if fp32:
        fp32_island(model)
    t1 = time.perf_counter()
    g = load(model)
    t2 = time.perf_counter()
    ops = analyze(g)
    t3 = time.perf_counter()
    return g, ops, {"generate_s": t1 - t0, "load_s": t2 - t1, "analyze_s": t3 - t2}


def how(notes: Sequence[str]) -> str:
    """Which methods answered, from the plan's notes (exhaustive search, or a bound and the candidates)."""
    text = " ".join(notes)
    keys = (("exhaustive", "exhaustive"), ("edp:", "edp bound"), ("makespan:", "path bound"),
            ("min cut", "min cut"), ("LP relaxation", "LP integral"), ("scipy.optimize.milp", "MILP"),
            ("time limit", "time limit hit"), ("segment move", "search"), ("one target", "one target"))
    return " + ".join(label for key, label in keys if key in text) or "-"


def fmt_row(label: str, r: dict[str, Any]) -> str:
    on = ", ".join(f"{k} {v}" for k, v in r["on"].items())
    gap = "" if r["gap"] is None or r["gap"] == 0 else f", gap {r['gap']:.1e}"
    return (f"| {label} | {r['nodes']} | {r['problem_s']:.3f} | {r['solve_s']:.3f} | {r['plan_s']:.3f} | "
            f"**{r['total_s']:.3f}** | {r['total_s'] / r['nodes'] * 1e6:.1f} | {r['segments']} | "
            f"{r['transfers']} | {on} | {'yes' if r['optimal'] else 'no'} ({how(r['notes'])}{gap}) |")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--milp-limit", type=float, default=20.0, help="MILP time limit, seconds (the default)")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--only", choices=("all", "real"), default="all",
                    help="real: only optimal on the real presets (cannot be combined with --write)")
    ap.add_argument("--gc-probe", metavar="N:MODE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gc_probe:
        n, mode = args.gc_probe.split(":")
        gc_probe(int(n), mode)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    load_start = os.getloadavg()[0]
    if args.only == "real":
        if args.write:
            ap.error("--write needs every section; drop --only")
        real_rows(sizes, args.repeat, args.milp_limit)
        return 0
    header = ("| graph | nodes | problem s | solve s | plan s | total s | us/node | segments | transfers | "
              "placement | optimal |\n|---|---|---|---|---|---|---|---|---|---|---|")
    rows: dict[str, list[str]] = {"cut": [], "milp": [], "others": [], "zoo": [], "gc": [], "real": []}
    summary: list[str] = []
    prep: list[str] = []
    graphs = {}
    for n in sizes:
        g, ops, t = synthetic(n)
        graphs[n] = (g, ops)
        prep.append(f"| synthetic {n} | {len(g.nodes)} | {t['generate_s']:.2f} | {t['load_s']:.2f} | "
                    f"{t['analyze_s']:.2f} |")
        try:
            Problem.build(g, ops, {k: make_target(k, v) for k, v in DEFAULT_TARGETS.items()}, "latency")
            real = "the real targets can plan it"
        except DispatchError as e:
            real = f"real targets: {e}"
        print(f"synthetic {n}: {len(g.nodes)} nodes ({real[:140]})", flush=True)
        two, three = roofline_targets(False), roofline_targets(True)
        r = time_strategy(g, ops, two, "optimal", args.repeat)
        rows["cut"].append(fmt_row(f"synthetic {n}, 2 targets", r))
        print(rows["cut"][-1], flush=True)
        goal = {10000: 1.0, 50000: 10.0}.get(n)
        r3 = time_strategy(g, ops, three, "optimal", 1 if n > 10000 else args.repeat,
                           time_limit_s=args.milp_limit)
        was = BEFORE_ROOFLINE.get(n)
        summary.append(f"* {len(g.nodes)} nodes, roofline targets: optimal in {r['total_s']:.2f} s with two "
                       f"targets, {r3['total_s']:.2f} s with three"
                       + (f" (before issue 10: {was[0]:.2f} s and {was[1]:.2f} s" if was else "")
                       + (f"; goal then <= {goal:g} s" if was and goal else "") + (")" if was else "") + ".")
        reps = 1 if n > 10000 else args.repeat
        rows["milp"].append(fmt_row(f"synthetic {n}, 3 targets", r3))
        print(rows["milp"][-1], flush=True)
        r = time_strategy(g, ops, three, "optimal", reps, time_limit_s=args.milp_limit, relax_first=False)
        rows["milp"].append(fmt_row(f"synthetic {n}, 3 targets, integer program alone", r))
        print(rows["milp"][-1], flush=True)
        capped = roofline_targets(False)
        capped["asic"].capacity_bytes = sum(o.param_bytes for o in ops) // 4
        r = time_strategy(g, ops, capped, "optimal", 1, time_limit_s=args.milp_limit)
        rows["milp"].append(fmt_row(f"synthetic {n}, 2 targets, ASIC holds 1/4 of the weights", r))
        print(rows["milp"][-1], flush=True)
        r = time_strategy(g, ops, two, "optimal", reps, objective="edp")
        rows["cut"].append(fmt_row(f"synthetic {n}, 2 targets, objective edp", r))
        print(rows["cut"][-1], flush=True)
        for s in ("priority", "greedy", "heft", "only:gpu"):
            r = time_strategy(g, ops, two, s, args.repeat)
            rows["others"].append(fmt_row(f"synthetic {n}, {s}", r))
            print(rows["others"][-1], flush=True)
    rows["gc"] = gc_rows(max(sizes), args.repeat) + gc_rows_in_process(*graphs[max(sizes)], args.repeat)
    print("\n".join(rows["gc"]), flush=True)

    rows["real"], real_summary = real_rows([n for n in sizes if n >= 10000] or sizes, args.repeat,
                                           args.milp_limit)

    import models

    targets = {k: make_target(k, v) for k, v in DEFAULT_TARGETS.items()}
    zoo = {name: load(name) for name in models.list_models()}
    name = max(zoo, key=lambda k: len(zoo[k].nodes))
    g = zoo[name]
    ops = analyze(g)
    preset = ", ".join(f"{k}={v}" for k, v in DEFAULT_TARGETS.items())
    for s in ("optimal", "heft"):
        r = time_strategy(g, ops, targets, s, args.repeat)
        rows["zoo"].append(fmt_row(f"{name} ({s}), {preset}", r))
        print(rows["zoo"][-1], flush=True)
    three = {**targets, "cpu": make_target("cpu", "host-cpu")}
    r = time_strategy(g, ops, three, "optimal", args.repeat, time_limit_s=args.milp_limit)
    rows["zoo"].append(fmt_row(f"{name} (optimal), + cpu=host-cpu (MILP)", r))
    print(rows["zoo"][-1], flush=True)

    if args.write:
        text = RESULTS_TEMPLATE.format(
            machine=f"{platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}",
            load=f"{load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end",
            repeat=args.repeat, header=header, prep="\n".join(prep), cut="\n".join(rows["cut"]),
            summary="\n".join(summary),
            milp="\n".join(rows["milp"]), others="\n".join(rows["others"]), gc="\n".join(rows["gc"]),
            zoo="\n".join(rows["zoo"]), limit=args.milp_limit, real="\n".join(rows["real"]),
            real_summary="\n".join(real_summary), before=BEFORE_ISSUE_10)
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}")
    return 0


RESULTS_TEMPLATE = """# Partitioning: planning time

`python benchmarks/bench_partition.py --write` on this project's 2-core development machine
({machine}); medians of {repeat} runs (MILP rows above 10k nodes and capacity rows: one run). Other work
was running on the machine at the same time (1-minute load average {load}, on 2 cores), so single figures
can be off by tens of percent; the growth with size is the point.

{real_summary}
{summary}

*problem*: Problem.build (asks every target about every node, builds the arrays); *solve*: the strategy;
*plan*: build_plan (segments, transfers, figures, schedule); *total* is their sum. Goals (issue 10): with the
real presets and two targets, optimal for 10,000 nodes within 2 s and for 50,000 within 15 s. Before issue
10, optimal was one min cut (or LP) of a surrogate model and met 1 s / 10 s on the roofline targets; it now
minimises the printed objective itself (a lower bound from the cut part of the objective, candidate plans,
segment moves) and says "yes" only when its plan is within 1e-6 of the bound, else the gap to the bound.

Synthetic graphs (models/synthetic.py, seq 64, hidden 32) are planned on roofline targets defined in the
benchmark (H100 SXM and TPU v4 public peaks, an element-wise unit as the third target; NVLink-like links),
because their fp16 island runs on neither real target on this machine (see the benchmark's docstring).

## Optimal on the real presets (issue 10)

The synthetic graphs with their fp16 island widened to fp32 (the benchmark's `fp32_island`; node count and
structure unchanged), so the real targets run every node: gpu=h100-sxm and asic=tpu-v4-like as presets
(GPU roofline with onnxruntime's fusions, the ASIC's systolic model; support decided per node), then with
cpu=host-cpu as a third target. Goals for two targets: 10,000 nodes within 2 s, 50,000 within 15 s.
Time limit of the integer program: {limit:g} s; a row that is not proven optimal gives the gap it reached.
These graphs have small activations (seq 64, hidden 32): against microsecond nodes a PCIe transfer (10 us
per end) never pays, so with idle power counted every objective keeps the graph on one target (placement
column); the time is the bound, the candidates and the proof, not a hard placement.

{header}
{real}

### Before issue 10, for comparison

The same command on the partitioner before issue 10 (as of commit 34c5989: the surrogate model with one launch
per arriving tensor, no idle power, no makespan objective, EDP by a tangent sweep), same machine, 1-minute
load average 2.2 at the start and 4.8 at the end:

{header}
{before}

## Roofline targets: optimal, two targets (min-cut bound, candidates, segment moves)

{header}
{cut}

## Roofline targets: optimal, three targets or a capacity (MILP bound, time limit {limit:g} s)

The integer program (HiGHS via scipy.optimize.milp; its LP relaxation first, which was integral on these
graphs; "integer program alone" skips that step) gives a lower bound on the cut part of the objective for
each set of targets and candidate plans; the plan is the best candidate after segment moves, and the gap is
to that bound. A binding weight capacity ("ASIC holds 1/4 of the weights") adds a knapsack constraint whose
relaxation is fractional: HiGHS may run until the time limit (the 50,000-node row), so that row's time and
gap depend on how much CPU it got (this machine was shared with other jobs). The presets' only capacity
(wse2-like, 40 GB) never binds on the zoo.

{header}
{milp}

## Baselines on the same graphs (two targets)

{header}
{others}

## What pausing the garbage collector saves

Problem.build, build_plan and heft run with the cyclic collector paused (dispatch.problem.no_gc): a loaded
graph keeps hundreds of thousands of Python objects alive, and the many small tuples and lists a plan
creates trigger collections that walk them. Timed: problem + optimal + build_plan on the two roofline
targets, with the collector paused (as shipped) and left on, interleaved; once as the first plan in a fresh
process (synthetic graph generated and loaded first), once planned repeatedly in one process.

| run | live objects | median s | runs s |
|---|---|---|---|
{gc}

## The largest zoo model, real targets

{header}
{zoo}

## Setup costs (not planning)

| graph | nodes | generate s | load s | analyze s |
|---|---|---|---|---|
{prep}
"""

# benchmarks/results/partition.md before issue 10 (optimal = min cut / LP of the surrogate), roofline targets:
# nodes -> (two targets, three targets) total seconds.
BEFORE_ROOFLINE = {1000: (0.018, 0.025), 10000: (0.149, 0.390), 50000: (0.997, 2.826)}

BEFORE_ISSUE_10 = """\
| synthetic 10000 fp32, gpu=h100-sxm, asic=tpu-v4-like, latency | 9764 | 0.329 | 0.009 | 0.007 | **0.346** | 35.4 | 1 | 2 | gpu 9764, asic 0 | yes (min cut) |
| synthetic 10000 fp32, gpu=h100-sxm, asic=tpu-v4-like, energy | 9764 | 0.332 | 0.014 | 0.009 | **0.354** | 36.3 | 85 | 160 | gpu 9413, asic 351 | yes (min cut) |
| synthetic 10000 fp32, gpu=h100-sxm, asic=tpu-v4-like, edp | 9764 | 0.442 | 0.050 | 0.016 | **0.508** | 52.0 | 1 | 2 | gpu 9764, asic 0 | no (tangent sweep) |
| synthetic 10000 fp32, gpu=h100-sxm, asic=tpu-v4-like, cpu=host-cpu, latency | 9764 | 0.657 | 0.748 | 0.008 | **1.412** | 144.7 | 1 | 0 | gpu 0, asic 0, cpu 9764 | yes (LP integral) |
| synthetic 10000 fp32, gpu=h100-sxm, asic=tpu-v4-like, cpu=host-cpu, energy | 9764 | 0.509 | 0.483 | 0.033 | **1.025** | 105.0 | 1731 | 2152 | gpu 0, asic 1060, cpu 8704 | yes (LP integral) |
| synthetic 10000 fp32, gpu=h100-sxm, asic=tpu-v4-like, cpu=host-cpu, edp | 9764 | 0.739 | 2.203 | 0.008 | **2.950** | 302.2 | 1 | 0 | gpu 0, asic 0, cpu 9764 | no (tangent sweep) |
| synthetic 50000 fp32, gpu=h100-sxm, asic=tpu-v4-like, latency | 48788 | 2.062 | 0.064 | 0.083 | **2.209** | 45.3 | 1 | 2 | gpu 48788, asic 0 | yes (min cut) |
| synthetic 50000 fp32, gpu=h100-sxm, asic=tpu-v4-like, energy | 48788 | 1.680 | 0.078 | 0.089 | **1.848** | 37.9 | 319 | 601 | gpu 47360, asic 1428 | yes (min cut) |
| synthetic 50000 fp32, gpu=h100-sxm, asic=tpu-v4-like, edp | 48788 | 2.225 | 0.301 | 0.120 | **2.645** | 54.2 | 1 | 2 | gpu 48788, asic 0 | no (tangent sweep) |
| synthetic 50000 fp32, gpu=h100-sxm, asic=tpu-v4-like, cpu=host-cpu, latency | 48788 | 4.170 | 6.445 | 0.099 | **10.714** | 219.6 | 1 | 0 | gpu 0, asic 0, cpu 48788 | yes (LP integral) |
| synthetic 50000 fp32, gpu=h100-sxm, asic=tpu-v4-like, cpu=host-cpu, energy | 48788 | 3.983 | 6.010 | 0.255 | **10.248** | 210.0 | 8499 | 10618 | gpu 0, asic 5262, cpu 43526 | yes (LP integral) |
| synthetic 50000 fp32, gpu=h100-sxm, asic=tpu-v4-like, cpu=host-cpu, edp | 48788 | 3.136 | 16.637 | 0.127 | **19.900** | 407.9 | 1 | 0 | gpu 0, asic 0, cpu 48788 | no (tangent sweep) |
"""  # noqa: E501 (table rows as measured)

if __name__ == "__main__":
    raise SystemExit(main())

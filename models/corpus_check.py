"""Every corpus architecture through every stage: export, load, MACs, plan (optimal and ASIC-first), run,
and the outputs against the source framework's (torch) on the same inputs. Used by tests/test_corpus.py and
benchmarks/bench_corpus.py; each stage records pass/fail, its wall time and one line of detail, and a stage
that raises stops only the stages that need its result.

ASIC-first is the strategy "asic-first" when the partitioner registers one, else "only:asic" (each node on
the ASIC when the ASIC supports it, on the next target otherwise), as the backend tests use it; the stage
also checks that every MatMul, Gemm and Conv the ASIC supports is planned on the ASIC.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.corpus import get_corpus_entry
from models.corpus_export import (
    build_corpus,
    corpus_inputs,
    torch_flop_counts,
    torch_module,
    torch_outputs,
)

__all__ = ["Stage", "CorpusResult", "STAGES", "RTOL", "ATOL_SCALE", "MAC_TOLERANCE", "MATRIX_OPS", "check",
           "compare", "degenerate", "asic_first"]

# Output agreement with torch (float32 with different summation orders): |got - want| <= atol + RTOL·|want|,
# atol = ATOL_SCALE · max |want| (the output's scale). Integer outputs must be equal.
RTOL = 1e-3
ATOL_SCALE = 1e-4
MAC_TOLERANCE = 0.01  # the goal: within 1% of the independent counter
STAGES = ("export", "load", "macs", "plan optimal", "plan asic-first", "run optimal", "run asic-first",
          "torch optimal", "torch asic-first")
DEFAULT_TARGETS = {"gpu": "h100-sxm", "asic": "tpu-v4-like"}


@dataclass(frozen=True)
class Stage:
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class CorpusResult:
    name: str
    stages: dict[str, Stage] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # figures for the report (errors, MACs, placement)

    @property
    def ok(self) -> bool:
        return all(name in self.stages and self.stages[name].ok for name in STAGES)

    def failures(self) -> dict[str, str]:
        return {n: (self.stages[n].detail if n in self.stages else "not reached") for n in STAGES
                if n not in self.stages or not self.stages[n].ok}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def compare(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> tuple[bool, float, str]:
    """(every output within tolerance, worst error relative to its output's scale, detail)."""
    worst, problems = 0.0, []
    for name, w in want.items():
        if name not in got:
            problems.append(f"{name} missing")
            continue
        g = np.asarray(got[name])
        if g.shape != w.shape:
            problems.append(f"{name} shape {g.shape} vs torch {w.shape}")
            continue
        if not np.issubdtype(w.dtype, np.floating):
            if not np.array_equal(g, w):
                problems.append(f"{name} differs in {int((g != w).sum())} of {w.size} elements")
            continue
        scale = float(np.abs(w).max(initial=0.0)) or 1.0
        diff = np.abs(g.astype(np.float64) - w)
        worst = max(worst, float(diff.max(initial=0.0)) / scale)
        bad = diff > ATOL_SCALE * scale + RTOL * np.abs(w)
        if bad.any() or not np.isfinite(g).all():
            problems.append(f"{name} max abs err {float(diff.max()):.3g} (scale {scale:.3g}), "
                            f"{int(bad.sum())} of {w.size} elements outside tolerance")
    return not problems, worst, "; ".join(problems) or f"max err {worst:.2e} of scale"


def degenerate(outputs: Mapping[str, np.ndarray]) -> str:
    """Why these reference outputs cannot tell a right answer from a wrong one ('' when they can): a float
    output that is not finite, all zero, or the same in every row (e.g. logits equal for every class)."""
    for name, y in outputs.items():
        if not np.issubdtype(y.dtype, np.floating) or y.size == 0:
            continue
        if not np.isfinite(y).all():
            return f"torch output {name} is not finite"
        rows = y.reshape(-1, y.shape[-1]) if y.ndim and y.shape[-1] > 1 else y.reshape(1, -1)
        top = float(np.abs(y).max())
        if y.size > 1 and float(np.ptp(rows, axis=-1).max()) <= 1e-6 * top:
            return f"torch output {name} is constant along its last axis (max |y| {top:.3g})"
    return ""


MATRIX_OPS = ("MatMul", "Gemm", "Conv")


def asic_first(targets: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(strategy name, targets) for the ASIC-first plan."""
    from dispatch.partition import STRATEGIES

    return ("asic-first" if "asic-first" in STRATEGIES else "only:asic"), dict(targets)


def _timed(result: CorpusResult, stage: str, fn: Callable[[], Any]) -> Any:
    """Run fn; record the stage (detail: what fn returns as its second item, or the exception)."""
    start = time.perf_counter()
    try:
        value, detail, ok = fn()
    except Exception as exc:  # noqa: BLE001 - every failure is a finding to record, not to raise
        result.stages[stage] = Stage(False, time.perf_counter() - start, _one_line(exc))
        return None
    result.stages[stage] = Stage(ok, time.perf_counter() - start, detail)
    return value


def check(name: str, targets: Mapping[str, Any] | None = None, out_dir: str | None = None) -> CorpusResult:
    """Run corpus model `name` through every stage; targets are Target objects (built here when None)."""
    from dispatch.analysis import analyze
    from dispatch.frontend import load
    from dispatch.partition import plan
    from dispatch.runtime import Runtime
    from targets.base import make_target

    get_corpus_entry(name)
    own = targets is None
    # exact ASIC numerics: the stages compare with torch's float32 outputs (bf16 emulation: docs/numerics.md)
    tg = {k: make_target(k, v, **({"numerics": "exact"} if k == "asic" else {}))
          for k, v in DEFAULT_TARGETS.items()} if targets is None else dict(targets)
    result = CorpusResult(name)
    try:
        start = time.perf_counter()
        module = torch_module(name)
        feeds = corpus_inputs(name)
        want = torch_outputs(name, module)
        result.values["torch_s"] = time.perf_counter() - start  # build, BatchNorm calibration, forward

        def export() -> tuple[Any, str, bool]:
            import onnxruntime as ort

            path = build_corpus(name, out_dir=out_dir, module=module)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
            ok, err, detail = compare(got, want)
            result.values["ort_err"] = err
            why = degenerate(want)
            return path, why or f"onnxruntime vs torch: {detail}", ok and not why

        path = _timed(result, "export", export)
        if path is None:
            return result
        # symbolic dimensions (dynamic_axes) are bound to the feeds' shapes
        shapes = {n: feeds[n].shape for n, _ in get_corpus_entry(name).dynamic_axes if n in feeds}
        graph = _timed(result, "load", lambda: (load(path, shapes), "", True))
        if graph is None:
            return result

        def macs() -> tuple[Any, str, bool]:
            ours = sum(c.macs for c in analyze(graph))
            counts = torch_flop_counts(name, module)
            theirs = sum(counts.values()) // 2
            result.values.update(macs=ours, torch_macs=theirs, torch_ops=sorted(counts))
            rel = (ours - theirs) / theirs if theirs else (0.0 if ours == 0 else float("inf"))
            result.values["macs_rel"] = rel
            detail = f"dispatch {ours:,} vs FlopCounterMode {theirs:,} ({rel:+.3%})"
            return ours, detail, abs(rel) <= MAC_TOLERANCE

        _timed(result, "macs", macs)
        strategies = {"optimal": ("optimal", tg), "asic-first": asic_first(tg)}
        for label, (strategy, order) in strategies.items():
            def do_plan(strategy: str = strategy, order: Mapping[str, Any] = order,
                        label: str = label) -> tuple[Any, str, bool]:
                p = plan(graph, order, strategy=strategy)
                on_asic = sum(t == "asic" for t in p.assignment.values())
                detail = f"{strategy}: {len(p.segments)} segments, {on_asic}/{len(graph)} on asic"
                if label != "asic-first":
                    return p, detail, True
                every = [n for n in graph.nodes if n.op_type in MATRIX_OPS]
                matrix = [n for n in every if tg["asic"].supports(n)]
                astray = [n.name for n in matrix if p.assignment[n.name] != "asic"]
                detail += (f"; MatMul/Gemm/Conv: {len(every)}, {len(matrix)} the ASIC supports, "
                           f"{len(matrix) - len(astray)} on it")
                return p, detail + (f" (not: {', '.join(astray[:3])})" if astray else ""), not astray

            p = _timed(result, f"plan {label}", do_plan)
            if p is None:
                continue

            def do_run(p: Any = p) -> tuple[Any, str, bool]:
                runtime = Runtime(graph, p, tg)
                try:
                    return runtime.run(feeds), "", True
                finally:
                    runtime.close()

            got = _timed(result, f"run {label}", do_run)
            if got is None:
                continue

            def do_compare(got: Any = got, label: str = label) -> tuple[Any, str, bool]:
                ok, err, detail = compare(got, want)
                result.values[f"err {label}"] = err
                return err, detail, ok

            _timed(result, f"torch {label}", do_compare)
        return result
    finally:
        if own:
            for t in tg.values():
                t.close()

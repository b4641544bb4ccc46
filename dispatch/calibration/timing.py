"""Timing a calibration case on an onnxruntime execution provider.

Each case runs twice over: with onnxruntime's profiler (SessionOptions.enable_profiling), whose per-node
"kernel_time" events ("dur", µs) say which kernels ran and what share of a run the case's own kernels take;
and without it, for the wall-clock time of InferenceSession.run, since the profiler adds a few µs to every
kernel_time it records. `Timing.op_seconds` combines the two.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dispatch.calibration.cases import Case
from dispatch.errors import DispatchError
from targets.gpu import _provider_list, session_options

__all__ = ["QUANTILE", "Timing", "measure_case", "wall_time"]

_SKIP_OPS = ("ReorderInput", "ReorderOutput")  # NCHWc layout plumbing, amortised over a chain of convs

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


def profiled_runs(
    model: bytes | str, feeds: dict[str, np.ndarray], provider: str, threads: int | None, warmup: int,
    repeats: int,
) -> tuple[list[tuple[float, float]], list[tuple[float, float, str]]]:
    """Run `warmup + repeats` profiled sessions; return the timed runs' (start, end) spans and every
    kernel_time event as (start, duration, op_name), both in µs on the profiler's clock."""
    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads, profile_prefix=str(Path(tmp) / "profile"))
        sess = ort.InferenceSession(model, so, providers=_provider_list(provider))
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
    return runs, kernels


def measure_case(
    case: Case, provider: str, repeats: int, threads: int | None = None, warmup: int = 3
) -> Timing:
    """Profile `repeats` runs (onnxruntime's kernel_time events) and time as many unprofiled ones."""
    runs, kernels = profiled_runs(case.model.SerializeToString(), case.feeds(), provider, threads,
                                  warmup, repeats)

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

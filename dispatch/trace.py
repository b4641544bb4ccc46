"""The timeline as Chrome trace-event JSON (opens in Perfetto, ui.perfetto.dev, and chrome://tracing).

Two processes:

* pid 1, **predicted**: the plan's schedule (`Plan.schedule`), for the planned hardware. Each segment sits on
  its target's track and each transfer on its link's track (`link:src->dst`), at the start and end times of
  the list schedule, so overlapping targets show as overlapping slices.
* pid 2, **measured** (when a Measurement is given): the median wall time of every step on this machine,
  laid end to end in the order the runtime executes them (the transfers into a segment, then the segment;
  transfers of graph outputs last), on the same tracks, plus one slice for the whole run (the median total,
  which includes the dispatcher's own overhead). Medians of separate steps laid end to end are a summary,
  not one recorded run.

Format (the Trace Event Format document, Google, "JSON Object Format"): `{"traceEvents": [...]}`; complete
events `ph: "X"` with `ts` and `dur` in microseconds; metadata events `ph: "M"` named `process_name`,
`thread_name`, `process_sort_index` and `thread_sort_index`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dispatch.fileio import write_text

__all__ = ["PREDICTED_PID", "MEASURED_PID", "trace_events", "write_trace"]

PREDICTED_PID = 1
MEASURED_PID = 2
_RUN_TID = 0  # the whole measured run


def _us(seconds: float) -> float:
    return seconds * 1e6


def _tracks(plan: Any) -> dict[str, int]:
    """Track id per resource: targets in order of first use, then links in order of first use (from 1)."""
    names = list(dict.fromkeys(s.target for s in plan.segments))
    names += list(dict.fromkeys(f"link:{t.src}->{t.dst}" for t in plan.transfers))
    return {name: i + 1 for i, name in enumerate(names)}


def _meta(pid: int, tid: int, name: str, value: Any) -> dict[str, Any]:
    """A metadata event: process_name / thread_name take {"name"}, the *_sort_index ones {"sort_index"}."""
    key = "sort_index" if name.endswith("sort_index") else "name"
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": {key: value}}


def _process(pid: int, label: str, tracks: dict[str, int], suffix: dict[str, str]) -> list[dict[str, Any]]:
    ev = [_meta(pid, 0, "process_name", label), _meta(pid, 0, "process_sort_index", pid)]
    for name, tid in tracks.items():
        ev.append(_meta(pid, tid, "thread_name", name + suffix.get(name, "")))
        ev.append(_meta(pid, tid, "thread_sort_index", tid))
    return ev


def _segment_event(pid: int, tid: int, seg: Any, start_s: float, dur_s: float,
                   **args: Any) -> dict[str, Any]:
    return {"name": f"segment {seg.id} ({seg.target}, {len(seg.nodes)} ops)", "cat": "segment", "ph": "X",
            "ts": _us(start_s), "dur": _us(dur_s), "pid": pid, "tid": tid,
            "args": {"segment": seg.id, "target": seg.target, "num_nodes": len(seg.nodes),
                     "first_node": seg.nodes[0] if seg.nodes else None,
                     "last_node": seg.nodes[-1] if seg.nodes else None, **args}}


def _transfer_event(pid: int, tid: int, index: int, tr: Any, start_s: float, dur_s: float,
                    **args: Any) -> dict[str, Any]:
    return {"name": f"{tr.tensor} ({tr.nbytes} B)", "cat": "transfer", "ph": "X", "ts": _us(start_s),
            "dur": _us(dur_s), "pid": pid, "tid": tid,
            "args": {"transfer": index, "tensor": tr.tensor, "src": tr.src, "dst": tr.dst, "bytes": tr.nbytes,
                     **args}}


def _predicted(plan: Any, tracks: dict[str, int]) -> list[dict[str, Any]]:
    ev = []
    segs = {s.id: s for s in plan.segments}
    for slot in plan.schedule:
        tid = tracks[slot.resource]
        dur = slot.end_s - slot.start_s
        if slot.kind == "segment":
            s = segs[slot.ref]
            ev.append(_segment_event(PREDICTED_PID, tid, s, slot.start_s, dur,
                                     predicted_latency_s=s.cost.latency_s,
                                     predicted_energy_j=s.cost.energy_j))
        else:
            t = plan.transfers[slot.ref]
            ev.append(_transfer_event(PREDICTED_PID, tid, slot.ref, t, slot.start_s, dur,
                                      predicted_latency_s=t.cost.latency_s,
                                      predicted_energy_j=t.cost.energy_j))
    return ev


def _measured(plan: Any, measurement: Any, tracks: dict[str, int]) -> list[dict[str, Any]]:
    """Medians end to end in runtime order: transfers into each segment before it, output transfers last."""
    seg_s = {s.id: s for s in measurement.segments}
    xfer_s = {t.index: t for t in measurement.transfers}
    ids = {s.id for s in plan.segments}
    before: dict[int, list[int]] = {}
    final: list[int] = []
    for k, t in enumerate(plan.transfers):
        (before.setdefault(t.dst_segment, []) if t.dst_segment in ids else final).append(k)
    ev: list[dict[str, Any]] = []
    clock = 0.0

    def transfer(k: int) -> None:
        nonlocal clock
        tr, m = plan.transfers[k], xfer_s.get(k)
        if m is None:
            return
        ev.append(_transfer_event(MEASURED_PID, tracks[f"link:{tr.src}->{tr.dst}"], k, tr, clock, m.seconds,
                                  measured_s=m.seconds, predicted_latency_s=m.predicted_s,
                                  executed_by="host memory copy"))
        clock += m.seconds

    for seg in plan.segments:
        for k in before.get(seg.id, ()):
            transfer(k)
        m = seg_s.get(seg.id)
        if m is None:
            continue
        ev.append(_segment_event(MEASURED_PID, tracks[seg.target], seg, clock, m.seconds,
                                 measured_s=m.seconds, predicted_latency_s=m.predicted_s,
                                 executed_by=m.provider))
        clock += m.seconds
    for k in final:
        transfer(k)
    ev.append({"name": "whole run (median)", "cat": "run", "ph": "X", "ts": 0.0,
               "dur": _us(measurement.total_s), "pid": MEASURED_PID, "tid": _RUN_TID,
               "args": {"measured_s": measurement.total_s, "predicted_s": measurement.predicted_s,
                        "repeat": measurement.repeat, "warmup": measurement.warmup,
                        "dispatch_overhead_s": measurement.overhead_s}})
    return ev


def trace_events(plan: Any, measurement: Any | None = None, *, model: str = "model",
                 targets: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trace as a JSON-ready dict: predicted schedule (pid 1) and, if given, the measured run (pid 2).

    targets (optional, name -> Target) adds each target's preset to the predicted track names.
    """
    tracks = _tracks(plan)
    preset = {n: f" [{t.spec.name}]" for n, t in (targets or {}).items()}
    label = f"predicted: {model}, {plan.strategy} plan (planned hardware)"
    ev = _process(PREDICTED_PID, label, tracks, preset)
    ev += _predicted(plan, tracks)
    other: dict[str, Any] = {"model": model, "strategy": plan.strategy, "objective": plan.objective,
                             "predicted_latency_s": plan.predicted.latency_s,
                             "predicted_makespan_s": plan.makespan_s}
    if measurement is not None:
        provider = dict(measurement.providers)
        suffix = {n: f" [{provider[n]}]" for n in tracks if n in provider}
        suffix.update({n: " [host memory copy]" for n in tracks if n.startswith("link:")})
        ev += _process(MEASURED_PID, f"measured: {model} on {measurement.machine} (medians)",
                       {"whole run": _RUN_TID, **tracks}, suffix)
        ev += _measured(plan, measurement, tracks)
        other.update(machine=measurement.machine, provider=measurement.provider,
                     measured_total_s=measurement.total_s)
    return {"traceEvents": ev, "displayTimeUnit": "ns", "otherData": other}


def write_trace(path: str | Path, plan: Any, measurement: Any | None = None, *, model: str = "model",
                targets: dict[str, Any] | None = None) -> Path:
    """Write the trace to `path` (JSON); returns the path."""
    from dispatch.report import to_json

    p = Path(path)
    write_text(p, to_json(trace_events(plan, measurement, model=model, targets=targets)), "the trace")
    return p

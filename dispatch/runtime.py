"""Execute a Plan: compile each segment once, then run segments in plan order, moving tensors as planned.

A run keeps one environment (tensor name -> numpy array) local to the call. A transfer is a host copy
(`numpy.array(x, copy=True)`): on this machine every target's memory is host memory, so the copy is what a
transfer really costs here, and it is timed as such. A tensor moved to target X is stored under the key
(name, X), and every segment on X after the move reads that copy. The only state shared between calls is the
tuple of compiled steps, built once and never mutated, so `run` is safe from many threads at once as long as
each target's executables are (the Target contract asks for that).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dispatch.errors import DispatchError
from dispatch.ir import Graph
from dispatch.plan import Plan, Segment
from targets.base import Executable, Target

__all__ = ["Runtime", "RunTiming", "SegmentTime", "TransferTime", "Measurement", "measure",
           "host_description"]


@dataclass(frozen=True)
class _Move:
    """Transfer `index` of the plan, done as a host copy from env[src_key] to env[dst_key]."""

    index: int
    src_key: Hashable
    dst_key: Hashable


@dataclass(frozen=True)
class _Step:
    """One segment, compiled: its executable, its reads (name it expects, env key) and the moves before it."""

    segment: Segment
    run: Executable
    reads: tuple[tuple[str, Hashable], ...]
    moves: tuple[_Move, ...]


@dataclass(frozen=True)
class RunTiming:
    """Wall times of one run: the whole call, each segment (plan order) and each transfer (plan index)."""

    total_s: float
    segments: tuple[float, ...]
    transfers: tuple[float, ...]


def _copy(x: Any) -> Any:
    """A transfer's host copy: an array copied, a sequence (list) element by element, None (no optional)."""
    if isinstance(x, list):
        return [_copy(e) for e in x]
    return None if x is None else np.array(x, copy=True)


class Runtime:
    """A Plan made executable for one Graph (static shapes) and a mapping of target name -> Target."""

    def __init__(self, graph: Graph, plan: Plan, targets: Mapping[str, Target]) -> None:
        self.graph = graph
        self.plan = plan
        self.targets = dict(targets)
        self._check_plan()
        steps, consts, final_moves, outputs = self._lay_out()
        compiled = []
        for seg, (reads, moves) in zip(plan.segments, steps, strict=True):
            nodes = [graph.node(n) for n in seg.nodes]
            exe = self.targets[seg.target].compile(graph, nodes, seg.inputs, seg.outputs)
            compiled.append(_Step(seg, exe, reads, moves))
        self._steps: tuple[_Step, ...] = tuple(compiled)
        # what runs each segment here: the executable's own word when it has one (e.g. "CPUExecutionProvider
        # (fp16 upcast to fp32)"), else its target's provider
        self.segment_providers = tuple(getattr(st.run, "provider", "") or
                                       self.targets[st.segment.target].provider for st in compiled)
        self._consts = consts
        self._final_moves = final_moves
        self._outputs = outputs
        self._closed = False

    # -- construction -------------------------------------------------------------------------------------
    def _check_plan(self) -> None:
        """Every segment's target exists and every node sits in exactly one segment."""
        for seg in self.plan.segments:
            if seg.target not in self.targets:
                raise DispatchError(f"Segment {seg.id} is planned on target '{seg.target}', which is not "
                                    f"among the targets {sorted(self.targets)}; plan with the same targets.")
        placed = [n for seg in self.plan.segments for n in seg.nodes]
        names = {n.name for n in self.graph.nodes}
        if len(placed) != len(set(placed)) or set(placed) != names:
            missing = sorted(names - set(placed))[:3]
            raise DispatchError(f"The plan does not place every node of '{self.graph.name}' exactly once "
                                f"(e.g. missing {missing}); re-plan this graph.")

    def _lay_out(self) -> tuple[list[tuple[tuple[tuple[str, Hashable], ...], tuple[_Move, ...]]],
                                dict[str, np.ndarray], tuple[_Move, ...], tuple[tuple[str, Hashable], ...]]:
        """Resolve, for every segment, where each input is read from and which transfers run before it."""
        g, plan = self.graph, self.plan
        seg_ids = {seg.id: i for i, seg in enumerate(plan.segments)}
        moves_before: dict[int, list[_Move]] = {}
        final: list[_Move] = []
        moved_at: dict[tuple[str, str], int] = {}  # (tensor, dst target) -> position of the first reader
        for k, t in enumerate(plan.transfers):
            pos = seg_ids.get(t.dst_segment)
            move = _Move(k, t.tensor, (t.tensor, t.dst))
            if pos is None:
                final.append(move)
            else:
                moves_before.setdefault(pos, []).append(move)
                moved_at[(t.tensor, t.dst)] = pos
        available = {v.name for v in g.inputs}
        consts: dict[str, np.ndarray] = {}
        steps = []
        for pos, seg in enumerate(plan.segments):
            for m in moves_before.get(pos, ()):
                self._need(m.src_key, available, consts, f"transfer of '{m.src_key}' before segment {seg.id}")
                available.add(m.dst_key)  # type: ignore[arg-type]
            reads = []
            for name in seg.inputs:
                at = moved_at.get((name, seg.target))
                key: Hashable = (name, seg.target) if at is not None and at <= pos else name
                if key == name:
                    self._need(name, available, consts, f"segment {seg.id}")
                reads.append((name, key))
            steps.append((tuple(reads), tuple(moves_before.get(pos, ()))))
            available.update(seg.outputs)
        delivered: dict[Hashable, Hashable] = {}  # graph output -> its copy moved to the host at the end
        for m in final:
            self._need(m.src_key, available, consts, f"transfer of '{m.src_key}'")
            delivered.setdefault(m.src_key, m.dst_key)
        outputs = []
        for v in g.outputs:
            self._need(v.name, available, consts, "the graph's outputs")
            outputs.append((v.name, delivered.get(v.name, v.name)))
        return steps, consts, tuple(final), tuple(outputs)

    def _need(self, name: Any, available: set, consts: dict[str, np.ndarray], who: str) -> None:
        if name in available:
            return
        v = self.graph.values.get(name)
        if v is not None and v.const is not None:
            consts[name] = v.const
            available.add(name)
            return
        raise DispatchError(f"In the plan, {who} needs tensor '{name}', which no earlier segment produces; "
                            "re-plan this graph (the plan does not match it).")

    # -- running --------------------------------------------------------------------------------------------
    @property
    def providers(self) -> dict[str, str]:
        """Target name -> what executes it here (e.g. CPUExecutionProvider, numpy (simulated))."""
        return {name: t.provider for name, t in self.targets.items()}

    def _live_steps(self) -> tuple[_Step, ...]:
        if self._closed:
            raise DispatchError("This runtime was closed; build a new one (or a new Dispatcher) to run "
                                "again.")
        return self._steps

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for feeds by name (feeds are not checked here; see dispatch.validate)."""
        steps = self._live_steps()
        env: dict[Hashable, Any] = dict(self._consts)
        env.update(feeds)
        for step in steps:
            for m in step.moves:
                env[m.dst_key] = _copy(env[m.src_key])
            env.update(step.run({name: env[key] for name, key in step.reads}))
        for m in self._final_moves:
            env[m.dst_key] = _copy(env[m.src_key])
        return {name: env[key] for name, key in self._outputs}

    # -- the run in steps, for dispatch.pipeline: begin, run_step(0..n-1) in order, finish ----------------
    @property
    def step_targets(self) -> tuple[str, ...]:
        """The target of each step (segment), in the order `run_step` must be called."""
        return tuple(st.segment.target for st in self._live_steps())

    def begin(self, feeds: Mapping[str, np.ndarray]) -> dict[Hashable, Any]:
        """A fresh environment for one run: the plan's constants and the feeds."""
        self._live_steps()
        env: dict[Hashable, Any] = dict(self._consts)
        env.update(feeds)
        return env

    def run_step(self, i: int, env: dict[Hashable, Any]) -> None:
        """Step i of a run begun with `begin`: the transfers before segment i, then the segment, into env."""
        step = self._live_steps()[i]
        for m in step.moves:
            env[m.dst_key] = _copy(env[m.src_key])
        env.update(step.run({name: env[key] for name, key in step.reads}))

    def finish(self, env: dict[Hashable, Any]) -> dict[str, np.ndarray]:
        """The final transfers and the outputs by name, once every step has run on env."""
        for m in self._final_moves:
            env[m.dst_key] = _copy(env[m.src_key])
        return {name: env[key] for name, key in self._outputs}

    def run_timed(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], RunTiming]:
        """`run`, with the wall time of the call, of every segment and of every transfer (host copies)."""
        clock = time.perf_counter
        t_start = clock()
        steps = self._live_steps()
        seg_s = [0.0] * len(steps)
        xfer_s = [0.0] * len(self.plan.transfers)
        env: dict[Hashable, Any] = dict(self._consts)
        env.update(feeds)
        for i, step in enumerate(steps):
            for m in step.moves:
                t0 = clock()
                env[m.dst_key] = _copy(env[m.src_key])
                xfer_s[m.index] = clock() - t0
            args = {name: env[key] for name, key in step.reads}
            t0 = clock()
            env.update(step.run(args))
            seg_s[i] = clock() - t0
        for m in self._final_moves:
            t0 = clock()
            env[m.dst_key] = _copy(env[m.src_key])
            xfer_s[m.index] = clock() - t0
        out = {name: env[key] for name, key in self._outputs}
        return out, RunTiming(clock() - t_start, tuple(seg_s), tuple(xfer_s))

    def close(self) -> None:
        """Drop the compiled executables (sessions are freed once no running call holds them)."""
        self._closed = True
        self._steps = ()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- measurement --------------------------------------------------------------------------------------------
def host_description() -> str:
    """This machine in words, e.g. 'AMD EPYC 7B13, 2 cores, Linux x86_64' (from /proc/cpuinfo if present)."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    cpu = cpu or platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


@dataclass(frozen=True)
class SegmentTime:
    """A segment's measured median wall time next to its predicted latency, with what executed it."""

    id: int
    target: str
    provider: str
    nodes: int
    predicted_s: float
    seconds: float


@dataclass(frozen=True)
class TransferTime:
    """A transfer's measured median wall time (a host copy here) next to its predicted link latency."""

    index: int
    tensor: str
    src: str
    dst: str
    nbytes: int
    predicted_s: float
    seconds: float


@dataclass(frozen=True)
class Measurement:
    """Medians over `repeat` timed runs after `warmup` untimed ones, on `machine`, by `providers`.

    Predicted figures are for the planned hardware (the spec, e.g. an H100); measured ones are for whatever
    executed them here (`provider`, e.g. onnxruntime's CPUExecutionProvider), so read them side by side,
    never as the same thing.
    """

    provider: str  # e.g. "gpu: CPUExecutionProvider; asic: numpy (simulated)"
    providers: tuple[tuple[str, str], ...]  # (target, provider)
    machine: str
    total_s: float
    predicted_s: float  # the plan's sequential prediction: segments + transfers
    segments: tuple[SegmentTime, ...]
    transfers: tuple[TransferTime, ...]
    repeat: int
    warmup: int

    @property
    def overhead_s(self) -> float:
        """Median total minus the medians of segments and transfers: the dispatcher's own time (roughly)."""
        return self.total_s - sum(s.seconds for s in self.segments) - sum(t.seconds for t in self.transfers)

    def versus_predicted(self) -> dict[int, tuple[float, float, str, str]]:
        """{segment id: (predicted_s, measured_s, target, provider)}."""
        return {s.id: (s.predicted_s, s.seconds, s.target, s.provider) for s in self.segments}

    def as_dict(self) -> dict[str, Any]:
        """The "measured" section of the JSON report (validation fields are added by the caller)."""
        return {"provider": self.provider, "providers": dict(self.providers), "machine": self.machine,
                "total_s": self.total_s, "predicted_s": self.predicted_s, "repeat": self.repeat,
                "warmup": self.warmup, "overhead_s": self.overhead_s,
                "segments": [{"id": s.id, "target": s.target, "provider": s.provider, "nodes": s.nodes,
                              "predicted_s": s.predicted_s, "seconds": s.seconds} for s in self.segments],
                "transfers": [{"index": t.index, "tensor": t.tensor, "src": t.src, "dst": t.dst,
                               "bytes": t.nbytes, "predicted_s": t.predicted_s, "seconds": t.seconds}
                              for t in self.transfers]}


def measure(runtime: Runtime, feeds: Mapping[str, np.ndarray], repeat: int = 10,
            warmup: int = 2) -> Measurement:
    """Run `warmup` times untimed, then `repeat` times timed; medians per segment, transfer and in total."""
    if repeat < 1 or warmup < 0:
        raise DispatchError(f"Measuring needs repeat >= 1 and warmup >= 0, got {repeat} and {warmup}; "
                            "fix them.")
    for _ in range(warmup):
        runtime.run(feeds)
    runs = [runtime.run_timed(feeds)[1] for _ in range(repeat)]
    plan = runtime.plan
    seg_providers = runtime.segment_providers
    used = list(dict.fromkeys(s.target for s in plan.segments))
    providers = {n: " / ".join(dict.fromkeys(p for s, p in zip(plan.segments, seg_providers, strict=True)
                                             if s.target == n)) for n in used}
    med = statistics.median
    segs = tuple(SegmentTime(s.id, s.target, seg_providers[i], len(s.nodes), s.cost.latency_s,
                             med(r.segments[i] for r in runs)) for i, s in enumerate(plan.segments))
    xfers = tuple(TransferTime(k, t.tensor, t.src, t.dst, t.nbytes, t.cost.latency_s,
                               med(r.transfers[k] for r in runs)) for k, t in enumerate(plan.transfers))
    return Measurement(provider="; ".join(f"{n}: {providers[n]}" for n in used),
                       providers=tuple((n, providers[n]) for n in used), machine=host_description(),
                       total_s=med(r.total_s for r in runs), predicted_s=plan.predicted.latency_s,
                       segments=segs, transfers=xfers, repeat=repeat, warmup=warmup)

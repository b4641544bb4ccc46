"""`Dispatcher`: what serving code builds once and calls from many threads.

    with Dispatcher("model.onnx", targets={"gpu": "h100-sxm", "asic": "tpu-v4-like"}) as d:
        outputs = d.run({"input": x})
        report = d.report()

Thread safety. Everything a run reads is immutable after it is built: the feed checker, the default entry
(graph, plan, compiled runtime) and every cached entry. The shared mutable objects are the LRU cache of
entries for other input shapes, the warmed entries and the plan-cache counters; one lock guards their lookups
and updates (a counter increment, for feeds of the default shapes), never a run. An entry for a new shape
signature is built outside that lock under a per-signature lock, so concurrent callers with the same new
shapes build it once and callers with other shapes are not held up.

Ahead of time. `warmup=[bindings, ...]` at construction, or `warmup([...])` later, plans and compiles the
listed shapes before traffic; those entries are pinned (never evicted). A run with a shape signature not yet
planned builds its entry on the request path (`on_new_shape="build"`, the default) or raises DispatchError
naming the shape and the planned ones (`on_new_shape="refuse"`). `build_times` gives each build's seconds.

Pipelined. `submit(feeds)` returns a Future and runs through a `dispatch.pipeline.Pipeline` (one worker
thread per target, started on first use): with several requests in flight, one request's segment on one
target runs while another's runs on another target. `threads` sets each target's thread budget.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from dispatch.budget import resolve_budget
from dispatch.errors import DispatchError
from dispatch.feeds import _feed_spec as _value_spec
from dispatch.frontend import load, load_model_proto
from dispatch.ir import Graph
from dispatch.pipeline import Pipeline
from dispatch.plan import Plan
from dispatch.runtime import Measurement, Runtime, measure
from dispatch.validate import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    FeedChecker,
    FeedSpec,
    ValidationResult,
    compare,
    feed_specs,
    generate_feeds,
    graph_depth,
    plan_emulation,
    quantized_spread,
    reference_outputs,
)
from targets.asic.numerics import check_numerics
from targets.base import DEFAULT_TARGETS, Target, load_spec, make_target

__all__ = ["Dispatcher", "Planner"]

Signature = tuple[tuple[int, ...], ...]  # the feeds' shapes, in input order
Bindings = Mapping[str, Sequence[int] | int]  # input -> shape, or symbol -> size (as load takes)
ON_NEW_SHAPE = ("build", "refuse")
Planner = Callable[..., Plan]  # (graph, targets, strategy=..., objective=..., **options) -> Plan


@dataclass(frozen=True)
class _Entry:
    """Everything needed to run feeds of one shape signature."""

    signature: Signature
    graph: Graph
    plan: Plan
    runtime: Runtime


def _spell(sig: Signature) -> str:
    """(1, 3, 32, 32), (4,) -> '1x3x32x32, 4'."""
    return "[" + ", ".join("x".join(map(str, s)) or "scalar" for s in sig) + "]"


def _default_planner(graph: Graph, targets: Mapping[str, Target], **kwargs: Any) -> Plan:
    from dispatch.partition import plan

    return plan(graph, targets, **kwargs)


class Dispatcher:
    """A model loaded, planned and compiled once, ready to run.

    model: a .onnx path, a zoo name or a ModelProto (kept while an input has a symbolic dimension, so that
        other sizes can be bound later; dropped otherwise, to free its weights).
    targets: NAME -> preset name, spec path or a ready Target (default DEFAULT_TARGETS); targets built
        here are closed by close(), given ones are left to their owner.
    strategy, objective, plan_options: passed to the partitioner.
    shapes: bindings for symbolic dimensions of the default plan (as dispatch.load takes them); feeds with
        other sizes in symbolic dimensions get their own plan, cached per shape signature (LRU,
        plan_cache_size entries, the default plan always kept besides).
    warmup: a list of further bindings (each as `shapes` takes them), planned and compiled here, before any
        run, and kept for the Dispatcher's life (see `warmup()`).
    on_new_shape: "build" (default): a run whose shapes have no plan yet waits while one is built;
        "refuse": it raises DispatchError naming its shapes and those planned (the default and warmed ones).
    threads: each target's thread budget: a total (int, split evenly over the targets, at least 1 each) or
        {target: n}. gpu/cpu targets built here get n onnxruntime intra-op threads per session; an asic
        target's NumPy kernels get n BLAS threads (threadpoolctl; the BLAS pool is process-wide, and those
        kernels are its only user here). None (default): onnxruntime's and the BLAS's own defaults.
    max_in_flight: runs `submit` admits at once (the pipeline's bound).
    rtol, atol: tolerances of validate().
    asic_numerics: "emulate" (default): asic targets built here round float MatMul/Gemm/Conv operands to
        their compute dtype (bf16 on tpu-v4-like) with fp32 accumulation, and validate() floors those
        outputs' rtol by the precision (docs/numerics.md); "exact": float32, as onnxruntime. Targets passed
        as objects keep their own setting (AsicTarget(..., numerics=...)).
    max_memory: the memory budget in bytes or as a size like '4G' (default: half of the available memory);
        a model, binding or feed whose tensors would exceed it is refused before allocating them
        (dispatch/budget.py).
    planner: replaces dispatch.partition.plan (same signature).
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto,
                 targets: Mapping[str, str | os.PathLike | Target] | None = None, *,
                 strategy: str = "optimal", objective: str = "latency",
                 shapes: Bindings | None = None, plan_cache_size: int = 8,
                 rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                 plan_options: Mapping[str, Any] | None = None, planner: Planner | None = None,
                 warmup: Sequence[Bindings] | None = None, on_new_shape: str = "build",
                 threads: int | Mapping[str, int] | None = None, max_in_flight: int = 8,
                 max_memory: int | str | None = None, asic_numerics: str = "emulate") -> None:
        if not isinstance(plan_cache_size, int) or plan_cache_size < 1:
            raise DispatchError(f"plan_cache_size must be a positive integer, not {plan_cache_size!r}.")
        if on_new_shape not in ON_NEW_SHAPE:
            raise DispatchError(f"on_new_shape must be one of {', '.join(ON_NEW_SHAPE)}, not "
                                f"{on_new_shape!r}.")
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise DispatchError(f"max_in_flight must be a positive integer, not {max_in_flight!r}.")
        self.on_new_shape = on_new_shape
        self._budget = resolve_budget(max_memory)
        self.max_in_flight = max_in_flight
        for label, tol in (("rtol", rtol), ("atol", atol)):
            if isinstance(tol, bool) or not isinstance(tol, int | float) or not np.isfinite(tol) or tol < 0:
                raise DispatchError(f"{label} must be a finite non-negative number, not {tol!r}; fix it.")
        for label, text in (("strategy", strategy), ("objective", objective)):
            if not isinstance(text, str):
                raise DispatchError(f"{label} must be a name (a str), not {text!r}; see the README.")
        if plan_options is not None and not isinstance(plan_options, Mapping):
            raise DispatchError(f"plan_options must map option names to values, not {plan_options!r}.")
        self.strategy, self.objective = strategy, objective
        self.rtol, self.atol = rtol, atol
        self.asic_numerics = check_numerics(asic_numerics)
        self.plan_cache_size = plan_cache_size
        self._plan_options = dict(plan_options or {})
        if planner is None:  # a bad strategy or option fails before the model is loaded
            from dispatch.partition import check_options

            check_options(strategy, self._plan_options)
        self._planner = planner or _default_planner
        self._proto: onnx.ModelProto | None
        self._proto, self._path = load_model_proto(model)
        self._name = Path(self._path).stem if self._path else (self._proto.graph.name or "model")
        self._checker = FeedChecker(feed_specs(self._proto))
        self._output_specs = tuple(_value_spec(o.name, o.type) for o in self._proto.graph.output)
        self._own: list[Target] = []
        self._blas_limits: Any = None
        self._targets = self._make_targets(DEFAULT_TARGETS if targets is None else targets)
        self._lock = threading.Lock()
        self._cache: OrderedDict[Signature, _Entry] = OrderedDict()
        self._pinned: dict[Signature, _Entry] = {}  # warmed entries: never evicted
        self._building: dict[Signature, threading.Lock] = {}
        self._build_times: dict[Signature, float] = {}
        self._stats = {"hits": 0, "builds": 0, "refused": 0}
        self._pipeline: Pipeline | None = None
        self._closed = False
        self._measurement: Measurement | None = None
        self._validation: ValidationResult | None = None
        self._strategies: dict[str, dict[str, Any]] = {}
        try:
            self._apply_threads(threads)
            graph = self._load(shapes)
            self._default = self._build(self._signature_of(graph), graph)
            self._default_sig = self._default.signature
            self._cache[self._default_sig] = self._default
            if warmup is not None:
                self.warmup(warmup)
        except BaseException:
            self.close()
            raise
        if not any(s.dims is None or any(isinstance(d, str) for d in s.dims) for s in self._checker.specs):
            self._proto = None  # every input shape is fixed: no other plan can be needed, so free the weights

    # -- construction ---------------------------------------------------------------------------------------
    def _make_targets(self, spec: Mapping[str, str | os.PathLike | Target]) -> dict[str, Target]:
        if not isinstance(spec, Mapping) or not spec:
            raise DispatchError("targets must be a non-empty dict of NAME -> preset, e.g. "
                                "{'gpu': 'h100-sxm', 'asic': 'tpu-v4-like'}.")
        out: dict[str, Target] = {}
        for name, t in spec.items():
            if not isinstance(name, str) or not name:
                raise DispatchError(f"Target names must be non-empty strings, not {name!r}; e.g. "
                                    "{'gpu': 'h100-sxm'}.")
            if not isinstance(t, str | os.PathLike | Target):
                raise DispatchError(f"Target {name!r} must be a preset name, a spec file path or a Target, "
                                    f"not {type(t).__name__} {t!r}.")
            if isinstance(t, Target):
                out[name] = t
            else:
                opts = {"numerics": self.asic_numerics} if load_spec(t).kind == "asic" else {}
                out[name] = make_target(name, t, **opts)
                self._own.append(out[name])
        return out

    def _apply_threads(self, threads: int | Mapping[str, int] | None) -> None:
        """Give each target its thread budget (see the class doc); before any segment is compiled."""
        if threads is None:
            return
        names = list(self._targets)
        if isinstance(threads, Mapping):
            unknown = sorted(set(threads) - set(names))
            if unknown:
                raise DispatchError(f"threads names {unknown}, which are not targets; the targets are "
                                    f"{names}.")
            budget = dict(threads)
        elif isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
            share, extra = divmod(threads, len(names))
            budget = {n: max(1, share + (i < extra)) for i, n in enumerate(names)}
        else:
            raise DispatchError(f"threads must be a positive integer (the total) or {{target: n}}, not "
                                f"{threads!r}; e.g. threads={{'gpu': 1, 'asic': 1}}.")
        own = {id(t) for t in self._own}
        blas = 0
        for name, n in budget.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise DispatchError(f"The thread budget of target {name!r} must be a positive integer, "
                                    f"not {n!r}.")
            t = self._targets[name]
            if id(t) not in own:
                raise DispatchError(f"Target {name!r} was passed built, so its threads are its own; set them "
                                    "where you build it, or leave it out of threads.")
            if t.spec.kind in ("gpu", "cpu"):
                t.threads = n  # type: ignore[attr-defined]  # read by compile(); nothing compiled yet
            elif t.spec.kind == "asic":
                blas += n
        if blas:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                raise DispatchError("Limiting the ASIC kernels' BLAS threads needs threadpoolctl; install "
                                    "it (pip install -e '.[serve]') or leave the asic target out of "
                                    "threads.") from None
            self._blas_limits = threadpool_limits(limits=blas, user_api="blas")

    def _load(self, shapes: Mapping[str, Sequence[int] | int] | None) -> Graph:
        assert self._proto is not None  # kept whenever an input has a symbolic dimension
        graph = load(self._proto, shapes, max_memory=self._budget)
        graph.name, graph.path = self._name, self._path
        return graph

    def _signature_of(self, graph: Graph) -> Signature:
        by_name = {v.name: v for v in graph.inputs}
        return tuple(tuple(by_name[n].shape or ()) for n in self._checker.names)

    def _build(self, signature: Signature, graph: Graph) -> _Entry:
        t0 = time.perf_counter()
        plan = self._planner(graph, self._targets, strategy=self.strategy, objective=self.objective,
                             **self._plan_options)
        entry = _Entry(signature, graph, plan, Runtime(graph, plan, self._targets))
        seconds = time.perf_counter() - t0
        with self._lock:
            self._build_times[signature] = seconds
            self._stats["builds"] += 1
        return entry

    def _entry(self, sig: Signature) -> _Entry:
        """The entry for a shape signature: the default one without a lock, else from (into) the LRU cache."""
        if self._closed:
            raise DispatchError("This Dispatcher was closed; build a new one to run the model again.")
        if sig == self._default_sig:
            with self._lock:
                self._stats["hits"] += 1
            return self._default
        with self._lock:
            entry = self._pinned.get(sig) or self._cache.get(sig)
            if entry is not None:
                if sig in self._cache:
                    self._cache.move_to_end(sig)
                self._stats["hits"] += 1
                return entry
            if self.on_new_shape == "refuse":
                self._stats["refused"] += 1
                planned = ", ".join(_spell(s) for s in dict.fromkeys([self._default_sig, *self._pinned]))
                raise DispatchError(f"No plan for input shapes {_spell(sig)} and this Dispatcher refuses new "
                                    f"shapes (on_new_shape='refuse'); send one of the planned shapes: "
                                    f"{planned}, or warm this one up first.")
            build_lock = self._building.setdefault(sig, threading.Lock())
        with build_lock:  # one build per signature; other signatures proceed
            with self._lock:
                entry = self._cache.get(sig)
                if entry is not None:
                    self._cache.move_to_end(sig)
                    return entry
            bind = {s.name: shape for s, shape in zip(self._checker.specs, sig, strict=True)
                    if s.dims is not None and any(not isinstance(d, int) for d in s.dims)}
            try:
                entry = self._build(sig, self._load(bind))
            except BaseException:
                with self._lock:  # a failed build caches nothing; leave no lock behind for its signature
                    self._building.pop(sig, None)
                raise
            with self._lock:
                self._cache[sig] = entry
                self._building.pop(sig, None)
                while len(self._cache) > self.plan_cache_size:
                    self._cache.popitem(last=False)  # evicted entries are freed once no run holds them
            return entry

    def _binding_signature(self, bindings: Bindings) -> tuple[Signature, Graph]:
        if self._proto is None:  # every input is fixed: the default plan is the only one
            # still reject bindings that do not fit
            load(self._default.graph.model, bindings, max_memory=self._budget)
            return self._default_sig, self._default.graph
        graph = self._load(bindings)
        return self._signature_of(graph), graph

    # -- the API --------------------------------------------------------------------------------------------
    def warmup(self, shapes: Sequence[Bindings]) -> dict[Signature, float]:
        """Plan and compile each binding of `shapes` now (each as the `shapes` argument takes them, e.g.
        [{"input": [8, 3, 32, 32]}, {"batch": 16}]); keep those entries for the Dispatcher's life.
        Returns {signature: build seconds} (0.0 for a signature already planned)."""
        if isinstance(shapes, Mapping) or not isinstance(shapes, Sequence):
            raise DispatchError("warmup takes a list of bindings, e.g. [{'input': [8, 3, 32, 32]}]; for one "
                                "binding write [binding].")
        if self._closed:
            raise DispatchError("This Dispatcher was closed; build a new one to run the model again.")
        out: dict[Signature, float] = {}
        for bindings in shapes:
            sig, graph = self._binding_signature(bindings)
            with self._lock:
                known = self._pinned.get(sig) or self._cache.get(sig)
            if known is None:
                known = self._build(sig, graph)
                out[sig] = self._build_times[sig]
            else:
                out.setdefault(sig, 0.0)
            with self._lock:
                self._pinned[sig] = known
                if sig != self._default_sig:
                    self._cache.pop(sig, None)  # pinned now: it no longer takes an LRU place
        return out

    @property
    def build_times(self) -> dict[Signature, float]:
        """Seconds each shape signature's plan and compile took (default, warmed, built on demand)."""
        with self._lock:
            return dict(self._build_times)

    @property
    def cache_stats(self) -> dict[str, int]:
        """Runs that found their plan (`hits`), plans built (`builds`, the default included), runs refused."""
        with self._lock:
            return dict(self._stats)

    @property
    def input_specs(self) -> tuple[FeedSpec, ...]:
        """The model's fed inputs as declared (symbolic dimensions as names)."""
        return self._checker.specs

    @property
    def output_specs(self) -> tuple[FeedSpec, ...]:
        """The model's outputs as declared (symbolic dimensions as names; dims None: unknown)."""
        return self._output_specs

    @property
    def name(self) -> str:
        """The model's name: the file stem, the zoo name or the graph's name."""
        return self._name

    @property
    def graph(self) -> Graph:
        """The graph of the default shapes (symbolic dimensions bound by `shapes`, else to 1)."""
        return self._default.graph

    @property
    def plan(self) -> Plan:
        """The plan for the default shapes."""
        return self._default.plan

    @property
    def targets(self) -> dict[str, Target]:
        return dict(self._targets)

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._checker.names

    @property
    def cached_signatures(self) -> list[Signature]:
        """Shape signatures with a cached plan, least recently used first."""
        with self._lock:
            return list(self._cache)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check the feeds (names, dtypes, shapes) and run the plan for their shapes; outputs by name."""
        return self._entry(self._checker.check(feeds)).runtime.run(feeds)

    def submit(self, feeds: Mapping[str, np.ndarray], timeout: float | None = None) -> Future:
        """Check the feeds and start a pipelined run (module doc); the Future gives the outputs by name.
        Waits up to `timeout` s while max_in_flight runs are in flight. Bad feeds raise here, not later."""
        entry = self._entry(self._checker.check(feeds))
        return self.pipeline.submit(entry.runtime, feeds, timeout)

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline `submit` uses (one worker thread per target), started on first use."""
        if self._pipeline is None:
            with self._lock:
                if self._closed:
                    raise DispatchError("This Dispatcher was closed; build a new one to run the model again.")
                if self._pipeline is None:
                    self._pipeline = Pipeline(self._targets, self.max_in_flight)
        return self._pipeline

    def plan_for(self, feeds: Mapping[str, np.ndarray]) -> Plan:
        """The plan that runs feeds of these shapes (planned and cached if new)."""
        return self._entry(self._checker.check(feeds)).plan

    def example_feeds(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Random feeds for the default shapes (see dispatch.validate.generate_feeds)."""
        return generate_feeds(self.graph, seed, max_memory=self._budget)

    def validate(self, feeds: Mapping[str, np.ndarray] | None = None) -> ValidationResult:
        """Run, and compare with onnxruntime (CPU) running the whole model on the same feeds."""
        feeds = self.example_feeds() if feeds is None else feeds
        entry = self._entry(self._checker.check(feeds))
        outputs = entry.runtime.run(feeds)
        reference = reference_outputs(entry.graph, feeds)
        result = compare(outputs, reference, self.rtol, self.atol, depth=graph_depth(entry.graph),
                         atol_floors=quantized_spread(entry.graph, feeds, reference),
                         emulation=plan_emulation(entry.graph, entry.plan.assignment, self._targets))
        self._validation = result
        return result

    def measure(self, feeds: Mapping[str, np.ndarray] | None = None, repeat: int = 10,
                warmup: int = 2) -> Measurement:
        """Median wall times per segment, per transfer and in total on this machine (see runtime.measure)."""
        feeds = self.example_feeds() if feeds is None else feeds
        entry = self._entry(self._checker.check(feeds))
        result = measure(entry.runtime, feeds, repeat=repeat, warmup=warmup)
        self._measurement = result
        return result

    def compare_strategies(self, strategies: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Every strategy (or those named) on the default graph: {strategy: {latency_s, makespan_s, ...}}."""
        from dispatch.partition import build_problem, compare_strategies

        problem = build_problem(self.graph, self._targets, self.objective)
        out = compare_strategies(problem, strategies, **self._plan_options)
        self._strategies.update(out)
        return out

    def report(self) -> dict[str, Any]:
        """The JSON report data (docs/architecture.md) for the default plan, with the last measurement and
        validation, and the strategies compared so far (dispatch.report.build_report)."""
        from dispatch.report import build_report

        return build_report(self.graph, self.plan, self._targets, measurement=self._measurement,
                            validation=self._validation, strategies=self._strategies or None)

    def close(self) -> None:
        """Drop every compiled segment and close the targets this Dispatcher built. Idempotent."""
        self._closed = True
        pipeline, self._pipeline = getattr(self, "_pipeline", None), None
        if pipeline is not None:
            pipeline.close()  # runs in flight finish first
        with self._lock:
            entries = list(self._cache.values()) + list(self._pinned.values())
            self._cache.clear()
            self._pinned.clear()
        default = getattr(self, "_default", None)
        for e in entries + ([default] if default is not None else []):
            e.runtime.close()
        for t in self._own:
            t.close()
        self._own = []
        if self._blas_limits is not None:
            self._blas_limits.restore_original_limits()
            self._blas_limits = None

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Dispatcher({self._name!r}, targets={sorted(self._targets)}, strategy={self.strategy!r}, "
                f"objective={self.objective!r})")

"""`Dispatcher`: what serving code builds once and calls from many threads.

    with Dispatcher("model.onnx", targets={"gpu": "h100-sxm", "asic": "tpu-v4-like"}) as d:
        outputs = d.run({"input": x})
        report = d.report()

Thread safety. Everything a run reads is immutable after it is built: the feed checker, the default entry
(graph, plan, compiled runtime) and every cached entry. The only shared mutable object is the LRU cache of
entries for other input shapes; a lock guards its lookups and updates, never a run. Feeds whose shapes match
the default entry skip the lock altogether. An entry for a new shape signature is built outside the cache lock
under a per-signature lock, so concurrent callers with the same new shapes build it once and callers with
other shapes are not held up.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from dispatch.errors import DispatchError
from dispatch.frontend import load, load_model_proto
from dispatch.ir import Graph
from dispatch.plan import Plan
from dispatch.runtime import Measurement, Runtime, measure
from dispatch.validate import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    FeedChecker,
    ValidationResult,
    compare,
    feed_specs,
    generate_feeds,
    graph_depth,
    quantized_spread,
    reference_outputs,
)
from targets.base import DEFAULT_TARGETS, Target, make_target

__all__ = ["Dispatcher", "Planner"]

Signature = tuple[tuple[int, ...], ...]  # the feeds' shapes, in input order
Planner = Callable[..., Plan]  # (graph, targets, strategy=..., objective=..., **options) -> Plan


@dataclass(frozen=True)
class _Entry:
    """Everything needed to run feeds of one shape signature."""

    signature: Signature
    graph: Graph
    plan: Plan
    runtime: Runtime


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
    rtol, atol: tolerances of validate().
    planner: replaces dispatch.partition.plan (same signature).
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto,
                 targets: Mapping[str, str | os.PathLike | Target] | None = None, *,
                 strategy: str = "optimal", objective: str = "latency",
                 shapes: Mapping[str, Sequence[int] | int] | None = None, plan_cache_size: int = 8,
                 rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                 plan_options: Mapping[str, Any] | None = None, planner: Planner | None = None) -> None:
        if not isinstance(plan_cache_size, int) or plan_cache_size < 1:
            raise DispatchError(f"plan_cache_size must be a positive integer, not {plan_cache_size!r}.")
        for label, tol in (("rtol", rtol), ("atol", atol)):
            if isinstance(tol, bool) or not isinstance(tol, int | float) or not np.isfinite(tol) or tol < 0:
                raise DispatchError(f"{label} must be a finite non-negative number, not {tol!r}; fix it.")
        self.strategy, self.objective = strategy, objective
        self.rtol, self.atol = rtol, atol
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
        self._own: list[Target] = []
        self._targets = self._make_targets(DEFAULT_TARGETS if targets is None else targets)
        self._lock = threading.Lock()
        self._cache: OrderedDict[Signature, _Entry] = OrderedDict()
        self._building: dict[Signature, threading.Lock] = {}
        self._closed = False
        self._measurement: Measurement | None = None
        self._validation: ValidationResult | None = None
        self._strategies: dict[str, dict[str, Any]] = {}
        try:
            graph = self._load(shapes)
            self._default = self._build(self._signature_of(graph), graph)
        except BaseException:
            self.close()
            raise
        self._default_sig = self._default.signature
        self._cache[self._default_sig] = self._default
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
                out[name] = make_target(name, t)
                self._own.append(out[name])
        return out

    def _load(self, shapes: Mapping[str, Sequence[int] | int] | None) -> Graph:
        assert self._proto is not None  # kept whenever an input has a symbolic dimension
        graph = load(self._proto, shapes)
        graph.name, graph.path = self._name, self._path
        return graph

    def _signature_of(self, graph: Graph) -> Signature:
        by_name = {v.name: v for v in graph.inputs}
        return tuple(tuple(by_name[n].shape or ()) for n in self._checker.names)

    def _build(self, signature: Signature, graph: Graph) -> _Entry:
        plan = self._planner(graph, self._targets, strategy=self.strategy, objective=self.objective,
                             **self._plan_options)
        return _Entry(signature, graph, plan, Runtime(graph, plan, self._targets))

    def _entry(self, sig: Signature) -> _Entry:
        """The entry for a shape signature: the default one without a lock, else from (into) the LRU cache."""
        if self._closed:
            raise DispatchError("This Dispatcher was closed; build a new one to run the model again.")
        if sig == self._default_sig:
            return self._default
        with self._lock:
            entry = self._cache.get(sig)
            if entry is not None:
                self._cache.move_to_end(sig)
                return entry
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

    # -- the API --------------------------------------------------------------------------------------------
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

    def plan_for(self, feeds: Mapping[str, np.ndarray]) -> Plan:
        """The plan that runs feeds of these shapes (planned and cached if new)."""
        return self._entry(self._checker.check(feeds)).plan

    def example_feeds(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Random feeds for the default shapes (see dispatch.validate.generate_feeds)."""
        return generate_feeds(self.graph, seed)

    def validate(self, feeds: Mapping[str, np.ndarray] | None = None) -> ValidationResult:
        """Run, and compare with onnxruntime (CPU) running the whole model on the same feeds."""
        feeds = self.example_feeds() if feeds is None else feeds
        entry = self._entry(self._checker.check(feeds))
        outputs = entry.runtime.run(feeds)
        reference = reference_outputs(entry.graph, feeds)
        result = compare(outputs, reference, self.rtol, self.atol, depth=graph_depth(entry.graph),
                         atol_floors=quantized_spread(entry.graph, feeds, reference))
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
        """The JSON report data (DESIGN.md) for the default plan, with the last measurement and validation,
        and the strategies compared so far (dispatch.report.build_report)."""
        from dispatch.report import build_report

        return build_report(self.graph, self.plan, self._targets, measurement=self._measurement,
                            validation=self._validation, strategies=self._strategies or None)

    def close(self) -> None:
        """Drop every compiled segment and close the targets this Dispatcher built. Idempotent."""
        self._closed = True
        with self._lock:
            entries = list(self._cache.values())
            self._cache.clear()
        default = getattr(self, "_default", None)
        for e in entries + ([default] if default is not None else []):
            e.runtime.close()
        for t in self._own:
            t.close()
        self._own = []

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Dispatcher({self._name!r}, targets={sorted(self._targets)}, strategy={self.strategy!r}, "
                f"objective={self.objective!r})")

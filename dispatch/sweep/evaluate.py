"""One sweep point -> its rows: one per strategy x objective, built with the process's caches.

A `Worker` lives as long as its process (a local worker process or a Ray worker) and keeps the graphs it
loaded and the targets it built across the points it is given. For each objective it builds one partition
problem from cached node costs (dispatch.partition.build_problem) and runs every strategy on it
(plan_problem); a strategy that fails records its error in its row, and a point that fails altogether (its
model does not load at that shape, say) records the error in every row of the point.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from dispatch.errors import DispatchError
from dispatch.sweep.config import SweepConfig
from dispatch.sweep.models import GraphCache, bindings, model_label
from dispatch.sweep.points import Point
from dispatch.sweep.targets import TargetCache, target_settings

__all__ = ["Worker", "row_columns", "METRICS"]

# The figures every row has, in column order (flops_share.TARGET columns follow them).
METRICS = ("latency_s", "makespan_s", "energy_j", "transfer_bytes", "segments", "objective_value",
           "lower_bound_s", "optimal", "gap", "targets_used")
MEASURED = ("measured_s", "measured_provider", "validated", "max_abs_err")


def row_columns(cfg: SweepConfig) -> list[str]:
    """Every column of a row, in order."""
    names = [t for t, _ in cfg.targets]
    cols = ["point", "point_id", "model", *(a.name for a in cfg.axes), "strategy", "objective", *METRICS,
            *(f"flops_share.{t}" for t in names), "planning_s"]
    if cfg.run:
        cols += MEASURED
    return [*cols, "error"]


def _error_text(e: BaseException) -> str:
    if isinstance(e, DispatchError):
        return str(e)
    return f"{type(e).__name__}: {e}"


class Worker:
    """Evaluates points of one config, keeping graphs, targets and node costs between them."""

    def __init__(self, cfg: SweepConfig, graphs_kept: int = 2) -> None:
        self.cfg = cfg
        self.graphs = GraphCache(graphs_kept)
        self.targets = TargetCache()
        self._runs: dict[Any, tuple[dict, dict]] = {}  # graph key -> (feeds, reference outputs)

    def close(self) -> None:
        self.targets.close()

    def rows(self, point: Point) -> list[dict[str, Any]]:
        cfg = self.cfg
        values = point.as_dict
        base = {"point": point.index, "point_id": point.id, "model": model_label(point.model), **values}
        try:
            ref, shapes = bindings(cfg.info(point.model), values)
            gkey, graph, ops = self.graphs.get(ref, shapes)
            for old in self.graphs.evicted:
                self.targets.forget_graph(old)
                self._runs.pop(old, None)
            self.graphs.evicted.clear()
            settings = target_settings(cfg, values)
            targets = {name: self.targets.get(gkey, name, *settings[name]) for name, _ in cfg.targets}
        except Exception as e:  # noqa: BLE001 - the point fails, the sweep goes on
            err = _error_text(e)
            return [self._fill({**base, "strategy": s, "objective": o, "error": err})
                    for o in cfg.objectives for s in cfg.strategies]
        return [self._fill(r) for r in self._plan_rows(base, gkey, graph, ops, targets)]

    def _fill(self, row: dict[str, Any]) -> dict[str, Any]:
        return {c: row.get(c) for c in row_columns(self.cfg)}

    def _plan_rows(self, base: dict[str, Any], gkey: Any, graph: Any, ops: list,
                   targets: dict[str, Any]) -> list[dict[str, Any]]:
        from dispatch.partition import build_problem, plan_problem

        cfg = self.cfg
        total_flops = float(sum(op.flops for op in ops)) or 1.0
        index = {n.name: i for i, n in enumerate(graph.nodes)}
        out = []
        first: Any = None
        for objective in cfg.objectives:
            t0 = time.perf_counter()
            try:
                if first is None:
                    problem = first = build_problem(graph, targets, objective, opcosts=ops)
                else:  # the arrays do not depend on the objective: the same problem, another objective
                    problem = dataclasses.replace(first, objective=objective)
                build_s, err = time.perf_counter() - t0, None
            except Exception as e:  # noqa: BLE001
                problem, build_s, err = None, 0.0, _error_text(e)
            for strategy in cfg.strategies:
                row = {**base, "strategy": strategy, "objective": objective}
                if problem is None:
                    out.append({**row, "error": err})
                    continue
                t1 = time.perf_counter()
                try:
                    p = plan_problem(problem, strategy)
                except Exception as e:  # noqa: BLE001
                    out.append({**row, "error": _error_text(e)})
                    continue
                row["planning_s"] = build_s + time.perf_counter() - t1
                share = dict.fromkeys(targets, 0.0)
                for node, t in p.assignment.items():
                    share[t] += ops[index[node]].flops
                row.update(latency_s=p.predicted.latency_s, makespan_s=p.makespan_s,
                           energy_j=p.predicted.energy_j, transfer_bytes=int(p.transfer_bytes),
                           segments=len(p.segments),
                           objective_value=p.objective_value(), lower_bound_s=p.lower_bound_s,
                           optimal=bool(p.optimal), gap=p.gap,
                           targets_used="+".join(dict.fromkeys(s.target for s in p.segments)),
                           **{f"flops_share.{t}": share[t] / total_flops for t in targets})
                if cfg.run:
                    row.update(self._measure(gkey, graph, p, targets))
                out.append(row)
        return out

    def _measure(self, gkey: Any, graph: Any, plan: Any, targets: dict[str, Any]) -> dict[str, Any]:
        """Execute the plan here: the median of `repeat` runs, and the check against onnxruntime."""
        from dispatch.runtime import Runtime, measure
        from dispatch.validate import compare, generate_feeds, plan_emulation, reference_outputs

        if gkey not in self._runs:
            feeds = generate_feeds(graph, seed=0)
            self._runs[gkey] = (feeds, reference_outputs(graph, feeds))
        feeds, ref = self._runs[gkey]
        try:
            rt = Runtime(graph, plan, {n: t.inner for n, t in targets.items()})
        except Exception as e:  # noqa: BLE001
            return {"error": f"could not run the plan: {_error_text(e)}"}
        try:
            m = measure(rt, feeds, repeat=self.cfg.repeat, warmup=self.cfg.warmup)
            inner = {n: t.inner for n, t in targets.items()}  # emulating ASIC: precision-derived rtol
            v = compare(rt.run(feeds), ref, emulation=plan_emulation(graph, plan.assignment, inner))
            return {"measured_s": m.total_s, "measured_provider": m.provider, "validated": v.ok,
                    "max_abs_err": v.max_abs_err}
        except Exception as e:  # noqa: BLE001
            return {"error": f"could not run the plan: {_error_text(e)}"}
        finally:
            rt.close()


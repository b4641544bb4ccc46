"""Partitioning: place every node on a target. The entry point is `plan(graph, targets, strategy, objective)`.

Strategies live in STRATEGIES, name -> fn(problem, **options) -> Assignment; add one with
`register_strategy(name)`. "only:TARGET" is the strategy "only" with option target=TARGET.

    from dispatch.partition import plan
    p = plan(graph, {"gpu": gpu, "asic": asic}, strategy="optimal", objective="latency")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dispatch.cost import OpCost
from dispatch.errors import DispatchError
from dispatch.ir import Graph
from dispatch.partition.greedy import greedy
from dispatch.partition.heft import heft
from dispatch.partition.only import only
from dispatch.partition.optimal import optimal
from dispatch.partition.priority import priority
from dispatch.plan import Plan, assignment_array, build_plan
from dispatch.problem import OBJECTIVES, Assignment, Problem
from targets.base import Target, make_target

__all__ = ["plan", "plan_problem", "build_problem", "STRATEGIES", "register_strategy", "resolve_strategy",
           "strategy_options", "check_options", "strategy_names", "compare_strategies", "Problem",
           "Assignment", "OBJECTIVES"]

Strategy = Callable[..., Assignment]

STRATEGIES: dict[str, Strategy] = {
    "optimal": optimal,
    "priority": priority,
    "greedy": greedy,
    "heft": heft,
    "only": only,
}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Decorator: `@register_strategy("mine")` makes `strategy="mine"` call the function."""

    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return deco


def resolve_strategy(name: str) -> tuple[Strategy, dict[str, Any]]:
    """'optimal' -> (optimal, {}); 'only:gpu' -> (only, {'target': 'gpu'})."""
    base, sep, arg = name.partition(":")
    fn = STRATEGIES.get(base)
    if fn is None or (base == "only") != bool(sep) or (sep and not arg):
        names = ", ".join(sorted(n for n in STRATEGIES if n != "only"))
        raise DispatchError(f"Unknown strategy '{name}'; choose one of {names}, or only:TARGET.")
    return fn, ({"target": arg} if sep else {})


def strategy_options(name: str) -> list[str]:
    """The options a strategy takes: its function's named keyword parameters after `problem`, less those its
    name fixes (only:gpu fixes target). A catch-all **kwargs is not an option."""
    fn, fixed = resolve_strategy(name)
    params = list(inspect.signature(fn).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name not in fixed]


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """DispatchError when `options` holds a name that strategy `name` does not take."""
    valid = strategy_options(name)
    unknown = [k for k in options if k not in valid]
    if unknown:
        takes = f"it takes {', '.join(valid)}" if valid else "it takes none"
        raise DispatchError(f"Strategy '{name}' has no option {', '.join(repr(k) for k in unknown)}; "
                            f"{takes}.")


def strategy_names(problem: Problem) -> list[str]:
    """Every strategy for this problem: the registry, with only:TARGET for each target."""
    names = [n for n in STRATEGIES if n != "only"]
    return names + [f"only:{t}" for t in problem.target_names]


def _targets(targets: Mapping[str, Target | str]) -> dict[str, Target]:
    return {name: t if isinstance(t, Target) else make_target(name, t) for name, t in targets.items()}


def build_problem(graph: Graph, targets: Mapping[str, Target | str], objective: str = "latency", *,
                  opcosts: Sequence[OpCost] | None = None) -> Problem:
    """The arrays every strategy works on (targets may be Target objects or preset names)."""
    return Problem.build(graph, opcosts, _targets(targets), objective)


def plan_problem(problem: Problem, strategy: str = "optimal", **options: Any) -> Plan:
    """Run one strategy on a built problem and turn its assignment into a Plan (unknown options: an error)."""
    check_options(strategy, options)
    fn, fixed = resolve_strategy(strategy)
    return build_plan(problem, fn(problem, **fixed, **options), strategy)


def plan(graph: Graph, targets: Mapping[str, Target | str], strategy: str = "optimal",
         objective: str = "latency", *, opcosts: Sequence[OpCost] | None = None, **options: Any) -> Plan:
    """Place every node of `graph` on one of `targets` (name -> Target or preset) and build the Plan.

    options go to the strategy, e.g. time_limit_s and mip_rel_gap for "optimal".
    """
    check_options(strategy, options)  # a bad name or option fails before any target is asked about a node
    return plan_problem(build_problem(graph, targets, objective, opcosts=opcosts), strategy, **options)


def compare_strategies(problem: Problem, strategies: Iterable[str] | None = None,
                       **options: Any) -> dict[str, dict[str, Any]]:
    """Every strategy on the same problem: {name: {latency_s, makespan_s, energy_j, transfer_bytes, ...}}.

    A strategy that fails on this problem (e.g. only:X over a capacity) gets {"error": sentence}.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in strategies if strategies is not None else strategy_names(problem):
        fn, fixed = resolve_strategy(name)
        try:
            opts = options if fn is optimal else {}
            pl = build_plan(problem, fn(problem, **fixed, **opts), name)
        except DispatchError as e:
            out[name] = {"error": str(e)}
            continue
        out[name] = {"latency_s": pl.predicted.latency_s, "makespan_s": pl.makespan_s,
                     "energy_j": pl.predicted.energy_j, "transfer_bytes": pl.transfer_bytes,
                     "segments": len(pl.segments), "objective": pl.objective_value(),
                     "optimal": pl.optimal, "gap": pl.gap,
                     "fits": not problem.capacity_violations(assignment_array(problem, pl.assignment))}
    return out

"""optimal: the exact minimum of the partition model (see dispatch.problem).

* one target: everything on it.
* two targets, no capacity limit: an s–t minimum cut (dispatch.partition.cut).
* otherwise: an integer program under a time limit (dispatch.partition.milp), optimal or with its gap.

EDP (latency × energy) is not additive. Solve the latency and the energy optimum, then repeatedly minimise
the tangent weighted sum E0·latency + L0·energy at the best point (L0, E0) so far. By the AM–GM inequality a
solution of that sum has L·E <= ((E0·L + L0·E) / 2)² / (L0·E0) <= L0·E0, so the product never rises; stop
when it no longer falls. Each step is exact, but the product's optimum need not be a weighted-sum optimum,
so an EDP plan is never claimed optimal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dispatch.errors import DispatchError
from dispatch.partition.cut import min_cut
from dispatch.partition.greedy import greedy
from dispatch.partition.milp import solve_milp
from dispatch.partition.priority import priority
from dispatch.problem import Assignment, Problem, objective_weights

__all__ = ["optimal", "solve_weighted"]


def solve_weighted(problem: Problem, w_lat: float, w_en: float, *, time_limit_s: float = 20.0,
                   mip_rel_gap: float = 1e-6, method: str = "auto", relax_first: bool = True) -> Assignment:
    """Exact minimiser of w_lat·latency + w_en·energy under the partition model (method: auto|cut|milp)."""
    p = problem
    if method not in ("auto", "cut", "milp"):
        raise DispatchError(f"Unknown optimal method '{method}'; use auto, cut or milp.")
    if p.num_nodes == 0:  # everything folded to constants: nothing to place (and an empty LP is an error)
        return Assignment(np.zeros(0, np.int64), optimal=True, notes=("no nodes to place",))
    if p.num_targets == 1:
        a = np.zeros(p.num_nodes, np.int64)
        bad = p.capacity_violations(a)
        if bad:
            raise DispatchError(f"The model does not fit its only target: {bad[0]}; add a target or raise "
                                "the capacity.")
        return Assignment(a, optimal=True, notes=("one target: every node on it",))
    use_cut = p.num_targets == 2 and not p.has_capacity
    if method == "cut" and not use_cut:
        raise DispatchError("The min-cut method needs exactly two targets and no capacity limit; use "
                            "method='milp' or 'auto'.")
    if use_cut and method != "milp":
        return min_cut(p, w_lat, w_en)
    found = solve_milp(p, w_lat, w_en, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap,
                       relax_first=relax_first)
    if found is not None:
        return found
    # No integer solution within the time limit: the best capacity-feasible baseline, unproven.
    fallbacks = [s(p).target for s in (greedy, priority)]
    fallbacks = [a for a in fallbacks if not p.capacity_violations(a)]
    if not fallbacks:
        raise DispatchError(f"The integer program found no placement within {time_limit_s:g} s and no "
                            "baseline fits the capacities; raise time_limit_s.")
    vals = [w_lat * c.latency_s + w_en * c.energy_j for c in map(p.evaluate, fallbacks)]
    best = fallbacks[int(np.argmin(vals))]
    return Assignment(best, notes=(f"MILP found no solution within {time_limit_s:g} s; returned the best "
                                   "baseline (not optimal)",))


def optimal(problem: Problem, *, time_limit_s: float = 20.0, mip_rel_gap: float = 1e-6, method: str = "auto",
            relax_first: bool = True, edp_steps: int = 8, **_: Any) -> Assignment:
    """The partition model's optimum for the problem's objective (EDP: a tangent sweep, see module doc).

    Options: time_limit_s and mip_rel_gap for the integer program, method auto|cut|milp, relax_first (try
    the LP relaxation before the integer program), edp_steps (tangent solves for edp)."""
    kw = {"time_limit_s": time_limit_s, "mip_rel_gap": mip_rel_gap, "method": method,
          "relax_first": relax_first}
    if problem.objective != "edp":
        return solve_weighted(problem, *objective_weights(problem.objective), **kw)
    tried = [solve_weighted(problem, 1.0, 0.0, **kw), solve_weighted(problem, 0.0, 1.0, **kw)]
    costs = [problem.evaluate(a.target) for a in tried]
    i = int(np.argmin([c.latency_s * c.energy_j for c in costs]))
    best, cost = tried[i], costs[i]
    steps = 0
    for steps in range(1, edp_steps + 1):  # noqa: B007 (reported below)
        if not (cost.latency_s > 0 and cost.energy_j > 0):
            break
        cand = solve_weighted(problem, cost.energy_j, cost.latency_s, **kw)
        c = problem.evaluate(cand.target)
        if not c.latency_s * c.energy_j < cost.latency_s * cost.energy_j * (1 - 1e-12):
            break
        best, cost = cand, c
    note = (f"edp: best latency·energy over the latency and energy optima and {steps} tangent weighted-sum "
            "solves; not proven optimal (the product is not additive)")
    return Assignment(best.target, optimal=False, gap=None, notes=(*best.notes, note))

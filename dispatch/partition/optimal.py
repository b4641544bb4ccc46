"""optimal: the minimum of the printed objective (dispatch/objective.py), proven where it can be.

Every answer is the best of several feasible assignments on the printed objective itself, so it is never
worse than any baseline strategy (priority, greedy, heft, only:TARGET are among them). What is proven:

* small problems (at most `enumerate_limit` supported assignments; `makespan_enumerate_limit` for
  makespan): every assignment is evaluated (makespan: every assignment bounded, dispatch.partition.makespan,
  and scheduled in order of bound until no bound can beat the best). Exact for every objective.
* latency and energy: a lower bound from the cut part of the objective. For every set U of targets the plan
  may use, the objective restricted to assignments using targets in U is at least
      G(a) + one launch per target in U,
  where G holds the nodes, the transfers and the fusion savings of pairs on one target (segments left
  aside), and every element's latency is charged the static power of all of U (dispatch.problem.terms).
  G is a cut function: an s–t minimum cut for two targets (dispatch.partition.cut), HiGHS otherwise
  (dispatch.partition.milp). For two targets a second cut charges one launch per run of a target along a
  path of the graph instead (every run is a segment of its own), and U's bound is the larger of the two.
  The bound is the least over U. The assignments found, the baselines and a local search that moves whole
  segments between targets give the plan; it is proven optimal when its objective is within PROOF_TOL
  (relative) of the bound, else the gap is reported.
* edp: the product of the latency and the energy bounds bounds latency·energy from below; candidates come
  from weighted sums along the tangent E0·latency + L0·energy at the best point so far.
* makespan: lower bound from dispatch.partition.makespan.global_bound (the least time of a few paths through
  the graph, or the cheapest work shared by the targets); candidates are the latency and energy plans,
  heft and the baselines, improved by the same local search on the makespan.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dispatch.errors import DispatchError
from dispatch.objective import (
    assignments,
    count_assignments,
    evaluate_batch,
    objective_of,
    segment_levels,
    totals,
)
from dispatch.partition import makespan
from dispatch.partition.cut import cut_solve, relaxed_value
from dispatch.partition.fit import fit
from dispatch.partition.greedy import greedy
from dispatch.partition.heft import heft
from dispatch.partition.milp import capacity_error, solve_milp
from dispatch.partition.priority import first_supported, priority
from dispatch.plan import build_plan
from dispatch.problem import Assignment, Problem, objective_weights

__all__ = ["optimal", "solve_weighted", "weighted_bound"]

PROOF_TOL = 1e-6  # relative: the objective within this of the proven lower bound counts as proven optimal


def _score(problem: Problem, objective: str, w: tuple[float, float] | None = None) -> Callable[[np.ndarray],
                                                                                                float]:
    """The printed objective of one assignment (or w_lat·latency + w_en·energy when w is given)."""
    if objective == "makespan":
        return lambda a: build_plan(problem, a, "score").makespan_s
    f = objective_of(objective) if w is None else (lambda lat, en: w[0] * lat + w[1] * en)

    def score(a: np.ndarray) -> float:
        tot = totals(problem, a[None, :], segment_levels(problem, a)[None, :])
        return float(f(tot["latency_s"], tot["energy_j"])[0])

    return score


def _baselines(problem: Problem) -> list[np.ndarray]:
    """priority, greedy, heft and only:TARGET for every target (the strategies optimal must never lose to)."""
    p = problem
    out = [priority(p).target, greedy(p).target, heft(p).target]
    t = p.num_targets
    out += [first_supported(p, [(j + i) % t for i in range(t)]) for j in range(t)]
    return out


def _quick_weighted(problem: Problem, w: tuple[float, float], assigns: list[np.ndarray]) -> np.ndarray:
    """A cheap lower bound on w_lat·latency + w_en·energy of each assignment: its cut part (G, fusion by
    target) with the static power of the targets it uses, plus one launch of each."""
    p = problem
    out = np.empty(len(assigns))
    for i, a in enumerate(assigns):
        us = np.unique(a)
        terms = p.terms(w[0], w[1], float(p.idle_w[us].sum()))
        pair = np.where(np.isin(p.pair_t, us), terms["pair"], 0.0)
        out[i] = relaxed_value(p, terms["node"], terms["cond"], terms["out"], pair, a[None, :])[0] \
            + terms["launch"][us].sum()
    return out


def _pick(problem: Problem, cands: list[np.ndarray], score: Callable[[np.ndarray], float],
          quick: np.ndarray | None = None) -> tuple[np.ndarray, float, int]:
    """(best candidate, its score, distinct candidates): scored in order of `quick` (a lower bound on each
    score), skipping those whose bound cannot beat the best so far."""
    p = problem
    seen: dict[bytes, int] = {}
    for i, c in enumerate(cands):
        if not (p.has_capacity and p.capacity_violations(c)):
            seen.setdefault(np.asarray(c, np.int64).tobytes(), i)
    idx = list(seen.values())
    if not idx:
        raise capacity_error(p)
    order = sorted(idx, key=lambda i: quick[i]) if quick is not None else idx
    best, best_v = cands[order[0]], np.inf
    for i in order:
        if quick is not None and quick[i] >= best_v:
            break
        v = score(cands[i])
        if v < best_v:
            best, best_v = cands[i], v
    return np.asarray(best, np.int64), float(best_v), len(idx)


def _fitted(problem: Problem, cands: list[np.ndarray], w: tuple[float, float]) -> list[np.ndarray]:
    """The candidates, each one that breaks a weight capacity replaced by its repairs (dispatch.partition.fit,
    moves priced by w_lat·latency + w_en·energy of the nodes)."""
    p = problem
    if not p.has_capacity:
        return cands
    node = p.terms(w[0], w[1])["node"]
    return [r for c in cands for r in fit(p, c, node)]


def _exhaustive(problem: Problem, objective: str, w: tuple[float, float] | None) -> tuple[np.ndarray, int]:
    """The best of all supported, capacity-feasible assignments, and how many were evaluated."""
    p = problem
    best, best_v, count = None, np.inf, 0
    f = objective_of(objective) if w is None else (lambda lat, en: w[0] * lat + w[1] * en)
    for block in assignments(p):
        if p.has_capacity:
            block = block[[not p.capacity_violations(a) for a in block]]
            if not len(block):
                continue
        count += len(block)
        vals = f(*evaluate_batch(p, block))
        i = int(np.argmin(vals))
        if vals[i] < best_v:
            best, best_v = block[i].copy(), float(vals[i])
    if best is None:
        raise capacity_error(p)
    return best, count


def _local_search(problem: Problem, a: np.ndarray, score: Callable[[np.ndarray], float], budget: int,
                  val: float | None = None) -> tuple[np.ndarray, float, int]:
    """Move whole segments (and, on small graphs, single nodes) to other targets while the score falls."""
    p = problem
    cur = a.copy()
    val = score(a) if val is None else val
    evals = 0
    improved = True
    while improved and evals < budget:
        improved = False
        lev = segment_levels(p, cur)
        key = lev * p.num_targets + cur
        groups = [np.flatnonzero(key == k_) for k_ in np.unique(key)]
        if p.num_nodes <= 64:
            groups += [np.array([v]) for v in range(p.num_nodes)]
        for nodes in groups:
            here = int(cur[nodes[0]])
            for b in range(p.num_targets):
                if b == here or not p.supported[nodes, b].all() or evals >= budget:
                    continue
                cand = cur.copy()
                cand[nodes] = b
                if p.has_capacity and p.capacity_violations(cand):
                    continue
                evals += 1
                v = score(cand)
                if v < val * (1 - 1e-12) - 1e-300:
                    cur, val, improved = cand, v, True
                    break
            if improved:
                break
    return cur, val, evals


def _search_budget(problem: Problem, work: int = 300_000, most: int = 400) -> int:
    """Objective evaluations the local search may spend: each costs O(N), so about `work` node-visits."""
    return int(min(most, work // max(problem.num_nodes, 1)))


def weighted_bound(problem: Problem, w_lat: float, w_en: float, *, time_limit_s: float = 20.0,
                   mip_rel_gap: float = 1e-6, method: str = "auto", relax_first: bool = True,
                   upper: float = np.inf) -> tuple[float, list[np.ndarray], list[str]]:
    """(proven lower bound on w_lat·latency + w_en·energy, candidate assignments, notes); see module doc.

    Target sets whose trivial bound is at least `upper` are skipped (they cannot hold a better plan)."""
    p = problem
    t = p.num_targets
    lb = np.inf
    cands: list[np.ndarray] = []
    notes: list[str] = []
    for size in range(1, t + 1):
        for u in itertools.combinations(range(t), size):
            us = list(u)
            if not p.supported[:, us].any(axis=1).all():
                continue
            idle = float(p.idle_w[us].sum())
            terms = p.terms(w_lat, w_en, idle)
            node = terms["node"].copy()
            node[:, [j for j in range(t) if j not in u]] = np.inf
            pair = np.where(np.isin(p.pair_t, us), terms["pair"], 0.0)
            const = float(terms["launch"][us].sum())
            trivial = float(node.min(axis=1).sum() - pair.sum()) + const
            if trivial >= upper:
                lb = min(lb, trivial)
                continue
            cap = p.has_capacity and bool(np.isfinite(p.capacity[us]).any())
            if size == 1:
                a = np.full(p.num_nodes, us[0], np.int64)
                if p.capacity_violations(a):
                    continue
                val = float(relaxed_value(p, node, terms["cond"], terms["out"], pair, a[None, :])[0])
                found: tuple[np.ndarray, float, float, str] | None = (a, val, val, "")
            elif size == 2 and not cap and method != "milp":
                found, more = _cut(p, node, terms, pair, (us[0], us[1]), const)
                cands += more
            else:
                if method == "cut":
                    raise DispatchError("The min-cut method needs exactly two targets and no capacity limit; "
                                        "use method='milp' or 'auto'.")
                started = time.perf_counter()
                try:
                    found = solve_milp(p, node, terms["cond"], terms["out"], pair, time_limit_s=time_limit_s,
                                       mip_rel_gap=mip_rel_gap, relax_first=relax_first)
                except DispatchError:  # the weights fit no placement on these targets alone
                    if size == t:
                        raise
                    continue
                if cap and found is not None:
                    # the same integer program with one launch per tensor arriving on a target: fewer
                    # segments (G ignores launches), within the capacity too; only a candidate, so given
                    # twice the first one's time at most
                    spent = time.perf_counter() - started
                    surrogate = terms["cond"] + terms["launch"][None, None, :]
                    surrogate[:, np.arange(p.num_ends), np.arange(p.num_ends)] = 0.0
                    more_milp = solve_milp(p, node, surrogate, terms["out"], pair,
                                           time_limit_s=min(time_limit_s, max(1.0, 2 * spent)),
                                           mip_rel_gap=mip_rel_gap, relax_first=relax_first)
                    if more_milp is not None:
                        cands.append(more_milp[0])
                if size == 2 and method != "milp":
                    # the cut without the capacity: a bound too (a relaxation), and its solutions repaired
                    # to fit are candidates that the MILP's, blind to segments, may well lose to
                    relaxed, more = _cut(p, node, terms, pair, (us[0], us[1]), const)
                    cands += [r for c in [relaxed[0], *more] for r in fit(p, c, node)]
                    if found is not None and relaxed[1] > found[1]:
                        found = (found[0], relaxed[1], found[2], found[3])
                if found is None:
                    lb = min(lb, trivial)
                    notes.append(f"MILP over {', '.join(p.target_names[j] for j in us)} found no solution "
                                 f"within {time_limit_s:g} s")
                    continue
            a, bound, _, note = found
            lb = min(lb, bound + const)
            cands.append(a)
            if note and note not in notes:
                notes.append(note)
    return lb, cands, notes


def _change_path(problem: Problem, a: np.ndarray) -> np.ndarray:
    """A maximal path of the graph along which assignment `a` changes target most often (ASAP levels)."""
    p = problem
    n = p.num_nodes
    lev = np.zeros(n, np.int64)
    al = a.tolist()
    for v in range(n):
        for u in p.preds[v]:
            x = lev[u] + (al[u] != al[v])
            if x > lev[v]:
                lev[v] = x
    v = int(np.argmax(lev))
    path = [v]
    while p.preds[v]:  # back along a predecessor that gives v its level
        v = max(p.preds[v], key=lambda u: (lev[u] + (al[u] != al[v]), lev[u]))
        path.append(v)
    path.reverse()
    v = path[-1]
    while p.succs[v]:  # on to a sink
        v = max(p.succs[v], key=lambda w: (lev[w], -w))
        path.append(v)
    return np.array(path, np.int64)


def _cut(p: Problem, node: np.ndarray, terms: dict[str, np.ndarray], pair: np.ndarray, ends: tuple[int, int],
         const: float) -> tuple[tuple[np.ndarray, float, float, str], list[np.ndarray]]:
    """The min cut over two targets, ((assignment, lower bound on G, G of it, note), more candidates): the
    same cut with one launch per tensor arriving on a target, and the path cuts whose bound may be higher."""
    cands = []
    a0, lb0, v0, note = cut_solve(p, node, terms["cond"], terms["out"], pair, ends)
    # the same cut with one launch charged per tensor arriving on a target: fewer segments
    surrogate = terms["cond"] + terms["launch"][None, None, :]
    surrogate[:, np.arange(p.num_ends), np.arange(p.num_ends)] = 0.0
    cands.append(cut_solve(p, node, surrogate, terms["out"], pair, ends)[0])
    # launches along the path of a candidate that changes target most often: a second bound
    best_lb, best_a = lb0 + const, a0
    for _ in range(2):
        path = (_change_path(p, best_a if best_lb > lb0 + const else cands[-1]), terms["launch"])
        a1, lb1, _, _ = cut_solve(p, node, terms["cond"], terms["out"], pair, ends, path)
        cands.append(a1)
        if lb1 <= best_lb:
            break
        best_lb, best_a = lb1, a1
    return (a0, best_lb - const, v0, note), cands


def _finish(problem: Problem, objective: str, value: float, lower: float, a: np.ndarray,
            notes: list[str], how: str) -> Assignment:
    tol = 3 * PROOF_TOL if objective == "edp" else PROOF_TOL  # edp: a product of two bounds within PROOF_TOL
    proven = value <= lower + tol * abs(value) + 1e-300
    gap = None if proven or not np.isfinite(lower) else max(0.0, (value - lower) / value) if value else 0.0
    what = (f"proven optimal for the printed {objective} (within {tol:g} of the lower bound)" if proven
            else f"not proven optimal: within {gap:.3g} of a proven lower bound" if gap is not None
            else "not proven optimal: no lower bound")
    return Assignment(a, optimal=proven, gap=gap, notes=(*notes, f"{how}; {what}"))


def solve_weighted(problem: Problem, w_lat: float, w_en: float, *, time_limit_s: float = 20.0,
                   mip_rel_gap: float = 1e-6, method: str = "auto", relax_first: bool = True,
                   enumerate_limit: int = 1 << 15, objective: str | None = None,
                   baselines: list[np.ndarray] | None = None) -> Assignment:
    """The assignment minimising w_lat·latency + w_en·energy of the printed objective (see module doc).

    baselines: the baseline strategies' assignments, when the caller has them already."""
    p = problem
    if method not in ("auto", "cut", "milp"):
        raise DispatchError(f"Unknown optimal method '{method}'; use auto, cut or milp.")
    name = objective or ("latency" if w_en == 0 else "energy" if w_lat == 0 else "weighted sum")
    w = (w_lat, w_en)
    if count_assignments(p) <= enumerate_limit:
        a, count = _exhaustive(p, "latency", w)
        return Assignment(a, optimal=True, notes=(f"exhaustive: the best of all {count} assignments",))
    score = _score(p, "latency", w)
    lb, cands, notes = weighted_bound(p, w_lat, w_en, time_limit_s=time_limit_s, mip_rel_gap=mip_rel_gap,
                                      method=method, relax_first=relax_first)
    cands = _fitted(p, cands + (_baselines(p) if baselines is None else baselines), w)
    best, val, count = _pick(p, cands, score, _quick_weighted(p, w, cands))
    if val > lb + PROOF_TOL * abs(val):
        best, val, evals = _local_search(p, best, score, _search_budget(p), val)
    else:
        evals = 0
    return _finish(p, name, val, lb, best, notes,
                   f"best of {count} candidate plans (cut/MILP solutions, baselines) and {evals} segment "
                   "moves, against a lower bound per set of targets used")


def optimal(problem: Problem, *, time_limit_s: float = 20.0, mip_rel_gap: float = 1e-6, method: str = "auto",
            relax_first: bool = True, edp_steps: int = 8, enumerate_limit: int = 1 << 15,
            makespan_enumerate_limit: int = 1 << 15, **_: Any) -> Assignment:
    """The printed objective's optimum, proven where the module doc says, else with its gap to a bound.

    Options: time_limit_s and mip_rel_gap for the integer program, method auto|cut|milp, relax_first (try
    the LP relaxation before the integer program), edp_steps (tangent solves for edp), enumerate_limit and
    makespan_enumerate_limit (evaluate every assignment up to this many)."""
    p = problem
    if p.num_nodes == 0:  # everything folded to constants: nothing to place
        return Assignment(np.zeros(0, np.int64), optimal=True, notes=("no nodes to place",))
    if p.num_targets == 1 and p.capacity_violations(np.zeros(p.num_nodes, np.int64)):
        bad = p.capacity_violations(np.zeros(p.num_nodes, np.int64))
        raise DispatchError(f"The model does not fit its only target: {bad[0]}; add a target or raise the "
                            "capacity.")
    kw = {"time_limit_s": time_limit_s, "mip_rel_gap": mip_rel_gap, "method": method,
          "relax_first": relax_first, "enumerate_limit": enumerate_limit}
    obj = p.objective
    if obj in ("latency", "energy"):
        return solve_weighted(p, *objective_weights(obj), objective=obj, **kw)
    if obj == "makespan" and count_assignments(p) <= makespan_enumerate_limit:
        a, count, built = makespan.exhaustive(p)
        return Assignment(a, optimal=True, notes=(
            f"exhaustive: all {count} assignments bounded, the {built} whose bound could beat the best "
            "scheduled",))
    if obj == "edp" and count_assignments(p) <= enumerate_limit:
        a, count = _exhaustive(p, obj, None)
        return Assignment(a, optimal=True, notes=(f"exhaustive: the best of all {count} assignments",))
    score = _score(p, obj)
    base = _baselines(p)
    lat_opt = solve_weighted(p, 1.0, 0.0, baselines=base, **kw)
    en_opt = solve_weighted(p, 0.0, 1.0, baselines=base, **kw)
    cands = _fitted(p, [lat_opt.target, en_opt.target, *base], (1.0, 1.0) if obj == "edp" else (1.0, 0.0))
    notes: list[str] = []
    if obj == "edp":
        lb_lat, lb_en = _bound_of(p, lat_opt, 1.0, 0.0, **kw), _bound_of(p, en_opt, 0.0, 1.0, **kw)
        lower = lb_lat * lb_en
        best, val, count = _pick(p, cands, score)
        steps = 0
        for steps in range(1, edp_steps + 1):  # noqa: B007 (reported below)
            if val <= lower * (1 + 3 * PROOF_TOL):
                break
            tot = totals(p, best[None, :], segment_levels(p, best)[None, :])
            lat0, en0 = float(tot["latency_s"][0]), float(tot["energy_j"][0])
            if not (lat0 > 0 and en0 > 0):
                break
            cand = solve_weighted(p, en0, lat0, baselines=base, **kw).target
            v = score(cand)
            if not v < val * (1 - 1e-12):
                break
            best, val = cand, v
        notes.append(f"edp: latency and energy optima, {steps} tangent weighted-sum solves; lower bound = "
                     "latency bound x energy bound")
        budget = _search_budget(p)
    else:
        best, val, count = _pick(p, cands, score)
        lower = makespan.global_bound(p, [_change_path(p, best)])
        notes.append("makespan: lower bound = the least time of a few paths through the graph (nodes, "
                     "launches, transfers), or the cheapest work shared by all targets")
        budget = _search_budget(p, 100_000, 150)  # a schedule costs about three times an evaluation
    if val > lower * (1 + 3 * PROOF_TOL):
        best, val, evals = _local_search(p, best, score, budget, val)
    else:
        evals = 0
    return _finish(p, obj, val, lower, best, notes,
                   f"best of {count} candidate plans (weighted optima, baselines) and {evals} segment moves")


def _bound_of(p: Problem, found: Assignment, w_lat: float, w_en: float, **kw: Any) -> float:
    """A proven lower bound on w_lat·latency + w_en·energy, from an Assignment of solve_weighted."""
    value = _score(p, "latency", (w_lat, w_en))(found.target)
    if found.optimal:
        return value * (1 - PROOF_TOL)
    if found.gap is not None:
        return value * (1 - found.gap)
    kw.pop("enumerate_limit", None)
    return weighted_bound(p, w_lat, w_en, **kw)[0]

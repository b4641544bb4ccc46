"""Repair an assignment that breaks a weight capacity, so it can still be a candidate of `optimal`.

The cut solution (capacities ignored) and the baselines often place more weights on a capped target than it
holds; dropping them leaves few candidates when a capacity binds. `fit` moves work off each over-full
target, cheapest first per byte freed, onto the cheapest other target that supports it and has room:

* by segment: whole segments of the capped target (dispatch.objective.segment_levels), which keeps the
  segment count from growing;
* by node: single nodes that hold weights.

The cost of a move is the node-cost difference (`node` [N, T], e.g. Problem.terms()["node"]), transfers and
launches left aside: the repair is a heuristic, and the caller scores every candidate on the printed
objective.
"""

from __future__ import annotations

import numpy as np

from dispatch.objective import segment_levels
from dispatch.problem import Problem

__all__ = ["fit"]


def fit(problem: Problem, assign: np.ndarray, node: np.ndarray) -> list[np.ndarray]:
    """Capacity-feasible repairs of `assign` (itself when it fits; empty when no repair fits)."""
    p = problem
    a = np.asarray(assign, np.int64)
    if not p.capacity_violations(a):
        return [a]
    out = []
    for by_segment in (True, False):
        r = _repair(p, a, node, by_segment)
        if r is not None and not p.capacity_violations(r):
            out.append(r)
    return out


def _repair(p: Problem, a: np.ndarray, node: np.ndarray, by_segment: bool) -> np.ndarray | None:
    a = a.copy()
    rows = np.arange(p.num_nodes)
    ok = p.supported & np.isfinite(node)
    for j in np.flatnonzero(np.isfinite(p.capacity)):
        used = float(p.weight_bytes[rows, a][a == j].sum())
        if used <= p.capacity[j]:
            continue
        if by_segment:
            lev = segment_levels(p, a)
            on = np.flatnonzero(a == j)
            groups = [on[lev[on] == k] for k in np.unique(lev[on])]
        else:
            groups = [np.array([v]) for v in np.flatnonzero((a == j) & (p.weight_bytes[:, j] > 0))]
        moves = []
        for g in groups:
            freed = float(p.weight_bytes[g, j].sum())
            if freed <= 0:
                continue
            # the one other target that supports the whole group at least cost
            costs = [(float(node[g, b].sum()), b) for b in range(p.num_targets)
                     if b != j and ok[g, b].all()]
            if not costs:
                continue
            c, b = min(costs)
            moves.append(((c - float(node[g, j].sum())) / freed, b, g))
        moves.sort(key=lambda m: m[0])
        for _, b, g in moves:
            if used <= p.capacity[j]:
                break
            if np.isfinite(p.capacity[b]):
                room = p.capacity[b] - float(p.weight_bytes[rows, a][a == b].sum())
                if float(p.weight_bytes[g, b].sum()) > room:
                    continue
            a[g] = b
            used -= float(p.weight_bytes[g, j].sum())
        if used > p.capacity[j]:
            return None
    return a

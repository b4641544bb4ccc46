"""heft: list scheduling for targets that run concurrently (Topcuoglu, Hariri and Wu, IEEE TPDS 2002).

1. Upward rank: rank(v) = w̄(v) + max over successors c of (c̄(v, c) + rank(c)), where w̄ is the node's
   mean latency over the targets that support it and c̄ the mean cost of moving the tensor between two
   different targets (transfer plus the receiving target's launch).
2. Nodes in decreasing rank (a topological order; ties by graph order), each on the supported target that
   gives it the earliest finish time, with the insertion policy: a node may fill an idle gap on a target
   if it fits there after its inputs are ready.

HEFT minimises the makespan of its own node-level schedule whatever the objective; the plan built from its
assignment reports latency, energy and makespan like any other.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from dispatch.problem import Assignment, Problem, no_gc

__all__ = ["heft", "upward_ranks"]


def upward_ranks(problem: Problem) -> np.ndarray:
    """rank_u of every node (seconds)."""
    p = problem
    sup = p.supported
    wbar = np.where(sup, p.node_lat, 0.0).sum(axis=1) / sup.sum(axis=1)
    t = p.num_targets
    if t > 1:
        c = p.cond_lat[:, :t, :t] + p.launch_lat[None, None, :t]
        c[:, np.arange(t), np.arange(t)] = 0.0
        cbar = c.sum(axis=(1, 2)) / (t * (t - 1))  # the diagonal is zero
    else:
        cbar = np.zeros(len(p.t_prod))
    prod = p.t_prod[p.cons_tensor]
    real = prod >= 0
    out_edges: list[list[tuple[int, float]]] = [[] for _ in range(p.num_nodes)]
    for s, c_, w in zip(prod[real].tolist(), p.cons_node[real].tolist(), cbar[p.cons_tensor[real]].tolist(),
                        strict=True):
        out_edges[s].append((c_, w))
    rank = wbar.tolist()
    for v in range(p.num_nodes - 1, -1, -1):
        best = 0.0
        for c_, w in out_edges[v]:
            x = w + rank[c_]
            if x > best:
                best = x
        rank[v] += best
    return np.array(rank)


def _earliest(starts: list[float], ends: list[float], ready: float, d: float) -> tuple[float, int]:
    """Earliest start >= ready of a gap of length d among busy intervals (sorted, disjoint); its position."""
    i = bisect.bisect_right(ends, ready)
    t0 = ready
    while i < len(starts):
        if starts[i] - t0 >= d:
            return t0, i
        t0 = max(t0, ends[i])
        i += 1
    return t0, i


def heft(problem: Problem, **_: Any) -> Assignment:
    """HEFT with upward ranks and insertion-based earliest-finish-time target selection."""
    with no_gc():
        return _heft(problem)


def _heft(problem: Problem) -> Assignment:
    p = problem
    n, t = p.num_nodes, p.num_targets
    rank = upward_ranks(p)
    order = np.lexsort((np.arange(n), -rank)).tolist()
    inputs: list[list[int]] = [[] for _ in range(n)]
    for tensor, c_ in zip(p.cons_tensor.tolist(), p.cons_node.tolist(), strict=True):
        inputs[c_].append(tensor)
    sup = p.supported.tolist()
    lat = p.node_lat.tolist()
    prod = p.t_prod.tolist()
    cond = p.cond_lat + p.launch_lat[None, None, :]  # [E, K, K]: transfer plus the receiver's launch
    host = p.host
    starts: list[list[float]] = [[] for _ in range(t)]
    ends: list[list[float]] = [[] for _ in range(t)]
    finish = [0.0] * n
    where = [0] * n
    for v in order:
        best = (np.inf, np.inf, 0, 0.0, 0)
        srcs = [(tensor, where[prod[tensor]] if prod[tensor] >= 0 else host,
                 finish[prod[tensor]] if prod[tensor] >= 0 else 0.0) for tensor in inputs[v]]
        for b in range(t):
            if not sup[v][b]:
                continue
            ready = 0.0
            for tensor, a, f in srcs:
                r = f + (float(cond[tensor, a, b]) if a != b else 0.0)
                if r > ready:
                    ready = r
            d = lat[v][b]
            start, pos = _earliest(starts[b], ends[b], ready, d)
            cand = (start + d, d, b, start, pos)
            if cand[:3] < best[:3]:
                best = cand
        eft, d, b, start, pos = best
        starts[b].insert(pos, start)
        ends[b].insert(pos, eft)
        finish[v], where[v] = eft, b
    makespan_us = max(finish, default=0.0) * 1e6
    return Assignment(np.array(where, np.int64),
                      notes=(f"heft: node-level list schedule makespan {makespan_us:.1f} us",))

"""Lower bounds on the makespan (the list schedule of dispatch.plan, targets and links overlapping).

* `assignment_bounds`: for many assignments at once, a bound on each one's makespan: the longest path
  through its nodes, each at its latency on its target (less a fusion saving where its pair shares its
  segment), with its segment's launch where a path enters a segment, and the tensors between two targets
  moved over the link (their transfers add: they share it); graph inputs come from the host and outputs go
  back to it. Every segment runs its nodes one after another after its launch, starts after its inputs are
  there, and each target and link runs one thing at a time, so the schedule is never shorter. It is also
  at least every target's busy time. For a chain the bound is the makespan itself.
* `exhaustive`: the exact optimum of small problems: every assignment's bound, then the schedules in order of
  bound until the next bound is no better than the best makespan found.
* `global_bound`: a bound over all assignments: the least time of a few paths (dynamic programming over the
  targets of each node of the path) and the work each target must do when the nodes are split between them
  at best (a linear program, `work_bound`).
"""

from __future__ import annotations

import numpy as np

from dispatch.objective import assignments, segment_levels_batch, totals
from dispatch.plan import build_plan
from dispatch.problem import Problem

__all__ = ["assignment_bounds", "exhaustive", "global_bound", "path_time", "fused_latency"]


def _edges(p: Problem) -> tuple[list[list[tuple[int, np.ndarray]]], list[list[int]], list[tuple[int, int]]]:
    """Per node: (predecessor, tensors from it) pairs; graph inputs it reads; (producer, tensor) outputs."""
    into: list[dict[int, list[int]]] = [{} for _ in range(p.num_nodes)]
    inputs: list[list[int]] = [[] for _ in range(p.num_nodes)]
    for t, c in zip(p.cons_tensor.tolist(), p.cons_node.tolist(), strict=True):
        u = int(p.t_prod[t])
        if u >= 0:
            into[c].setdefault(u, []).append(t)
        else:
            inputs[c].append(t)
    outs = [(int(p.t_prod[t]), int(t)) for t in np.flatnonzero(p.t_out & (p.t_prod >= 0))]
    return [[(u, np.array(ts)) for u, ts in d.items()] for d in into], inputs, outs


def assignment_bounds(problem: Problem, assigns: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
    """A lower bound on the makespan of each assignment [M, N] (see the module doc)."""
    p = problem
    a = np.asarray(assigns, np.int64)
    m, n = a.shape
    lev = segment_levels_batch(p, a) if levels is None else levels
    h = p.host
    lat = p.node_lat[np.arange(n), a]  # [M, N]
    if len(p.pair_u):
        fused = ((a[:, p.pair_u] == p.pair_t) & (a[:, p.pair_v] == p.pair_t)
                 & (lev[:, p.pair_u] == lev[:, p.pair_v]))
        fr, fk = np.nonzero(fused)
        np.subtract.at(lat, (fr, p.pair_v[fk]), p.pair_lat[fk])
    into, inputs, outs = _edges(p)
    launch = p.launch_lat
    fin = np.zeros((m, n))
    for v in range(n):
        av = a[:, v]
        ready = np.zeros(m)
        in_seg = np.zeros(m, bool)
        for u, ts in into[v]:
            au = a[:, u]
            same_seg = (au == av) & (lev[:, u] == lev[:, v])
            move = p.xfer_lat[ts[:, None], au[None, :], av[None, :]].sum(axis=0)
            np.maximum(ready, fin[:, u] + np.where(au != av, move, 0.0), out=ready)
            in_seg |= same_seg
        for t in inputs[v]:
            np.maximum(ready, p.xfer_lat[t, h, av], out=ready)
        fin[:, v] = ready + lat[:, v] + np.where(in_seg, 0.0, launch[av])
    bound = fin.max(axis=1) if n else np.zeros(m)
    for u, t in outs:
        np.maximum(bound, fin[:, u] + p.xfer_lat[t, a[:, u], h], out=bound)
    busy = totals(p, a, lev)["busy_s"]
    return np.maximum(bound, busy.max(axis=1, initial=0.0))


def exhaustive(problem: Problem) -> tuple[np.ndarray, int, int]:
    """(the assignment of least makespan, assignments bounded, schedules built); capacity respected."""
    p = problem
    blocks, bounds = [], []
    for block in assignments(p):
        if p.has_capacity:
            block = block[[not p.capacity_violations(x) for x in block]]
            if not len(block):
                continue
        blocks.append(block)
        bounds.append(assignment_bounds(p, block))
    if not blocks:
        from dispatch.partition.milp import capacity_error

        raise capacity_error(p)
    every = np.concatenate(blocks)
    lb = np.concatenate(bounds)
    order = np.argsort(lb, kind="stable")
    best, best_v, built = None, np.inf, 0
    for i in order.tolist():
        if lb[i] >= best_v * (1 - 1e-12):
            break
        v = build_plan(p, every[i], "exhaustive").makespan_s
        built += 1
        if v < best_v:
            best, best_v = every[i], v
    assert best is not None
    return best.copy(), len(every), built


def fused_latency(p: Problem) -> np.ndarray:
    """[N, T] node latency less every fusion saving it could get (a lower bound on its share of a segment)."""
    lat = np.where(p.supported, p.node_lat, np.inf)
    np.subtract.at(lat, (p.pair_v, p.pair_t), p.pair_lat)
    return np.maximum(lat, 0.0)


def path_time(p: Problem, path: np.ndarray, lat: np.ndarray,
              into: list[list[tuple[int, np.ndarray]]] | None = None) -> float:
    """The least time any assignment needs for the nodes of `path` one after another: each node on its
    target, a launch for every run of a target, and the tensors between consecutive nodes on different
    targets moved over the link (they share it, so their times add). Dynamic programming over targets."""
    t = p.num_targets
    into = _edges(p)[0] if into is None else into
    launch = p.launch_lat[:t]
    best = lat[path[0]] + launch
    for u, v in zip(path[:-1].tolist(), path[1:].tolist(), strict=True):
        tensors = next(ts for w, ts in into[v] if w == u)  # what u hands to v
        move = p.xfer_lat[tensors][:, :t, :t].sum(axis=0) + launch[None, :]  # [from, to]
        np.fill_diagonal(move, 0.0)
        best = (best[:, None] + move).min(axis=0) + lat[v]
    return float(best.min())


def work_bound(problem: Problem, lat: np.ndarray) -> float:
    """Each target runs its nodes one after another: the makespan is at least the least T such that the
    nodes, split fractionally between the targets that can run them, give every target at most T of work
    (its launch included when some node can run nowhere else). A linear program (HiGHS)."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_array

    p = problem
    n, t = p.num_nodes, p.num_targets
    sup = p.supported
    vv, jj = np.nonzero(sup)
    nx = len(vv)
    forced = (sup.sum(axis=1) == 1)[:, None] & sup
    fixed = np.where(forced.any(axis=0), p.launch_lat[:t], 0.0)
    # variables: x (fraction of node v on target j, where supported), then T; minimise T
    c = np.zeros(nx + 1)
    c[-1] = 1.0
    rows = np.concatenate([jj, np.arange(t)])
    cols = np.concatenate([np.arange(nx), np.full(t, nx)])
    vals = np.concatenate([lat[vv, jj], -np.ones(t)])
    a_ub = csr_array((vals, (rows, cols)), shape=(t, nx + 1))
    a_eq = csr_array((np.ones(nx), (vv, np.arange(nx))), shape=(n, nx + 1))
    res = linprog(c, A_ub=a_ub, b_ub=-fixed, A_eq=a_eq, b_eq=np.ones(n), bounds=(0, None), method="highs")
    return float(res.fun) if res.status == 0 else 0.0


def global_bound(problem: Problem, paths: list[np.ndarray]) -> float:
    """max(the least time of each path given and of the heaviest path, the work bound)."""
    p = problem
    lat = fused_latency(p)
    cheap = lat.min(axis=1)
    finish = cheap.copy()  # the path of largest cheapest latency
    came = np.full(p.num_nodes, -1)
    for v, ps in enumerate(p.preds):
        if ps:
            u = max(ps, key=lambda x: finish[x])
            finish[v] += finish[u]
            came[v] = u
    v = int(np.argmax(finish))
    heavy = [v]
    while came[v] >= 0:
        v = int(came[v])
        heavy.append(v)
    launch = float(p.launch_lat[:p.num_targets].min())
    bound = max(float(cheap.sum()) / p.num_targets + launch, work_bound(p, lat))
    into = _edges(p)[0]
    distinct = {x.tobytes(): x for x in [np.array(heavy[::-1], np.int64), *paths]}
    for path in distinct.values():
        bound = max(bound, path_time(p, path, lat, into))
    return bound

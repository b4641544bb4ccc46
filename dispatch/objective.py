"""The one objective: the predicted latency and energy of an assignment, as the plan prints them.

`dispatch.plan.build_plan` computes a plan's figures with `totals` and the partitioner minimises the same
function, so "optimal" means optimal for the printed figures. For an assignment a (a target per node):

* segments: the groups of nodes with one (level, target), levels from `segment_levels` (convex, executable
  in (level, target) order);
* L (latency, sequential) = sum of node latencies on their targets
                          - the saving of every fusion pair whose two nodes share a segment on its target
                          + one launch (segment overhead) per segment of its target
                          + one transfer per (tensor, destination end other than its source);
* busy_j = the latency of target j's segments (its nodes, less fusion savings, plus its launches);
* E (energy per inference) = the same sums in energy
                          + for every target holding at least one node, idle_w · (L - busy_j): its static
                            power while other targets work or data crosses a link. A target holding no node
                            is taken to be powered off. Each target's own energy model already counts its
                            static power while it is busy, so E >= sum over used targets of idle_w · L.

Makespan (targets overlapping) is the list schedule of dispatch.plan over the same segments and transfers.
See docs/partitioning.md for the reasoning and for what the partitioner proves about each objective.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator

import numpy as np

from dispatch.cost import Cost
from dispatch.problem import Problem

__all__ = ["segment_levels", "segment_levels_batch", "totals", "evaluate", "evaluate_batch",
           "objective_of", "assignments", "count_assignments"]


def segment_levels(problem: Problem, assign: np.ndarray) -> np.ndarray:
    """A level per node; the segments are the groups of nodes with one (level, target).

    Levels as soon as possible, level(v) = max over predecessors u of level(u) + [target(u) != target(v)];
    then, last node first, each node moves as late as its successors allow into a later level that already
    holds a segment of its target (fewer, larger segments). Along any path levels never decrease and rise at
    every change of target, so a path that leaves a segment cannot come back to it: segments are convex.
    Nodes of one level on different targets are independent, so segments in (level, target) order are an
    executable order. O(V + E).
    """
    a = np.asarray(assign, np.int64).tolist()
    n = len(a)
    if n == 0:
        return np.zeros(0, np.int64)
    preds, succs = problem.preds, problem.succs
    lev = [0] * n
    for v in range(n):  # as soon as possible (graph.nodes is a topological order)
        av, m = a[v], 0
        for u in preds[v]:
            x = lev[u] + (a[u] != av)
            if x > m:
                m = x
        lev[v] = m
    top = max(lev)
    count: dict[tuple[int, int], int] = {}
    for v in range(n):
        count[(lev[v], a[v])] = count.get((lev[v], a[v]), 0) + 1
    levels_of: dict[int, list[int]] = {}
    for lv, t in sorted(count):
        levels_of.setdefault(t, []).append(lv)
    for v in range(n - 1, -1, -1):  # as late as successors allow, into an existing segment of the target
        av, hi = a[v], top
        for w in succs[v]:
            x = lev[w] - (a[w] != av)
            if x < hi:
                hi = x
        if hi <= lev[v]:
            continue
        lst = levels_of[av]
        new = lst[bisect.bisect_right(lst, hi) - 1]
        if new > lev[v]:
            old = (lev[v], av)
            count[old] -= 1
            if count[old] == 0:
                lst.remove(lev[v])
            count[(new, av)] += 1
            lev[v] = new
    return np.array(lev, np.int64)


def segment_levels_batch(problem: Problem, assigns: np.ndarray) -> np.ndarray:
    """`segment_levels` of many assignments at once: [M, N] -> [M, N] (the same levels, row by row)."""
    a = np.asarray(assigns, np.int64)
    m, n = a.shape
    lev = np.zeros((m, n), np.int64)
    if n == 0 or m == 0:
        return lev
    preds, succs = problem.preds, problem.succs
    for v in range(n):
        for u in preds[v]:
            np.maximum(lev[:, v], lev[:, u] + (a[:, u] != a[:, v]), out=lev[:, v])
    t = problem.num_targets
    n_lev = int(lev.max()) + 1
    rows = np.arange(m)
    cnt = np.zeros((m, n_lev, t), np.int32)
    np.add.at(cnt, (np.repeat(rows, n), lev.ravel(), a.ravel()), 1)
    top = lev.max(axis=1)
    levels = np.arange(n_lev)
    for v in range(n - 1, -1, -1):
        if not succs[v]:
            hi = top.copy()
        else:
            hi = np.min(np.stack([lev[:, w] - (a[:, w] != a[:, v]) for w in succs[v]]), axis=0)
            np.minimum(hi, top, out=hi)
        cand = np.flatnonzero(hi > lev[:, v])
        if not cand.size:
            continue
        av = a[cand, v]
        occ = (cnt[cand, :, av] > 0) & (levels[None, :] <= hi[cand, None])
        new = n_lev - 1 - np.argmax(occ[:, ::-1], axis=1)
        move = new > lev[cand, v]
        r, old, nw, tv = cand[move], lev[cand[move], v], new[move], av[move]
        cnt[r, old, tv] -= 1
        cnt[r, nw, tv] += 1
        lev[r, v] = nw
    return lev


def totals(problem: Problem, assigns: np.ndarray, levels: np.ndarray) -> dict[str, np.ndarray]:
    """The objective's figures of assignments [M, N] with their segment levels [M, N].

    Returns arrays over M: latency_s, energy_j, idle_j (the static power of waiting targets, part of
    energy_j), segments; and [M, T]: busy_s (per target), segments_per_target."""
    p = problem
    a_all = np.asarray(assigns, np.int64)
    lev_all = np.asarray(levels, np.int64)
    m_all, n = a_all.shape
    t, k, e = p.num_targets, p.num_ends, len(p.t_prod)
    out = {name: np.zeros(m_all) for name in ("latency_s", "energy_j", "idle_j", "segments")}
    out["busy_s"] = np.zeros((m_all, t))
    out["segments_per_target"] = np.zeros((m_all, t), np.int64)
    n_lev = int(lev_all.max()) + 1 if lev_all.size else 1
    step = max(1, (1 << 22) // max(1, e * k + n + n_lev * t))
    cols = np.arange(n)
    trange = np.arange(e)
    onehot_t = np.arange(t)
    for lo in range(0, m_all, step):
        a, lev = a_all[lo:lo + step], lev_all[lo:lo + step]
        m = a.shape[0]
        rows = np.arange(m)
        nl, ne = p.node_lat[cols, a], p.node_en[cols, a]
        on = a[:, :, None] == onehot_t[None, None, :]  # [m, N, T]
        busy = np.einsum("mn,mnt->mt", nl, on)
        en = ne.sum(axis=1)
        # segments: the distinct (level, target) pairs
        occ = np.zeros((m, n_lev * t), bool)
        occ[np.repeat(rows, n), (lev * t + a).ravel()] = True
        seg_t = occ.reshape(m, n_lev, t).sum(axis=1)
        busy += seg_t * p.launch_lat[None, :t]
        en += seg_t @ p.launch_en[:t]
        # fusion pairs in one segment on their target
        if len(p.pair_u):
            pu, pv, pt = p.pair_u, p.pair_v, p.pair_t
            fused = (a[:, pu] == pt) & (a[:, pv] == pt) & (lev[:, pu] == lev[:, pv])
            fr, fk = np.nonzero(fused)
            np.subtract.at(busy, (fr, pt[fk]), p.pair_lat[fk])
            en -= fused @ p.pair_en
        # transfers: once per (tensor, destination end other than the source)
        src = p.source_ends(a)
        present = np.zeros((m, e, k), bool)
        present[rows[:, None], p.cons_tensor[None, :], a[:, p.cons_node]] = True
        present[rows[:, None], trange[None, :], src] = False
        xl = (p.cond_lat[trange[None, :], src] * present).sum(axis=(1, 2))
        xl += p.out_lat[trange, src].sum(axis=1)
        xe = (p.cond_en[trange[None, :], src] * present).sum(axis=(1, 2))
        xe += p.out_en[trange, src].sum(axis=1)
        lat = busy.sum(axis=1) + xl
        en += xe
        used = on.any(axis=1)
        idle = (used * p.idle_w[None, :] * (lat[:, None] - busy)).sum(axis=1)
        sl = slice(lo, lo + m)
        out["latency_s"][sl] = lat
        out["energy_j"][sl] = en + idle
        out["idle_j"][sl] = idle
        out["segments"][sl] = seg_t.sum(axis=1)
        out["busy_s"][sl] = busy
        out["segments_per_target"][sl] = seg_t
    return out


def evaluate(problem: Problem, assign: np.ndarray) -> Cost:
    """Predicted (sequential latency, energy per inference) of one assignment: what build_plan prints."""
    a = np.asarray(assign, np.int64)
    tot = totals(problem, a[None, :], segment_levels(problem, a)[None, :])
    return Cost(float(tot["latency_s"][0]), float(tot["energy_j"][0]))


def evaluate_batch(problem: Problem, assigns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latency [M], energy [M]) of many assignments [M, N], as `evaluate` gives them one by one."""
    a = np.asarray(assigns, np.int64)
    tot = totals(problem, a, segment_levels_batch(problem, a))
    return tot["latency_s"], tot["energy_j"]


def objective_of(objective: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(latency, energy) -> the scalar minimised for an additive objective or edp."""
    if objective == "latency":
        return lambda lat, en: lat
    if objective == "energy":
        return lambda lat, en: en
    if objective == "edp":
        return lambda lat, en: lat * en
    return lambda lat, en: np.full(np.shape(lat), np.nan)  # makespan: not a function of these two


def count_assignments(problem: Problem) -> float:
    """How many assignments place every node on a target that supports it (inf beyond a float's range)."""
    log2 = float(np.log2(problem.supported.sum(axis=1).astype(float)).sum())
    return float(2.0 ** log2) if log2 < 1000 else float("inf")


def assignments(problem: Problem, chunk: int = 1 << 14) -> Iterator[np.ndarray]:
    """Every supported assignment, in chunks [m, N] (call only when count_assignments is small)."""
    choices = [np.flatnonzero(row) for row in problem.supported]
    n = len(choices)
    if n == 0:
        yield np.zeros((1, 0), np.int64)
        return
    # The first nodes vary over an outer product built in NumPy; the last ones in Python.
    inner = 0
    size = 1
    while inner < n and size * len(choices[n - 1 - inner]) <= chunk:
        size *= len(choices[n - 1 - inner])
        inner += 1
    tail = choices[n - inner:]
    block = np.zeros((size, inner), np.int64)
    rest = np.arange(size)
    for j in range(inner - 1, -1, -1):  # mixed-radix digits, the last node fastest
        block[:, j] = tail[j][rest % len(tail[j])]
        rest //= len(tail[j])
    for head in itertools.product(*choices[:n - inner]):
        out = np.empty((len(block), n), np.int64)
        out[:, :n - inner] = np.asarray(head, np.int64)[None, :]
        out[:, n - inner:] = block
        yield out

"""Two targets: the exact s–t minimum cut of Stone (IEEE TSE, 1977) for the cut part of the objective.

`cut_solve(problem, node, cond, out, pair, ends)` minimises, over assignments of every node to one of two
targets ends = (b0, b1),

    G(a) = sum node[v, a_v] + sum out[t, src(t)] + sum over (tensor, destination target) of cond[t, src, dst]
           - sum over fusion pairs (u, v, t) with a_u = a_v = t of pair[k]

(the objective less launches and idle power, which the caller handles; a fusion saving counted whenever
the pair shares a target, which is at least what the plan gives, so G bounds it from below).
Vertices: one per node, the source s (= b0) and the sink t (= b1), and auxiliary vertices for tensors with
several consumers. A node on the s side runs on b0. Edges (a cut edge is paid):

* s -> v with v's cost on b1 and v -> t with its cost on b0 (infinite where not allowed); both lowered by
  the smaller of the two, a constant. A graph output's transfer to the host, from the producer's target,
  is part of these costs.
* tensor from p with one consumer c: p -> c pays "p on b0, c on b1", c -> p pays "p on b1, c on b0".
* tensor from p with several consumers: an auxiliary x with p -> x (the b0 -> b1 cost) and x -> c infinite
  for every consumer c; an auxiliary y with c -> y infinite and y -> p (the b1 -> b0 cost). If any consumer
  is on the t side, x must be too, so p -> x is cut once: a tensor is paid once per destination target.
* graph inputs come from the host, a fixed end: its costs to reach b1 / b0 hang on s -> x and y -> t in the
  same way (or on the consumer's own unary edges when there is one consumer).
* optionally, a path of the graph with a launch cost per target: one launch per run of a target along it
  (a segment boundary wherever the path changes target), a lower bound on the plan's launches;
* a fusion pair (u, v) on b1 saving s: s off u's cost on b1 and an edge v -> u of s (paid when u is on b1
  and v on b0); on b0 symmetrically. Together: -s exactly when both are on the pair's target.

scipy's maximum_flow needs int32 capacities, so costs are rounded down to multiples of q = U / 2**29, where
U bounds the optimal cut from above (the cheapest of a few feasible assignments). Rounded down, every cut
costs at most its true cost, so the flow value is a true lower bound on min G; the returned assignment is
optimal for the rounded costs, within q per edge it cuts of the true optimum, and its G is computed exactly.
A second max flow through the capacities the first flow leaves, in units of (G - bound) / 2**29, raises
the bound to within a negligible rounding of the true minimum.
Capacities are capped at 2**30 - 1 (cutting such an edge costs more than U, so it is never cut), which
keeps every flow and residual inside int32.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from dispatch.problem import Problem

__all__ = ["cut_solve", "relaxed_value", "path_runs", "CUT_UNITS", "Path"]

Path = tuple[np.ndarray, np.ndarray]  # (nodes along a path of the graph, launch cost per target)

CUT_UNITS = 1 << 29  # integer units in the upper bound U
_CAP = (1 << 30) - 1  # "infinite" capacity


def path_runs(path: Path | None, assigns: np.ndarray) -> np.ndarray:
    """sum over targets b of lam[b] · (runs of b along the path) for assignments [M, N] (0 without a path)."""
    a = np.asarray(assigns, np.int64)
    if path is None or not len(path[0]):
        return np.zeros(a.shape[0])
    nodes, lam = path
    on = a[:, nodes]
    val = lam[on[:, 0]].astype(float)
    if len(nodes) > 1:
        val += ((on[:, 1:] != on[:, :-1]) * lam[on[:, 1:]]).sum(axis=1)
    return val


def relaxed_value(problem: Problem, node: np.ndarray, cond: np.ndarray, out: np.ndarray, pair: np.ndarray,
                  assigns: np.ndarray, path: Path | None = None) -> np.ndarray:
    """G of assignments [M, N] (see the module doc): node, output and transfer terms, fusion by target, and
    the launches of the runs along `path` when one is given."""
    p = problem
    a = np.asarray(assigns, np.int64)
    m, n = a.shape
    e, k = len(p.t_prod), p.num_ends
    trange = np.arange(e)
    val = node[np.arange(n), a].sum(axis=1)
    src = p.source_ends(a)
    val += out[trange, src].sum(axis=1)
    present = np.zeros((m, e, k), bool)
    present[np.arange(m)[:, None], p.cons_tensor[None, :], a[:, p.cons_node]] = True
    present[np.arange(m)[:, None], trange[None, :], src] = False
    val += (cond[trange[None, :], src] * present).sum(axis=(1, 2))
    if len(p.pair_u):
        same = (a[:, p.pair_u] == p.pair_t) & (a[:, p.pair_v] == p.pair_t)
        val -= same @ pair
    return val + path_runs(path, a)


def cut_solve(problem: Problem, node: np.ndarray, cond: np.ndarray, out: np.ndarray, pair: np.ndarray,
              ends: tuple[int, int] = (0, 1),
              path: Path | None = None) -> tuple[np.ndarray, float, float, str]:
    """(assignment, proven lower bound on min G, G of the assignment, note) over targets `ends`.

    node [N, T] is inf where a node may not go; only the columns `ends` are used. `path` = (nodes along a
    path of the graph, lam [T]) adds lam[b] for every run of target b along the path: the first node's
    target as a unary cost, each change of target u -> v as an edge (u -> v pays lam[b1], v -> u lam[b0])."""
    p = problem
    b0, b1 = ends
    n = p.num_nodes
    real = p.t_prod >= 0
    unary = node[:, [b0, b1]].copy()  # [N, 2]: cost of the node on b0 / b1
    for j, b in enumerate((b0, b1)):
        unary[:, j] += np.bincount(p.t_prod[real], weights=out[real, b], minlength=n)
    ncons = np.diff(p.cons_ptr)
    first = p.cons_node[np.minimum(p.cons_ptr[:-1], max(len(p.cons_node) - 1, 0))] if len(p.cons_node) else \
        np.zeros(len(ncons), np.int64)
    h = p.host
    to1, to0 = cond[:, h, b1], cond[:, h, b0]  # a graph input reaching b1 / b0 (0 when it is the host)
    one_in = ~real & (ncons == 1)
    np.add.at(unary[:, 1], first[one_in], to1[one_in])
    np.add.at(unary[:, 0], first[one_in], to0[one_in])

    s, t = n, n + 1
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    caps: list[np.ndarray] = []

    def add(r: np.ndarray | int, c: np.ndarray | int, w: np.ndarray | float) -> None:
        r, c, w = np.broadcast_arrays(np.asarray(r, np.int64), np.asarray(c, np.int64), np.asarray(w, float))
        rows.append(r.ravel())
        cols.append(c.ravel())
        caps.append(w.ravel())

    one = real & (ncons == 1)
    add(p.t_prod[one], first[one], cond[one, b0, b1])
    add(first[one], p.t_prod[one], cond[one, b1, b0])
    many = np.flatnonzero(ncons > 1)
    x_id = n + 2 + 2 * np.arange(len(many))
    y_id = x_id + 1
    pos = np.full(len(p.t_prod), -1)
    pos[many] = np.arange(len(many))
    e_pos = pos[p.cons_tensor]
    sel = e_pos >= 0
    add(x_id[e_pos[sel]], p.cons_node[sel], np.inf)
    add(p.cons_node[sel], y_id[e_pos[sel]], np.inf)
    m_real = real[many]
    add(p.t_prod[many[m_real]], x_id[m_real], cond[many[m_real], b0, b1])
    add(y_id[m_real], p.t_prod[many[m_real]], cond[many[m_real], b1, b0])
    add(s, x_id[~m_real], to1[many[~m_real]])
    add(y_id[~m_real], t, to0[many[~m_real]])
    for j, b in enumerate((b0, b1)):  # fusion pairs on b
        k = np.flatnonzero((p.pair_t == b) & (pair > 0))
        u, v = p.pair_u[k], p.pair_v[k]
        np.subtract.at(unary[:, j], u, pair[k])
        if j == 1:
            add(v, u, pair[k])
        else:
            add(u, v, pair[k])
    if path is not None and len(path[0]):
        nodes, lam = path
        unary[nodes[0], 0] += lam[b0]
        unary[nodes[0], 1] += lam[b1]
        add(nodes[:-1], nodes[1:], lam[b1])
        add(nodes[1:], nodes[:-1], lam[b0])
    low = unary.min(axis=1)
    const = float(low.sum())
    add(s, np.arange(n), unary[:, 1] - low)
    add(np.arange(n), t, unary[:, 0] - low)

    cands = [np.argmin(unary, axis=1)]
    for j in (0, 1):
        if np.isfinite(unary[:, j]).all():
            cands.append(np.full(n, j))
    cands_t = [np.where(c == 0, b0, b1).astype(np.int64) for c in cands]
    vals = relaxed_value(p, node, cond, out, pair, np.stack(cands_t), path)
    best = int(np.argmin(vals))
    upper = float(vals[best]) - const
    if not upper > 1e-12 * max(abs(const), 1e-300):
        return cands_t[best], float(vals[best]), float(vals[best]), \
            "min cut: the unary optimum pays no transfer"
    q = upper / CUT_UNITS
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(caps)
    units = np.where(np.isfinite(w), np.floor(np.minimum(w, 2.0 * _CAP * q) / q), _CAP).astype(np.int64)
    keep = units > 0
    n_vert = n + 2 + 2 * len(many)
    g = sp.csr_array((units[keep], (r[keep], c[keep])), shape=(n_vert, n_vert))  # duplicates summed (int64)
    g.data = np.minimum(g.data, _CAP).astype(np.int32)
    g = g.astype(np.int32)
    res = maximum_flow(g, s, t, method="dinic")
    resid = (g - res.flow).tocsr()
    resid.data = (resid.data > 0).astype(np.int32)
    resid.eliminate_zeros()
    side = breadth_first_order(resid, s, directed=True, return_predecessors=False)
    assign = np.full(n, b1, np.int64)
    assign[side[side < n]] = b0
    value = float(relaxed_value(p, node, cond, out, pair, assign[None, :], path)[0])
    flow = float(res.flow_value) * q
    rest = value - const - flow
    if rest > 0:
        # The flow found is feasible for the true capacities; push more through what they leave, in units
        # fitted to the remaining difference, so the bound is not limited by the first rounding.
        real = np.where(np.isfinite(w), np.minimum(w, 2.0 * _CAP * q), 2.0 * _CAP * q)
        cap = sp.csr_array((real, (r, c)), shape=(n_vert, n_vert))
        left = (cap - res.flow.astype(float) * q).tocsr()
        q2 = rest / CUT_UNITS
        left.data = np.minimum(np.floor(np.maximum(left.data, 0.0) / q2), _CAP)
        left = left.astype(np.int32)
        left.eliminate_zeros()
        flow += float(maximum_flow(left, s, t, method="dinic").flow_value) * q2
    bound = min(const + flow, value)
    note = f"min cut (scipy maximum_flow, dinic) on {g.nnz} edges"
    return assign, bound, value, note

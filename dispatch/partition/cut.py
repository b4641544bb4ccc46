"""Two targets, no capacity limit: the exact s–t minimum cut of Stone (IEEE TSE, 1977).

Vertices: one per node, the source s (= target 0) and the sink t (= target 1), and auxiliary vertices for
tensors with several consumers. A node on the s side runs on target 0. Edges (a cut edge is paid):

* s -> v with v's cost on target 1 and v -> t with its cost on target 0 (infinite where unsupported);
  both lowered by the smaller of the two, a constant. A graph output's transfer to the host, from the
  producer's target, is part of these costs.
* tensor from p with one consumer c: p -> c pays "p on 0, c on 1", c -> p pays "p on 1, c on 0".
* tensor from p with several consumers: the standard construction that pays a tensor once per destination
  target however many consumers sit there: an auxiliary x with p -> x (the 0 -> 1 cost) and x -> c
  infinite for every consumer c; an auxiliary y with c -> y infinite and y -> p (the 1 -> 0 cost). If any
  consumer is on the t side, x must be too, so p -> x is cut once.
* graph inputs come from the host, a fixed end: its costs to reach target 1 / target 0 hang on s -> x and
  y -> t in the same way (or on the consumer's own unary edges when there is one consumer).

The costs paid to a destination are the partition model's: transfer plus one launch of the destination
target. scipy's maximum_flow needs int32 capacities, so costs are rounded to multiples of
q = U / 2**29, where U bounds the optimal cut from above (the cheapest of a few feasible assignments).
The cut is exact for the rounded costs; against the real ones it is off by at most q/2 per cut edge.
Capacities are capped at 2**30 - 1 (cutting such an edge costs more than U, so it is never cut), which keeps
every flow and residual inside int32.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from dispatch.problem import Assignment, Problem

__all__ = ["min_cut", "CUT_UNITS"]

CUT_UNITS = 1 << 29  # integer units in the upper bound U
_CAP = (1 << 30) - 1  # "infinite" capacity


def _candidates(problem: Problem, unary: np.ndarray) -> list[np.ndarray]:
    """Feasible assignments whose cost bounds the optimum: unary argmin, all on 0, all on 1."""
    out = [np.argmin(unary, axis=1).astype(np.int64)]
    for j in (0, 1):
        if problem.supported[:, j].all():
            out.append(np.full(problem.num_nodes, j, np.int64))
    return out


def min_cut(problem: Problem, w_lat: float, w_en: float) -> Assignment:
    """The assignment minimising w_lat·latency + w_en·energy of the partition model, for two targets."""
    p = problem
    assert p.num_targets == 2 and not p.has_capacity
    n = p.num_nodes
    node, cond, out = p.scalar(w_lat, w_en)
    real = p.t_prod >= 0
    unary = node.copy()  # [N, 2]: cost of the node on target 0 / 1
    for j in (0, 1):
        unary[:, j] += np.bincount(p.t_prod[real], weights=out[real, j], minlength=n)
    ncons = np.diff(p.cons_ptr)
    first = p.cons_node[np.minimum(p.cons_ptr[:-1], max(len(p.cons_node) - 1, 0))] if len(p.cons_node) else \
        np.zeros(len(ncons), np.int64)
    h = p.host
    to1, to0 = cond[:, h, 1], cond[:, h, 0]  # a graph input reaching target 1 / 0 (0 when it is the host)
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
    add(p.t_prod[one], first[one], cond[one, 0, 1])
    add(first[one], p.t_prod[one], cond[one, 1, 0])
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
    add(p.t_prod[many[m_real]], x_id[m_real], cond[many[m_real], 0, 1])
    add(y_id[m_real], p.t_prod[many[m_real]], cond[many[m_real], 1, 0])
    add(s, x_id[~m_real], to1[many[~m_real]])
    add(y_id[~m_real], t, to0[many[~m_real]])
    low = unary.min(axis=1)
    const = float(low.sum())
    add(s, np.arange(n), unary[:, 1] - low)
    add(np.arange(n), t, unary[:, 0] - low)

    cands = _candidates(p, unary)
    lat, en = p.evaluate_batch(np.stack(cands))
    vals = w_lat * lat + w_en * en
    best = int(np.argmin(vals))
    upper = float(vals[best]) - const
    if not upper > 1e-12 * max(abs(const), 1e-300):
        return Assignment(cands[best], optimal=True,
                          notes=("min cut: the unary optimum has no transfers to pay",))
    q = upper / CUT_UNITS
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(caps)
    units = np.where(np.isfinite(w), np.rint(np.minimum(w, 2.0 * _CAP * q) / q), _CAP).astype(np.int64)
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
    assign = np.ones(n, np.int64)
    src_side = side[side < n]
    assign[src_side] = 0
    note = (f"min cut (scipy maximum_flow, dinic) on {g.nnz} edges with costs in units of q = {q:.3g} "
            f"(objective units): exact up to q/2 per cut edge")
    return Assignment(assign, optimal=True, notes=(note,))

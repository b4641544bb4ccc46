"""Three or more targets, or capacity limits: an integer program solved by HiGHS (scipy.optimize.milp).

It minimises G, the objective less launches and idle power (which the caller handles), with a fusion saving
counted whenever the pair shares its target (see dispatch.partition.cut, which minimises the same G):

Variables
  x[v,b] in {0,1}  node v runs on target b (only where b supports v and the caller allows it)
  f[k] in [0,1]    fusion pair k (u, v on target t) counted: f[k] <= x[u,t], f[k] <= x[v,t]
  z[t,a,b] in [0,1]  tensor t, produced on end a, is needed on target b != a (only where t's producer
                     can run on a, or a is the host for a graph input, and some consumer of t can run on b)
Objective
  sum node[v,b]·x[v,b] + sum out[t,a]·x[prod(t),a] + sum cond[t,a,b]·z[t,a,b] - sum pair[k]·f[k]
  (node costs; a graph output's transfer to the host; a transfer per destination target; fusion)
Constraints
  sum_b x[v,b] = 1                                          every node placed once
  x[c,b] - x[prod(t),b] - sum_{a != b} z[t,a,b] <= 0        a consumer c of t on b needs t there
                                                           (for a graph input: x[c,b] - z[t,host,b] <= 0)
  z[t,a,b] - x[prod(t),a] <= 0                             t can only come from where it was produced
  sum_v weight_bytes[v,b]·x[v,b] <= capacity_b              on-chip weight capacity, where declared
With x integral, z = 1 exactly when t's producer is on a and a consumer is on b (costs are non-negative), so
each tensor is paid once per destination target. z may stay continuous.

The LP relaxation is solved first (dual simplex): on dataflow graphs it is often integral in x, and then it
is the integer optimum (the relaxation's value bounds the integer program from below). Otherwise, or if
rounding breaks a capacity, scipy.optimize.milp solves the integer program in the time left; its dual bound
is the proven lower bound when a time limit stops it.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from dispatch.errors import DispatchError
from dispatch.partition.cut import relaxed_value
from dispatch.problem import Problem

__all__ = ["solve_milp", "capacity_error"]


def capacity_error(p: Problem) -> DispatchError:
    """One sentence for a problem whose weights cannot fit the capacities together."""
    only = p.supported.sum(axis=1) == 1
    for j in np.flatnonzero(np.isfinite(p.capacity)):
        forced = only & p.supported[:, j]
        need = int(p.weight_bytes[forced, j].sum())
        if need > p.capacity[j]:
            big = int(np.flatnonzero(forced)[np.argmax(p.weight_bytes[forced, j])])
            return DispatchError(
                f"The nodes only {p.target_names[j]} can run need {need} bytes of weights, more than its "
                f"capacity ({int(p.capacity[j])} bytes), the largest being node '{p.node_names[big]}'; give "
                f"{p.target_names[j]} more memory or add a target that can run those nodes.")
    caps = ", ".join(f"{p.target_names[j]} {int(p.capacity[j])} bytes"
                     for j in np.flatnonzero(np.isfinite(p.capacity)))
    return DispatchError(f"No placement fits the weights into the targets' capacities ({caps}); add a target "
                         "without a capacity limit or raise the capacities.")


def solve_milp(problem: Problem, node: np.ndarray, cond: np.ndarray, out: np.ndarray, pair: np.ndarray, *,
               time_limit_s: float = 20.0, mip_rel_gap: float = 1e-6,
               relax_first: bool = True) -> tuple[np.ndarray, float, float, str] | None:
    """(assignment, proven lower bound on min G, G of it, note); None when no solution came in time.

    node [N, T] is inf where a node may not go. relax_first=False goes straight to the integer program."""
    p = problem
    n, t, k, h = p.num_nodes, p.num_targets, p.num_ends, p.host
    e = len(p.t_prod)
    sup = np.isfinite(node)
    real = p.t_prod >= 0
    nx = int(sup.sum())
    xi = np.full((n, t), -1, np.int64)
    xi[sup] = np.arange(nx)
    cx = np.where(sup, node, 0.0)
    for a in range(t):
        cx[:, a] += np.bincount(p.t_prod[real], weights=out[real, a], minlength=n)

    # z[t, a, b]: a over ends, b over targets.
    any_sup = np.zeros((e, t), np.int64)
    np.add.at(any_sup, p.cons_tensor, sup[p.cons_node].astype(np.int64))
    src_ok = np.zeros((e, k), bool)
    src_ok[real, :t] = sup[p.t_prod[real]]
    src_ok[~real, h] = True
    zmask = src_ok[:, :, None] & (any_sup > 0)[:, None, :]
    zmask[:, np.arange(t), np.arange(t)] = False
    nz = int(zmask.sum())
    zi = np.full((e, k, t), -1, np.int64)
    zi[zmask] = nx + np.arange(nz)
    pk = np.flatnonzero((pair > 0) & sup[p.pair_u, p.pair_t] & sup[p.pair_v, p.pair_t])
    nf = len(pk)
    fi = nx + nz + np.arange(nf)
    c = np.concatenate([cx[sup], cond[:, :, :t][zmask], -pair[pk]])
    scale = 1e3 / max(float(np.max(np.abs(c), initial=0.0)), 1e-300)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    lo: list[np.ndarray] = []
    hi: list[np.ndarray] = []
    n_rows = 0

    def block(r: np.ndarray, cc: np.ndarray, v: np.ndarray | float) -> None:
        r, cc, v = np.broadcast_arrays(r, cc, np.asarray(v, float))
        rows.append(r.ravel())
        cols.append(cc.ravel())
        vals.append(v.ravel())

    # every node placed once
    vv, bb = np.nonzero(sup)
    block(n_rows + vv, xi[vv, bb], 1.0)
    lo.append(np.ones(n))
    hi.append(np.ones(n))
    n_rows += n
    # a consumer on b needs the tensor on b
    ten, con = p.cons_tensor, p.cons_node
    prod = p.t_prod[ten]
    for b in range(t):
        m = sup[con, b] & ~((prod < 0) & (h == b))
        ks = np.flatnonzero(m)
        r = n_rows + np.arange(len(ks))
        block(r, xi[con[ks], b], 1.0)
        from_b = (prod[ks] >= 0) & sup[np.maximum(prod[ks], 0), b]
        block(r[from_b], xi[prod[ks][from_b], b], -1.0)
        for a in range(k):
            if a == b:
                continue
            zz = zi[ten[ks], a, b]
            has = zz >= 0
            block(r[has], zz[has], -1.0)
        lo.append(np.full(len(ks), -np.inf))
        hi.append(np.zeros(len(ks)))
        n_rows += len(ks)
    # a tensor comes only from where it was produced
    tz, az, bz = np.nonzero(zmask & real[:, None, None])
    r = n_rows + np.arange(len(tz))
    block(r, zi[tz, az, bz], 1.0)
    block(r, xi[p.t_prod[tz], az], -1.0)
    lo.append(np.full(len(tz), -np.inf))
    hi.append(np.zeros(len(tz)))
    n_rows += len(tz)
    # a fusion pair counts only where both nodes are on its target
    for end in (p.pair_u, p.pair_v):
        r = n_rows + np.arange(nf)
        block(r, fi, 1.0)
        block(r, xi[end[pk], p.pair_t[pk]], -1.0)
        lo.append(np.full(nf, -np.inf))
        hi.append(np.zeros(nf))
        n_rows += nf
    # weight capacity (rows scaled by the capacity)
    for b in np.flatnonzero(np.isfinite(p.capacity)):
        vs = np.flatnonzero(sup[:, b])
        block(np.full(len(vs), n_rows), xi[vs, b], p.weight_bytes[vs, b] / p.capacity[b])
        lo.append(np.array([-np.inf]))
        hi.append(np.array([1.0]))
        n_rows += 1

    a_mat = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_rows, nx + nz + nf))
    lo_all, hi_all = np.concatenate(lo), np.concatenate(hi)
    size = f"{nx} binary + {nz + nf} continuous variables, {n_rows} rows"
    start = time.perf_counter()

    # The LP relaxation first (see the module doc): it skips HiGHS' MIP presolve and heuristics, which
    # measured about 4x the LP's own time on 20k-node graphs.
    eq = lo_all == hi_all
    lp = linprog(c * scale, A_ub=a_mat[~eq], b_ub=hi_all[~eq], A_eq=a_mat[eq], b_eq=hi_all[eq],
                 bounds=(0.0, 1.0), method="highs-ds",
                 options={"time_limit": float(time_limit_s), "presolve": True}) if relax_first else None
    if lp is not None and lp.status == 2:
        raise capacity_error(p)
    if lp is not None and lp.status == 0 and lp.x is not None:
        xs = lp.x[:nx]
        if np.abs(xs - np.rint(xs)).max(initial=0.0) <= 1e-6:
            assign = _assignment(p, sup, xs)
            if not p.capacity_violations(assign):
                value = float(relaxed_value(p, node, cond, out, pair, assign[None, :])[0])
                return assign, min(float(lp.fun) / scale, value), value, (
                    f"MILP ({size}): its LP relaxation (HiGHS dual simplex) has an integral optimum")
    left = max(float(time_limit_s) - (time.perf_counter() - start), 1.0)
    res = milp(c * scale, constraints=LinearConstraint(a_mat, lo_all, hi_all),
               integrality=np.concatenate([np.ones(nx), np.zeros(nz + nf)]), bounds=Bounds(0.0, 1.0),
               options={"time_limit": left, "mip_rel_gap": float(mip_rel_gap), "disp": False})
    if res.status == 2:
        raise capacity_error(p)
    if res.x is None:
        return None
    assign = _assignment(p, sup, res.x[:nx])
    value = float(relaxed_value(p, node, cond, out, pair, assign[None, :])[0])
    dual = getattr(res, "mip_dual_bound", None)
    if dual is None or not np.isfinite(dual):
        dual = -np.inf
    note = (f"MILP (HiGHS via scipy.optimize.milp): {size}; "
            + ("solved" if res.status == 0 else f"stopped by the {time_limit_s:g} s time limit"))
    return assign, min(float(dual) / scale, value), value, note


def _assignment(p: Problem, sup: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Target per node from the x part of a solution (the largest x of each node)."""
    xv = np.full((p.num_nodes, p.num_targets), -1.0)
    xv[sup] = xs
    return np.argmax(xv, axis=1).astype(np.int64)

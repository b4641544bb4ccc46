"""A plan: every node placed on a target, grouped into convex segments, with the transfers between them.

`build_plan(problem, assignment, strategy)` turns an assignment (a target per node) into a Plan:

* segments: the groups of nodes with one (level, target) (dispatch.objective.segment_levels): convex, and
  executable in (level, target) order. O(V + E).
* transfers: one per (tensor, destination target), the destination set being the targets of the tensor's
  consumers plus the host for graph outputs; graph inputs start on the host.
* predicted: latency (segments and transfers one after another) and energy per inference, computed by
  dispatch.objective.totals, the function the partitioner minimises: nodes, fusion savings for pairs in one
  segment, one launch per segment, transfers, and the static power of every target holding a node while it
  waits.
* makespan: a list schedule in plan order where each target and each link (src->dst) runs one thing at a
  time; segments of one level on different targets overlap. It never exceeds the sequential figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from dispatch.cost import Cost
from dispatch.objective import segment_levels, totals
from dispatch.problem import Assignment, Problem, no_gc

__all__ = ["Segment", "Transfer", "Slot", "Plan", "build_plan", "segment_levels", "assignment_array"]


@dataclass(frozen=True)
class Segment:
    """Consecutive work on one target that runs as one call: its nodes in topological order."""

    id: int
    target: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]  # tensors it reads that come from outside the segment (graph inputs, transfers)
    outputs: tuple[str, ...]  # tensors it produces that are used outside it (other segments, graph outputs)
    cost: Cost  # predicted: its nodes' costs less fusion savings inside it, plus the target's launch


@dataclass(frozen=True)
class Transfer:
    """A tensor moved from the target that produced it to a target that consumes it (paid once per pair)."""

    tensor: str
    src: str
    dst: str
    nbytes: int
    cost: Cost
    src_segment: int  # the segment producing it (-1: a graph input, produced on the host)
    dst_segment: int  # the first segment on dst that needs it


@dataclass(frozen=True)
class Slot:
    """One interval of the predicted schedule: a segment on its target or a transfer on its link."""

    kind: str  # "segment" | "transfer"
    ref: int  # segment id, or index into Plan.transfers
    resource: str  # target name, or "link:src->dst"
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Plan:
    """The partitioner's answer, with its predicted figures."""

    strategy: str
    objective: str
    assignment: Mapping[str, str]  # node name -> target name
    segments: tuple[Segment, ...]  # in an executable order
    transfers: tuple[Transfer, ...]
    predicted: Cost  # sequential latency; energy per inference including waiting targets' static power
    makespan_s: float  # when targets overlap on independent branches (list schedule)
    schedule: tuple[Slot, ...]
    lower_bound_s: float  # every node on its cheapest target, no transfers, no launches
    optimal: bool  # proven optimal for the printed objective (dispatch/objective.py)
    gap: float | None = None  # (objective - proven lower bound) / objective when not proven optimal
    notes: tuple[str, ...] = field(default_factory=tuple)
    idle_energy_j: float = 0.0  # part of predicted.energy_j: static power of targets waiting for others

    @property
    def transfer_bytes(self) -> int:
        return sum(t.nbytes for t in self.transfers)

    def objective_value(self) -> float:
        """The plan's printed objective: sequential latency, energy, their product, or the makespan."""
        if self.objective == "makespan":
            return self.makespan_s
        return self.predicted.objective(self.objective)


def assignment_array(problem: Problem, assignment: Mapping[str, str]) -> np.ndarray:
    """A plan's node -> target-name mapping as target indices aligned with the graph's nodes."""
    index = {name: j for j, name in enumerate(problem.target_names)}
    return np.fromiter((index[assignment[n]] for n in problem.node_names), np.int64, problem.num_nodes)


def _group(keys: np.ndarray, values: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """values split by integer key in [0, n_groups), each group in the order values come."""
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n_groups + 1))
    vs = values[order]
    return [vs[bounds[g]:bounds[g + 1]] for g in range(n_groups)]


def build_plan(problem: Problem, assignment: Assignment | np.ndarray, strategy: str) -> Plan:
    """Segments, transfers, predicted figures and schedule of an assignment (validated against support)."""
    with no_gc():
        return _build_plan(problem, assignment, strategy)


def _build_plan(problem: Problem, assignment: Assignment | np.ndarray, strategy: str) -> Plan:
    if not isinstance(assignment, Assignment):
        assignment = Assignment(np.asarray(assignment, np.int64))
    a = np.asarray(assignment.target, np.int64)
    problem.check_assignment(a)
    p = problem
    n, k, e = p.num_nodes, p.num_ends, len(p.t_prod)
    names, ends = p.target_names, p.end_names
    rows = np.arange(n)

    # -- segments ------------------------------------------------------------------------------------------
    lev = segment_levels(p, a)
    key = lev * p.num_targets + a
    uniq, seg_of = np.unique(key, return_inverse=True)  # sorted keys: (level, target) order
    seg_of = seg_of.astype(np.int64)
    n_seg = len(uniq)
    seg_target = (uniq % p.num_targets).astype(np.int64)
    nlat, nen = p.node_lat[rows, a].copy(), p.node_en[rows, a].copy()
    if len(p.pair_u):  # fusion: a pair in one segment on its target saves the absorbed node's kernel
        fused = (a[p.pair_u] == p.pair_t) & (a[p.pair_v] == p.pair_t) & (seg_of[p.pair_u] == seg_of[p.pair_v])
        np.subtract.at(nlat, p.pair_v[fused], p.pair_lat[fused])
        np.subtract.at(nen, p.pair_v[fused], p.pair_en[fused])
    seg_lat = np.bincount(seg_of, weights=nlat, minlength=n_seg) + p.launch_lat[seg_target]
    seg_en = np.bincount(seg_of, weights=nen, minlength=n_seg) + p.launch_en[seg_target]
    members = _group(seg_of, rows, n_seg)

    # Segment inputs/outputs: tensors crossing a segment boundary, and graph outputs.
    prod_c = p.t_prod[p.cons_tensor]
    pseg_c = np.where(prod_c >= 0, seg_of[np.maximum(prod_c, 0)], -1)
    cseg_c = seg_of[p.cons_node]
    cross = pseg_c != cseg_c
    in_pairs = np.unique(cseg_c[cross] * e + p.cons_tensor[cross])
    outs_t = np.flatnonzero(p.t_out & (p.t_prod >= 0))
    out_pairs = np.unique(np.concatenate([
        pseg_c[cross & (prod_c >= 0)] * e + p.cons_tensor[cross & (prod_c >= 0)],
        seg_of[p.t_prod[outs_t]] * e + outs_t]))
    tn = p.tensor_names
    seg_in = _group(in_pairs // e, in_pairs % e, n_seg)
    seg_out = _group(out_pairs // e, out_pairs % e, n_seg)
    segments = tuple(
        Segment(id=s, target=names[seg_target[s]], nodes=tuple(p.node_names[i] for i in members[s].tolist()),
                inputs=tuple(tn[t] for t in seg_in[s].tolist()),
                outputs=tuple(tn[t] for t in seg_out[s].tolist()),
                cost=Cost(float(seg_lat[s]), float(seg_en[s])))
        for s in range(n_seg))

    # -- transfers: once per (tensor, destination end) ------------------------------------------------------
    src = p.source_ends(a)
    code = np.concatenate([p.cons_tensor * k + a[p.cons_node], outs_t * k + p.host])
    dseg = np.concatenate([cseg_c, np.full(len(code) - len(cseg_c), n_seg)])  # n_seg: only the host reads it
    order = np.lexsort((dseg, code))
    code, dseg = code[order], dseg[order]
    first = np.concatenate([[True], code[1:] != code[:-1]]) if len(code) else np.zeros(0, bool)
    code, dseg = code[first], dseg[first]
    tt, bb = code // k, code % k
    keep = bb != src[tt]
    tt, bb, dseg = tt[keep], bb[keep], dseg[keep]
    ss = src[tt]
    sort = np.lexsort((tt, dseg))  # in execution order of the first reader; host-only ones last
    tt, bb, dseg, ss = tt[sort], bb[sort], dseg[sort], ss[sort]
    xl, xe = p.xfer_lat[tt, ss, bb], p.xfer_en[tt, ss, bb]
    pseg_t = np.where(p.t_prod[tt] >= 0, seg_of[np.maximum(p.t_prod[tt], 0)], -1)
    transfers = tuple(
        Transfer(tensor=tn[t], src=ends[s_], dst=ends[b], nbytes=int(p.t_bytes[t]),
                 cost=Cost(float(lt), float(et)), src_segment=int(ps),
                 dst_segment=int(ds) if ds < n_seg else -1)
        for t, s_, b, lt, et, ps, ds in zip(tt.tolist(), ss.tolist(), bb.tolist(), xl.tolist(), xe.tolist(),
                                            pseg_t.tolist(), dseg.tolist(), strict=True))

    tot = totals(p, a[None, :], lev[None, :])  # the objective, as the partitioner minimises it
    predicted = Cost(float(tot["latency_s"][0]), float(tot["energy_j"][0]))
    schedule = _schedule(p, a, segments, seg_target, seg_of, transfers, tt, bb, seg_in)
    makespan = max((s.end_s for s in schedule), default=0.0)
    notes = list(assignment.notes)
    notes.extend(p.capacity_violations(a))
    if float(tot["idle_j"][0]) > 0:
        notes.append("energy includes the static power (idle_w) of every target holding a node while it "
                     "waits for the others or for a link; a target holding no node is taken as powered off")
    if p.unknown_sizes:
        notes.append(f"{p.unknown_sizes} tensors have no static shape, so their transfers are priced as "
                     "0 bytes; bind symbolic dimensions (--shape) for real figures")
    return Plan(strategy=strategy, objective=p.objective,
                assignment=dict(zip(p.node_names, (names[j] for j in a.tolist()), strict=True)),
                segments=segments, transfers=transfers, predicted=predicted, makespan_s=makespan,
                schedule=schedule, lower_bound_s=p.lower_bound().latency_s, optimal=assignment.optimal,
                gap=assignment.gap, notes=tuple(notes), idle_energy_j=float(tot["idle_j"][0]))


def _schedule(p: Problem, a: np.ndarray, segments: tuple[Segment, ...], seg_target: np.ndarray,
              seg_of: np.ndarray,
              transfers: tuple[Transfer, ...], tt: np.ndarray, bb: np.ndarray,
              seg_in: list[np.ndarray]) -> tuple[Slot, ...]:
    """List schedule in plan order: each target and each link runs one segment or transfer at a time."""
    free: dict[str, float] = {}
    seg_end = [0.0] * len(segments)
    xfer_end = [0.0] * len(transfers)
    by_dst: dict[int, list[int]] = {}
    final_by_src: dict[int, list[int]] = {}
    where: dict[tuple[int, int], int] = {}
    for i, (t, b, tr) in enumerate(zip(tt.tolist(), bb.tolist(), transfers, strict=True)):
        where[(t, b)] = i
        if tr.dst_segment >= 0:
            by_dst.setdefault(tr.dst_segment, []).append(i)
        else:
            final_by_src.setdefault(tr.src_segment, []).append(i)
    slots: list[Slot] = []

    def run_transfer(i: int) -> None:
        tr = transfers[i]
        res = f"link:{tr.src}->{tr.dst}"
        start = max(seg_end[tr.src_segment] if tr.src_segment >= 0 else 0.0, free.get(res, 0.0))
        xfer_end[i] = free[res] = start + tr.cost.latency_s
        slots.append(Slot("transfer", i, res, start, xfer_end[i]))

    t_prod, host = p.t_prod, p.host
    for s, seg in enumerate(segments):
        for i in by_dst.get(s, ()):
            run_transfer(i)
        b = int(seg_target[s])
        ready = 0.0
        for t in seg_in[s].tolist():
            pr = int(t_prod[t])
            src = int(a[pr]) if pr >= 0 else host
            if src == b:
                ready = max(ready, seg_end[int(seg_of[pr])] if pr >= 0 else 0.0)
            else:
                ready = max(ready, xfer_end[where[(t, b)]])
        start = max(ready, free.get(seg.target, 0.0))
        seg_end[s] = free[seg.target] = start + seg.cost.latency_s
        slots.append(Slot("segment", seg.id, seg.target, start, seg_end[s]))
        for i in final_by_src.get(s, ()):
            run_transfer(i)
    slots.sort(key=lambda sl: (sl.start_s, sl.end_s))
    return tuple(slots)


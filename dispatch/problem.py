"""The partitioning problem as arrays: node costs per target, tensors and their transfer costs, launches.

`Problem.build(graph, opcosts, targets, objective)` asks every target about every node once (support, cost,
weight bytes) and stores the answers in NumPy arrays, so strategies, plan construction and what-if
explanations work on arrays of 50,000 nodes without touching Python objects per node.

The partition model (what `optimal` minimises exactly) prices an assignment as

    sum of node costs on their targets
  + for every tensor t and every target b in D(t) other than t's source target: transfer(t, src -> b)
  + for every tensor t and every target b holding a consumer of t, b != src: one launch of b

where D(t) is the set of targets holding a consumer of t, plus the host when t is a graph output. Graph
inputs are produced on the host. "Host" is a pseudo-target with a zero link, unless a target of kind "cpu"
is present: that target is the host. The launch term stands in for per-segment overhead, which is not
linear in the assignment: every tensor arriving on a target is charged one launch of that target (see
DESIGN.md, "Partitioning"). The plan itself (dispatch.plan.build_plan) counts one launch per real segment.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dispatch.cost import Cost, OpCost
from dispatch.errors import DispatchError
from dispatch.ir import Graph
from targets.base import HOST_LINK, Link, Target, transfer_cost

__all__ = ["Problem", "Assignment", "OBJECTIVES", "HOST", "objective_weights", "no_gc"]

OBJECTIVES = ("latency", "energy", "edp")
_TOO_BIG = "its weights"
HOST = "host"  # name of the pseudo-target standing for the host when no target of kind "cpu" is given


@dataclass(frozen=True, eq=False)
class Assignment:
    """A strategy's answer: a target index per node (aligned with graph.nodes), and what is proven of it."""

    target: np.ndarray  # int, index into Problem.target_names
    optimal: bool = False  # proven optimal for the objective under the partition model
    gap: float | None = None  # relative gap bound when a solver stopped early
    notes: tuple[str, ...] = ()


def objective_weights(objective: str) -> tuple[float, float]:
    """(weight of latency, weight of energy) of an additive objective."""
    if objective == "latency":
        return 1.0, 0.0
    if objective == "energy":
        return 0.0, 1.0
    raise DispatchError(f"Objective '{objective}' is not additive; use latency or energy here "
                        "(edp is handled by the strategies as a sweep of weighted sums).")


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    A loaded 50,000-node graph keeps ~500,000 objects alive; creating tens of thousands of tuples and lists
    (segments, adjacency lists) triggers collections that walk them. Planning such a graph repeatedly in one
    process took about 1.7x as long with the collector left on (benchmarks/results/partition.md, "What
    pausing the garbage collector saves"). Nothing built here forms reference cycles.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass(frozen=True)
class _HostSpec:
    link: Link = HOST_LINK


@dataclass(frozen=True)
class _HostEnd:
    """The host as an end of a transfer (what targets.base.transfer_cost needs: a name and a link)."""

    name: str = HOST
    spec: _HostSpec = field(default_factory=_HostSpec)


def _pair_costs(src: Any, dst: Any, nbytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """transfer_cost(src, dst, n) for every n in `nbytes`, as (latency, energy) arrays.

    A link costs latency + n / bandwidth, so a transfer is affine in n for n > 0 (0 for n <= 0). Fit the
    affine form on two probes of transfer_cost, check it on two more, and fall back to one call per distinct
    size when the check fails (a transfer_cost that is not affine).
    """
    lat = np.zeros(nbytes.shape)
    en = np.zeros(nbytes.shape)
    pos = nbytes > 0
    if not pos.any():
        return lat, en
    n_hi = float(1 << 40)
    c1, c2 = transfer_cost(src, dst, 1), transfer_cost(src, dst, 1 << 40)
    sl = (c2.latency_s - c1.latency_s) / (n_hi - 1.0)
    se = (c2.energy_j - c1.energy_j) / (n_hi - 1.0)
    il, ie = c1.latency_s - sl, c1.energy_j - se
    affine = True
    for n in (4096, int(nbytes.max())):
        c = transfer_cost(src, dst, n)
        affine &= bool(np.isclose(c.latency_s, il + sl * n, rtol=1e-9, atol=1e-18))
        affine &= bool(np.isclose(c.energy_j, ie + se * n, rtol=1e-9, atol=1e-21))
    if affine:
        lat[pos] = il + sl * nbytes[pos]
        en[pos] = ie + se * nbytes[pos]
        return lat, en
    sizes, inv = np.unique(nbytes[pos], return_inverse=True)
    costs = [transfer_cost(src, dst, int(n)) for n in sizes]
    lat[pos] = np.array([c.latency_s for c in costs])[inv]
    en[pos] = np.array([c.energy_j for c in costs])[inv]
    return lat, en


@dataclass(frozen=True, eq=False)
class Problem:
    """Everything a strategy needs, as arrays. N nodes, T targets, K transfer ends, E tensors.

    Ends are the targets plus, when no target is of kind "cpu", the host pseudo-target (index T); `host` is
    the index of the host among the ends.
    """

    graph: Graph
    opcosts: Sequence[OpCost]
    targets: Mapping[str, Target]
    objective: str
    target_names: tuple[str, ...]
    end_names: tuple[str, ...]  # target_names, plus "host" when the host is not a target
    host: int
    node_names: tuple[str, ...]
    supported: np.ndarray  # bool [N, T]
    reasons: tuple[dict[int, str], ...]  # per target: node index -> why it cannot run there
    node_lat: np.ndarray  # [N, T] seconds, inf where unsupported
    node_en: np.ndarray  # [N, T] joules, inf where unsupported
    weight_bytes: np.ndarray  # int64 [N, T]
    capacity: np.ndarray  # [T] bytes, inf when unlimited
    launch_lat: np.ndarray  # [K] per-segment overhead (0 for the host pseudo-target)
    launch_en: np.ndarray  # [K]
    tensor_names: tuple[str, ...]
    t_prod: np.ndarray  # int64 [E] producing node, -1 for a graph input (produced on the host)
    t_bytes: np.ndarray  # int64 [E]
    t_out: np.ndarray  # bool [E] graph output (must end on the host)
    cons_ptr: np.ndarray  # int64 [E+1] CSR: consumers of tensor t are cons_node[cons_ptr[t]:cons_ptr[t+1]]
    cons_node: np.ndarray  # int64 [C] distinct consumer nodes
    cons_tensor: np.ndarray  # int64 [C] the tensor of each consumer entry
    xfer_lat: np.ndarray  # [E, K, K] transfer of t from end a to end b (0 on the diagonal)
    xfer_en: np.ndarray  # [E, K, K]
    cond_lat: np.ndarray  # [E, K, K] paid iff t's source is a and some consumer sits on b != a
    cond_en: np.ndarray  # [E, K, K]
    out_lat: np.ndarray  # [E, K] paid iff t is a graph output and its source is a
    out_en: np.ndarray  # [E, K]
    unknown_sizes: int = 0  # tensors whose shape is not static: their transfers are priced as 0 bytes

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def build(cls, graph: Graph, opcosts: Sequence[OpCost] | None, targets: Mapping[str, Target],
              objective: str = "latency") -> Problem:
        """Ask every target about every node; raise DispatchError for a node nothing can run."""
        with no_gc():
            return cls._build(graph, opcosts, targets, objective)

    @classmethod
    def _build(cls, graph: Graph, opcosts: Sequence[OpCost] | None, targets: Mapping[str, Target],
               objective: str) -> Problem:
        if objective not in OBJECTIVES:
            raise DispatchError(f"Unknown objective '{objective}'; choose one of {', '.join(OBJECTIVES)}.")
        if not targets:
            raise DispatchError("No targets given; give at least one, e.g. gpu=h100-sxm.")
        if opcosts is None:
            from dispatch.analysis import analyze

            opcosts = analyze(graph)
        nodes = graph.nodes
        if len(opcosts) != len(nodes):
            raise DispatchError(f"Got {len(opcosts)} operator costs for {len(nodes)} nodes; pass the output "
                                "of dispatch.analyze(graph) for this graph.")
        names = tuple(targets)
        tl = list(targets.values())
        n, t_count = len(nodes), len(tl)
        supported = np.zeros((n, t_count), bool)
        node_lat = np.full((n, t_count), np.inf)
        node_en = np.full((n, t_count), np.inf)
        wbytes = np.zeros((n, t_count), np.int64)
        capacity = np.array([np.inf if t.capacity_bytes is None else float(t.capacity_bytes) for t in tl])
        reasons: list[dict[int, str]] = [{} for _ in tl]
        for j, tgt in enumerate(tl):
            why_j = reasons[j]
            for i, (node, op) in enumerate(zip(nodes, opcosts, strict=True)):
                why = tgt.unsupported_reason(node)
                if why is None:
                    w = int(tgt.weight_bytes(node, op))
                    if w > capacity[j]:
                        why = (f"{_TOO_BIG} ({w} bytes) exceed {names[j]}'s on-chip capacity "
                               f"({int(capacity[j])} bytes)")
                    else:
                        c = tgt.cost(node, op)
                        if not (0.0 <= c.latency_s < np.inf and 0.0 <= c.energy_j < np.inf):
                            raise DispatchError(f"Target '{names[j]}' prices node '{node.name}' at {c}; "
                                                "a cost must be finite and non-negative, so fix its cost "
                                                "model.")
                        supported[i, j] = True
                        node_lat[i, j], node_en[i, j], wbytes[i, j] = c.latency_s, c.energy_j, w
                if why is not None:
                    why_j[i] = why
        nowhere = np.flatnonzero(~supported.any(axis=1))
        if nowhere.size:
            i = int(nowhere[0])
            node = nodes[i]
            detail = "; ".join(f"{names[j]}: {reasons[j][i]}" for j in range(t_count))
            more = f" ({nowhere.size - 1} more nodes likewise)" if nowhere.size > 1 else ""
            too_big = any(reasons[j][i].startswith(_TOO_BIG) for j in range(t_count))
            fix = ("add a target with more on-chip memory or one without a capacity limit" if too_big
                   else f"add a target that supports {node.op_type}")
            raise DispatchError(f"Node '{node.name}' ({node.op_type}) can run on none of the targets "
                                f"({detail}){more}; {fix}.")

        host = next((j for j, t in enumerate(tl) if t.kind == "cpu"), None)
        if host is None:
            if HOST in targets:
                raise DispatchError(f"Target name '{HOST}' is reserved for the host; give that target "
                                    "another name.")
            ends: list[Any] = [*tl, _HostEnd()]
            host = t_count
        else:
            ends = list(tl)
        k = len(ends)
        launch_lat = np.zeros(k)
        launch_en = np.zeros(k)
        for j, tgt in enumerate(tl):
            c = tgt.segment_overhead()
            if not (0.0 <= c.latency_s < np.inf and 0.0 <= c.energy_j < np.inf):
                raise DispatchError(f"Target '{names[j]}' has a segment overhead of {c}; it must be finite "
                                    "and non-negative, so fix its spec.")
            launch_lat[j], launch_en[j] = c.latency_s, c.energy_j

        # Tensors: graph inputs (produced on the host), then node outputs in topological order.
        tnames: list[str] = []
        prod: list[int] = []
        nbytes: list[int] = []
        outs: list[bool] = []
        cons_lists: list[list[int]] = []
        unknown = 0
        for v in graph.inputs:
            if v.consumers:
                tnames.append(v.name)
                prod.append(-1)
                nbytes.append(v.nbytes)
                unknown += not v.static
                outs.append(False)  # an input that is also an output never leaves the host
                cons_lists.append(sorted({c.index for c in v.consumers}))
        for node in nodes:
            for v in node.outputs:
                if v.consumers or v.is_graph_output:
                    tnames.append(v.name)
                    prod.append(node.index)
                    nbytes.append(v.nbytes)
                    unknown += not v.static
                    outs.append(v.is_graph_output)
                    cons_lists.append(sorted({c.index for c in v.consumers}))
        e = len(tnames)
        counts = np.fromiter((len(c) for c in cons_lists), np.int64, e)
        cons_ptr = np.zeros(e + 1, np.int64)
        np.cumsum(counts, out=cons_ptr[1:])
        cons_node = np.fromiter((c for cl in cons_lists for c in cl), np.int64, int(cons_ptr[-1]))
        cons_tensor = np.repeat(np.arange(e, dtype=np.int64), counts)
        t_bytes = np.array(nbytes, np.int64)
        t_out = np.array(outs, bool)

        xfer_lat = np.zeros((e, k, k))
        xfer_en = np.zeros((e, k, k))
        for a in range(k):
            for b in range(k):
                if a != b:
                    xfer_lat[:, a, b], xfer_en[:, a, b] = _pair_costs(ends[a], ends[b], t_bytes)
        finite = np.isfinite(xfer_lat).all() and np.isfinite(xfer_en).all()
        if not (finite and xfer_lat.min(initial=0.0) >= 0 and xfer_en.min(initial=0.0) >= 0):
            raise DispatchError("A link gives a negative or infinite transfer cost; check the targets' "
                                "[link] figures.")
        # Conditional terms: a consumer on b != a pays the transfer (unless the tensor already goes to the
        # host as a graph output and b is the host) and one launch of b.
        to_host = np.zeros((e, k), bool)
        to_host[:, host] = t_out
        cond_lat = xfer_lat * ~to_host[:, None, :] + launch_lat[None, None, :]
        cond_en = xfer_en * ~to_host[:, None, :] + launch_en[None, None, :]
        diag = np.arange(k)
        cond_lat[:, diag, diag] = 0.0
        cond_en[:, diag, diag] = 0.0
        out_lat = xfer_lat[:, :, host] * t_out[:, None]
        out_en = xfer_en[:, :, host] * t_out[:, None]

        return cls(graph=graph, opcosts=opcosts, targets=targets, objective=objective, target_names=names,
                   end_names=(*names, HOST) if k > t_count else names, host=host,
                   node_names=tuple(nd.name for nd in nodes), supported=supported,
                   reasons=tuple(reasons), node_lat=node_lat, node_en=node_en, weight_bytes=wbytes,
                   capacity=capacity, launch_lat=launch_lat, launch_en=launch_en, tensor_names=tuple(tnames),
                   t_prod=np.array(prod, np.int64), t_bytes=t_bytes, t_out=t_out, cons_ptr=cons_ptr,
                   cons_node=cons_node, cons_tensor=cons_tensor, xfer_lat=xfer_lat, xfer_en=xfer_en,
                   cond_lat=cond_lat, cond_en=cond_en, out_lat=out_lat, out_en=out_en,
                   unknown_sizes=unknown)

    # -- sizes and lookups --------------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def num_targets(self) -> int:
        return len(self.target_names)

    @property
    def num_ends(self) -> int:
        return len(self.end_names)

    @property
    def has_capacity(self) -> bool:
        return bool(np.isfinite(self.capacity).any())

    @functools.cached_property
    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}

    def target_index(self, name: str) -> int:
        try:
            return self.target_names.index(name)
        except ValueError:
            raise DispatchError(f"Unknown target '{name}'; the targets are {', '.join(self.target_names)}.") \
                from None

    @functools.cached_property
    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Node-to-node data edges (producer, consumer), one per (tensor, consumer), producers real nodes."""
        real = self.t_prod[self.cons_tensor] >= 0
        return self.t_prod[self.cons_tensor][real], self.cons_node[real]

    @functools.cached_property
    def preds(self) -> list[list[int]]:
        """Distinct predecessors of every node (Python lists: the per-node loops want them)."""
        with no_gc():
            out: list[set[int]] = [set() for _ in range(self.num_nodes)]
            for s, d in zip(*(a.tolist() for a in self.edges), strict=True):
                out[d].add(s)
            return [sorted(s) for s in out]

    @functools.cached_property
    def succs(self) -> list[list[int]]:
        preds = self.preds
        with no_gc():
            out: list[list[int]] = [[] for _ in range(self.num_nodes)]
            for d, ps in enumerate(preds):
                for s in ps:
                    out[s].append(d)
            return out

    def scalar(self, w_lat: float, w_en: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(node [N,T], cond [E,K,K], out [E,K]) costs of the objective w_lat·latency + w_en·energy."""
        node = np.where(self.supported, w_lat * np.where(self.supported, self.node_lat, 0.0)
                        + w_en * np.where(self.supported, self.node_en, 0.0), np.inf)
        return (node, w_lat * self.cond_lat + w_en * self.cond_en, w_lat * self.out_lat + w_en * self.out_en)

    # -- evaluation of the partition model ----------------------------------------------------------------
    def source_ends(self, assign: np.ndarray) -> np.ndarray:
        """The end each tensor starts from: its producer's target, or the host for graph inputs."""
        a = np.asarray(assign)
        src = np.full(a.shape[:-1] + (len(self.t_prod),), self.host, np.int64)
        real = self.t_prod >= 0
        src[..., real] = a[..., self.t_prod[real]]
        return src

    def evaluate_batch(self, assigns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model latency and energy of many assignments: assigns [M, N] -> (latency [M], energy [M])."""
        a_all = np.asarray(assigns, np.int64)
        m_all, n = a_all.shape
        e, k = len(self.t_prod), self.num_ends
        lat_out = np.empty(m_all)
        en_out = np.empty(m_all)
        step = max(1, (1 << 22) // max(1, e * k + n))
        cols = np.arange(n)
        trange = np.arange(e)
        for lo in range(0, m_all, step):
            a = a_all[lo:lo + step]
            m = a.shape[0]
            lat = self.node_lat[cols, a].sum(axis=1)
            en = self.node_en[cols, a].sum(axis=1)
            src = self.source_ends(a)
            lat += self.out_lat[trange, src].sum(axis=1)
            en += self.out_en[trange, src].sum(axis=1)
            present = np.zeros((m, e, k), bool)
            present[np.arange(m)[:, None], self.cons_tensor[None, :], a[:, self.cons_node]] = True
            present[np.arange(m)[:, None], trange[None, :], src] = False
            lat += (self.cond_lat[trange[None, :], src] * present).sum(axis=(1, 2))
            en += (self.cond_en[trange[None, :], src] * present).sum(axis=(1, 2))
            lat_out[lo:lo + m], en_out[lo:lo + m] = lat, en
        return lat_out, en_out

    def evaluate(self, assign: np.ndarray) -> Cost:
        """Model cost of one assignment (nodes + transfers + one launch per tensor arriving on a target)."""
        lat, en = self.evaluate_batch(np.asarray(assign, np.int64)[None, :])
        return Cost(float(lat[0]), float(en[0]))

    def objective_value(self, assign: np.ndarray, objective: str | None = None) -> float:
        return self.evaluate(assign).objective(objective or self.objective)

    # -- feasibility ------------------------------------------------------------------------------------
    def check_assignment(self, assign: np.ndarray) -> None:
        """Raise DispatchError naming the first node on a target that cannot run it."""
        a = np.asarray(assign, np.int64)
        if a.shape != (self.num_nodes,) or (a.size and (a.min() < 0 or a.max() >= self.num_targets)):
            raise DispatchError(f"An assignment needs one target index in [0, {self.num_targets}) for each "
                                f"of the {self.num_nodes} nodes; got shape {a.shape}.")
        bad = np.flatnonzero(~self.supported[np.arange(self.num_nodes), a])
        if bad.size:
            i = int(bad[0])
            j = int(a[i])
            ok = [self.target_names[b] for b in np.flatnonzero(self.supported[i])]
            raise DispatchError(f"Node '{self.node_names[i]}' is placed on '{self.target_names[j]}', which "
                                f"cannot run it ({self.reasons[j][i]}); place it on {' or '.join(ok)}.")

    def capacity_violations(self, assign: np.ndarray) -> list[str]:
        """One sentence per target whose weight capacity the assignment exceeds (empty when it fits)."""
        a = np.asarray(assign, np.int64)
        used = np.bincount(a, weights=self.weight_bytes[np.arange(self.num_nodes), a],
                           minlength=self.num_targets)
        out = []
        for j in np.flatnonzero(used > self.capacity):
            out.append(f"the weights placed on {self.target_names[j]} ({int(used[j])} bytes) exceed its "
                       f"capacity ({int(self.capacity[j])} bytes)")
        return out

    def lower_bound(self) -> Cost:
        """Every node on its cheapest target (per component), no transfers, no launches."""
        return Cost(float(np.min(self.node_lat, axis=1).sum()), float(np.min(self.node_en, axis=1).sum()))

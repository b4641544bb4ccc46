"""The partitioning problem as arrays: node costs per target, fusion pairs, transfers, launches, idle power.

`Problem.build(graph, opcosts, targets, objective)` asks every target about every node once (support, cost,
fusion partner, weight bytes) and stores the answers in NumPy arrays, so strategies, plan construction and
what-if explanations work on arrays of 50,000 nodes without touching Python objects per node.

What an assignment costs (the one objective the plan prints and the partitioner minimises) is defined in
dispatch/objective.py; this module holds its ingredients:

* node_lat / node_en: each node as its own kernel on each target;
* pair_*: fusion pairs (the target folds node pair_v into pair_u's kernel, saving pair_lat / pair_en) that
  hold only when both run in one segment on pair_t;
* launch_lat / launch_en: one per segment of a target;
* xfer_*: a tensor moved from one end to another (paid once per tensor and destination);
* idle_w: the static power of a target holding at least one node, drawn while it waits.

Graph inputs are produced on the host. "Host" is a pseudo-target with a zero link, unless a target of kind
"cpu" is present: that target is the host.
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

OBJECTIVES = ("latency", "energy", "edp", "makespan")
_TOO_BIG = "its weights"
HOST = "host"  # name of the pseudo-target standing for the host when no target of kind "cpu" is given


@dataclass(frozen=True, eq=False)
class Assignment:
    """A strategy's answer: a target index per node (aligned with graph.nodes), and what is proven of it."""

    target: np.ndarray  # int, index into Problem.target_names
    optimal: bool = False  # proven optimal for the objective the plan prints (dispatch/objective.py)
    gap: float | None = None  # (value - proven lower bound) / value when not proven optimal
    notes: tuple[str, ...] = ()


def objective_weights(objective: str) -> tuple[float, float]:
    """(weight of latency, weight of energy) of an additive objective."""
    if objective == "latency":
        return 1.0, 0.0
    if objective == "energy":
        return 0.0, 1.0
    raise DispatchError(f"Objective '{objective}' is not a weighted sum of latency and energy; use latency "
                        "or energy here (the strategies handle edp and makespan themselves).")


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
    idle_w: np.ndarray  # [T] static power while a target that holds a node waits
    pair_u: np.ndarray  # int64 [P] fusion pairs: the node whose kernel absorbs pair_v (before or after it)
    pair_v: np.ndarray  # int64 [P] the absorbed node (joined to pair_u by a chain of sole successors)
    pair_t: np.ndarray  # int64 [P] the target that fuses them
    pair_lat: np.ndarray  # [P] latency saved when both run in one segment on pair_t
    pair_en: np.ndarray  # [P] energy saved likewise
    tensor_names: tuple[str, ...]
    t_prod: np.ndarray  # int64 [E] producing node, -1 for a graph input (produced on the host)
    t_bytes: np.ndarray  # int64 [E]
    t_out: np.ndarray  # bool [E] graph output (must end on the host)
    cons_ptr: np.ndarray  # int64 [E+1] CSR: consumers of tensor t are cons_node[cons_ptr[t]:cons_ptr[t+1]]
    cons_node: np.ndarray  # int64 [C] distinct consumer nodes
    cons_tensor: np.ndarray  # int64 [C] the tensor of each consumer entry
    xfer_lat: np.ndarray  # [E, K, K] transfer of t from end a to end b (0 on the diagonal)
    xfer_en: np.ndarray  # [E, K, K]
    cond_lat: np.ndarray  # [E, K, K] transfer paid iff t's source is a and some consumer sits on b != a
    cond_en: np.ndarray  # [E, K, K]    (no transfer to the host when t goes there anyway as an output)
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
        pairs: list[tuple[int, int, int, float, float]] = []
        index = {nd.name: i for i, nd in enumerate(nodes)}
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
                        fused = tgt.fusion(node, op)
                        if fused is not None and fused[0] in index:
                            k_ = index[fused[0]]
                            sav = fused[1]
                            lat_s = min(max(sav.latency_s, 0.0), c.latency_s)
                            en_s = min(max(sav.energy_j, 0.0), c.energy_j)
                            if lat_s > 0 or en_s > 0:
                                pairs.append((k_, i, j, lat_s, en_s))
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
        # host as a graph output and b is the host).
        to_host = np.zeros((e, k), bool)
        to_host[:, host] = t_out
        cond_lat = xfer_lat * ~to_host[:, None, :]
        cond_en = xfer_en * ~to_host[:, None, :]
        diag = np.arange(k)
        cond_lat[:, diag, diag] = 0.0
        cond_en[:, diag, diag] = 0.0
        out_lat = xfer_lat[:, :, host] * t_out[:, None]
        out_en = xfer_en[:, :, host] * t_out[:, None]

        return cls(graph=graph, opcosts=opcosts, targets=targets, objective=objective, target_names=names,
                   end_names=(*names, HOST) if k > t_count else names, host=host,
                   node_names=tuple(nd.name for nd in nodes), supported=supported,
                   reasons=tuple(reasons), node_lat=node_lat, node_en=node_en, weight_bytes=wbytes,
                   capacity=capacity, launch_lat=launch_lat, launch_en=launch_en,
                   idle_w=np.array([float(t.spec.idle_w) for t in tl]),
                   pair_u=np.array([q[0] for q in pairs], np.int64),
                   pair_v=np.array([q[1] for q in pairs], np.int64),
                   pair_t=np.array([q[2] for q in pairs], np.int64),
                   pair_lat=np.array([q[3] for q in pairs], float),
                   pair_en=np.array([q[4] for q in pairs], float), tensor_names=tuple(tnames),
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

    def terms(self, w_lat: float, w_en: float, idle: float = 0.0) -> dict[str, np.ndarray]:
        """Every ingredient of the objective w_lat·latency + w_en·energy as one scalar each, for a plan whose
        targets draw `idle` watts of static power in total (see dispatch/objective.py):

        an element of latency l and energy e running on a target of static power i costs
        w_lat·l + w_en·(e - i·l + idle·l), because the targets' static power over the whole latency is
        `idle`·L and the element's own energy already holds i·l of it.
        node [N, T] (inf where unsupported), cond [E, K, K], out [E, K], launch [K], pair [P] (a saving)."""
        ti = np.zeros(self.num_ends)
        ti[:self.num_targets] = self.idle_w
        lat = np.where(self.supported, self.node_lat, 0.0)
        en = np.where(self.supported, self.node_en, 0.0)
        node = np.where(self.supported, w_lat * lat + w_en * (en - self.idle_w[None, :] * lat + idle * lat),
                        np.inf)
        lw = w_lat + w_en * idle
        return {"node": node,
                "cond": lw * self.cond_lat + w_en * self.cond_en,
                "out": lw * self.out_lat + w_en * self.out_en,
                "launch": w_lat * self.launch_lat + w_en * (self.launch_en + (idle - ti) * self.launch_lat),
                "pair": w_lat * self.pair_lat
                + w_en * (self.pair_en + (idle - self.idle_w[self.pair_t]) * self.pair_lat)}

    def scalar(self, w_lat: float, w_en: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(node [N,T], cond [E,K,K], out [E,K]) costs of w_lat·latency + w_en·energy, idle power left out."""
        t = self.terms(w_lat, w_en)
        return t["node"], t["cond"], t["out"]

    def source_ends(self, assign: np.ndarray) -> np.ndarray:
        """The end each tensor starts from: its producer's target, or the host for graph inputs."""
        a = np.asarray(assign)
        src = np.full(a.shape[:-1] + (len(self.t_prod),), self.host, np.int64)
        real = self.t_prod >= 0
        src[..., real] = a[..., self.t_prod[real]]
        return src

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
        """Every node on its cheapest target (per component, fused where it can be), no transfers, launches or
        idle power."""
        lat, en = self.node_lat.copy(), self.node_en.copy()
        np.subtract.at(lat, (self.pair_v, self.pair_t), self.pair_lat)
        np.subtract.at(en, (self.pair_v, self.pair_t), self.pair_en)
        return Cost(float(np.maximum(lat.min(axis=1), 0.0).sum()),
                    float(np.maximum(en.min(axis=1), 0.0).sum()))

"""Plan construction: invariants on random graphs and assignments, hand-worked segments, schedule, what-if
explanations, and plans saved and loaded as JSON. The fake targets come from tests/test_partition.py."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_partition import US, FakeTarget, chain, make_graph, random_dag, random_targets

from dispatch.cost import Cost
from dispatch.errors import DispatchError
from dispatch.explain import explain, render_explain
from dispatch.objective import evaluate, evaluate_batch, segment_levels, segment_levels_batch
from dispatch.partition import build_problem, plan, plan_problem, strategy_names
from dispatch.plan import Plan, assignment_array, build_plan
from dispatch.plan_io import load_plan, save_plan
from dispatch.problem import Problem
from targets.base import Link

FREE = Link(float("inf"), 0.0, 0.0)


def check_invariants(p: Problem, pl: Plan) -> None:
    """Everything a Plan promises, checked from first principles on the graph."""
    g = p.graph
    # Each node exactly once, on a target that supports it, and the assignment agrees with the segments.
    placed = [n for s in pl.segments for n in s.nodes]
    assert sorted(placed) == sorted(nd.name for nd in g.nodes)
    seg_of = {n: s.id for s in pl.segments for n in s.nodes}
    for s in pl.segments:
        for n in s.nodes:
            assert pl.assignment[n] == s.target
            assert p.supported[g.node(n).index, p.target_index(s.target)]
        idx = [g.node(n).index for n in s.nodes]
        assert idx == sorted(idx)  # topological inside the segment
    assert [s.id for s in pl.segments] == list(range(len(pl.segments)))
    # Every data edge goes forward in segment order or stays inside a segment: the order is executable and,
    # the segment graph being acyclic, no path leaves a segment and comes back (convexity).
    for nd in g.nodes:
        for succ in nd.successors:
            assert seg_of[nd.name] <= seg_of[succ.name]
    # Transfers: exactly the (tensor, destination) pairs the definition gives, once each.
    expected = {}
    for v in g.values.values():
        if not (v.is_graph_input or v.producer is not None):
            continue
        src = pl.assignment[v.producer.name] if v.producer is not None else p.end_names[p.host]
        dsts = {pl.assignment[c.name] for c in v.consumers}
        if v.is_graph_output and v.producer is not None:
            dsts.add(p.end_names[p.host])
        for d in dsts - {src}:
            readers = [seg_of[c.name] for c in v.consumers if pl.assignment[c.name] == d]
            expected[(v.name, d)] = (src, min(readers) if readers else -1, v.nbytes)
    got = {(t.tensor, t.dst): (t.src, t.dst_segment, t.nbytes) for t in pl.transfers}
    assert len(got) == len(pl.transfers) and got == expected
    for t in pl.transfers:
        prod = g.values[t.tensor].producer
        assert t.src_segment == (seg_of[prod.name] if prod is not None else -1)
    # Segment inputs / outputs.
    for s in pl.segments:
        inside = set(s.nodes)
        ins = {v.name for n in s.nodes for v in g.node(n).present_inputs
               if v.const is None and (v.producer is None or v.producer.name not in inside)}
        outs = {v.name for n in s.nodes for v in g.node(n).outputs
                if v.is_graph_output or any(c.name not in inside for c in v.consumers)}
        assert set(s.inputs) == ins and set(s.outputs) == outs
    # Figures: segments = nodes - fusion savings of pairs inside them + one overhead each;
    # latency = segments + transfers; energy = theirs + the static power of every used target while it waits.
    busy: dict[str, float] = defaultdict(float)
    for s in pl.segments:
        j = p.target_index(s.target)
        idx = {g.node(n).index for n in s.nodes}
        saved = sum(p.pair_lat[k] for k in range(len(p.pair_u))
                    if p.pair_t[k] == j and p.pair_u[k] in idx and p.pair_v[k] in idx)
        lat = sum(p.node_lat[i, j] for i in idx) - saved + p.launch_lat[j]
        assert s.cost.latency_s == pytest.approx(lat, rel=1e-12, abs=1e-18)
        busy[s.target] += s.cost.latency_s
    total = sum(s.cost.latency_s for s in pl.segments) + sum(t.cost.latency_s for t in pl.transfers)
    assert pl.predicted.latency_s == pytest.approx(total, rel=1e-12, abs=1e-18)
    idle = sum(p.idle_w[p.target_index(t)] * (total - b) for t, b in busy.items())
    energy = sum(s.cost.energy_j for s in pl.segments) + sum(t.cost.energy_j for t in pl.transfers) + idle
    assert pl.idle_energy_j == pytest.approx(idle, rel=1e-9, abs=1e-18)
    assert pl.predicted.energy_j == pytest.approx(energy, rel=1e-9, abs=1e-18)
    assert pl.lower_bound_s <= pl.predicted.latency_s * (1 + 1e-12)
    check_schedule(pl)


def check_schedule(pl: Plan) -> None:
    """Slots cover every segment and transfer once, respect data and never overlap on a resource."""
    seg = {sl.ref: sl for sl in pl.schedule if sl.kind == "segment"}
    xfer = {sl.ref: sl for sl in pl.schedule if sl.kind == "transfer"}
    assert sorted(seg) == [s.id for s in pl.segments] and sorted(xfer) == list(range(len(pl.transfers)))
    for s in pl.segments:
        assert seg[s.id].end_s - seg[s.id].start_s == pytest.approx(s.cost.latency_s, abs=1e-15)
    by_tensor = {(t.tensor, t.dst): i for i, t in enumerate(pl.transfers)}
    producer_seg = {o: s.id for s in pl.segments for o in s.outputs}
    eps = 1e-15
    for i, t in enumerate(pl.transfers):
        if t.src_segment >= 0:
            assert xfer[i].start_s >= seg[t.src_segment].end_s - eps
    for s in pl.segments:
        for name in s.inputs:
            if (name, s.target) in by_tensor:
                assert seg[s.id].start_s >= xfer[by_tensor[(name, s.target)]].end_s - eps
            elif name in producer_seg:
                assert seg[s.id].start_s >= seg[producer_seg[name]].end_s - eps
    busy = defaultdict(list)
    for sl in pl.schedule:
        busy[sl.resource].append((sl.start_s, sl.end_s))
    for spans in busy.values():
        spans.sort()
        for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False):
            assert s1 >= e0 - eps
    assert pl.makespan_s <= pl.predicted.latency_s * (1 + 1e-12) + eps


# -- invariants on random graphs --------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), t=st.sampled_from([1, 2, 3]),
       host_cpu=st.booleans())
def test_random_assignments_give_valid_plans(seed: int, n: int, t: int, host_cpu: bool) -> None:
    rng = np.random.default_rng(seed)
    g = random_dag(rng, n)
    p = build_problem(g, random_targets(rng, g, t, host_cpu=host_cpu))
    a = np.array([rng.choice(np.flatnonzero(p.supported[i])) for i in range(n)], np.int64)
    pl = build_plan(p, a, "random")
    check_invariants(p, pl)
    assert (assignment_array(p, pl.assignment) == a).all()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25), t=st.sampled_from([2, 3]))
def test_every_strategy_gives_a_valid_plan(seed: int, n: int, t: int) -> None:
    rng = np.random.default_rng(seed)
    g = random_dag(rng, n)
    p = build_problem(g, random_targets(rng, g, t))
    for name in strategy_names(p):
        check_invariants(p, plan_problem(p, name))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20), t=st.sampled_from([2, 3]))
def test_plan_figures_are_the_objective_the_partitioner_minimises(seed: int, n: int, t: int) -> None:
    # One function: build_plan's figures equal dispatch.objective's, one by one and in a batch (whose
    # vectorised segment levels equal the plan's), with launches, fusion pairs and idle power.
    rng = np.random.default_rng(seed)
    g = random_dag(rng, n)
    p = build_problem(g, random_targets(rng, g, t, idle=True, fusion=True))
    many = np.array([[rng.choice(np.flatnonzero(p.supported[i])) for i in range(n)] for _ in range(8)])
    lat, en = evaluate_batch(p, many)
    levels = segment_levels_batch(p, many)
    for a, la, ea, lv in zip(many, lat, en, levels, strict=True):
        pl = build_plan(p, a, "random")
        check_invariants(p, pl)
        assert (lv == segment_levels(p, a)).all()
        assert pl.predicted.latency_s == pytest.approx(la, rel=1e-12)
        assert pl.predicted.energy_j == pytest.approx(ea, rel=1e-12)
        assert evaluate(p, a) == pl.predicted
        used = {p.target_index(tg) for tg in pl.assignment.values()}
        assert pl.predicted.energy_j >= sum(p.idle_w[j] for j in used) * pl.predicted.latency_s * (1 - 1e-9)


def test_transfer_costs_match_targets_base_transfer_cost() -> None:
    from targets.base import transfer_cost

    rng = np.random.default_rng(3)
    g = random_dag(rng, 12)
    targets = random_targets(rng, g, 3)
    p = build_problem(g, targets)
    ends = list(targets.values())
    for e in range(len(p.tensor_names)):
        for a in range(3):
            for b in range(3):
                c = transfer_cost(ends[a], ends[b], int(p.t_bytes[e]))
                assert p.xfer_lat[e, a, b] == pytest.approx(c.latency_s, rel=1e-12, abs=1e-21)
                assert p.xfer_en[e, a, b] == pytest.approx(c.energy_j, rel=1e-12, abs=1e-24)


# -- hand-worked segments ----------------------------------------------------------------------------------
def _targets(**extra: float) -> dict[str, FakeTarget]:
    gpu = FakeTarget("gpu", {"G": (10 * US, 1e-3)}, link=FREE)
    asic = FakeTarget("asic", {"A": (10 * US, 1e-3)}, link=FREE)
    return {"gpu": gpu, "asic": asic}


def test_diamond_is_split_so_segments_stay_convex() -> None:
    # a(gpu) -> b(asic) -> d(gpu) and a -> c(gpu) -> d. {a, c, d} on the GPU is not convex (a -> b -> d
    # leaves it and comes back), so the GPU work is split in two: [a] then [c, d], around [b].
    nodes = [("a", "G", ["x"], "ta"), ("b", "A", ["ta"], "tb"), ("c", "G", ["ta"], "tc"),
             ("d", "G", ["tb", "tc"], "y")]
    g = make_graph(nodes, {"x": 4, "ta": 4, "tb": 4, "tc": 4, "y": 4}, ["x"], ["y"])
    pl = plan(g, _targets(), "priority")
    assert [(s.target, s.nodes) for s in pl.segments] == [("gpu", ("a",)), ("asic", ("b",)),
                                                          ("gpu", ("c", "d"))]
    assert pl.segments[0].outputs == ("ta",) and pl.segments[2].inputs == ("ta", "tb")


def test_independent_work_joins_a_later_segment_of_its_target() -> None:
    # g1 (gpu) is independent of a1 (asic); g2 (gpu) needs both. As soon as possible g1 would be a segment of
    # its own; moved as late as g2 allows it joins g2: two segments instead of three.
    nodes = [("a1", "A", ["x"], "ta"), ("g1", "G", ["x"], "tg"), ("g2", "G", ["ta", "tg"], "y")]
    g = make_graph(nodes, {"x": 4, "ta": 4, "tg": 4, "y": 4}, ["x"], ["y"])
    pl = plan(g, _targets(), "priority")
    assert [(s.target, s.nodes) for s in pl.segments] == [("asic", ("a1",)), ("gpu", ("g1", "g2"))]


def test_branches_on_two_targets_overlap_in_the_schedule() -> None:
    # x -> a (gpu, 10 us) and x -> b (asic, 10 us), both outputs, links free: both segments start at 0.
    nodes = [("a", "G", ["x"], "ya"), ("b", "A", ["x"], "yb")]
    g = make_graph(nodes, {"x": 4, "ya": 4, "yb": 4}, ["x"], ["ya", "yb"])
    pl = plan(g, _targets(), "priority")
    assert pl.predicted.latency_s == pytest.approx(20 * US)  # 10 + 10 one after the other
    assert pl.makespan_s == pytest.approx(10 * US)
    assert pl.predicted.energy_j == pytest.approx(2e-3)
    assert sorted((s.resource, s.start_s) for s in pl.schedule if s.kind == "segment") == [
        ("asic", 0.0), ("gpu", 0.0)]


def test_schedule_waits_for_transfers_and_serialises_a_link() -> None:
    # x (4000 B) -> a on the ASIC; link 1 GB/s, 1 us latency per end: host->asic = 1 + 4 = 5 us.
    g = chain(["A", "A"], n=1000)
    asic = FakeTarget("asic", {"A": (2 * US, 0.0)}, link=Link(1e9, 1 * US, 0.0))
    pl = plan(g, {"asic": asic})
    xin, xout = pl.transfers
    assert (xin.tensor, xin.src, xin.dst, xin.nbytes) == ("x", "host", "asic", 4000)
    assert xin.cost.latency_s == pytest.approx(5 * US)
    slots = {(s.kind, s.ref): (s.start_s, s.end_s) for s in pl.schedule}
    assert slots[("segment", 0)] == pytest.approx((5 * US, 9 * US))  # after the transfer; 2 nodes of 2 us
    assert slots[("transfer", 1)] == pytest.approx((9 * US, 14 * US))  # y back to the host
    assert pl.makespan_s == pytest.approx(14 * US) == pytest.approx(pl.predicted.latency_s)


# -- explanations -------------------------------------------------------------------------------------------
def _conv_chain() -> tuple[Problem, Plan]:
    g = chain(["Conv", "Conv", "Softmax", "Conv", "Conv"])
    link = Link(1e9, 0.0, 0.0)
    gpu = FakeTarget("gpu", {"Conv": (10 * US, 0.0), "Softmax": (1 * US, 0.0)}, link=link)
    asic = FakeTarget("asic", {"Conv": (7 * US, 0.0)}, link=link)
    p = build_problem(g, {"gpu": gpu, "asic": asic})
    return p, plan_problem(p, "optimal")


def test_explain_what_if_counts_transfers_and_segments() -> None:
    p, pl = _conv_chain()
    info = explain(pl, p, "n0")
    assert info["target"] == "gpu"
    assert info["costs"]["asic"]["latency_s"] == pytest.approx(7 * US)
    w = info["what_if"]["asic"]
    # n0 alone on the ASIC: saves 3 us of conv, x now goes to the ASIC instead of the GPU (same 4 us), and
    # t0 must cross asic -> gpu (8 us): +5 us, one more segment, 4000 more bytes moved.
    assert w["delta_latency_s"] == pytest.approx(5 * US)
    assert w["delta_objective"] == pytest.approx(5 * US)
    assert w["delta_segments"] == 1 and w["delta_transfer_bytes"] == 4000
    soft = explain(pl, p, "n2")
    assert soft["what_if"]["asic"] == {"supported": False, "reason": "asic has no Softmax kernel"}
    text = render_explain(info)
    assert "n0 (Conv) is on gpu" in text and "to asic" in text and "+5.000 us" in text and "worse" in text
    with pytest.raises(DispatchError, match="no node named 'nope'"):
        explain(pl, p, "nope")


def test_optimal_plan_has_no_move_that_improves_the_printed_objective() -> None:
    # In an optimal plan no single node move lowers the printed objective.
    rng = np.random.default_rng(11)
    g = random_dag(rng, 14)
    p = build_problem(g, random_targets(rng, g, 3, idle=True, fusion=True))
    pl = plan_problem(p, "optimal", mip_rel_gap=1e-9)
    a = assignment_array(p, pl.assignment)
    base = pl.objective_value()
    for v in range(p.num_nodes):
        for j in np.flatnonzero(p.supported[v]):
            b = a.copy()
            b[v] = j
            assert build_plan(p, b, "moved").objective_value() >= base * (1 - 1e-9)


# -- plans as data ------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path: Path) -> None:
    p, pl = _conv_chain()
    path = tmp_path / "plan.json"
    save_plan(pl, path)
    back = load_plan(path, p.graph, p.targets)
    assert back.strategy == "loaded" and not back.optimal
    assert dict(back.assignment) == dict(pl.assignment)
    assert back.segments == pl.segments and back.transfers == pl.transfers
    assert back.predicted == pl.predicted


def test_hand_edited_plan_is_rebuilt(tmp_path: Path) -> None:
    p, pl = _conv_chain()
    path = tmp_path / "plan.json"
    save_plan(pl, path)
    data = json.loads(path.read_text())
    data["assignment"]["n0"] = "asic"
    path.write_text(json.dumps(data))
    back = load_plan(path, p.graph, p.targets, problem=p)
    assert back.assignment["n0"] == "asic"
    assert back.predicted.latency_s == pytest.approx(pl.predicted.latency_s + 5 * US)  # as explain said


@pytest.mark.parametrize(("edit", "message"), [
    (lambda a: a.update({"ghost": "gpu"}), "places node 'ghost', which the model does not have"),
    (lambda a: a.pop("n3"), "does not place node 'n3'"),
    (lambda a: a.update({"n1": "tpu"}), "puts node 'n1' on target 'tpu', which is not among the targets"),
    (lambda a: a.update({"n2": "asic"}), r"puts node 'n2' \(Softmax\) on 'asic', which cannot run it"),
])
def test_bad_plan_files_name_the_node(tmp_path: Path, edit, message: str) -> None:
    p, pl = _conv_chain()
    path = tmp_path / "plan.json"
    save_plan(pl, path)
    data = json.loads(path.read_text())
    edit(data["assignment"])
    path.write_text(json.dumps(data))
    with pytest.raises(DispatchError, match=message):
        load_plan(path, p.graph, p.targets)


def test_bad_plan_files(tmp_path: Path) -> None:
    p, pl = _conv_chain()
    path = tmp_path / "plan.json"
    with pytest.raises(DispatchError, match="does not exist"):
        load_plan(path, p.graph, p.targets)
    path.write_text("{not json")
    with pytest.raises(DispatchError, match="not valid JSON"):
        load_plan(path, p.graph, p.targets)
    path.write_text('{"format": "dispatch-plan", "version": 1, "assignment": {"n0": "gpu", "n0": "asic"}}')
    with pytest.raises(DispatchError, match="'n0' appears twice"):
        load_plan(path, p.graph, p.targets)
    path.write_text('{"assignment": {}}')
    with pytest.raises(DispatchError, match="is not a plan file"):
        load_plan(path, p.graph, p.targets)


def test_loaded_plan_over_capacity_is_refused(tmp_path: Path) -> None:
    g = chain(["Conv", "Conv"])
    w = {"n0": 600, "n1": 600}
    t = {"gpu": FakeTarget("gpu", {"Conv": (2 * US, 0.0)}),
         "asic": FakeTarget("asic", {"Conv": (1 * US, 0.0)}, capacity=1000, weights=w)}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"format": "dispatch-plan", "version": 1,
                                "assignment": {"n0": "asic", "n1": "asic"}}))
    with pytest.raises(DispatchError, match=r"on asic \(1200 bytes\) exceed its capacity \(1000 bytes\)"):
        load_plan(path, g, t)


def test_overhead_and_energy_in_segment_costs() -> None:
    # Two targets with launch overheads; a chain split gpu|asic: each segment pays its target's overhead.
    g = chain(["G", "A"], n=1)
    gpu = FakeTarget("gpu", {"G": (3 * US, 2e-6)}, link=FREE, overhead=Cost(5 * US, 1e-6))
    asic = FakeTarget("asic", {"A": (4 * US, 3e-6)}, link=FREE, overhead=Cost(7 * US, 4e-6))
    pl = plan(g, {"gpu": gpu, "asic": asic})
    # gpu: 3 + 5 us, 2 + 1 uJ; asic: 4 + 7 us, 3 + 4 uJ; free links.
    assert [(s.target, s.cost.latency_s, s.cost.energy_j) for s in pl.segments] == [
        ("gpu", pytest.approx(8 * US), pytest.approx(3e-6)),
        ("asic", pytest.approx(11 * US), pytest.approx(7e-6))]
    assert (pl.predicted.latency_s, pl.predicted.energy_j) == (pytest.approx(19 * US), pytest.approx(10e-6))


def test_every_assignment_is_enumerated_once_in_order() -> None:
    # The exhaustive search's generator: mixed-radix blocks equal itertools.product over supported targets,
    # also when many nodes have one choice (no dimension limit) and when the count exceeds a float.
    import itertools

    from dispatch.objective import assignments, count_assignments

    rng = np.random.default_rng(4)
    g = random_dag(rng, 9)
    p = build_problem(g, random_targets(rng, g, 3))
    got = np.concatenate(list(assignments(p, chunk=16)))
    want = np.array(list(itertools.product(*[np.flatnonzero(r) for r in p.supported])))
    assert (got == want).all() and count_assignments(p) == pytest.approx(len(want))
    many = build_problem(random_dag(rng, 40), {"a": FakeTarget("a", {f"Op{i}": (US, 0.0) for i in range(3)})})
    assert count_assignments(many) == 1 and len(np.concatenate(list(assignments(many)))) == 1

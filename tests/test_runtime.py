"""Runtime, measurement and validation on small hand-built graphs with small targets of our own.

The fake target here runs a segment as one onnxruntime session over a sub-graph it builds itself, so these
tests exercise the runtime's ordering, transfers and timing independently of targets/ and the partitioner.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispatch.cost import Cost, OpCost
from dispatch.errors import DispatchError
from dispatch.frontend import load
from dispatch.ir import Graph, Node
from dispatch.plan import Plan, Segment, Transfer
from dispatch.runtime import Measurement, Runtime, measure
from dispatch.validate import (
    FeedChecker,
    check_feeds,
    compare,
    feed_specs,
    generate_feeds,
    reference_outputs,
)
from targets.base import Link, Target, TargetSpec


# -- fakes ------------------------------------------------------------------------------------------
class FakeOrtTarget(Target):
    """Runs any node; a segment becomes one onnxruntime session over the segment's nodes. Logs its calls."""

    kind = "fake"
    provider = "CPUExecutionProvider (fake target)"

    def __init__(self, name: str) -> None:
        super().__init__(name, TargetSpec(name, "fake", "test target", "<test>", Link(1e9, 1e-6), 1.0, 2.0))
        self.calls: list[tuple[tuple[str, ...], dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        self.compiled = 0
        self.log = False

    def unsupported_reason(self, node: Node) -> str | None:
        return None

    def cost(self, node: Node, op: OpCost) -> Cost:
        return Cost(1e-6, 1e-6)

    def compile(self, graph: Graph, nodes: Sequence[Node], inputs: Sequence[str], outputs: Sequence[str]):
        self.compiled += 1
        produced = {o.name for n in nodes for o in n.outputs}
        consts = {v.name for n in nodes for v in n.present_inputs
                  if v.const is not None and v.name not in produced}

        def info(name: str) -> onnx.ValueInfoProto:
            v = graph.values[name]
            return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)

        g = helper.make_graph([n.proto for n in nodes], "segment", [info(i) for i in inputs],
                              [info(o) for o in outputs],
                              [numpy_helper.from_array(graph.values[c].const, c) for c in sorted(consts)])
        model = helper.make_model(g, opset_imports=list(graph.model.opset_import))
        model.ir_version = graph.model.ir_version
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outs, names = list(outputs), tuple(n.name for n in nodes)

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            res = dict(zip(outs, sess.run(outs, dict(feeds)), strict=True))
            if self.log:
                self.calls.append((names, dict(feeds), res))
            return res

        return run


def plan_from_assignment(graph: Graph, assignment: Mapping[str, str],
                         transfers: bool = True) -> Plan:
    """Contiguous runs of one target in topological order (always convex), with a transfer per crossing."""
    segs: list[list[Node]] = []
    for n in graph.nodes:
        if segs and assignment[segs[-1][0].name] == assignment[n.name]:
            segs[-1].append(n)
        else:
            segs.append([n])
    seg_of = {n.name: i for i, s in enumerate(segs) for n in s}
    segments, xfers, seen = [], [], set()
    for i, nodes in enumerate(segs):
        names = {n.name for n in nodes}
        target = assignment[nodes[0].name]
        ins = list(dict.fromkeys(v.name for n in nodes for v in n.present_inputs
                                 if v.const is None and (v.producer is None or v.producer.name not in names)))
        outs = list(dict.fromkeys(o.name for n in nodes for o in n.outputs
                                  if o.is_graph_output or any(c.name not in names for c in o.consumers)))
        segments.append(Segment(i, target, tuple(n.name for n in nodes), tuple(ins), tuple(outs),
                                Cost(1e-3, 0.0)))
        for name in ins:
            v = graph.values[name]
            if v.producer is not None and transfers and (name, target) not in seen:
                src = assignment[v.producer.name]
                if src != target:
                    seen.add((name, target))
                    xfers.append(Transfer(name, src, target, v.nbytes, Cost(2e-6, 0.0),
                                          seg_of[v.producer.name], i))
    return Plan("test", "latency", dict(assignment), tuple(segments), tuple(xfers), Cost(1.0, 1.0), 1.0, (),
                0.5, False)


def _diamond() -> onnx.ModelProto:
    """h = x·W; r = relu(h); s = r + h; y = s * h  — four nodes, h read by three of them."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "h"], ["s"], name="add"),
             helper.make_node("Mul", ["s", "h"], ["y"], name="mul")]
    g = helper.make_graph(nodes, "diamond",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                          [numpy_helper.from_array(w, "W")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _diamond_ref(x: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    w = numpy_helper.to_array(model.graph.initializer[0])
    h = x @ w
    return (np.maximum(h, 0) + h) * h


ALTERNATING = {"mm": "a", "relu": "b", "add": "a", "mul": "b"}


@pytest.fixture()
def diamond():
    model = _diamond()
    graph = load(model, {"batch": 3})
    targets = {"a": FakeOrtTarget("a"), "b": FakeOrtTarget("b")}
    return model, graph, targets


# -- Runtime ----------------------------------------------------------------------------------------
def test_alternating_plan_matches_numpy_and_moves_copies(diamond):
    model, graph, targets = diamond
    plan = plan_from_assignment(graph, ALTERNATING)
    # segments a[mm] b[relu] a[add] b[mul]; transfers h a→b (before seg 1), r b→a, s a→b; h reaches seg 3 via
    # the copy made for seg 1, since a tensor crossing to a target is paid once.
    assert [(t.tensor, t.dst_segment) for t in plan.transfers] == [("h", 1), ("r", 2), ("s", 3)]
    rt = Runtime(graph, plan, targets)
    assert targets["a"].compiled == 2 and targets["b"].compiled == 2
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    targets["a"].log = targets["b"].log = True
    out = rt.run({"x": x})
    np.testing.assert_allclose(out["y"], _diamond_ref(x, model), rtol=1e-6, atol=1e-6)
    h_on_a = targets["a"].calls[0][2]["h"]
    h_on_b = [c[1]["h"] for c in targets["b"].calls]
    assert len(h_on_b) == 2 and h_on_b[0] is h_on_b[1]  # one copy serves both segments on b
    assert not np.shares_memory(h_on_a, h_on_b[0])  # ...and it is a copy, not the producer's array
    np.testing.assert_array_equal(h_on_a, h_on_b[0])
    assert targets["a"].calls[1][1]["h"] is h_on_a  # on its own target h is not copied


def test_host_transfers_copy_inputs_in_and_outputs_out(diamond):
    """As dispatch.plan builds them: graph inputs come from the host (src_segment −1), outputs go back to it
    (dst_segment −1); both are host copies, timed, and the caller gets the copy that reached the host."""
    model, graph, targets = diamond
    base = plan_from_assignment(graph, {n: "a" for n in ALTERNATING})
    xfers = (Transfer("x", "host", "a", 48, Cost(1e-6, 0.0), -1, 0),
             Transfer("y", "a", "host", 48, Cost(1e-6, 0.0), 0, -1))
    rt = Runtime(graph, dataclasses.replace(base, transfers=xfers), targets)
    targets["a"].log = True
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    out, timing = rt.run_timed({"x": x})
    fed, produced = targets["a"].calls[0][1]["x"], targets["a"].calls[0][2]["y"]
    assert not np.shares_memory(fed, x) and np.array_equal(fed, x)
    assert not np.shares_memory(out["y"], produced) and np.array_equal(out["y"], produced)
    np.testing.assert_allclose(out["y"], _diamond_ref(x, model), rtol=1e-6, atol=1e-6)
    assert len(timing.transfers) == 2 and all(t > 0 for t in timing.transfers)


def test_segments_compile_once(diamond):
    _, graph, targets = diamond
    rt = Runtime(graph, plan_from_assignment(graph, ALTERNATING), targets)
    x = np.ones((3, 4), np.float32)
    for _ in range(5):
        rt.run({"x": x})
    assert targets["a"].compiled + targets["b"].compiled == 4  # once per segment, not per run


def test_run_timed_reports_every_segment_and_transfer(diamond):
    _, graph, targets = diamond
    rt = Runtime(graph, plan_from_assignment(graph, ALTERNATING), targets)
    out, timing = rt.run_timed({"x": np.ones((3, 4), np.float32)})
    assert len(timing.segments) == 4 and len(timing.transfers) == 3
    assert all(s > 0 for s in timing.segments) and all(t > 0 for t in timing.transfers)
    assert timing.total_s >= sum(timing.segments) + sum(timing.transfers)
    np.testing.assert_array_equal(out["y"], rt.run({"x": np.ones((3, 4), np.float32)})["y"])


def test_measure_medians_and_predicted_side_by_side(diamond):
    _, graph, targets = diamond
    plan = plan_from_assignment(graph, ALTERNATING)
    m = measure(Runtime(graph, plan, targets), {"x": np.ones((3, 4), np.float32)}, repeat=5, warmup=1)
    assert isinstance(m, Measurement) and m.repeat == 5 and m.warmup == 1
    assert m.provider == "a: CPUExecutionProvider (fake target); b: CPUExecutionProvider (fake target)"
    assert [s.id for s in m.segments] == [0, 1, 2, 3] and [t.tensor for t in m.transfers] == ["h", "r", "s"]
    vs = m.versus_predicted()
    assert vs[1] == (1e-3, m.segments[1].seconds, "b", "CPUExecutionProvider (fake target)")
    assert m.predicted_s == 1.0 and m.total_s > 0 and m.overhead_s > -1e-3
    assert m.as_dict()["segments"][0]["seconds"] == m.segments[0].seconds
    with pytest.raises(DispatchError, match="repeat >= 1"):
        measure(Runtime(graph, plan, targets), {"x": np.ones((3, 4), np.float32)}, repeat=0)


def test_runtime_is_thread_safe(diamond):
    model, graph, targets = diamond
    rt = Runtime(graph, plan_from_assignment(graph, ALTERNATING), targets)
    xs = [np.random.default_rng(i).standard_normal((3, 4)).astype(np.float32) for i in range(8)]
    serial = [rt.run({"x": x})["y"] for x in xs]
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(50):
            if not np.array_equal(rt.run({"x": xs[i]})["y"], serial[i]):
                errors.append(f"thread {i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_plan_checks(diamond):
    _, graph, targets = diamond
    plan = plan_from_assignment(graph, ALTERNATING)
    with pytest.raises(DispatchError, match="target 'b', which is not among"):
        Runtime(graph, plan, {"a": targets["a"]})
    short = Plan("t", "latency", {}, plan.segments[:3], plan.transfers, Cost(), 0.0, (), 0.0, False)
    with pytest.raises(DispatchError, match="exactly once"):
        Runtime(graph, short, targets)
    order = (plan.segments[1], plan.segments[0]) + plan.segments[2:]
    swapped = Plan("t", "latency", {}, order, (), Cost(), 0.0, (), 0.0, False)
    with pytest.raises(DispatchError, match="needs tensor 'h'"):
        Runtime(graph, swapped, targets)


def test_closed_runtime_refuses(diamond):
    _, graph, targets = diamond
    rt = Runtime(graph, plan_from_assignment(graph, {n: "a" for n in ALTERNATING}), targets)
    with rt:
        rt.run({"x": np.ones((3, 4), np.float32)})
    with pytest.raises(DispatchError, match="closed"):
        rt.run({"x": np.ones((3, 4), np.float32)})


def test_constant_output_and_passthrough():
    """A graph output that is a folded constant still comes out (the runtime binds constants itself)."""
    c = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"),
             helper.make_node("Identity", ["C"], ["k"], name="id")]
    g = helper.make_graph(nodes, "k", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                           helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 3])],
                          [numpy_helper.from_array(c, "C")])
    graph = load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.op_type for n in graph.nodes] == ["Relu"]  # the Identity of a constant is folded away
    rt = Runtime(graph, plan_from_assignment(graph, {"relu": "a"}), {"a": FakeOrtTarget("a")})
    out = rt.run({"x": -np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(out["k"], c)
    np.testing.assert_array_equal(out["y"], np.zeros((2, 3), np.float32))


# -- feeds ------------------------------------------------------------------------------------------
def test_check_feeds_accepts_symbolic_sizes_and_returns_signature():
    model = _diamond()
    assert check_feeds(model, {"x": np.zeros((5, 4), np.float32)}) == ((5, 4),)
    assert check_feeds(model, {"x": np.zeros((1, 4), np.float32)}) == ((1, 4),)
    assert feed_specs(model)[0].describe() == "float32 (batch, 4)"


@pytest.mark.parametrize("feeds, message", [
    ({}, r"Input 'x' is missing from the feeds; pass a float32 \(batch, 4\) array"),
    ({"x": np.zeros((2, 4), np.float32), "z": np.zeros(1)},
     r"Feed 'z' is not an input of the model; remove it"),
    ({"x": np.zeros((2, 4), np.float64)},
     r"Input 'x' has dtype float64 but the model expects float32; cast it with \.astype\(np\.float32\)"),
    ({"x": np.zeros((4,), np.float32)},
     r"Input 'x' has 1 dimensions \(shape \(4,\)\) but the model expects 2"),
    ({"x": np.zeros((2, 5), np.float32)}, r"dimension 1 must be 4; resize the input"),
    ({"x": np.zeros((0, 4), np.float32)}, r"size 0 in its symbolic dimension 'batch'"),
    ({"x": [[0.0] * 4]}, r"Input 'x' is a list, not a numpy array"),
])
def test_check_feeds_errors_name_the_input(feeds, message):
    with pytest.raises(DispatchError, match=message):
        check_feeds(_diamond(), feeds)


def test_check_feeds_symbols_must_agree():
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 2])])
    checker = FeedChecker(feed_specs(helper.make_model(g)))
    sig = checker.check({"a": np.zeros((3, 2), np.float32), "b": np.zeros((3, 2), np.float32)})
    assert sig == ((3, 2), (3, 2))
    with pytest.raises(DispatchError, match="give the symbolic dimension 'n' the sizes 3 and 4"):
        checker.check({"a": np.zeros((3, 2), np.float32), "b": np.zeros((4, 2), np.float32)})
    with pytest.raises(DispatchError, match="must be a dict"):
        checker.check([np.zeros((3, 2), np.float32)])  # type: ignore[arg-type]


def test_generate_feeds_respects_embedding_tables():
    table = np.zeros((50, 4), np.float32)
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("Gather", ["E", "ids64"], ["emb"], name="gather"),
             helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["emb", "x"], ["s"]),
             helper.make_node("Mul", ["s", "maskf"], ["y0"]),
             helper.make_node("Cast", ["flag"], ["flagf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["y0", "flagf"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, [1, 1000]),
                                       helper.make_tensor_value_info("mask", TensorProto.INT64, [1, 1000, 1]),
                                       helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000, 4]),
                                       helper.make_tensor_value_info("flag", TensorProto.BOOL, [1, 1000, 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000, 4])],
                          [numpy_helper.from_array(table, "E")])
    graph = load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    f = generate_feeds(graph, seed=3)
    assert f["ids"].dtype == np.int32
    assert f["ids"].min() >= 0 and f["ids"].max() == 49  # 1000 draws from [0, 50)
    assert set(np.unique(f["mask"])) == {0, 1}  # not an index: small non-negative ints [0, 2)
    assert f["x"].dtype == np.float32 and abs(float(f["x"].std()) - 1.0) < 0.1  # 4000 standard normal draws
    assert f["flag"].dtype == np.bool_
    np.testing.assert_array_equal(generate_feeds(graph, seed=3)["x"], f["x"])  # seeded


# -- comparison -------------------------------------------------------------------------------------
def test_compare_golden_errors():
    r = {"y": np.array([1.0, 2.0, -4.0], np.float32)}
    a = {"y": np.array([1.0, 2.1, -4.0], np.float32)}
    res = compare(a, r)
    # |2.1 − 2.0| = 0.1 (fp32: 0.10000002); elementwise relative 0.1 / 2.0 = 0.05; scale max |r| = 4
    assert res.outputs[0].max_abs_err == pytest.approx(0.1, rel=1e-6)
    assert res.outputs[0].max_rel_err == pytest.approx(0.05, rel=1e-6)
    assert res.outputs[0].scale == 4.0
    assert not res.ok and res.max_abs_err == pytest.approx(0.1, rel=1e-6)
    assert compare(a, r, rtol=0.03).ok  # 0.1 ≤ 1e-5 + 0.03·4 = 0.12
    assert not compare(a, r, rtol=0.02).ok  # 0.1 > 1e-5 + 0.02·4 = 0.08
    assert compare(a, r, rtol=0.0, atol=0.11).ok  # 0.1 ≤ 0.11


def test_compare_is_normwise():
    """Noise of 1e-5 on an output of scale 10 passes even where the reference is tiny (elementwise it would
    be 1e-5 / 1e-3 = 1e-2 relative); an error of 1e-2 does not: 1e-2 > 1e-5 + 1e-4·10 = 1.01e-3."""
    r = np.array([10.0, 1e-3, -3.0])
    assert compare({"y": r + np.array([0.0, 1e-5, 0.0])}, {"y": r}).ok
    assert not compare({"y": r + np.array([0.0, 1e-2, 0.0])}, {"y": r}).ok


def test_compare_shapes_missing_and_nans():
    r = {"y": np.array([np.nan, 1.0]), "z": np.zeros(2)}
    res = compare({"y": np.array([np.nan, 1.0])}, r)
    assert res.outputs[0].ok and res.outputs[0].max_abs_err == 0.0  # NaN where the reference has NaN
    assert not res.outputs[1].ok and res.outputs[1].max_abs_err == float("inf")  # missing
    assert not compare({"y": np.zeros(3)}, {"y": np.zeros(2)}).ok  # shape differs
    assert not compare({"y": np.array([np.nan])}, {"y": np.array([1.0])}).ok
    with pytest.raises(DispatchError, match="non-negative"):
        compare(r, r, rtol=-1)


def test_reference_outputs_runs_the_whole_model():
    model = _diamond()
    graph = load(model, {"batch": 2})
    x = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
    ref = reference_outputs(graph, {"x": x})
    np.testing.assert_allclose(ref["y"], _diamond_ref(x, model), rtol=1e-5, atol=1e-6)
    assert compare({"y": _diamond_ref(x, model)}, ref).ok

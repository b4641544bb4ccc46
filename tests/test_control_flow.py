"""If, Loop and Scan: placed whole on a target that runs them, their outer-scope reads counted as inputs.

Regression: with an If whose branch read a value produced outside it, the optimal plan put the producer on
the ASIC and the If on the GPU without a transfer (the If did not count as a consumer of that value), and
then failed in extraction with a message blaming the user. The IR now lists the values a node's subgraphs
read from the enclosing graph as `Node.implicit_inputs`, part of `present_inputs` and of the Values'
consumers, so the partitioner adds the transfer and the segment takes the value as an input.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispatch import Dispatcher
from dispatch.frontend import load
from targets.subgraph import extract

F = TensorProto.FLOAT
vi = helper.make_tensor_value_info
CPU_ASIC = {"cpu": "host-cpu", "asic": "tpu-v4-like"}


def weight(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)


def if_model(m: int = 64, n: int = 256, o: int = 16) -> onnx.ModelProto:
    """h = (x @ W0) @ W1 on the outside; If(cond): then Relu(h), else Neg(h) — both branches read h."""
    then_g = helper.make_graph([helper.make_node("Relu", ["h"], ["t"])], "then", [], [vi("t", F, [m, o])])
    else_g = helper.make_graph([helper.make_node("Neg", ["h"], ["e"])], "else", [], [vi("e", F, [m, o])])
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["m0"], name="mm0"),
             helper.make_node("MatMul", ["m0", "W1"], ["h"], name="mm1"),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="if")]
    graph = helper.make_graph(nodes, "if_outer", [vi("x", F, [m, n]), vi("cond", TensorProto.BOOL, [])],
                              [vi("y", F, [m, o])], [weight("W0", (n, n), 0), weight("W1", (n, o), 1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def loop_model(d: int = 32) -> onnx.ModelProto:
    """h = x @ W; v = Loop(trip count `trips`, start v0): v <- v + h each iteration (h from outside)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "h"], ["v_out"])],
        "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("v_in", F, [4, d])],
        [vi("cond_out", TensorProto.BOOL, []), vi("v_out", F, [4, d])])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Loop", ["trips", "go", "v0"], ["v"], body=body, name="loop")]
    graph = helper.make_graph(nodes, "loop_outer",
                              [vi("x", F, [4, d]), vi("trips", TensorProto.INT64, []),
                               vi("go", TensorProto.BOOL, []), vi("v0", F, [4, d])],
                              [vi("v", F, [4, d])], [weight("W", (d, d), 2)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def scan_model(t: int = 5, d: int = 32) -> onnx.ModelProto:
    """h = x0 @ W; Scan over xs (t, 4, d) with state s: s <- s @ U + xs[k] + h, where U (an initializer of
    16 KiB, shared with sessions as an external weight) and h come from the outside; ys stacks each s."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["s_in", "U"], ["su"]),
         helper.make_node("Add", ["su", "x_k"], ["sx"]),
         helper.make_node("Add", ["sx", "h"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_k"])],
        "body", [vi("s_in", F, [4, d]), vi("x_k", F, [4, d])], [vi("s_out", F, [4, d]), vi("y_k", F, [4, d])])
    nodes = [helper.make_node("MatMul", ["x0", "W"], ["h"], name="mm"),
             helper.make_node("Scan", ["s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1, name="scan")]
    graph = helper.make_graph(nodes, "scan_outer",
                              [vi("x0", F, [4, d]), vi("s0", F, [4, d]), vi("xs", F, [t, 4, d])],
                              [vi("s", F, [4, d]), vi("ys", F, [t, 4, d])],
                              [weight("W", (d, d), 3), weight("U", (d, d), 4)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outer_scope_reads_are_inputs_in_the_ir() -> None:
    g = load(if_model())
    node_if, h = g.node("if"), g.values["h"]
    assert node_if.implicit_inputs == (h,)
    assert [v.name for v in node_if.present_inputs] == ["cond", "h"]
    assert node_if in h.consumers and g.node("mm1") in node_if.predecessors
    assert [v.name for v in node_if.inputs if v is not None] == ["cond"]  # positions unchanged
    scan = load(scan_model()).node("scan")
    assert [v.name for v in scan.implicit_inputs] == ["U", "h"]  # constants too, in order of first use


def test_if_reading_an_asic_matmul_gets_a_transfer_and_validates() -> None:
    # On cpu + asic, the two MatMuls are cheaper on the ASIC and the If runs only on the CPU.
    with Dispatcher(if_model(), targets=CPU_ASIC) as d:
        segs = {s.target: s for s in d.plan.segments}
        assert [(s.target, s.nodes) for s in d.plan.segments] == [("asic", ("mm0", "mm1")), ("cpu", ("if",))]
        assert set(segs["cpu"].inputs) == {"cond", "h"} and "h" in segs["asic"].outputs
        assert ("h", "asic", "cpu") in {(t.tensor, t.src, t.dst) for t in d.plan.transfers}
        x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
        for cond in (True, False):
            result = d.validate({"x": x, "cond": np.asarray(cond)})
            assert result.ok, result


@pytest.mark.parametrize("strategy", ["optimal", "only:asic"])
def test_if_on_gpu_and_asic_targets(strategy: str) -> None:
    # Default targets: under only:asic the MatMuls go to the ASIC and the If, which the ASIC cannot run,
    # to the GPU, so h must travel; under optimal wherever the costs say. Both run and validate.
    with Dispatcher(if_model(), strategy=strategy) as d:
        target_of = {n: s.target for s in d.plan.segments for n in s.nodes}
        assert target_of["if"] == "gpu"
        if strategy == "only:asic":
            assert target_of["mm1"] == "asic"
        if target_of["mm1"] != target_of["if"]:
            assert ("h", target_of["mm1"], "gpu") in {(t.tensor, t.src, t.dst) for t in d.plan.transfers}
        assert d.validate().ok  # generated feeds: cond is a rank-0 bool array


def test_segment_extraction_keeps_outer_scope_inputs() -> None:
    g = load(if_model())
    model = extract(g, [g.node("if")], ["cond", "h"], ["y"])
    assert [i.name for i in model.graph.input] == ["cond", "h"]
    assert [d.dim_value for d in model.graph.input[1].type.tensor_type.shape.dim] == [64, 16]
    onnx.checker.check_model(model)


@pytest.mark.parametrize("strategy", ["optimal", "only:asic"])
@pytest.mark.parametrize("targets", [None, CPU_ASIC], ids=["gpu+asic", "cpu+asic"])
def test_loop_reading_an_outer_value(strategy: str, targets: dict[str, str] | None) -> None:
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((4, 32)).astype(np.float32), "trips": np.asarray(3, np.int64),
             "go": np.asarray(True), "v0": rng.standard_normal((4, 32)).astype(np.float32)}
    with Dispatcher(loop_model(), targets=targets, strategy=strategy, asic_numerics="exact") as d:
        assert {s.target for s in d.plan.segments if "loop" in s.nodes} != {"asic"}
        assert d.validate(feeds).ok
        assert d.validate().ok  # generated: trips, go are rank-0 arrays
        (v,) = d.run(feeds).values()
        w = numpy_helper.to_array(loop_model().graph.initializer[0])
        np.testing.assert_allclose(v, feeds["v0"] + 3 * (feeds["x"] @ w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ["optimal", "only:asic"])
@pytest.mark.parametrize("targets", [None, CPU_ASIC], ids=["gpu+asic", "cpu+asic"])
def test_scan_reading_an_outer_value_and_a_shared_weight(strategy: str,
                                                         targets: dict[str, str] | None) -> None:
    with Dispatcher(scan_model(), targets=targets, strategy=strategy) as d:
        target_of = {n: s.target for s in d.plan.segments for n in s.nodes}
        assert target_of["scan"] != "asic"
        if strategy == "only:asic":
            assert target_of["mm"] == "asic"
        result = d.validate()
        assert result.ok and [o.name for o in result.outputs] == ["s", "ys"]


def test_folding_keeps_initializers_and_values_a_subgraph_reads() -> None:
    # W2 = W + W folds to a constant; W is read by the fold and by the If's branch, W2 only by the branch:
    # both must survive folding (they were dropped: only listed inputs counted as still needed).
    then_g = helper.make_graph([helper.make_node("Add", ["x", "W"], ["t"])], "then", [],
                               [vi("t", F, [2, 3])])
    else_g = helper.make_graph([helper.make_node("Add", ["x", "W2"], ["e"])], "else", [],
                               [vi("e", F, [2, 3])])
    nodes = [helper.make_node("Add", ["W", "W"], ["W2"], name="fold_me"),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="if")]
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    graph = helper.make_graph(nodes, "fold_if", [vi("x", F, [2, 3]), vi("cond", TensorProto.BOOL, [])],
                              [vi("y", F, [2, 3])], [numpy_helper.from_array(w, "W")])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.name for n in g.nodes] == ["if"]
    assert {v.name for v in g.node("if").implicit_inputs} == {"x", "W", "W2"}
    np.testing.assert_array_equal(g.values["W2"].const, 2 * w)
    x = np.ones((2, 3), np.float32)
    with Dispatcher(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])) as d:
        for cond, want in ((True, x + w), (False, x + 2 * w)):
            (y,) = d.run({"x": x, "cond": np.asarray(cond)}).values()
            np.testing.assert_array_equal(y, want)

"""Reduced-precision models end to end: int8 (operator and QDQ forms, dynamic MatMulInteger), fp16, bf16.

The zoo variants (models/quantize.py) plan on a GPU preset and an ASIC preset on this machine without a
GPU, run, and validate against onnxruntime on the whole model. Every ASIC segment that runs an integer
kernel is also compared with onnxruntime's CPU kernels running that segment alone on the same inputs: the
integer outputs (and the DequantizeLinear floats) must be bit-identical.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import models
from dispatch import Dispatcher
from dispatch.frontend import load
from dispatch.ir import Graph
from dispatch.validate import generate_feeds
from targets.subgraph import extract

INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QuantizeLinear",
               "DequantizeLinear"}
TARGET_SETS = {"tpu": {"gpu": "h100-sxm", "asic": "tpu-v4-like"},
               "edge": {"gpu": "h100-sxm", "asic": "edge-npu"}}


def _session(model: onnx.ModelProto, graph: Graph | None = None) -> ort.InferenceSession:
    """onnxruntime CPU, graph optimisations off: the kernels as the spec's ops, nothing fused."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    keep = []
    if graph is not None:
        opts, keep = graph.session_options_with_weights(opts)
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    sess._dispatch_keep = keep  # the weights' OrtValues live as long as the session
    return sess


def _values(graph: Graph, names: set[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The named tensors of one onnxruntime run of the whole model (exposed as extra outputs)."""
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    have = {o.name for o in model.graph.output} | set(feeds)
    for name in sorted(names - have):
        v = graph.values[name]
        model.graph.output.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
    wanted = [o.name for o in model.graph.output]
    out = dict(zip(wanted, _session(model, graph).run(wanted, feeds), strict=True))
    return {**feeds, **out}


def _check_int8_segments(d: Dispatcher, feeds: dict[str, np.ndarray]) -> int:
    """Run every ASIC segment holding an integer op with the ASIC's kernels and with onnxruntime, on the
    same inputs; assert identical outputs. Returns how many integer nodes were checked."""
    graph, plan, asic = d.graph, d.plan, d.targets["asic"]
    segments = [s for s in plan.segments if s.target == "asic"
                and any(graph.node(n).op_type in INTEGER_OPS for n in s.nodes)]
    assert segments, "the plan puts no integer op on the ASIC"
    values = _values(graph, {t for s in segments for t in (*s.inputs, *s.outputs)}, feeds)
    checked = 0
    for s in segments:
        nodes = [graph.node(n) for n in s.nodes]
        ins = {t: values[t] for t in s.inputs}
        ours = asic.compile(graph, nodes, list(s.inputs), list(s.outputs))(ins)
        model = extract(graph, nodes, list(s.inputs), list(s.outputs))
        theirs = dict(zip(s.outputs, _session(model).run(list(s.outputs), ins), strict=True))
        for t in s.outputs:
            assert ours[t].dtype == theirs[t].dtype, t
            np.testing.assert_array_equal(ours[t], theirs[t], err_msg=f"segment {s.id} output {t}")
        checked += sum(n.op_type in INTEGER_OPS for n in nodes)
    return checked


@pytest.mark.parametrize("targets", sorted(TARGET_SETS))
def test_tiny_int8_on_the_asic_bit_exact(targets):
    # tiny_cnn in operator form: 4 QLinearConv, Q/DQ around the float Relu, MaxPool, Add, pooling and Gemm
    d = Dispatcher("tiny_cnn-int8", TARGET_SETS[targets], shapes={"batch": 2})
    feeds = d.example_feeds()
    assert d.validate(feeds).ok
    ops = [d.graph.node(n).op_type for s in d.plan.segments if s.target == "asic" for n in s.nodes]
    assert ops.count("QLinearConv") == 4
    assert _check_int8_segments(d, feeds) >= 4


def test_tiny_qdq_plans_and_runs():
    # QDQ form: float Convs whose filters are the DequantizeLinear of int8 constants; the ASIC takes them
    d = Dispatcher("tiny_cnn-qdq", TARGET_SETS["edge"], shapes={"batch": 2})
    assert d.validate().ok
    g = d.graph
    assert any(n.op_type == "Conv" and d.targets["asic"].supports(n) for n in g.nodes)


def test_edge_npu_prefers_int8():
    # The same convolution costs less on edge-npu in int8 (QLinearConv) than in float (fp16 at a quarter of
    # the int8 rate, 2-byte words): the float tiny_cnn's convs against its int8 variant's.
    asic = Dispatcher("tiny_cnn", TARGET_SETS["edge"], shapes={"batch": 2}).targets["asic"]
    f32 = load("tiny_cnn", shapes={"batch": 2})
    i8 = load("tiny_cnn-int8", shapes={"batch": 2})
    conv = [n for n in f32.nodes if n.op_type == "Conv"][-1]
    qconv = [n for n in i8.nodes if n.op_type == "QLinearConv"][-1]
    t_f, t_q = asic.gemm_timing(conv), asic.gemm_timing(qconv)
    assert t_f.macs == t_q.macs
    assert t_f.compute_cycles == pytest.approx(4 * t_q.compute_cycles, abs=4)  # 1/0.25, rounded up
    assert asic.cost(qconv).latency_s < asic.cost(conv).latency_s


def test_int8_macs_match_the_float_model():
    # Quantisation keeps every GEMM: the int8 variant's int8 MACs equal the float model's MACs.
    from dispatch.analysis import analyze

    f32 = sum(c.macs for c in analyze(load("tiny_cnn", shapes={"batch": 2})))
    costs = analyze(load("tiny_cnn-int8", shapes={"batch": 2}))
    assert sum(c.macs for c in costs if c.mac_dtype == "int8") + sum(
        c.macs for c in costs if c.mac_dtype == "" and c.op_class == "gemm") == f32
    assert {c.mac_dtype for c in costs if c.macs} == {"int8", ""}  # the Gemm head stays float


@pytest.mark.slow
@pytest.mark.parametrize("targets", sorted(TARGET_SETS))
@pytest.mark.parametrize("name", ["resnet50-int8", "bert-int8"])
def test_int8_zoo_models_plan_run_validate_bit_exact(name, targets):
    models.build(name)
    d = Dispatcher(name, TARGET_SETS[targets])
    feeds = generate_feeds(d.graph, 0)
    result = d.validate(feeds)
    assert result.ok, result.as_dict()
    checked = _check_int8_segments(d, feeds)
    # every QLinearConv (ResNet-50: 53) / MatMulInteger (BERT: 72) that the plan puts on the ASIC is checked
    assert checked > 0


def test_16_bit_tolerance_floor_grows_with_depth():
    # float16 u = 2^-11: the rtol floor is u·max(20, 5·sqrt(depth)): depth 1 -> 20u = 9.77e-3; depth 400 ->
    # 5·20·u = 100u = 4.88e-2. An error of 3% of the scale fails the first and passes the second.
    from dispatch.validate import compare, graph_depth

    r = np.array([1.0, -2.0, 4.0], np.float16)
    a = r + np.array([0.0, 0.0, 0.12], np.float16)  # 0.12 / 4 = 3%
    shallow, deep = compare({"y": a}, {"y": r}), compare({"y": a}, {"y": r}, depth=400)
    assert not shallow.ok and shallow.outputs[0].tolerances[0] == pytest.approx(20 * 2.0**-11)
    assert deep.ok and deep.outputs[0].tolerances[0] == pytest.approx(100 * 2.0**-11)
    assert graph_depth(load("tiny_cnn-fp16", shapes={"batch": 1})) == 13  # every node on one path


def _bf16_mlp() -> onnx.ModelProto:
    """x (8, 64) bf16 -> MatMul W1 (64, 128) -> Add b1 -> Relu -> Softmax -> MatMul W2 (128, 32) -> y, every
    tensor and initializer bfloat16 (ml_dtypes arrays through onnx.numpy_helper). Outputs of order 1-3."""
    rng = np.random.default_rng(3)
    bf = ml_dtypes.bfloat16
    w1 = (rng.standard_normal((64, 128)) / 8).astype(bf)
    b1 = rng.standard_normal(128).astype(bf)
    w2 = (rng.standard_normal((128, 32)) * 8).astype(bf)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("Softmax", ["r"], ["s"], name="sm", axis=-1),
             helper.make_node("MatMul", ["s", "W2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "bf16",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [8, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [8, 32])],
                              [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(b1, "b1"),
                               numpy_helper.from_array(w2, "W2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("strategy", ["optimal", "only:asic"])
def test_bfloat16_model_plans_runs_validates(strategy):
    d = Dispatcher(_bf16_mlp(), TARGET_SETS["tpu"], strategy=strategy)
    assert d.graph.values["W1"].const.dtype == ml_dtypes.bfloat16  # loaded and kept as bfloat16
    feeds = d.example_feeds()
    assert feeds["x"].dtype == ml_dtypes.bfloat16
    out = d.run(feeds)["y"]
    assert out.dtype == ml_dtypes.bfloat16
    result = d.validate(feeds)
    assert result.ok, result.as_dict()
    err = result.outputs[0]
    assert err.scale > 1.0  # the tolerance (2^-8 · 20 of the scale) is not swamped by atol
    if strategy == "only:asic":  # the MatMuls ran in the ASIC's bf16 kernels (fp32 sums, bf16 outputs)
        assert {d.graph.node(n).op_type for s in d.plan.segments if s.target == "asic" for n in s.nodes} \
            >= {"MatMul", "Add", "Relu"}
    # a result 20% of the scale off fails (the bfloat16 floor is 20·2^-8 = 7.8% of the scale)
    bad = {"y": (out.astype(np.float32) + 0.2 * err.scale).astype(ml_dtypes.bfloat16)}
    from dispatch.validate import compare, reference_outputs
    assert not compare(bad, reference_outputs(d.graph, feeds)).ok


@pytest.mark.parametrize("targets", sorted(TARGET_SETS))
def test_tiny_fp16_plans_runs_validates(targets):
    d = Dispatcher("tiny_cnn-fp16", TARGET_SETS[targets], shapes={"batch": 2})
    feeds = d.example_feeds()
    assert feeds["input"].dtype == np.float16
    assert d.validate(feeds).ok
    if targets == "edge":  # edge-npu takes float16 tensors: its kernels run them when asked to
        a = Dispatcher("tiny_cnn-fp16", TARGET_SETS[targets], strategy="only:asic", shapes={"batch": 2})
        assert any(s.target == "asic" for s in a.plan.segments)
        assert a.validate(feeds).ok


@pytest.mark.slow
@pytest.mark.parametrize(("name", "targets", "strategy"), [
    ("resnet50-fp16", "tpu", "optimal"), ("resnet50-fp16", "edge", "optimal"),
    ("resnet50-fp16", "edge", "only:asic"),  # every conv in the ASIC's fp16 kernels
    ("bert-fp16", "tpu", "optimal"), ("bert-fp16", "edge", "optimal")])
def test_fp16_zoo_models_plan_run_validate(name, targets, strategy):
    models.build(name)
    d = Dispatcher(name, TARGET_SETS[targets], strategy=strategy)
    result = d.validate()
    assert result.ok, result.as_dict()


@pytest.mark.slow
@pytest.mark.parametrize("targets", sorted(TARGET_SETS))
def test_resnet50_qdq_plans_runs_within_onnxruntimes_own_spread(targets):
    # QDQ form: onnxruntime's extended optimisations fuse DequantizeLinear -> Conv -> QuantizeLinear into
    # its integer kernels, which round differently from the float ops as written; with optimisations off the
    # same model gives other outputs (measured: 0.458 apart on outputs of scale 6.72). A plan evaluates the
    # patterns that segment boundaries or targets split as written, the others fused, so the check is that
    # its outputs are no farther from onnxruntime's than onnxruntime's two evaluations are apart.
    models.build("resnet50-qdq")
    d = Dispatcher("resnet50-qdq", TARGET_SETS[targets])
    feeds = d.example_feeds()
    out = d.run(feeds)["output"]
    model = d.graph.model
    unfused = _session(model, d.graph)  # optimisations off
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts, keep = d.graph.session_options_with_weights(opts)
    full = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    as_written, with_fusions = unfused.run(None, feeds)[0], full.run(None, feeds)[0]
    spread = float(np.abs(as_written - with_fusions).max())
    assert 0 < spread < 0.1 * float(np.abs(with_fusions).max())
    assert float(np.abs(out - with_fusions).max()) <= spread
    assert any(s.target == "asic" for s in d.plan.segments)


def test_int8_timing_figures_per_preset():
    from dispatch.errors import DispatchError
    from targets.base import make_target

    tpu, edge = make_target("asic", "tpu-v4-like"), make_target("asic", "edge-npu")
    # TPU v4: 275 TOP/s int8 = its bf16 peak (macs_per_pe_cycle int8 = bf16 = 1); one-byte words
    assert tpu.params.peak_ops("int8") == tpu.params.peak_ops("bf16") == tpu.peak_flops
    assert tpu.params.timing_array("int8").word_bytes == 1 and tpu.params.array.word_bytes == 2
    # MAC energy scaled by Horowitz's int8/bf16 ratio: 0.6 pJ · (0.2 + 0.1) / (1.1 + 0.9) = 0.09 pJ
    assert tpu.params.energy_for("int8").pj_per_mac == pytest.approx(0.09)
    # edge-npu: fp16 MAC 2.0 pJ [H14] -> int8 0.3 pJ
    assert edge.params.energy_for("int8").pj_per_mac == pytest.approx(0.3)
    # wse2-like lists no int8: the integer ops stay off it
    wse = make_target("asic", "wse2-like")
    qconv = [n for n in load("tiny_cnn-int8", shapes={"batch": 1}).nodes if n.op_type == "QLinearConv"][0]
    assert "no int8" in wse.unsupported_reason(qconv) and tpu.supports(qconv)
    with pytest.raises(DispatchError, match="macs_per_pe_cycle"):
        make_target("asic", "tpu-v4-like", macs_per_pe_cycle={"fp16": 0.5})  # fp16 is not in its dtypes


def test_quantized_spread_floors_atol():
    from dispatch.validate import compare, quantized_spread, reference_outputs

    r = {"y": np.array([1.0, 2.0, 3.0], np.float32)}
    a = {"y": np.array([1.0, 2.3, 3.0], np.float32)}  # 0.3 off
    assert not compare(a, r).ok
    raised = compare(a, r, atol_floors={"y": 0.3})
    assert raised.ok and raised.outputs[0].tolerances == (1e-4, 0.3)
    assert raised.outputs[0].raised_for == "quantized"
    assert not compare(a, r, atol_floors={"y": 0.1}).ok  # 0.3 > 0.1 + 1e-4·3
    f32 = load("tiny_cnn", shapes={"batch": 2})
    feeds = generate_feeds(f32, 0)
    assert quantized_spread(f32, feeds, reference_outputs(f32, feeds)) == {}  # float model: no floor
    q = load("tiny_cnn-qdq", shapes={"batch": 2})
    spread = quantized_spread(q, feeds, reference_outputs(q, feeds))
    assert set(spread) == {"output"} and 0 <= spread["output"] < 1


def test_bfloat16_constants_fold():
    # Cast(float32 [[0..5]]) -> bfloat16, times a bfloat16 2: folded by onnx's reference evaluator into one
    # bfloat16 initializer [[0, 2, 4], [6, 8, 10]] read by the remaining Add.
    bf = ml_dtypes.bfloat16
    nodes = [helper.make_node("Cast", ["c"], ["cb"], to=TensorProto.BFLOAT16),
             helper.make_node("Mul", ["cb", "two"], ["k"]),
             helper.make_node("Add", ["x", "k"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "fold",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 3])],
                              [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "c"),
                               numpy_helper.from_array(np.array(2, bf), "two")])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.op_type for n in g.nodes] == ["Add"]
    k = g.node("add").inputs[1].const
    assert k.dtype == bf and k.astype(np.float32).tolist() == [[0, 2, 4], [6, 8, 10]]


def test_qdq_wrapped_convs_are_timed_in_int8():
    # tiny_cnn-qdq's convs read DequantizeLinear outputs and feed only QuantizeLinear: edge-npu times them
    # in int8 (1-byte words, full rate) where the float model's same-shape convs run at the fp16 rate, 1/4.
    from targets.base import make_target

    edge = make_target("asic", "edge-npu")
    qdq = [n for n in load("tiny_cnn-qdq", shapes={"batch": 2}).nodes if n.op_type == "Conv"]
    f32 = [n for n in load("tiny_cnn", shapes={"batch": 2}).nodes if n.op_type == "Conv"]
    assert len(qdq) == len(f32) > 0
    for q, f in zip(qdq, f32, strict=True):
        assert edge.timing_dtype(q) == "int8" and edge.timing_dtype(f) == "fp16"
        cycles_q, cycles_f = edge.gemm_timing(q).compute_cycles, edge.gemm_timing(f).compute_cycles
        assert 4 * cycles_q == pytest.approx(cycles_f, abs=4)
        assert edge.cost(q).latency_s < edge.cost(f).latency_s  # the cost cache keeps the two apart

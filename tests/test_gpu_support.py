"""GPU/CPU support is what the planned provider runs: kernels, ONNX functions, onnxruntime's rewrites, and
float16 segments run upcast where the provider here lacks the kernels (issue 9, item 2)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispatch import Dispatcher
from dispatch.frontend import load
from dispatch.partition import plan
from dispatch.validate import compare, reference_outputs
from targets.base import make_target
from targets.gpu import GpuTarget
from targets.support import COVERAGE_DIR, Support, cuda_coverage, local_coverage
from targets.upcast import upcast_model

F, H, B = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16
NO_GPU = "CUDAExecutionProvider" not in ort.get_available_providers()
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the modelled CUDA coverage, used without a GPU")


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                          initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _unary(op, dtype=F, opset=17, shape=(2, 8), **attrs):
    return load(_model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", dtype, list(shape))],
                       [("y", dtype, list(shape))], opset=opset))


@pytest.fixture(scope="module")
def gpu():
    return make_target("gpu", "h100-sxm", profile=False)


@pytest.fixture(scope="module")
def cpu():
    return make_target("cpu", "host-cpu", profile=False)


def _mobilenet_v3_block():
    """Conv -> HardSwish -> depthwise Conv -> HardSwish -> squeeze-excite (GlobalAveragePool, Conv, Relu,
    Conv, HardSigmoid, Mul) -> 1x1 Conv -> residual Add: the block of MobileNetV3 (Howard et al., 2019)."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2"], ["c2"], group=16, pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c2"], ["h2"]),
        helper.make_node("GlobalAveragePool", ["h2"], ["p"]),
        helper.make_node("Conv", ["p", "w3"], ["s1"]),
        helper.make_node("Relu", ["s1"], ["s2"]),
        helper.make_node("Conv", ["s2", "w4"], ["s3"]),
        helper.make_node("HardSigmoid", ["s3"], ["s4"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["h2", "s4"], ["se"]),
        helper.make_node("Conv", ["se", "w5"], ["c5"]),
        helper.make_node("Add", ["c5", "x"], ["y"]),
    ]
    inits = [w("w1", 16, 8, 1, 1), w("w2", 16, 1, 3, 3), w("w3", 4, 16, 1, 1), w("w4", 16, 4, 1, 1),
             w("w5", 8, 16, 1, 1)]
    return _model(nodes, [("x", F, [1, 8, 14, 14])], [("y", F, [1, 8, 14, 14])], inits)


def test_hardswish_plans_on_the_gpu(gpu):
    # regression: "HardSwish can run on none of the targets (gpu: onnxruntime's CPUExecutionProvider has no
    # kernel for HardSwish)": HardSwish is an ONNX function, and CUDA has a kernel for it
    g = _unary("HardSwish", opset=14)
    assert gpu.unsupported_reason(g.nodes[0]) is None
    p = plan(g, {"gpu": gpu, "asic": make_target("asic", "tpu-v4-like")})
    assert p.assignment == {g.nodes[0].name: "gpu"}


def test_mobilenet_v3_block_runs_with_hardswish_on_the_gpu(gpu):
    with Dispatcher(_mobilenet_v3_block(), {"gpu": gpu, "asic": "tpu-v4-like"}) as d:
        assignment = d.plan.assignment
        hs = [n for n in d.graph.nodes if n.op_type in ("HardSwish", "HardSigmoid")]
        assert len(hs) == 3 and all(assignment[n.name] == "gpu" for n in hs)
        x = np.random.default_rng(1).standard_normal((1, 8, 14, 14)).astype(np.float32)
        assert d.validate({"x": x}).ok


@needs_no_gpu
@pytest.mark.parametrize("op, opset, body", [("Celu", 17, "Elu"), ("Mish", 18, "Softplus"),
                                             ("Swish", 24, "Sigmoid")])
def test_function_ops_cuda_lacks_expand_into_ops_it_has(gpu, op, opset, body):
    # CUDA has no Celu, Mish or Swish kernel (cuda_kernels.json), but each is an ONNX function whose body
    # (e.g. Celu: Div, Elu, Mul) it runs: supported, decided by expanding the body
    g = _unary(op, opset=opset)
    cov = cuda_coverage()
    assert ("", op) not in cov.kernels and ("", body) in cov.kernels
    s = Support(cov)
    assert s.reason(g.nodes[0]) is None and s.expansions == 1 and s.probes == 0
    assert gpu.unsupported_reason(g.nodes[0]) is None


@needs_no_gpu
def test_an_op_cuda_lacks_is_refused_on_the_gpu_naming_op_and_provider(gpu, cpu):
    g = load(_model([helper.make_node("Det", ["x"], ["y"])], [("x", F, [3, 3])], [("y", F, [])]))
    assert gpu.unsupported_reason(g.nodes[0]) == "onnxruntime's CUDAExecutionProvider has no kernel for Det"
    assert cpu.supports(g.nodes[0])  # the CPU provider has one
    # an ONNX function whose body needs an op CUDA lacks is refused with that op named
    g = _unary("Mish", dtype=B, opset=18)
    assert gpu.unsupported_reason(g.nodes[0]) == (
        "onnxruntime's CUDAExecutionProvider has no kernel for Mish; its ONNX function body needs Log "
        "(onnxruntime's CUDAExecutionProvider has no Log kernel for T=tensor(bfloat16) at opset 18)")


def test_cuda_coverage_file_says_where_it_came_from():
    doc = json.loads((COVERAGE_DIR / "cuda_kernels.json").read_text())
    assert doc["provider"] == "CUDAExecutionProvider" and "onnxruntime" in doc["source"]
    assert "commit" in doc["source"] and "VERSION_NUMBER" in doc["source"]
    cov = cuda_coverage()
    mm = cov.kernels[("", "MatMul")]
    assert any(k.since <= 13 <= k.until and "tensor(float16)" in k.types["T"] for k in mm)
    assert ("", "NonMaxSuppression") in cov.kernels  # registered with fixed types: added by the generator


def test_support_is_cached_per_signature(cpu):
    # 200 HardSwish nodes of one signature and 200 Relu: one kernel lookup each, one probe for HardSwish
    # (no CPU kernel: onnxruntime inlines the function) and none for Relu (a kernel matches)
    nodes = []
    for i in range(200):
        nodes += [helper.make_node("HardSwish", [f"a{i}"], [f"b{i}"]),
                  helper.make_node("Relu", [f"b{i}"], [f"a{i + 1}"])]
    g = load(_model(nodes, [("a0", F, [4, 4])], [("a200", F, [4, 4])], opset=14))
    s = Support(local_coverage("CPUExecutionProvider"), probe=True)
    assert all(s.reason(n) is None for n in g.nodes)
    assert s.probes == 1 and len(s._kernel) == 2 and len(s._full) == 1
    assert all(s.reason(n) is None for n in g.nodes) and s.probes == 1  # all hits the second time


def test_bfloat16_is_refused_on_the_cpu_with_onnxruntimes_own_reason(cpu, gpu):
    g = _unary("Relu", dtype=B)
    why = cpu.unsupported_reason(g.nodes[0])
    assert why.startswith("onnxruntime's CPUExecutionProvider cannot run Relu on tensor(bfloat16)")
    assert "Could not find an implementation for Relu(14)" in why
    if NO_GPU:  # the planned CUDA runs it; here it runs upcast to float32
        assert gpu.unsupported_reason(g.nodes[0]) is None


def _fp16_mlp():
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((64, 128)) * 0.1).astype(np.float16), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((128, 32)) * 0.1).astype(np.float16), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    return _model(nodes, [("x", H, [8, 64])], [("y", H, [8, 32])], [w1, w2])


@needs_no_gpu
def test_fp16_matmul_plans_on_the_gpu_preset_runs_upcast_and_validates(gpu):
    # regression: "onnxruntime's CPUExecutionProvider has no MatMul kernel for float16"
    with Dispatcher(_fp16_mlp(), {"gpu": gpu, "asic": "tpu-v4-like"}) as d:
        assert set(d.plan.assignment.values()) == {"gpu"}  # the TPU-like ASIC takes no float16
        x = np.random.default_rng(2).standard_normal((8, 64)).astype(np.float16)
        out = d.run({"x": x})["y"]
        assert out.dtype == np.float16
        # float32 throughout, rounded once at the end: within half an ulp of float16 of the exact product
        ref32 = np.maximum(x.astype(np.float32) @ d.graph.values["w1"].const.astype(np.float32), 0) \
            @ d.graph.values["w2"].const.astype(np.float32)
        assert np.abs(out.astype(np.float32) - ref32).max() <= np.abs(ref32).max() * 2.0**-11
        v = d.validate({"x": x})
        assert v.ok and v.outputs[0].tolerances == (20 * 2.0**-11, 2 * 2.0**-11)
        m = d.measure({"x": x}, repeat=1)
        assert m.segments[0].provider == "CPUExecutionProvider (fp16 upcast to fp32)"
        assert m.provider == "gpu: CPUExecutionProvider (fp16 upcast to fp32)"
        report = d.report()
        assert report["measured"]["outputs"][0]["rtol"] == pytest.approx(9.765625e-3)
        # the prediction stays the planned part's at the node's own dtype (2 bytes per element)
        assert report["plan"]["segments"][0]["predicted_latency_s"] > 0


def test_fp16_tolerances_catch_a_real_fault():
    g = load(_fp16_mlp())
    x = np.random.default_rng(3).standard_normal((8, 64)).astype(np.float16)
    ref = reference_outputs(g, {"x": x})
    wrong = {"y": (ref["y"].astype(np.float32) * 1.05).astype(np.float16)}  # a 5% error: a wrong scale
    assert compare(ref, ref).ok and not compare(wrong, ref).ok


def test_upcast_model_widens_every_low_precision_float():
    m = _model([helper.make_node("Cast", ["x"], ["c"], to=B),
                helper.make_node("ConstantOfShape", ["s"], ["k"],
                                 value=numpy_helper.from_array(np.array([1.5], np.float16))),
                helper.make_node("Add", ["c", "w"], ["y"])],
               [("x", F, [2]), ("s", TensorProto.INT64, [1])], [("y", B, [2]), ("k", H, [2])],
               [numpy_helper.from_array(np.array([1, 2], np.float16), "w")])
    up, changed = upcast_model(m)
    assert changed and not upcast_model(up)[1]
    assert up.graph.node[0].attribute[0].i == F and up.graph.node[1].attribute[0].t.data_type == F
    assert up.graph.initializer[0].data_type == F
    assert {o.type.tensor_type.elem_type for o in up.graph.output} == {F}
    out = ort.InferenceSession(up.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.array([0.5, 1.0], np.float32), "s": np.array([2], np.int64)})
    np.testing.assert_array_equal(out[0], [1.5, 3.0])
    np.testing.assert_array_equal(out[1], [1.5, 1.5])


def test_gpu_provider_inlines_function_ops_it_has_no_kernel_for():
    # what a real CUDA provider's compile does (testable here against the modelled table): Celu, which CUDA
    # lacks, is replaced by its body, so onnxruntime does not hand it to the CPU provider
    m = _model([helper.make_node("Celu", ["x"], ["y"], alpha=0.5)], [("x", F, [2, 3])], [("y", F, [2, 3])])
    nodes = load(m).nodes
    inlined = Support(cuda_coverage()).inline_functions(m, nodes)
    ops = {n.op_type for n in inlined.graph.node}
    assert "Celu" not in ops and "Elu" in ops
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    cpu = ["CPUExecutionProvider"]
    run = [ort.InferenceSession(mm.SerializeToString(), providers=cpu).run(None, {"x": x})
           for mm in (m, inlined)]
    np.testing.assert_allclose(run[0][0], run[1][0], rtol=1e-6)
    covered = _fp16_mlp()  # MatMul and Relu have CUDA kernels: nothing to inline, the model is returned as is
    assert Support(cuda_coverage()).inline_functions(covered, load(covered).nodes) is covered

    class OnCuda:  # what GpuTarget._expand sees with a CUDA provider present
        provider = "CUDAExecutionProvider"
        planned = Support(cuda_coverage())

    assert "Celu" not in {n.op_type for n in GpuTarget._expand(OnCuda(), m, nodes).graph.node}
    if NO_GPU:  # on the CPU provider onnxruntime inlines what it lacks itself: the model goes as it is
        assert make_target("gpu", "h100-sxm", profile=False)._expand(m, nodes) is m


def test_fp16_nodes_are_predicted_at_the_parts_fp16_peak(gpu):
    # the prediction is for the planned H100 at the node's own dtype, not for the float32 run here
    from dispatch.analysis import analyze_node

    def matmul(dtype):
        n = 4096
        return load(_model([helper.make_node("MatMul", ["a", "b"], ["c"])], [("a", dtype, [n, n]),
                           ("b", dtype, [n, n])], [("c", dtype, [n, n])])).nodes[0]

    h, f = matmul(H), matmul(F)
    assert gpu.precision == "fp32" and gpu.precision_of(h) == "fp16" and gpu.precision_of(f) == "fp32"
    at_fp16 = make_target("gpu", "h100-sxm", precision="fp16", profile=False)
    assert gpu.cost(h, analyze_node(h)) == at_fp16.cost(h, analyze_node(h))
    # compute-bound: 989 TFLOP/s dense fp16 against 67 fp32, 14.8x; launch and tiles aside, well over 5x
    assert gpu.cost(f, analyze_node(f)).latency_s > 5 * gpu.cost(h, analyze_node(h)).latency_s


def test_sequence_map_is_typed_from_its_body_and_runs(gpu, cpu):
    # regression: onnx's inliner crashed the process (SIGSEGV) on SequenceMap's untyped sequence input; its
    # sequences are now typed from the body (float tensors): onnxruntime probes it, the inliner expands it
    vi = helper.make_tensor_value_info
    body = helper.make_graph([helper.make_node("Add", ["a", "one"], ["b"])], "body", [vi("a", F, ["N"])],
                             [vi("b", F, ["N"])], initializer=[helper.make_tensor("one", F, [], [1.0])])
    seq = helper.make_tensor_sequence_value_info
    graph = helper.make_graph([helper.make_node("SequenceMap", ["x"], ["y"], body=body)], "t",
                              [seq("x", F, None)], [seq("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    node = load(model).nodes[0]
    assert cpu.unsupported_reason(node) is None and gpu.unsupported_reason(node) is None
    with Dispatcher(model, {"gpu": "h100-sxm"}) as d:  # each element + 1 (the body's Add)
        y = d.run({"x": [np.zeros(2, np.float32), np.arange(3, dtype=np.float32)]})["y"]
    assert [a.tolist() for a in y] == [[1.0, 1.0], [1.0, 2.0, 3.0]]


@needs_no_gpu
def test_bfloat16_segment_runs_upcast_and_says_so(gpu):
    import ml_dtypes

    m = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["y"])],
               [("x", B, [4, 16])], [("y", B, [4, 16])])
    with Dispatcher(m, {"gpu": gpu}, strategy="only:gpu") as d:
        x = np.random.default_rng(4).standard_normal((4, 16)).astype(ml_dtypes.bfloat16)
        out = d.run({"x": x})["y"]
        assert out.dtype == ml_dtypes.bfloat16
        want = np.exp(np.maximum(x.astype(np.float32), 0))
        want = want / want.sum(-1, keepdims=True)  # float32 inside, rounded to bfloat16 once: within u = 2^-8
        np.testing.assert_allclose(out.astype(np.float32), want, rtol=2.0**-8, atol=0)
        assert d.measure({"x": x}, repeat=1).provider == "gpu: CPUExecutionProvider (bf16 upcast to fp32)"

"""The onnxruntime-backed targets: roofline golden numbers, precision, fusion, support, execution."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import models
from dispatch.analysis import analyze_node
from dispatch.errors import DispatchError
from dispatch.frontend import load
from targets.base import make_target
from targets.gpu import GpuTarget, absorbed_by, choose_provider, kernel_of
from targets.roofline import GemmShape, tile_speed, wave_quantisation
from targets.subgraph import extract, extract_shared
from targets.support import kernel_reason, local_coverage

F = TensorProto.FLOAT


def _graph(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=list(inits),
    )
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))


@pytest.fixture(scope="module")
def h100():
    return make_target("gpu", "h100-sxm", profile=False)


@pytest.fixture(scope="module")
def gemm4k():
    n = 4096
    return _graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        [("a", F, [n, n]), ("b", F, [n, n])],
        [("c", F, [n, n])],
    )


# Wave quantisation of a 4096x4096x4096 GEMM on the H100 SXM's 132 SMs (targets/roofline.py): with 256x128
# tiles, 16 · 32 = 512 tiles run in ceil(512 / 132) = 4 waves of 132, so 528 tile slots do 512 tiles of work:
# q = 512 / 528 = 0.969697. (128x128 tiles: 1024 tiles in 8 waves, 1024 / 1056, the same q; the larger tile,
# listed first, is kept.)
Q4K = 512 / 528


def test_wave_quantisation_golden():
    tiles = ((256, 128), (128, 128), (128, 64), (64, 64))
    q, tile, count, waves = wave_quantisation(GemmShape(4096, 4096, 4096), 132, 1, tiles)
    assert (tile, count, waves) == ((256, 128), 512, 4)
    assert q == pytest.approx(Q4K)
    # The same GEMM on the A100's 108 SMs: 512 tiles in ceil(512 / 108) = 5 waves of 108 = 540 slots;
    # 128x128: 1024 tiles in 10 waves = 1080 slots, q = 1024 / 1080 = 0.948 = 512 / 540 (tie, first kept).
    q, tile, count, waves = wave_quantisation(GemmShape(4096, 4096, 4096), 108, 1, tiles)
    assert (tile, count, waves) == ((256, 128), 512, 5) and q == pytest.approx(512 / 540)
    # BERT-base's QKV projection at batch 1 (M = 128 tokens, N = 2304, K = 768) on 108 SMs: 128x128 gives
    # 1 · 18 = 18 output tiles, too few for one wave, so K is split in 4 (192 each, >= 128): 72 blocks in one
    # wave of 108, q = 128 · 2304 · 768 / (108 · 128 · 128 · 192) = 2/3. (64x64 at half speed: 72 tiles,
    # split 2 -> 144 > 108 blocks is not allowed, so q = 128 · 2304 / (108 · 64 · 64) · 0.5 = 1/3.)
    q, tile, count, waves = wave_quantisation(GemmShape(128, 2304, 768), 108, 1, tiles)
    assert (tile, count, waves) == ((128, 128), 72, 1) and q == pytest.approx(2 / 3)
    # A skinny GEMM, M = 16 rows by 1024x1024 on 132 SMs: 64x64, 16 tiles split 8 ways (K 128 each) = 128
    # blocks: q = 16 · 1024 · 1024 / (132 · 64 · 64 · 128) · 0.5 = 0.1212
    q, tile, count, waves = wave_quantisation(GemmShape(16, 1024, 1024), 132, 1, tiles)
    assert (tile, count, waves) == ((64, 64), 128, 1)
    assert q == pytest.approx(16 * 1024 * 1024 / (132 * 4096 * 128) / 2)
    assert tile_speed((256, 128), (128, 128)) == 1.0
    assert tile_speed((128, 64), (128, 128)) == pytest.approx(2 / 3)  # reuse 128·64/192 = 42.7 of 64


def test_roofline_compute_bound_gemm(h100, gemm4k):
    node = gemm4k.nodes[0]
    op = analyze_node(node)
    assert op.flops == 2 * 4096**3  # 2·M·K·N = 137.44e9
    # fp32 on H100 SXM: compute 137.44e9 / (67e12 · 0.70 · Q4K) = 3021.9 µs; memory 3·4096²·4 B = 201.3 MB /
    # (3.35e12 · 0.80) = 75.1 µs; the max is compute; + 5 µs launch.
    busy = 2 * 4096**3 / (67e12 * 0.70 * Q4K)
    c = h100.cost(node, op)
    assert c.latency_s == pytest.approx(busy + 5e-6, rel=1e-9)
    # Energy: idle 70 W over the whole op + (700 - 70) W while the limiting unit is busy.
    assert c.energy_j == pytest.approx(70 * (busy + 5e-6) + 630 * busy, rel=1e-9)


def test_precision_switches_the_peak(gemm4k):
    node = gemm4k.nodes[0]
    op = analyze_node(node)
    lat = {
        p: make_target("gpu", "h100-sxm", precision=p, profile=False).cost(node, op).latency_s
        for p in ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
    }
    assert lat["tf32"] == pytest.approx(2 * 4096**3 / (494.5e12 * 0.70 * Q4K) + 5e-6)  # 292.8 µs
    assert lat["fp16"] == pytest.approx(2 * 4096**3 / (989e12 * 0.70 * Q4K) + 5e-6)  # 204.7 + 5 µs
    assert lat["bf16"] == lat["fp16"]
    # int8/fp8: 1979 TOP/s dense; compute 137.44e9 / (1979e12 · 0.7 · Q4K) = 102.3 µs; memory at 1 byte per
    # element 3·4096² B / (3.35e12 · 0.8) = 18.8 µs: still compute-bound.
    assert lat["int8"] == pytest.approx(2 * 4096**3 / (1979e12 * 0.70 * Q4K) + 5e-6)
    assert lat["fp8"] == lat["int8"]
    assert lat["fp32"] > lat["tf32"] > lat["fp16"] > lat["int8"]
    with pytest.raises(DispatchError, match="no fp8 peak.*fp32, tf32, fp16, bf16, int8"):
        make_target("gpu", "a100-sxm", precision="fp8", profile=False)
    with pytest.raises(DispatchError, match="fp32, tf32, fp16, bf16, int8, fp8"):
        make_target("gpu", "h100-sxm", precision="fp4", profile=False)


def test_roofline_memory_bound_add(h100):
    g = _graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        [("a", F, [4096, 4096]), ("b", F, [4096, 4096])],
        [("c", F, [4096, 4096])],
    )
    node = g.nodes[0]
    op = analyze_node(node)
    nbytes = 3 * 4096 * 4096 * 4  # two inputs and one output of 64 MiB = 201,326,592 B
    assert op.bytes_moved == nbytes
    # memory 201,326,592 / (3.35e12 · 0.85) = 70.70 µs; compute 16.8e6 / (67e12 · 0.5) = 0.5 µs; + 5 µs launch
    assert h100.cost(node, op).latency_s == pytest.approx(nbytes / (3.35e12 * 0.85) + 5e-6, rel=1e-9)
    # fp16 storage halves the float32 bytes: 35.35 µs + 5 µs.
    fp16 = make_target("gpu", "h100-sxm", precision="fp16", profile=False)
    assert fp16.cost(node, op).latency_s == pytest.approx(nbytes / 2 / (3.35e12 * 0.85) + 5e-6, rel=1e-9)


def test_views_and_fused_epilogues_are_free(h100):
    w = onnx.numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    g = _graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4),
            helper.make_node("Relu", ["y"], ["r"]),
            helper.make_node("Reshape", ["r", "s"], ["z"]),
        ],
        [("x", F, [1, 3, 8, 8])],
        [("z", F, [1, 512])],
        [w, onnx.numpy_helper.from_array(np.array([1, 512], np.int64), "s")],
    )
    conv, relu, reshape = g.nodes
    assert absorbed_by(relu) and absorbed_by(conv) is None
    # the Relu is its own kernel unless it shares a segment with the Conv: the fusion names the partner
    assert h100.fusion(relu, analyze_node(relu)) == (conv.name, h100.cost(relu, analyze_node(relu)))
    assert h100.fusion(conv, analyze_node(conv)) is None
    assert h100.cost(reshape, analyze_node(reshape)).latency_s == 0.0  # a view launches no kernel on the GPU
    assert h100.cost(conv, analyze_node(conv)).latency_s > 5e-6


def test_gelu_and_skip_layernorm_patterns():
    g = load(models.build("tiny_transformer"))
    kinds = {kernel_of(n) for n in g.nodes}
    assert {"Gelu", "SkipLayerNormalization", "Gemm", "FusedMatMul"} <= kinds
    absorbed = [n for n in g.nodes if absorbed_by(n)]
    # per layer: 6 bias Adds, the attention scale, 4 GELU nodes, 2 skip Adds; 2 layers (+ the final norm)
    assert len(absorbed) >= 2 * (6 + 1 + 4 + 1)


def test_provider_is_recorded_and_described(h100):
    assert h100.provider == choose_provider()  # TensorRT, then CUDA, then CPU, among those present
    assert h100.provider in ort.get_available_providers()
    d = h100.describe()
    assert d["provider"] == h100.provider and d["spec"] == "h100-sxm"
    assert f"measured on {h100.provider}; predicted for" in d["note"]
    assert d["calibrated"] is False and d["profile"].startswith("none")
    assert choose_provider(["CPUExecutionProvider", "CUDAExecutionProvider"]) == "CUDAExecutionProvider"
    assert (
        choose_provider(["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"])
        == "TensorrtExecutionProvider"
    )
    with pytest.raises(DispatchError, match="available"):
        choose_provider(["CPUExecutionProvider"], wanted=["CUDAExecutionProvider"])
    assert h100.segment_overhead().latency_s == pytest.approx(20e-6)  # spec session_us


def test_support_follows_onnxruntime_kernels(h100):
    cpu = make_target("cpu", "host-cpu", profile=False)
    h = TensorProto.FLOAT16
    g = _graph([helper.make_node("Add", ["a", "b"], ["c"])], [("a", h, [4]), ("b", h, [4])], [("c", h, [4])])
    # no float16 Add kernel on the CPU provider, but onnxruntime runs it between Casts it inserts
    assert not cpu.local.has_kernel(g.nodes[0]) and cpu.supports(g.nodes[0])
    b = TensorProto.BFLOAT16
    g = _graph([helper.make_node("Add", ["a", "b"], ["c"])], [("a", b, [4]), ("b", b, [4])], [("c", b, [4])])
    reason = cpu.unsupported_reason(g.nodes[0])
    assert reason and "bfloat16" in reason and "CPUExecutionProvider" in reason  # and for bfloat16 it cannot
    g = _graph([helper.make_node("Det", ["a"], ["d"])], [("a", F, [3, 3])], [("d", F, [])])
    assert cpu.supports(g.nodes[0])
    if h100.provider == "CPUExecutionProvider":  # modelled CUDA: Det has no CUDA kernel
        assert h100.unsupported_reason(g.nodes[0]) == ("onnxruntime's CUDAExecutionProvider has no kernel "
                                                       "for Det")
    g = _graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [("x", F, [1, 3, 8, 8]), ("w", F, [4, 3, 3, 3])],
        [("y", F, [1, 4, 6, 6])],
    )
    assert h100.supports(g.nodes[0]) and cpu.supports(g.nodes[0])
    s = TensorProto.STRING
    g = _graph([helper.make_node("StringNormalizer", ["x"], ["y"])], [("x", s, [3])], [("y", s, [3])])
    assert cpu.supports(g.nodes[0]) and not h100.supports(g.nodes[0])
    sig = ("", "NoSuchOp", 17, (), ())
    assert "no kernel" in kernel_reason(local_coverage("CPUExecutionProvider"), sig)


@pytest.fixture(scope="module")
def tiny_cnn():
    return load(models.build("tiny_cnn"))


def _reference(graph, names):
    """Run the whole model with onnxruntime, exposing the named intermediate tensors as outputs."""
    m = graph.full_model()
    have = {o.name for o in m.graph.output}
    for vi in m.graph.value_info:
        if vi.name in names and vi.name not in have:
            m.graph.output.append(vi)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = s.run(names, models.example_inputs("tiny_cnn"))
    return dict(zip(names, out, strict=True))


def test_compile_slice_matches_the_whole_model(tiny_cnn):
    cpu = make_target("cpu", "host-cpu", profile=False)
    nodes = tiny_cnn.nodes[3:6]  # Conv, Relu, Conv of the residual block
    inp = nodes[0].inputs[0].name
    out = nodes[-1].outputs[0].name
    ref = _reference(tiny_cnn, [inp, out])
    exe = cpu.compile(tiny_cnn, nodes, [inp], [out])
    got = exe({inp: ref[inp]})
    np.testing.assert_allclose(got[out], ref[out], rtol=1e-5, atol=1e-5)
    assert cpu.compile(tiny_cnn, nodes, [inp], [out]) is not exe  # no cache here: the runtime owns sessions
    # Thread-safe: four threads at once give the same result.
    results = []
    threads = [threading.Thread(target=lambda: results.append(exe({inp: ref[inp]})[out])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, got[out])
    with pytest.raises(DispatchError, match="not fed"):
        exe({})
    cpu.close()


def test_extract_keeps_only_used_initializers(tiny_cnn):
    conv = tiny_cnn.nodes[3]
    m = extract(tiny_cnn, [conv], [conv.inputs[0].name], [conv.outputs[0].name])
    assert {i.name for i in m.graph.initializer} == {
        v.name for v in conv.present_inputs if v.const is not None
    }
    onnx.checker.check_model(m)
    m2, shared = extract_shared(
        tiny_cnn, [conv], [conv.inputs[0].name], [conv.outputs[0].name], share_min_bytes=1
    )
    for name, arr in shared.items():
        assert np.shares_memory(arr, tiny_cnn.values[name].const)  # the Graph's own buffer, not a copy
    assert all(i.data_location == TensorProto.EXTERNAL for i in m2.graph.initializer)
    with pytest.raises(DispatchError, match="produced by none"):
        extract(tiny_cnn, [conv], [conv.inputs[0].name], ["output"])
    with pytest.raises(DispatchError, match="neither a segment input"):
        extract(tiny_cnn, [tiny_cnn.nodes[4]], [], [tiny_cnn.nodes[4].outputs[0].name])


def test_gpu_target_runs_here(tiny_cnn):
    gpu = GpuTarget("gpu", make_target("x", "h100-sxm", profile=False).spec, profile=False)
    exe = gpu.compile(tiny_cnn, tiny_cnn.nodes, ["input"], ["output"])
    got = exe(models.example_inputs("tiny_cnn"))["output"]
    ref = ort.InferenceSession(str(models.build("tiny_cnn")), providers=["CPUExecutionProvider"]).run(
        None, models.example_inputs("tiny_cnn")
    )[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_rejected_input_values_are_dispatch_error():
    # regression: Gather with an index past the table raised onnxruntime's InvalidArgument (an internal error)
    g = load("tiny_transformer")
    cpu = make_target("cpu", "host-cpu", profile=False)
    exe = cpu.compile(g, g.nodes, ["input_ids"], ["last_hidden_state"])
    with pytest.raises(DispatchError, match=r"onnxruntime rejected the input values .*idx=500"):
        exe({"input_ids": np.full((1, 16), 500, np.int64)})


_ORT_VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "ReorderInput", "ReorderOutput"}
_ORT_NAMES = {"FusedConv": "Conv", "FusedGemm": "Gemm"}  # fused activations keep the kernel's name here


@pytest.mark.parametrize("name", ["mlp", "tiny_cnn", "tiny_transformer"])
def test_fusion_rules_match_onnxruntime(name, tmp_path):
    """The kernels our fusion rules predict are, op type for op type, those onnxruntime's optimised graph has
    (views and NCHWc reorders aside)."""
    ours, theirs = _kernels(models.build(name), tmp_path)
    assert ours == theirs


def _kernels(path, tmp_path):
    """(our predicted kernels, those of onnxruntime's optimised graph), as Counters of op types."""
    from collections import Counter

    from targets.gpu import op_class, session_options

    g = load(str(path))
    ours = Counter(  # "Conv(grouped)" is a Conv kernel by another algorithm
        kernel_of(n).split("(")[0]
        for n in g.nodes
        if not absorbed_by(n) and op_class(n, analyze_node(n)) != "view"
    )
    so = session_options(1)
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "opt.onnx"), load_external_data=False)
    theirs = Counter(
        _ORT_NAMES.get(n.op_type, n.op_type) for n in opt.graph.node if n.op_type not in _ORT_VIEWS
    )
    return ours, theirs


def _w(name, *shape):
    return helper.make_tensor(name, F, shape, np.random.default_rng(0).standard_normal(shape).ravel())


def _c(name, value):
    return helper.make_tensor(name, F, [], [value])


# Every fusion pattern with its intermediate tensor also a graph output ("tap"): onnxruntime then keeps the
# producer's output, and the pattern is not fused (or fused as onnxruntime's optimised graph shows).
_TAPPED = {
    "conv_relu": ([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                   helper.make_node("Relu", ["c"], ["y"], name="relu")],
                  [("x", [1, 3, 8, 8])], [("y", [1, 4, 6, 6]), ("c", [1, 4, 6, 6])], [_w("w", 4, 3, 3, 3)]),
    "matmul_bias": ([helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
                     helper.make_node("Add", ["m", "b"], ["y"], name="bias")],
                    [("x", [4, 8])], [("y", [4, 16]), ("m", [4, 16])], [_w("w", 8, 16), _w("b", 16)]),
    "matmul_scale": ([helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
                      helper.make_node("Mul", ["m", "s"], ["y"], name="scale")],
                     [("x", [4, 8])], [("y", [4, 16]), ("m", [4, 16])], [_w("w", 8, 16), _c("s", 0.5)]),
    "scale_matmul": ([helper.make_node("Mul", ["x", "s"], ["m"], name="scale"),
                      helper.make_node("MatMul", ["m", "w"], ["y"], name="mm")],
                     [("x", [4, 8])], [("y", [4, 16]), ("m", [4, 8])], [_w("w", 8, 16), _c("s", 0.5)]),
    "gelu": ([helper.make_node("Div", ["x", "r"], ["d"], name="div"),
              helper.make_node("Erf", ["d"], ["e"], name="erf"),
              helper.make_node("Add", ["e", "one"], ["a"], name="add"),
              helper.make_node("Mul", ["x", "a"], ["m"], name="mul"),
              helper.make_node("Mul", ["m", "half"], ["y"], name="half")],
             [("x", [4, 8])], [("y", [4, 8]), ("e", [4, 8])],
             [_c("r", 1.4142135), _c("one", 1.0), _c("half", 0.5)]),
    "skip_layernorm": ([helper.make_node("Add", ["x", "s"], ["a"], name="skip"),
                        helper.make_node("LayerNormalization", ["a", "g", "b"], ["y"], name="ln", axis=-1)],
                       [("x", [1, 4, 8]), ("s", [1, 4, 8])], [("y", [1, 4, 8]), ("a", [1, 4, 8])],
                       [_w("g", 8), _w("b", 8)]),
}


@pytest.mark.parametrize("case", sorted(_TAPPED))
def test_fusion_rules_match_onnxruntime_with_graph_outputs(case, tmp_path):
    """A producer whose output is also a graph output: our kernels are still onnxruntime's (regression:
    Conv->Relu with the Conv's output a graph output predicted one fused kernel; onnxruntime runs two)."""
    nodes, inputs, outputs, inits = _TAPPED[case]
    g = helper.make_graph(nodes, case, [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, F, s) for n, s in outputs], initializer=inits)
    path = tmp_path / f"{case}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ours, theirs = _kernels(path, tmp_path)
    assert ours == theirs
    if case == "conv_relu":  # and the partitioner saves no launch for the Relu
        g = load(str(path))
        relu = next(n for n in g.nodes if n.op_type == "Relu")
        assert make_target("gpu", "h100-sxm").fusion(relu, analyze_node(relu)) is None


def test_batched_matmul_with_a_data_dependent_batch_is_priced_without_tiles() -> None:
    # regression: an unknown batch (-1, from NonZero) made groups = -1 and the wave model divided by zero
    from onnx import numpy_helper

    from dispatch.partition import plan
    from targets.gpu import gemm_shape

    nodes = [helper.make_node("NonZero", ["x"], ["nz"]),
             helper.make_node("Cast", ["nz"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["f", "shape"], ["r"]),  # [N, 1, 2, 1], N data-dependent
             helper.make_node("MatMul", ["r", "w"], ["y"])]      # batched against [1, 1, 1, 3]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, 2, 3])],
                          [numpy_helper.from_array(np.ones((1, 1, 1, 3), np.float32), "w"),
                           numpy_helper.from_array(np.array([-1, 1, 2, 1], np.int64), "shape")])
    graph = load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    matmul = graph.nodes[-1]
    assert matmul.op_type == "MatMul" and gemm_shape(matmul) == (None, False)
    p = plan(graph, {"gpu": "h100-sxm", "asic": "tpu-v4-like"})
    assert p.assignment[matmul.name] in ("gpu", "asic") and np.isfinite(p.predicted.latency_s)

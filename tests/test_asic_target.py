"""The simulated ASIC target: presets, support rules, cost goldens, compiled segments against onnxruntime."""

from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispatch.errors import DispatchError
from dispatch.frontend import load
from dispatch.ir import Graph
from targets.asic.target import AsicTarget
from targets.asic.timing import conv_gemm_dims, energy_j, simulate_gemm
from targets.base import SPEC_DIR, make_target

RNG = np.random.default_rng(7)


def _model(nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray], opset: int = 17,
           elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """A model from helper nodes; inputs/outputs are (name, shape) pairs of dtype `elem`."""
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, elem, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, elem, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _conv_bn_relu(extra_consumer: bool = False) -> onnx.ModelProto:
    """X (1,3,16,16) -> Conv(8, 3x3, pad 1, bias) -> BatchNormalization -> Relu -> Y."""
    c = 8
    inits = {"W": RNG.standard_normal((c, 3, 3, 3)).astype(np.float32),
             "B": RNG.standard_normal(c).astype(np.float32),
             "scale": RNG.uniform(0.5, 2.0, c).astype(np.float32),
             "bias": RNG.standard_normal(c).astype(np.float32),
             "mean": RNG.standard_normal(c).astype(np.float32),
             "var": RNG.uniform(0.5, 2.0, c).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], name="bn",
                              epsilon=1e-3),
             helper.make_node("Relu", ["b"], ["Y"], name="relu")]
    outputs = [("Y", [1, c, 16, 16])]
    if extra_consumer:  # the Conv output also feeds a Relu: BN can no longer be folded
        nodes.append(helper.make_node("Relu", ["c"], ["Z"], name="relu2"))
        outputs.append(("Z", [1, c, 16, 16]))
    return _model(nodes, [("X", [1, 3, 16, 16])], outputs, inits)


def _softmax() -> Graph:
    sm = helper.make_node("Softmax", ["X"], ["Y"], name="sm")
    return load(_model([sm], [("X", [2, 8])], [("Y", [2, 8])], {}))


@pytest.fixture(scope="module")
def tpu() -> AsicTarget:
    return make_target("asic", "tpu-v4-like")


@pytest.fixture(scope="module")
def cbr() -> Graph:
    return load(_conv_bn_relu())


# ---- presets ------------------------------------------------------------------------------------------

def test_tpu_preset_figures(tpu):
    p = tpu.params
    assert tpu.kind == "asic" and tpu.provider == "numpy (simulated tpu-v4-like)"
    assert (p.array.rows, p.array.cols, p.array.num_arrays, p.array.dataflow) == (128, 128, 8, "ws")
    # 8 MXUs · 128² MACs · 2 FLOP · 1.05 GHz = 275.25e12 FLOP/s
    assert tpu.peak_flops == pytest.approx(8 * 128 * 128 * 2 * 1.05e9)
    assert tpu.peak_flops / 1e12 == pytest.approx(275, rel=0.001)  # Google's published 275 TFLOP/s
    assert p.array.offchip_bandwidth_Bps == 1200e9  # HBM2 1.2 TB/s
    assert p.array.word_bytes == 2  # bf16
    assert p.array.ifmap_sram_bytes == 2048 * 1024
    assert tpu.capacity_bytes is None  # weights streamed from HBM
    assert tpu.spec.link.bandwidth_Bps == pytest.approx(15.75e9)  # PCIe Gen3 x16
    assert (tpu.spec.idle_w, tpu.spec.active_w) == (90.0, 192.0)
    assert p.energy.static_w == 90.0


def test_wse2_preset_figures():
    t = make_target("asic", "wse2-like")
    # Derived, Cerebras publishes no peak: 13,281 arrays · 16·16 lanes · 2 FLOP · 1.1 GHz = 7.4799e15 FLOP/s,
    # within 0.01% of 850,000 cores · 4 lanes · 2 · 1.1e9 = 7.48e15.
    assert t.peak_flops == pytest.approx(13281 * 16 * 16 * 2 * 1.1e9)
    assert t.peak_flops == pytest.approx(850_000 * 4 * 2 * 1.1e9, rel=1e-4)
    assert t.capacity_bytes == 40_000_000_000  # 40 GB on-wafer SRAM, weights resident
    assert t.params.array.offchip_bandwidth_Bps == pytest.approx(20e15)  # 20 PB/s
    assert t.params.compute_dtype == "fp16"


def test_edge_preset_figures():
    t = make_target("asic", "edge-npu")
    # 2 arrays · 32² MACs · 2 OP · 1 GHz = 4.096e12 OP/s int8, Ethos-N77's 4.096 TOP/s
    assert t.peak_flops == pytest.approx(2 * 32 * 32 * 2 * 1.0e9)
    assert t.params.array.word_bytes == 1  # int8
    assert t.params.array.dataflow == "os"
    assert t.capacity_bytes is None
    assert t.spec.active_w == 1.5


def test_describe_and_overrides(tpu):
    d = tpu.describe()
    assert d["kind"] == "asic" and d["spec"] == "tpu-v4-like" and d["peak_flops"] == tpu.peak_flops
    big = make_target("asic", "tpu-v4-like", rows=256, cols=256)
    assert big.peak_flops == pytest.approx(4 * tpu.peak_flops)  # 256² / 128² = 4


# ---- support ------------------------------------------------------------------------------------------

def test_conv_bn_relu_supported(tpu, cbr):
    for name in ("conv", "bn", "relu"):
        assert tpu.unsupported_reason(cbr.node(name)) is None, name


def test_softmax_unsupported_with_reason(tpu):
    g = _softmax()
    reason = tpu.unsupported_reason(g.node("sm"))
    assert reason is not None and "Softmax" in reason and "MatMul" in reason
    assert not tpu.supports(g.node("sm"))


def test_bn_alone_unsupported(tpu):
    c = 4
    inits = {k: np.ones(c, np.float32) for k in ("scale", "bias", "mean", "var")}
    bn = helper.make_node("BatchNormalization", ["X", "scale", "bias", "mean", "var"], ["Y"], name="bn")
    g = load(_model([bn], [("X", [1, c, 5, 5])], [("Y", [1, c, 5, 5])], inits))
    assert "after a Conv" in tpu.unsupported_reason(g.node("bn"))


def test_bn_after_shared_conv_unsupported(tpu):
    g = load(_conv_bn_relu(extra_consumer=True))
    assert "after a Conv" in tpu.unsupported_reason(g.node("bn"))
    assert tpu.supports(g.node("conv"))


def test_conv_with_runtime_weights_unsupported(tpu):
    g = load(_model([helper.make_node("Conv", ["X", "W"], ["Y"], name="conv")],
                    [("X", [1, 2, 5, 5]), ("W", [3, 2, 3, 3])], [("Y", [1, 3, 3, 3])], {}))
    assert "constant filters" in tpu.unsupported_reason(g.node("conv"))


def test_matmul_of_two_activations_supported(tpu):
    g = load(_model([helper.make_node("MatMul", ["A", "B"], ["Y"], name="mm")],
                    [("A", [2, 4, 8, 16]), ("B", [2, 4, 16, 8])], [("Y", [2, 4, 8, 8])], {}))
    assert tpu.supports(g.node("mm"))


def test_dtype_limits():
    nodes = [helper.make_node("Relu", ["X"], ["Y"], name="r")]
    g16 = load(_model(nodes, [("X", [4, 4])], [("Y", [4, 4])], {}, elem=TensorProto.FLOAT16))
    tpu, wse = make_target("asic", "tpu-v4-like"), make_target("asic", "wse2-like")
    assert "float16" in tpu.unsupported_reason(g16.node("r"))  # TPU v4: bf16/int8 MXU, no fp16
    assert wse.supports(g16.node("r"))
    g64 = load(_model(nodes, [("X", [4, 4])], [("Y", [4, 4])], {}, elem=TensorProto.DOUBLE))
    assert "float64" in wse.unsupported_reason(g64.node("r"))
    g8 = load(_model(nodes, [("X", [4, 4])], [("Y", [4, 4])], {}, elem=TensorProto.INT8))
    assert "floating point" in make_target("asic", "edge-npu").unsupported_reason(g8.node("r"))


def test_dynamic_shape_unsupported(tpu):
    # Graph() straight from the proto: the frontend would bind "n" to 1.
    relu = helper.make_node("Relu", ["X"], ["Y"], name="r")
    g = Graph(_model([relu], [("X", ["n", 4])], [("Y", ["n", 4])], {}))
    assert "static shape" in tpu.unsupported_reason(g.node("r"))


def test_add_rules(tpu):
    nodes = [helper.make_node("Add", ["X", "b"], ["Y1"], name="bias"),
             helper.make_node("Add", ["Y1", "X"], ["Y2"], name="residual"),
             helper.make_node("Add", ["Y2", "S"], ["Y3"], name="broadcast")]
    g = load(_model(nodes, [("X", [1, 4, 3, 3]), ("S", [1, 4, 1, 1])], [("Y3", [1, 4, 3, 3])],
                    {"b": np.ones((4, 1, 1), np.float32)}))
    assert tpu.supports(g.node("bias"))
    assert tpu.supports(g.node("residual"))
    assert "two activations" in tpu.unsupported_reason(g.node("broadcast"))


def test_clip_needs_constant_bounds(tpu):
    nodes = [helper.make_node("Clip", ["X", "lo", "hi"], ["Y"], name="fixed"),
             helper.make_node("Clip", ["Y", "L"], ["Z"], name="dynamic")]
    g = load(_model(nodes, [("X", [2, 3]), ("L", [])], [("Z", [2, 3])],
                    {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}))
    assert tpu.supports(g.node("fixed"))
    assert "bounds" in tpu.unsupported_reason(g.node("dynamic"))


def test_weights_over_capacity_on_wse(tmp_path, cbr):
    # The conv's weights: 8·3·3·3 + 8 = 224 fp32 values, stored as fp16 on chip: 448 bytes.
    text = (SPEC_DIR / "wse2-like.toml").read_text()
    small = tmp_path / "tiny-wafer.toml"
    small.write_text(re.sub(r"(?m)^weight_capacity_bytes = .*$", "weight_capacity_bytes = 400", text))
    t = make_target("asic", small)
    assert t.capacity_bytes == 400
    assert t.weight_bytes(cbr.node("conv")) == (8 * 3 * 3 * 3 + 8) * 2
    reason = t.unsupported_reason(cbr.node("conv"))
    assert "448 bytes" in reason and "400 bytes" in reason
    assert "not supported" in t.unsupported_reason(cbr.node("bn"))  # its Conv is out, so it cannot fold
    assert t.supports(cbr.node("relu"))
    assert make_target("asic", small, weight_capacity_bytes=448).supports(cbr.node("conv"))  # exactly fits
    assert make_target("asic", "wse2-like").supports(cbr.node("conv"))


# ---- cost ---------------------------------------------------------------------------------------------

def test_gemm_cost_golden(tpu):
    g = load(_model([helper.make_node("MatMul", ["A", "W"], ["Y"], name="mm")], [("A", [64, 256])],
                    [("Y", [64, 128])], {"W": RNG.standard_normal((256, 128)).astype(np.float32)}))
    node = g.node("mm")
    cfg = tpu.params.array
    t = simulate_gemm(64, 256, 128, cfg)
    # ws on 128×128: folds = ⌈256/128⌉·⌈128/128⌉ = 2, one round over 8 MXUs,
    # per fold 2·128 + 128 + 64 − 2 = 446 cycles.
    assert t.compute_cycles == 446 - 1
    c = tpu.cost(node, None)
    assert c.latency_s == t.total_cycles / 1.05e9
    assert c.energy_j == pytest.approx(energy_j(t, tpu.params.energy))
    assert tpu.cost(node, None) is c  # cached


def test_batched_matmul_and_folded_batch(tpu):
    nodes = [helper.make_node("MatMul", ["A", "B"], ["Y"], name="bmm"),
             helper.make_node("MatMul", ["Y", "W"], ["Z"], name="fold")]
    g = load(_model(nodes, [("A", [2, 3, 64, 32]), ("B", [2, 3, 32, 48])], [("Z", [2, 3, 64, 16])],
                    {"W": np.ones((48, 16), np.float32)}))
    cfg = tpu.params.array
    # batched B: 2·3 = 6 GEMMs of 64×32×48; shared W: batch folds into M = 2·3·64 = 384.
    assert tpu.cost(g.node("bmm")).latency_s == simulate_gemm(64, 32, 48, cfg, batch=6).latency_s
    assert tpu.cost(g.node("fold")).latency_s == simulate_gemm(384, 48, 16, cfg).latency_s


def test_conv_and_epilogue_cost(tpu, cbr):
    cfg = tpu.params.array
    groups, m, k, n = conv_gemm_dims(1, 3, 8, (3, 3), (16, 16), 1)
    assert (groups, m, k, n) == (1, 256, 27, 8)  # M = 16·16 pixels, K = 3·3·3, N = 8
    t = simulate_gemm(m, k, n, cfg)
    # bias epilogue: ⌈1·8·16·16 / 2048 lanes⌉ = 1 cycle.
    assert tpu.cost(cbr.node("conv")).latency_s == pytest.approx(t.latency_s + 1 / 1.05e9)
    relu = tpu.cost(cbr.node("relu"))
    assert relu.latency_s == pytest.approx(1 / 1.05e9)
    # 2048 elements · (0.27 pJ + 2 · 2 B · 0.75 pJ/B) + 90 W static over one cycle.
    assert relu.energy_j == pytest.approx(2048 * (0.27 + 2 * 2 * 0.75) * 1e-12 + 90 / 1.05e9)


def test_unsupported_cost_is_infinite(tpu):
    g = _softmax()
    assert math.isinf(tpu.cost(g.node("sm")).latency_s)


# ---- execution ----------------------------------------------------------------------------------------

def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def test_conv_bn_relu_matches_onnxruntime(tpu, cbr):
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = _ort(cbr.model, {"X": x})["Y"]  # the same weights the Graph holds
    exe = tpu.compile(cbr, cbr.nodes, ["X"], ["Y"])  # Conv+BN folded, then Relu
    got = exe({"X": x})
    assert set(got) == {"Y"}
    np.testing.assert_allclose(got["Y"], want, rtol=1e-4, atol=1e-4)
    assert len(exe.steps) == 2  # the BN disappeared into the Conv
    # BN without its Conv in the segment runs as its own kernel, from the Conv's output.
    c = _ort(_model([helper.make_node("Conv", ["X", "W", "B"], ["c"], pads=[1, 1, 1, 1])],
                    [("X", [1, 3, 16, 16])], [("c", [1, 8, 16, 16])],
                    {k: cbr.values[k].const for k in ("W", "B")}), {"X": x})["c"]
    tail = tpu.compile(cbr, [cbr.node("bn"), cbr.node("relu")], ["c"], ["Y"])
    np.testing.assert_allclose(tail({"c": c})["Y"], want, rtol=1e-4, atol=1e-4)


def test_compiled_segment_is_thread_safe(tpu, cbr):
    exe = tpu.compile(cbr, cbr.nodes, ["X"], ["Y", "b"])  # "b" requested: the BN output, still produced
    xs = [RNG.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    want = [exe({"X": x}) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: exe({"X": x}), xs * 4))
    for i, out in enumerate(got):
        np.testing.assert_array_equal(out["Y"], want[i % 8]["Y"])
        np.testing.assert_array_equal(out["Y"], np.maximum(out["b"], 0))


def test_compile_errors(tpu, cbr):
    with pytest.raises(DispatchError, match="neither a segment input"):
        tpu.compile(cbr, [cbr.node("relu")], ["X"], ["Y"])
    with pytest.raises(DispatchError, match="cannot produce"):
        tpu.compile(cbr, [cbr.node("relu")], ["b"], ["nope"])
    exe = tpu.compile(cbr, [cbr.node("relu")], ["b"], ["Y"])
    with pytest.raises(DispatchError, match="needs the input"):
        exe({})
    g = _softmax()
    with pytest.raises(DispatchError, match="cannot run on ASIC target"):
        tpu.compile(g, g.nodes, ["X"], ["Y"])


# ---- bad specs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "replacement", "message"), [
    (r"(?m)^rows = .*$", "rows = -4", "'rows' must be positive"),
    (r"(?m)^clock_ghz = .*$", "clock_ghz = 0", "'clock_ghz' must be positive"),
    (r"(?m)^dataflow = .*$", 'dataflow = "xy"', "'dataflow' must be one of os, ws, is"),
    (r"(?m)^compute_dtype = .*$", 'compute_dtype = "fp16"', "'compute_dtype' must be one of its dtypes"),
    (r"(?m)^dtypes = .*$", 'dtypes = ["fp8"]', "'dtypes' must be a non-empty list"),
    (r"(?m)^weight_capacity_bytes = .*$", "weight_capacity_bytes = -1", "'weight_capacity_bytes'"),
    (r"(?m)^pj_per_mac = .*$", "pj_per_mac = -0.5", "'pj_per_mac' must be a finite non-negative"),
    (r"(?m)^arrays = .*$", "arrays = 2.5", "'arrays' must be int"),
    (r"(?m)^vector_lanes = .*$", "", "missing the key 'vector_lanes'"),
    (r"(?m)^rows = .*$", "rows = 128\nrow = 3", "unknown key"),
])
def test_bad_spec_values(tmp_path: Path, pattern: str, replacement: str, message: str):
    text = re.sub(pattern, replacement, (SPEC_DIR / "tpu-v4-like.toml").read_text(), count=1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(DispatchError, match=re.escape(message)) as err:
        make_target("asic", path)
    assert "bad.toml" in str(err.value)

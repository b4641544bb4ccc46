"""The simulated ASIC target: presets, support rules, cost goldens, compiled segments against onnxruntime."""

from __future__ import annotations

import functools
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispatch.errors import DispatchError
from dispatch.frontend import load
from dispatch.ir import Graph
from targets.asic.kernels import KERNELS
from targets.asic.mapping import map_gemm
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


def _conv(x: str, w: str, y: str, name: str, bias: str | None = None) -> onnx.NodeProto:
    """A Conv node padded by one pixel on every side."""
    return helper.make_node("Conv", [x, w] + ([bias] if bias else []), [y], name=name, pads=[1, 1, 1, 1])


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
    # exact numerics: these tests check the kernels' math against onnxruntime's float32 results
    return make_target("asic", "tpu-v4-like", numerics="exact")


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
    # Derived, Cerebras publishes no peak: one 1×4 array per core (a 4-wide fp16 FMAC),
    # 850,000 arrays · 1·4 lanes · 2 FLOP · 1.1 GHz = 7.48e15 FLOP/s.
    a = t.params.array
    assert (a.num_arrays, a.rows, a.cols, a.dataflow) == (850_000, 1, 4, "ws")
    assert t.peak_flops == pytest.approx(850_000 * 4 * 2 * 1.1e9)
    assert t.capacity_bytes == 40_000_000_000  # 40 GB on-wafer SRAM, weights resident
    assert not a.shared_sram and a.weights_resident  # each core's 48 kB is its own
    assert a.ifmap_sram_bytes + a.filter_sram_bytes + a.ofmap_sram_bytes == 48 * 1024
    assert a.offchip_bandwidth_Bps == pytest.approx(220e15 / 8)  # the fabric: 220 Pb/s = 27.5 PB/s
    assert t.params.compute_dtype == "fp16"


def test_edge_preset_figures():
    t = make_target("asic", "edge-npu")
    # 2 arrays · 32² MACs · 2 OP · 1 GHz = 4.096e12 OP/s int8, Ethos-N77's 4.096 TOP/s
    assert t.peak_flops == pytest.approx(2 * 32 * 32 * 2 * 1.0e9)
    assert t.params.peak_ops("int8") == t.peak_flops
    # float tensors are multiplied in fp16 (2-byte words) at [E19]'s int16 rate: 4.096e12 / 4 = 1.024e12
    assert t.params.array.word_bytes == 2 and t.params.compute_dtype == "fp16"
    assert t.params.peak_ops("fp16") == pytest.approx(1.024e12)
    assert t.params.timing_array("int8").word_bytes == 1
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


def _chain(elem: int, dt) -> onnx.ModelProto:
    """X (1,2,4,4) -> Conv -> Relu -> MatMul -> Add(bias) -> Clip -> Y, and Gemm(F, G^T) -> Z: every ASIC
    op but BatchNormalization, all tensors of ONNX type `elem`."""
    nodes = [_conv("X", "W", "c", "conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "M"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["a"], name="add"),
             helper.make_node("Clip", ["a", "lo", "hi"], ["Y"], name="clip"),
             helper.make_node("Gemm", ["F", "G"], ["Z"], name="gemm", transB=1)]
    inits = {"W": RNG.uniform(-1, 1, (3, 2, 3, 3)).astype(dt), "M": RNG.uniform(-1, 1, (4, 2)).astype(dt),
             "b": RNG.uniform(-1, 1, 2).astype(dt), "lo": np.array(0, dt), "hi": np.array(2, dt),
             "G": RNG.uniform(-1, 1, (5, 6)).astype(dt)}
    return _model(nodes, [("X", [1, 2, 4, 4]), ("F", [3, 6])], [("Y", [1, 3, 4, 2]), ("Z", [3, 5])],
                  inits, elem=elem)


def test_preset_dtypes_are_the_float_kernels_ones():
    # The spec's dtypes (targets/specs/*.toml) that kernels.FLOAT_DTYPES computes in; int8 only sets timing.
    want = {"tpu-v4-like": {"bfloat16", "float32"},  # dtypes = ["bf16", "fp32", "int8"]
            "edge-npu": {"float16", "float32"},  # dtypes = ["fp32", "fp16", "int8"]
            "wse2-like": {"bfloat16", "float16", "float32"}}  # dtypes = ["fp16", "bf16", "fp32"]
    for preset, names in want.items():
        assert make_target("asic", preset).params.numpy_dtypes == names


@pytest.mark.parametrize("preset", ["tpu-v4-like", "edge-npu", "wse2-like"])
@pytest.mark.parametrize(("elem", "dt"), [(TensorProto.INT8, np.int8), (TensorProto.UINT8, np.uint8),
                                          (TensorProto.INT32, np.int32), (TensorProto.INT64, np.int64)])
def test_integer_tensors_unsupported(preset, elem, dt):
    # tpu-v4-like and edge-npu list int8 (their arrays' timing dtype), yet the NumPy kernels compute in
    # floating point only: MatMul, Gemm, Conv and Add raise DispatchError on integers, so the predicate
    # must refuse every node first, naming the tensor and its dtype.
    g = load(_chain(elem, dt))
    t = make_target("asic", preset)
    name = np.dtype(dt).name
    for n in g.nodes:
        reason = t.unsupported_reason(n)
        assert reason is not None and f"is {name};" in reason and "floating point" in reason, (n.name, reason)
    with pytest.raises(DispatchError, match="cannot run on ASIC target"):
        t.compile(g, g.nodes, ["X", "F"], ["Y", "Z"])
    ints = {"A": np.ones((2, 3), dt), "B": np.ones((3, 2), dt), "X": np.ones((1, 2, 4, 4), dt),
            "W": np.ones((3, 2, 3, 3), dt)}
    for op, args in (("MatMul", ["A", "B"]), ("Gemm", ["A", "B"]), ("Conv", ["X", "W"]), ("Add", ["A", "A"])):
        with pytest.raises(DispatchError, match=f"float32, float64 tensors, not {name}"):
            KERNELS[op]([ints[a] for a in args], {})


@pytest.mark.parametrize("preset", ["tpu-v4-like", "edge-npu", "wse2-like"])
def test_accepted_dtypes_run(preset):
    # The other direction: every dtype the predicate accepts, the kernels compute, in that dtype, close to
    # onnxruntime's float32 result on the same (rounded) weights and inputs. Tolerance: a few roundings of
    # the output to 8 (bf16) or 11 (fp16) significant bits on values of size ~1-3: 2^-8·3·4 ≈ 0.05.
    # Exact numerics: float32 must match onnxruntime (emulation: tests/test_asic_numerics.py).
    t = make_target("asic", preset, numerics="exact")
    feeds32 = {"X": RNG.uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32),
               "F": RNG.uniform(-1, 1, (3, 6)).astype(np.float32)}
    for name in sorted(t.params.numpy_dtypes):
        dt = ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)
        model = _chain(helper.np_dtype_to_tensor_dtype(np.dtype(dt)), dt)
        g = load(model)
        assert all(t.supports(n) for n in g.nodes), [t.unsupported_reason(n) for n in g.nodes]
        feeds = {k: v.astype(dt) for k, v in feeds32.items()}
        got = t.compile(g, g.nodes, ["X", "F"], ["Y", "Z"])(feeds)
        ref32 = _model([n.proto for n in g.nodes], [("X", [1, 2, 4, 4]), ("F", [3, 6])],
                       [("Y", [1, 3, 4, 2]), ("Z", [3, 5])],
                       {k: g.values[k].const.astype(np.float32) for k in ("W", "M", "b", "lo", "hi", "G")})
        want = _ort(ref32, {k: v.astype(np.float32) for k, v in feeds.items()})
        tol = 1e-5 if name == "float32" else 0.05
        for k in ("Y", "Z"):
            assert got[k].dtype == np.dtype(dt)
            np.testing.assert_allclose(got[k].astype(np.float32), want[k], rtol=tol, atol=tol, err_msg=name)


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
    dealt = simulate_gemm(64, 256, 128, cfg)
    # Folds dealt out (split=None): ws on 128×128, folds = ⌈256/128⌉·⌈128/128⌉ = 2, one round over 8 MXUs,
    # per fold 2·128 + 128 + 64 − 2 = 446 cycles. Stall: off-chip D = (64·256 + 256·128 + 64·128)·2 =
    # 114688 B at 1200e9/1.05e9 = 1142.86 B/cycle; the first fill, 2 MXUs · (64·128 + 128·128)·2 B = 98304 B,
    # takes 86.02 cycles, the rest (14.3 cycles) hides under the 446-cycle fold: stall 87, total 445 + 87.
    assert (dealt.compute_cycles, dealt.stall_cycles) == (446 - 1, 87)
    t = map_gemm(64, 256, 128, cfg)
    # The mapping splits M into 4 blocks of 16 rows as well (4·1·2 = 8 jobs, one per MXU): one fold of
    # 2·128 + 128 + 16 − 2 = 398 cycles; the first fill, 8 · (16·128 + 128·128)·2 B, is more than D, so
    # fill = D: ⌈114688 / 1142.86⌉ = ⌈100.35⌉ = 101 stall cycles; 397 + 101 = 498 < 532.
    assert t.split == (4, 1, 2) and (t.compute_cycles, t.stall_cycles, t.total_cycles) == (397, 101, 498)
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
    # batched B: 2·3 = 6 GEMMs of 64×32×48, one fold each, one per MXU: split (1, 1, 1) is best.
    assert tpu.cost(g.node("bmm")).latency_s == simulate_gemm(64, 32, 48, cfg, batch=6).latency_s
    assert map_gemm(64, 32, 48, cfg, 6).split == (1, 1, 1)
    # shared W: batch folds into M = 2·3·64 = 384, split into 8 blocks of 48 rows, one per MXU: a fold of
    # 2·128 + 128 + 48 − 2 = 430 cycles instead of 2·128 + 128 + 384 − 2 = 766 on one MXU.
    fold = map_gemm(384, 48, 16, cfg)
    assert fold.split == (8, 1, 1) and fold.compute_cycles == 430 - 1
    assert simulate_gemm(384, 48, 16, cfg).compute_cycles == 766 - 1
    assert tpu.cost(g.node("fold")).latency_s == fold.latency_s


def test_conv_and_epilogue_cost(tpu, cbr):
    cfg = tpu.params.array
    groups, m, k, n = conv_gemm_dims(1, 3, 8, (3, 3), (16, 16), 1)
    assert (groups, m, k, n) == (1, 256, 27, 8)  # M = 16·16 pixels, K = 3·3·3, N = 8
    t = map_gemm(m, k, n, cfg)
    # 8 blocks of 32 pixels, one per MXU: a fold of 2·128 + 128 + 32 − 2 = 414 cycles
    assert t.split == (8, 1, 1) and t.compute_cycles == 414 - 1
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


# ---- in-place epilogues -------------------------------------------------------------------------------
# Relu, Clip and Add write into an operand that an earlier step of the segment produced, that no later step
# reads and that is not a segment output (target._Program.build, kernels.INPLACE_KERNELS). Each test below
# compares with onnxruntime on the whole graph, and fails when one of those three conditions is dropped.

def _inplace_steps(exe) -> set[str]:
    """Names of the steps the compiled program runs with an in-place kernel (a partial binding `into`)."""
    return {s.node for s in exe.steps if isinstance(s.kernel, functools.partial)}


def _residual_block() -> onnx.ModelProto:
    """X (1,4,8,8) -> Conv0 -> h; Relu(h) -> r; Conv1(r) -> c; Add(c, h) -> s; Relu(s) -> t; Add(X, t) -> Y.

    h is read twice (the first Relu and the residual Add), so that Relu must not write into it; X, the
    segment input, is the first operand of the last Add, so that Add must write into t, not into X.
    """
    inits = {"W0": RNG.standard_normal((4, 4, 3, 3)).astype(np.float32),
             "B0": RNG.standard_normal(4).astype(np.float32),
             "W1": RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)}
    nodes = [_conv("X", "W0", "h", "conv0", "B0"),
             helper.make_node("Relu", ["h"], ["r"], name="relu0"),
             _conv("r", "W1", "c", "conv1"),
             helper.make_node("Add", ["c", "h"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["t"], name="relu1"),
             helper.make_node("Add", ["X", "t"], ["Y"], name="add_x")]
    return _model(nodes, [("X", [1, 4, 8, 8])], [("Y", [1, 4, 8, 8])], inits)


@pytest.fixture(scope="module")
def block() -> Graph:
    return load(_residual_block())


def test_inplace_residual_block_keeps_twice_read_values(tpu, block):
    x = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)
    x0 = x.copy()
    want = _ort(block.model, {"X": x})["Y"]
    exe = tpu.compile(block, block.nodes, ["X"], ["Y"])
    # relu0 reads h, which the residual Add reads later: not in place; add writes into c, relu1 into s,
    # add_x into t (X is the caller's).
    assert _inplace_steps(exe) == {"add", "relu1", "add_x"}
    got = exe({"X": x})["Y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, x0)
    # h has negative entries, so a Relu that clobbered it would change the residual sum.
    conv0 = _model([block.node("conv0").proto], [("X", [1, 4, 8, 8])], [("h", [1, 4, 8, 8])],
                   {k: block.values[k].const for k in ("W0", "B0")})
    assert (_ort(conv0, {"X": x})["h"] < 0).any()


def test_inplace_never_writes_into_feeds(tpu):
    # Every node reads a segment input only: nothing may run in place, and the feeds stay as they were.
    nodes = [helper.make_node("Relu", ["X"], ["Y"], name="relu"),
             helper.make_node("Clip", ["C", "lo", "hi"], ["Z"], name="clip"),
             helper.make_node("Add", ["A", "B"], ["S"], name="add")]
    shape = [2, 3, 4]
    model = _model(nodes, [("X", shape), ("C", shape), ("A", shape), ("B", shape)],
                   [("Y", shape), ("Z", shape), ("S", shape)],
                   {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)})
    g = load(model)
    feeds = {k: RNG.standard_normal(shape).astype(np.float32) for k in ("X", "C", "A", "B")}
    before = {k: v.copy() for k, v in feeds.items()}
    want = _ort(model, feeds)
    exe = tpu.compile(g, g.nodes, ["X", "C", "A", "B"], ["Y", "Z", "S"])
    assert _inplace_steps(exe) == set()
    got = exe(feeds)
    for k in ("Y", "Z", "S"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)
    for k, v in feeds.items():
        np.testing.assert_array_equal(v, before[k])
    assert not any(np.shares_memory(got[o], feeds[i]) for o in got for i in feeds)
    # A read-only feed runs too (the kernels allocate when they may not write).
    ro = {k: v.copy() for k, v in feeds.items()}
    for v in ro.values():
        v.flags.writeable = False
    np.testing.assert_array_equal(exe(ro)["Y"], got["Y"])


def test_inplace_keeps_segment_outputs(tpu):
    # h = Conv(X) is a segment output and the last read of it is the Relu: the Relu must not write into it.
    # Then r = Relu(h) is an output too, read last by the Add with a constant: not in place either.
    nodes = [_conv("X", "W", "h", "conv", "B"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "k"], ["Y"], name="add"),
             helper.make_node("Clip", ["Y", "lo"], ["Z"], name="clip")]
    model = _model(nodes, [("X", [1, 3, 6, 6])],
                   [("h", [1, 4, 6, 6]), ("r", [1, 4, 6, 6]), ("Y", [1, 4, 6, 6]), ("Z", [1, 4, 6, 6])],
                   {"W": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
                    "B": RNG.standard_normal(4).astype(np.float32),
                    "k": np.full((1, 4, 6, 6), -0.25, np.float32), "lo": np.array(0.0, np.float32)})
    g = load(model)
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    want = _ort(model, {"X": x})
    assert (want["h"] < 0).any()  # so a Relu in place would change h
    exe = tpu.compile(g, g.nodes, ["X"], ["h", "r", "Y"])  # the Clip reads Y, an output: not in place
    assert _inplace_steps(exe) == set()
    got = exe({"X": x})
    for k in ("h", "r", "Y"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)
    # Asking only for h and Z: the Add and the Clip now own their operands.
    exe = tpu.compile(g, g.nodes, ["X"], ["h", "Z"])
    assert _inplace_steps(exe) == {"add", "clip"}
    got = exe({"X": x})
    np.testing.assert_allclose(got["h"], want["h"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["Z"], want["Z"], rtol=1e-5, atol=1e-5)
    assert not np.shares_memory(got["h"], got["Z"])


def test_inplace_program_has_no_state_between_calls(tpu, block):
    exe = tpu.compile(block, block.nodes, ["X"], ["Y"])
    xs = [RNG.standard_normal((1, 4, 8, 8)).astype(np.float32) for _ in range(4)]
    copies = [x.copy() for x in xs]
    want = [_ort(block.model, {"X": x})["Y"] for x in xs]
    first = [exe({"X": x})["Y"] for x in xs]
    second = [exe({"X": x})["Y"] for x in xs]  # the same feed arrays again
    for a, b, w in zip(first, second, want, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-5)
    # Four threads at once, each feed dict shared by several calls running together.
    feeds = [{"X": x} for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(exe, feeds * 8))
    for i, out in enumerate(got):
        np.testing.assert_array_equal(out["Y"], first[i % 4])
    assert len({id(out["Y"]) for out in got}) == len(got)  # every call returns its own array
    for x, c in zip(xs, copies, strict=True):
        np.testing.assert_array_equal(x, c)


def test_inplace_clip_bounds_and_broadcast_bias(tpu):
    # Conv -> c (1,4,5,5); Add(c, b (4,1,1)) -> a, a per-channel bias broadcast over H and W;
    # Clip(a, -0.5, 0.75) -> k; Add(b2 (1,4,1,1), k) -> m, the bias first, so the Add writes into operand 1;
    # Clip(m, min omitted, max 1.0) -> n; Add(n, a) -> Y reads a a second time, so the first Clip must not
    # write into a.
    nodes = [_conv("X", "W", "c", "conv"),
             helper.make_node("Add", ["c", "b"], ["a"], name="bias"),
             helper.make_node("Clip", ["a", "lo", "hi"], ["k"], name="clip"),
             helper.make_node("Add", ["b2", "k"], ["m"], name="bias2"),
             helper.make_node("Clip", ["m", "", "hi2"], ["n"], name="clip_max"),
             helper.make_node("Add", ["n", "a"], ["Y"], name="residual")]
    model = _model(nodes, [("X", [1, 2, 5, 5])], [("Y", [1, 4, 5, 5])],
                   {"W": RNG.standard_normal((4, 2, 3, 3)).astype(np.float32),
                    "b": RNG.standard_normal((4, 1, 1)).astype(np.float32),
                    "b2": RNG.standard_normal((1, 4, 1, 1)).astype(np.float32),
                    "lo": np.array(-0.5, np.float32), "hi": np.array(0.75, np.float32),
                    "hi2": np.array(1.0, np.float32)})
    g = load(model)
    assert all(tpu.supports(n) for n in g.nodes)
    exe = tpu.compile(g, g.nodes, ["X"], ["Y"])
    # The clip reads a, which the residual reads later; the others own their operand (bias2: into k).
    assert _inplace_steps(exe) == {"bias", "bias2", "clip_max", "residual"}
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    want = _ort(model, {"X": x})["Y"]
    a = _ort(_model(nodes[:2], [("X", [1, 2, 5, 5])], [("a", [1, 4, 5, 5])],
                    {k: g.values[k].const for k in ("W", "b")}), {"X": x})["a"]
    assert ((a < -0.5) | (a > 0.75)).any()  # so clipping a in place would change the residual
    np.testing.assert_allclose(exe({"X": x})["Y"], want, rtol=1e-5, atol=1e-5)

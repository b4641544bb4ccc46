"""targets/fusion.py: the TensorRT fusion table against onnxruntime's on tiny graphs, the fused attention's
price, the device-side gap per kernel, and the table's selection (option, spec key, provider)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import models
from dispatch.analysis import analyze_node
from dispatch.errors import DispatchError
from dispatch.frontend import load
from targets.base import load_spec, make_target
from targets.fusion import ORT, TRT, attention_members
from targets.gpu import GpuTarget, op_class
from targets.roofline import GemmShape, tile_choices, wave_quantisation

F = TensorProto.FLOAT


def _graph(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, F, s) for n, s in outputs],
                          initializer=list(inits))
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _kernels(target, graph):
    """The nodes that remain kernels when the whole graph is one segment on `target`."""
    out = []
    for n in graph.nodes:
        op = analyze_node(n)
        if target.fusion(n, op) is None and op_class(n, op) != "view":
            out.append(n)
    return out


@pytest.fixture(scope="module")
def a100():
    return {name: make_target("gpu", "a100-sxm", precision="fp16", profile=False, fusion=name)
            for name in ("onnxruntime", "tensorrt")}


def _gelu_mlp():
    """x · W + b, then the Erf GELU x/√2 -> Erf -> +1 -> ·x -> ·0.5 (as torch exports nn.GELU)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b"], ["h"], name="bias"),
        helper.make_node("Div", ["h", "sqrt2"], ["d"], name="div"),
        helper.make_node("Erf", ["d"], ["e"], name="erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], name="add1"),
        helper.make_node("Mul", ["h", "e1"], ["p"], name="mul"),
        helper.make_node("Mul", ["p", "half"], ["y"], name="half_mul"),
    ]
    inits = [_const("w", rng.standard_normal((64, 256))), _const("b", np.zeros(256)),
             _const("sqrt2", 2**0.5), _const("one", 1.0), _const("half", 0.5)]
    return _graph(nodes, [("x", [8, 64])], [("y", [8, 256])], inits)


def test_matmul_bias_gelu_is_one_kernel_under_tensorrt(a100):
    g = _gelu_mlp()
    # onnxruntime: MatMulAddFusion makes MatMul + bias a Gemm, GeluFusion makes the five GELU nodes one Gelu:
    # two kernels. TensorRT: the bias and all of the GELU's point-wise nodes run in the GEMM's epilogue: one.
    assert [n.name for n in _kernels(a100["onnxruntime"], g)] == ["mm", "erf"]
    assert [n.name for n in _kernels(a100["tensorrt"], g)] == ["mm"]
    for n in g.nodes[1:]:
        assert TRT.partner(n).name == "mm", n.name
        assert "TensorRT" in TRT.absorbed_by(n)
    assert ORT.kernel_of(g.nodes[0]) == "Gemm" and TRT.kernel_of(g.nodes[0]) == "MatMul"


def _attention(heads=12, seq=128, dim=64):
    """BERT's self-attention core as torch exports it: Q, K, V [1, S, H·D] -> heads -> softmax(QKᵀ/√D)·V ->
    back to [1, S, H·D]."""
    h = heads * dim
    shape4 = numpy_helper.from_array(np.array([1, seq, heads, dim], np.int64), "s4")
    shape3 = numpy_helper.from_array(np.array([1, seq, h], np.int64), "s3")
    nodes = [
        helper.make_node("Reshape", ["q", "s4"], ["q4"]),
        helper.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3], name="tq"),
        helper.make_node("Reshape", ["k", "s4"], ["k4"]),
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1], name="tk"),
        helper.make_node("Reshape", ["v", "s4"], ["v4"]),
        helper.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3], name="tv"),
        helper.make_node("MatMul", ["qt", "kt"], ["s"], name="qk"),
        helper.make_node("Div", ["s", "scale"], ["ss"], name="scale_div"),
        helper.make_node("Softmax", ["ss"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "vt"], ["o"], name="pv"),
        helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3], name="to"),
        helper.make_node("Reshape", ["ot", "s3"], ["y"]),
    ]
    return _graph(nodes, [(x, [1, seq, h]) for x in "qkv"], [("y", [1, seq, h])],
                  [shape4, shape3, _const("scale", dim**0.5)])


def test_attention_is_one_fused_kernel_under_tensorrt(a100):
    g = _attention()
    # onnxruntime: 4 Transposes, the scaled QKᵀ (FusedMatMul), Softmax, P·V: 7 kernels (Reshapes are views).
    ort_kernels = _kernels(a100["onnxruntime"], g)
    assert len(ort_kernels) == 7
    # TensorRT: one fused attention kernel at P·V, which takes the transposes, QKᵀ, the scale and softmax.
    (fmha,) = _kernels(a100["tensorrt"], g)
    assert fmha.name == "pv" and TRT.kernel_of(fmha) == "fMHA"
    pv, members = attention_members(fmha)
    assert pv is fmha
    assert {n.name for n in members} == {"qk", "scale_div", "softmax", "tq", "tk", "tv", "to"}


def test_fused_attention_golden(a100):
    # The fused attention on the A100 at fp16, BERT-base's shape (12 heads, 128 tokens, head 64):
    #   flops  = 2 · (12·128·128) · 64 (QKᵀ) + 2 · (12·128·64) · 128 (P·V) = 50,331,648
    #   bytes  = Q, K, V and the output, 12·128·64 fp32 each stored at 2 bytes: 4 · 196,608 = 786,432
    #   tiles  = one block per (head, 64 query rows) looping over all keys (FlashAttention-2, [FA] in the
    #            spec): P·V as 12 GEMMs of M = 128, N = 64, K = 128, no split-K, on 108 SMs. 64x64 tiles (half
    #            speed): 12 · 2 · 1 = 24 blocks in one wave, q = 24 / 108 · 0.5 = 1/9 (128x64: 12 blocks at
    #            2/3 speed, q = 12/108 · 2/3 = 0.074; 128x128 and 256x128 pad N: 0.056, 0.028)
    #   busy   = max(50,331,648 / (312e12 · 0.70 / 9), 786,432 / (2039e9 · 0.80)) = max(2.074, 0.482) µs
    #   + the 1 µs device-side gap (kernel_gap_us)
    g = _attention()
    pv = next(n for n in g.nodes if n.name == "pv")
    q = 24 / 108 * 0.5
    busy = max(50_331_648 / (312e12 * 0.70 * q), 786_432 / (2039e9 * 0.80))
    assert busy == pytest.approx(2.074e-6, rel=1e-3)
    assert a100["tensorrt"].cost(pv, analyze_node(pv)).latency_s == pytest.approx(busy + 1e-6, rel=1e-9)
    # the members are priced as their own kernels, their whole cost saved inside one segment with P·V
    soft = next(n for n in g.nodes if n.name == "softmax")
    assert a100["tensorrt"].fusion(soft, analyze_node(soft)) == ("pv", a100["tensorrt"].cost(soft,
                                                                                              analyze_node(soft)))


def test_split_k_pays_its_reduction(a100):
    # BERT-base's attention output projection at batch 1 under TensorRT on the A100 at fp16: x [128, 768] ·
    # W [768, 768]. M = 128, N = 768, K = 768; flops 2 · 128 · 768 · 768 = 150,994,944; bytes at 2 B: x and
    # the output 2 · 196,608, W 1,179,648 = 1,572,864 B / (2039e9 · 0.80) = 0.9642 µs (DRAM: no cache_bw).
    # The output tiles alone are few (64x64: 24 blocks of 108), so K is split; each split s costs the partial
    # sums s · 128 · 768 · 4 B (fp32 accumulators) written by the GEMM and read by a reduction kernel
    # (CUTLASS GemmSplitKParallel + ReduceSplitK, [CS] in the spec), each way s · 0.24106 µs, + 1 µs gap:
    #   64x64, s = 1: q = 24/108 · 0.5 = 1/9: compute 150,994,944 / (312e12 · 0.70 / 9) = 6.2223 µs
    #   64x64, s = 2: q = 2/9: max(3.1112, 0.9642 + 0.4821) + 1 + 0.4821 = 4.5933 µs
    #   64x64, s = 4: q = 4/9: max(1.5556, 0.9642 + 0.9642) + 1 + 0.9642 = 3.8927 µs   <- the fastest
    #   128x64, s = 4: q = 48/108 · 2/3 = 0.2963: max(2.3334, 1.9284) + 1.9642 = 4.2976 µs
    # (K/8 = 96 < 128: no split by 8.) Then the 1 µs device-side gap of the GEMM kernel itself.
    w = _const("w", np.ones((768, 768)) * 0.01)
    g = _graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", [128, 768])],
               [("y", [128, 768])], [w])
    mm = g.nodes[0]
    bw = 2039e9 * 0.80
    half = 4 * 128 * 768 * 4 / bw
    busy = max(150_994_944 / (312e12 * 0.70 * 4 / 9), 1_572_864 / bw + half) + 1e-6 + half
    assert busy == pytest.approx(3.8927e-6, rel=1e-4)
    assert a100["tensorrt"].cost(mm, analyze_node(mm)).latency_s == pytest.approx(busy + 1e-6, rel=1e-9)
    # Without the reduction's price the split by 4 would cost max(1.5556, 0.9642) = 1.5556 µs: 2.5x less.
    assert wave_quantisation(GemmShape(128, 768, 768), 108, 1, ((64, 64),))[:3] == (4 / 9, (64, 64), 96)
    # A fused attention never splits K: one choice per tile, split 1, even with K = 512.
    choices = tile_choices(GemmShape(128, 64, 512, 12, split_k=False), 108, 1, ((128, 64), (64, 64)))
    assert [(c[1], c[2], c[4]) for c in choices] == [((128, 64), 12, 1), ((64, 64), 24, 1)]


def test_residual_add_and_relu_join_the_conv():
    # ResNet's block tail, Conv -> Add(skip) -> Relu, with the skip read by another node too: TensorRT folds
    # the Add ("Convolution and ElementWise Operation") and the Relu into the Conv; the first Conv keeps
    # its Relu; 2 kernels.
    w = _const("w", np.ones((8, 8, 3, 3)) * 0.01)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1] * 4, name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w"], ["c2"], pads=[1] * 4, name="conv2"),
        helper.make_node("Add", ["c2", "x"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    g = _graph(nodes, [("x", [1, 8, 16, 16])], [("y", [1, 8, 16, 16])], [w])
    gpu = make_target("gpu", "a100-sxm", profile=False, fusion="tensorrt")
    assert [n.name for n in _kernels(gpu, g)] == ["conv1", "conv2"]
    assert TRT.partner(g.nodes[3]).name == "conv2" and TRT.partner(g.nodes[4]).name == "conv2"


def test_device_side_gap_replaces_the_host_launch():
    # A Relu over 1,024 floats on the A100 at fp32: busy = 8,192 bytes / (2039e9 · 0.85) = 4.73 ns; the
    # onnxruntime table adds the host launch (launch_us = 5 µs), TensorRT's the device-side gap
    # (kernel_gap_us = 1 µs), so the two differ by exactly 4 µs.
    g = _graph([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 1024])], [("y", [1, 1024])])
    relu = g.nodes[0]
    ort = make_target("gpu", "a100-sxm", profile=False)
    trt = make_target("gpu", "a100-sxm", profile=False, fusion="tensorrt")
    busy = 8192 / (2039e9 * 0.85)
    assert ort.cost(relu, analyze_node(relu)).latency_s == pytest.approx(busy + 5e-6, rel=1e-9)
    assert trt.cost(relu, analyze_node(relu)).latency_s == pytest.approx(busy + 1e-6, rel=1e-9)
    assert trt.model.kernel_gap_s == pytest.approx(1e-6) and trt.model.launch_s == pytest.approx(5e-6)
    # a spec without kernel_gap_us falls back to its launch; a negative one is refused in one sentence
    spec = load_spec("a100-sxm")
    params = {k: v for k, v in spec.params.items() if k != "kernel_gap_us"}
    bare = GpuTarget("gpu", dataclasses.replace(spec, params=params), profile=False, fusion="tensorrt")
    assert bare.model.kernel_gap_s == pytest.approx(5e-6)
    with pytest.raises(DispatchError, match="must not be negative"):
        GpuTarget("gpu", dataclasses.replace(spec, params={**params, "kernel_gap_us": -1.0}), profile=False)


def test_table_selection():
    assert make_target("gpu", "h100-sxm", profile=False).fusion_table.name == "onnxruntime"  # the default
    assert make_target("gpu", "h100-sxm", profile=False, fusion="tensorrt").fusion_table is TRT
    spec = load_spec("h100-sxm")
    keyed = GpuTarget("gpu", dataclasses.replace(spec, params={**spec.params, "fusion": "tensorrt"}),
                      profile=False)
    assert keyed.fusion_table is TRT
    with pytest.raises(DispatchError, match="Unknown fusion table 'xla'"):
        make_target("gpu", "h100-sxm", profile=False, fusion="xla")
    assert make_target("cpu", "host-cpu", profile=False).fusion_table is ORT


@pytest.mark.parametrize(("name", "want"), [("tiny_cnn-fp16", "fp16"), ("tiny_cnn-int8", "int8"),
                                            ("tiny_transformer-int8", "int8")])
def test_model_dtypes_set_the_precision_without_a_flag(name, want):
    # A float16 model runs on the fp16 units and a quantised one on the int8 units with the target at its
    # default (fp32) precision; the float32 leftovers of a dynamically quantised model (attention MatMuls,
    # the classifier Gemm) stay fp32.
    g = load(models.build(name))
    gpu = make_target("gpu", "a100-sxm", profile=False)
    assert gpu.precision == "fp32"
    matrix = [n for n in g.nodes if op_class(n, analyze_node(n)) in ("gemm", "conv")]
    got = {gpu.precision_of(n, analyze_node(n)) for n in matrix if not all(
        v.dtype == np.float32 for v in (*n.present_inputs, *n.outputs))}
    assert got == {want}
    # the same node costs the same on a target whose --precision is already that one
    same = make_target("gpu", "a100-sxm", profile=False, precision=want)
    n = next(n for n in matrix if gpu.precision_of(n, analyze_node(n)) == want)
    assert gpu.cost(n, analyze_node(n)) == same.cost(n, analyze_node(n))


def test_bytes_at_the_precision_width():
    # A memory-bound Add of two 1024x1024 float32 tensors: 3 · 4 MiB moved at fp32, half at fp16, a quarter at
    # int8 (stored as the precision's width): busy = bytes / (2039e9 · 0.85), + the 5 µs launch.
    g = _graph([helper.make_node("Add", ["a", "b"], ["c"])], [("a", [1024, 1024]), ("b", [1024, 1024])],
               [("c", [1024, 1024])])
    add = g.nodes[0]
    for precision, width in (("fp32", 4), ("fp16", 2), ("int8", 1)):
        gpu = make_target("gpu", "a100-sxm", profile=False, precision=precision)
        want = 3 * 1024 * 1024 * width / (2039e9 * 0.85) + 5e-6
        assert gpu.cost(add, analyze_node(add)).latency_s == pytest.approx(want, rel=1e-9), precision


def test_qdq_model_runs_int8_layers_under_tensorrt():
    # tiny_cnn's QDQ form (models/quantize.py): under TensorRT every weight DequantizeLinear is its Conv's or
    # Gemm's int8 input, every Q -> DQ pair after a Conv/Gemm kernel its int8 output, and the residual Add
    # and Relu join the second block Conv: 7 layers (4 Conv, MaxPool, GlobalAveragePool, Gemm) + the 4
    # QuantizeLinear and 3 DequantizeLinear next to layers without an epilogue (input, pools, Flatten, the
    # graph output) = 14 kernels; onnxruntime's table fuses no Q/DQ: 38.
    g = load(models.build("tiny_cnn-qdq"))
    trt = make_target("gpu", "a100-sxm", profile=False, fusion="tensorrt")
    kinds = [TRT.kernel_of(n) for n in _kernels(trt, g)]
    assert len(kinds) == 14 and kinds.count("Conv") == 4 and kinds.count("QuantizeLinear") == 4
    assert kinds.count("DequantizeLinear") == 3
    assert len(_kernels(make_target("gpu", "a100-sxm", profile=False), g)) == 38
    for n in g.nodes:
        if n.op_type == "DequantizeLinear" and n.input(0).const is not None:
            assert TRT.partner(n) is n.outputs[0].consumers[0], n.name  # weights: the layer reading them
    # the Conv read through a DequantizeLinear runs at the int8 peak
    conv = next(n for n in g.nodes if n.op_type == "Conv")
    assert trt.precision_of(conv, analyze_node(conv)) == "int8"


def test_causal_attention_is_fused():
    # tiny_transformer (2 layers) masks its attention with Where (a boolean causal mask) between the scale
    # and the softmax, as GPT-2 does: still one fused attention per layer, the K transpose (0, 2, 3, 1) and
    # the head transposes taken in.
    g = load(models.build("tiny_transformer"))
    assert sum(n.op_type == "Where" for n in g.nodes) == 2
    trt = make_target("gpu", "a100-sxm", profile=False, fusion="tensorrt")
    kinds = [TRT.kernel_of(n) for n in _kernels(trt, g)]
    assert kinds.count("fMHA") == 2 and "Softmax" not in kinds and "Transpose" not in kinds

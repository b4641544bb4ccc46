"""benchmarks/bench_fidelity.py: the published fixtures load with their sources, and a row is predicted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_fidelity as bf  # noqa: E402

from dispatch.analysis import analyze_node  # noqa: E402
from dispatch.frontend import load  # noqa: E402
from targets.base import make_target  # noqa: E402


def test_fixtures_load_with_sources_and_conditions():
    rows = bf.load_rows()
    assert len({r["id"] for r in rows}) == len(rows) >= 9
    for r in rows:
        for key in ("source", "model", "part", "preset", "batch", "precision", "software", "metric", "value",
                    "fusion"):
            assert key in r, (r["id"], key)
        assert r["metric"] in ("latency_ms", "throughput_sps") and r["value"] > 0
        assert r["model"] in ("resnet50", "bert")
    # every source named by a row is cited (with its URL) in the fixture file's header
    text = (bf.FIXTURES / "gpu_inference.toml").read_text()
    for src in {r["source"] for r in rows}:
        assert f"[{src}]" in text
    assert text.count("https://") >= 3


def test_a_row_is_predicted_and_its_error_computed():
    # The benchmark's prediction function on one row, with a small graph standing in for the zoo model (the
    # whole-model rows run in the benchmark): a 4096x4096 fp32 MatMul at the row's precision (fp16) on the
    # A100 40 GB figures, priced as the row was measured (TensorRT). Per batch: one session call (20 µs) +
    # the kernel: 137.4 GFLOP / (312e12 · 0.70 · q), q = 512 / 540 (256x128 tiles: 512 tiles in 5 waves of
    # 108) = 664.5 µs, + the 1 µs device-side gap (kernel_gap_us) in place of the 5 µs host launch.
    n = 4096
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "g",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    row = next(r for r in bf.load_rows() if r["id"] == "bert-a100-fp16-b1")
    assert row["fusion"] == "tensorrt" and bf.target_for(row).fusion_table.name == "tensorrt"
    expected_s = 20e-6 + 2 * n**3 / (312e12 * 0.70 * 512 / 540) + 1e-6
    assert bf.predict(row, g) == pytest.approx(expected_s * 1e3)
    # as onnxruntime's CUDA provider would run it: the host launch (5 µs) per kernel
    assert bf.predict(row, g, "onnxruntime") == pytest.approx((expected_s + 4e-6) * 1e3)
    assert bf.kernel_count(bf.target_for(row), g) == 1
    assert bf.error(row, bf.predict(row, g)) == pytest.approx(expected_s * 1e3 / 0.67 - 1)
    # the row's 1,555 GB/s replaces the preset's 2,039 (memory-bound Add of 3 · 64 MiB)
    assert bf.target_for(row).model.memory_bw == 1555e9
    assert make_target("gpu", "a100-sxm", profile=False).model.memory_bw == 2039e9
    tput = {**row, "metric": "throughput_sps", "batch": 8, "value": 1000.0}
    assert bf.predict(tput, g) == pytest.approx(8 / expected_s)
    assert bf.error(tput, 8 / expected_s) == pytest.approx(1000.0 * expected_s / 8 - 1)


def test_int8_and_fp16_nodes_priced_at_their_own_peak():
    # An int8 MatMulInteger on the A100 at the default fp32 precision: priced at the int8 peak (624 TOP/s),
    # a float16 MatMul at the fp16 peak (312), without --precision. 2 · 4096³ = 137.4 GOP; q = 512 / 540.
    n = 4096
    q = 512 / 540

    def one(node, dtype, out_dtype):
        graph = helper.make_graph([node], "g",
                                  [helper.make_tensor_value_info(x, dtype, [n, n]) for x in "ab"],
                                  [helper.make_tensor_value_info("c", out_dtype, [n, n])])
        return load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).nodes[0]

    gpu = make_target("gpu", "a100-sxm", profile=False)
    i8 = one(helper.make_node("MatMulInteger", ["a", "b"], ["c"]), TensorProto.INT8, TensorProto.INT32)
    h = one(helper.make_node("MatMul", ["a", "b"], ["c"]), TensorProto.FLOAT16, TensorProto.FLOAT16)
    assert gpu.precision == "fp32"
    assert gpu.precision_of(i8, analyze_node(i8)) == "int8" and gpu.precision_of(h, analyze_node(h)) == "fp16"
    assert gpu.cost(i8, analyze_node(i8)).latency_s == pytest.approx(2 * n**3 / (624e12 * 0.70 * q) + 5e-6)
    assert gpu.cost(h, analyze_node(h)).latency_s == pytest.approx(2 * n**3 / (312e12 * 0.70 * q) + 5e-6)
    # the host CPU spec has no int8 peak: the node stays at the target's precision there
    cpu = make_target("cpu", "host-cpu", profile=False)
    assert cpu.precision_of(i8, analyze_node(i8)) == "fp32"

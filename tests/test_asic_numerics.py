"""ASIC numerics emulation: bf16/fp16 operand rounding (targets/asic/numerics.py), its wiring into the ASIC's
programs, the Dispatcher/CLI switch and the precision-derived validation tolerance (docs/numerics.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from dispatch.api import Dispatcher
from dispatch.cli import main
from dispatch.errors import DispatchError
from dispatch.frontend import load
from dispatch.validate import emulated_layers
from targets.asic.numerics import UNIT_ROUNDOFF, to_bf16, to_fp16
from targets.base import make_target


def _torch_bf16(x: np.ndarray) -> np.ndarray:
    return torch.tensor(x).to(torch.bfloat16).float().numpy()


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    nan = np.isnan(b)
    return bool(np.array_equal(np.isnan(a), nan)
                and np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32)))


def test_bf16_rounding_matches_torch_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    normal = (rng.standard_normal(50_000) * 10.0 ** rng.integers(-37, 38, 50_000)).astype(np.float32)
    any_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    # exact ties: the low 16 bits are 0x8000, half-way between two bf16 values (even and odd high parts)
    ties = ((rng.integers(0, 2**16, 4096).astype(np.uint32) << 16) | np.uint32(0x8000)).view(np.float32)
    subnormal = (rng.integers(1, 2**23, 4096).astype(np.uint32)
                 | (rng.integers(0, 2, 4096).astype(np.uint32) << 31)).view(np.float32)
    bf16_max = 3.3895314e38  # 0x7F7F0000; anything at or past the tie 0x7F7F8000 rounds to inf
    special = np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, bf16_max, -bf16_max, 3.3961776e38,
                        np.finfo(np.float32).max, 1e-45, -1e-45, 1.1754942e-38], np.float32)
    near_max = (np.uint32(0x7F7F0000) + np.arange(-70000, 70000, 7, dtype=np.int64).astype(np.uint32)) \
        .view(np.float32)
    for x in (normal, any_bits, ties, subnormal, special, near_max):
        assert _same_bits(to_bf16(x), _torch_bf16(x))
    assert to_bf16(np.float32(1 + 2**-8)) == 1.0 and to_bf16(np.float32(1 + 3 * 2**-8)) == 1 + 2**-6  # ties


def test_fp16_rounding_matches_torch() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    assert _same_bits(to_fp16(x), torch.tensor(x).to(torch.float16).float().numpy())


def _matmul_model(a: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    w = helper.make_tensor("B", TensorProto.FLOAT, b.shape, b.ravel())
    node = helper.make_node("MatMul", ["A", "B"], ["Y"], name="mm")
    g = helper.make_graph([node], "mm", [helper.make_tensor_value_info("A", TensorProto.FLOAT, a.shape)],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (a.shape[0], b.shape[1]))],
                          [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_tiny_matmul_emulated_differs_by_the_rounding() -> None:
    # A = [[1 + 2^-7 + 2^-9, 1]], B = [[1 + 2^-8 + 2^-10], [1]] (column), Y = A·B.
    # exact fp32: (1 + 2^-7 + 2^-9)(1 + 2^-8 + 2^-10) + 1 = 2 + 2^-7 + 2^-8 + 2^-9 + 2^-10 + 2^-15 + 2·2^-17
    #   + 2^-19 (bits 2^1 .. 2^-19: exact in fp32's 24) = 2.0146961212158203.
    # bf16 (8 significant bits, spacing 2^-7 in [1, 2)): 1 + 2^-7 + 2^-9 -> 1 + 2^-7 (2^-9 is under half a
    # step), 1 + 2^-8 + 2^-10 -> 1 + 2^-7 (over half a step, rounds up); emulated Y = (1 + 2^-7)^2 + 1
    # = 2 + 2^-6 + 2^-14 = 2.01568603515625. The difference: 2^-6 + 2^-14 - (2^-7 + ... + 2^-19)
    # = 2^-10 + 2^-16 - 2^-19 = 0.0009899139404296875 (under 2u·sum|a_i·b_i| = 2^-7·2.0147 = 0.0157).
    a = np.array([[1 + 2**-7 + 2**-9, 1]], np.float32)
    b = np.array([[1 + 2**-8 + 2**-10], [1]], np.float32)
    model = _matmul_model(a, b)
    ys = {}
    for mode in ("emulate", "exact"):
        with Dispatcher(model, {"asic": "tpu-v4-like"}, strategy="only:asic", asic_numerics=mode) as d:
            ys[mode] = float(d.run({"A": a})["Y"][0, 0])
    assert ys["exact"] == 2.0146961212158203
    assert ys["emulate"] == 2.01568603515625
    assert ys["emulate"] - ys["exact"] == 0.0009899139404296875


def test_default_is_emulate_and_validation_names_the_precision() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 64)).astype(np.float32)
    b = rng.standard_normal((64, 8)).astype(np.float32)
    model = _matmul_model(a, b)
    with Dispatcher(model, {"asic": "tpu-v4-like"}, strategy="only:asic") as d:
        assert d.asic_numerics == "emulate" and d.targets["asic"].numerics == "emulate"
        y = d.run({"A": a})["Y"]
        np.testing.assert_allclose(y, to_bf16(a) @ to_bf16(b), rtol=1e-6, atol=1e-6)  # fp32 sums of bf16s
        v = d.validate({"A": a})
    (o,) = v.outputs
    # one emulated layer: rtol floor u·max(20, 8·sqrt(1)) = 20·2^-8 = 0.078125
    assert o.ok and o.tolerances == (20 * 2.0**-8, 1e-5) and o.raised_for == "bf16 ASIC numerics, 1 layers"
    assert 0 < o.max_abs_err <= 2 * 2.0**-8 * float(np.abs(a).sum(1).max() * 4)  # far inside the worst case
    with Dispatcher(model, {"asic": "tpu-v4-like"}, strategy="only:asic", asic_numerics="exact") as d:
        (o,) = d.validate({"A": a}).outputs
    assert o.ok and o.tolerances is None and o.max_abs_err < 1e-5


def test_bad_numerics_is_one_sentence() -> None:
    with pytest.raises(DispatchError, match="ASIC numerics must be one of emulate, exact"):
        make_target("asic", "tpu-v4-like", numerics="bf16")


def test_emulated_layers_counts_the_longest_path() -> None:
    n = [helper.make_node("MatMul", ["X", "W"], ["a"], name="m1"),
         helper.make_node("Relu", ["a"], ["b"], name="r"),
         helper.make_node("MatMul", ["b", "W"], ["c"], name="m2"),
         helper.make_node("Add", ["c", "X"], ["Y"], name="s")]
    w = helper.make_tensor("W", TensorProto.FLOAT, (4, 4), np.eye(4, dtype=np.float32).ravel())
    g = helper.make_graph(n, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, (2, 4))],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (2, 4))], [w])
    graph = load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    u = UNIT_ROUNDOFF["bf16"]
    assert emulated_layers(graph, {"m1": u, "m2": u}) == {"Y": (u, 2)}
    assert emulated_layers(graph, {}) == {}


def test_cli_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "mm.onnx"
    onnx.save(_matmul_model(np.zeros((4, 64), np.float32), rng.standard_normal((64, 8)).astype(np.float32)),
              str(path))
    reports = {}
    for mode in ("emulate", "exact"):
        out = tmp_path / f"{mode}.json"
        assert main([str(path), "--targets", "asic=tpu-v4-like", "--strategy", "only:asic", "--repeat", "0",
                     "--asic-numerics", mode, "--json", str(out), "--quiet"]) == 0
        reports[mode] = json.loads(out.read_text())
    capsys.readouterr()
    emu, exact = (reports[m]["measured"]["outputs"][0] for m in ("emulate", "exact"))
    assert emu["raised_for"] == "bf16 ASIC numerics, 1 layers" and "raised_for" not in exact
    assert emu["max_abs_err"] > exact["max_abs_err"]
    assert main([str(path), "--asic-numerics", "bf16"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet50", "bert"])
def test_zoo_emulated_run_reports_its_error_against_fp32(model: str) -> None:
    from models.zoo import build

    with Dispatcher(str(build(model)), {"asic": "tpu-v4-like", "gpu": "h100-sxm"}, strategy="only:asic") as d:
        v = d.validate()
    (o,) = v.outputs
    # measured (benchmarks/results/asic_numerics.md): ResNet-50 0.102 of the scale over L = 50 emulated
    # layers, BERT 0.0039 over L = 72; rtol = 2^-8·8·sqrt(L)
    layers = {"resnet50": 50, "bert": 72}[model]
    assert o.ok and o.raised_for == f"bf16 ASIC numerics, {layers} layers"
    assert o.tolerances[0] == pytest.approx(2.0**-8 * 8 * layers**0.5)
    assert 1e-4 < o.max_abs_err / o.scale < o.tolerances[0]  # bf16 costs far more than fp32's 1e-5

"""ONNX conformance of the ASIC kernels (issue 3, section 4).

Two sources, both from the installed onnx wheel:

* node cases: `onnx.backend.test.case.node.collect_testcases` generates every operator test case
  (the wheel ships the generators, not the node/ data folders); every case whose model is a single
  MatMul, Gemm or Conv node runs through `KERNELS` (24 in onnx 1.23);
* pytorch-converted data: the `test_Conv*` and `test_Linear*` folders (model.onnx plus protobuf
  inputs and outputs). Their nodes run in order through `KERNELS`; the only other op they contain,
  Transpose (in Linear_no_bias), runs through onnx's reference evaluator.

Comparison as onnx's backend runner does it: same shape and dtype, then
assert_allclose with the case's rtol/atol (defaults rtol=1e-3, atol=1e-7).
"""

from __future__ import annotations

import glob
import os
import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.backend.test.case.test_case import TestCase
from onnx.backend.test.loader import load_model_tests
from onnx.reference import ReferenceEvaluator

from targets.asic.kernels import KERNELS

NODE_OPS = ("MatMul", "Gemm", "Conv")


def _node_cases() -> list[TestCase]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # some unrelated generators (Cast, ReduceMin...) warn on overflow
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return [c for c in cases if len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in NODE_OPS]


def _pytorch_cases() -> list[TestCase]:
    cases = load_model_tests(kind="pytorch-converted")
    return sorted((c for c in cases if c.name.startswith(("test_Conv", "test_Linear"))), key=lambda c: c.name)


NODE_CASES = _node_cases()
PYTORCH_CASES = _pytorch_cases()


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Attribute values as `onnx.helper.get_attribute_value` gives them, bytes decoded to str."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def run_graph(graph: onnx.GraphProto, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    """Runs the nodes in order (ONNX requires topological order); returns outputs and the KERNELS ops run."""
    env: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    env.update(feeds)
    on_kernels = []
    for node in graph.node:
        args = [env[name] if name else None for name in node.input]
        if node.op_type in KERNELS:
            results = KERNELS[node.op_type](args, _attrs(node))
            on_kernels.append(node.op_type)
        else:
            ref = ReferenceEvaluator(node)
            results = ref.run(None, {n: a for n, a in zip(node.input, args, strict=True) if n})
        env.update(zip(node.output, results, strict=False))
    return [env[o.name] for o in graph.output], on_kernels


def assert_similar(outputs: list[np.ndarray], expected: list[np.ndarray], rtol: float, atol: float) -> None:
    assert len(outputs) == len(expected)
    for got, ref in zip(outputs, expected, strict=True):
        got = np.asarray(got)
        assert got.shape == ref.shape
        assert got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


def test_node_case_count() -> None:
    # onnx 1.23: 6 Conv + 11 Gemm + 7 MatMul single-node cases = 24.
    assert len(NODE_CASES) >= 24
    assert {c.model.graph.node[0].op_type for c in NODE_CASES} == set(NODE_OPS)


@pytest.mark.parametrize("case", NODE_CASES, ids=[c.name for c in NODE_CASES])
def test_node_case(case: TestCase) -> None:
    graph = case.model.graph
    names = [i.name for i in graph.input]
    for inputs, expected in case.data_sets:
        outputs, on_kernels = run_graph(graph, dict(zip(names, inputs, strict=True)))
        assert on_kernels == [graph.node[0].op_type]
        assert_similar(outputs, list(expected), case.rtol, case.atol)


def test_pytorch_case_count() -> None:
    # onnx 1.23 ships 26 test_Conv{1,2,3}d* + 2 test_ConvTranspose2d* + 2 test_Linear* folders.
    assert len(PYTORCH_CASES) >= 30
    assert sum("ConvTranspose" not in c.name for c in PYTORCH_CASES) >= 28


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.skip(reason="ConvTranspose is not an ASIC kernel (out of scope)"))
        if "ConvTranspose" in c.name
        else c
        for c in PYTORCH_CASES
    ],
    ids=[c.name for c in PYTORCH_CASES],
)
def test_pytorch_converted(case: TestCase) -> None:
    assert case.model_dir is not None
    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    input_names = [i.name for i in graph.input if i.name not in inits]
    data_sets = sorted(glob.glob(os.path.join(case.model_dir, "test_data_set_*")))
    assert data_sets
    for folder in data_sets:
        n_in = len(glob.glob(os.path.join(folder, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(folder, "output_*.pb")))
        load = [
            numpy_helper.to_array(onnx.load_tensor(os.path.join(folder, f"{kind}_{i}.pb")))
            for kind, n in (("input", n_in), ("output", n_out))
            for i in range(n)
        ]
        inputs, expected = load[:n_in], load[n_in:]
        outputs, on_kernels = run_graph(graph, dict(zip(input_names, inputs, strict=True)))
        assert set(on_kernels) & set(NODE_OPS)
        assert_similar(outputs, expected, case.rtol, case.atol)

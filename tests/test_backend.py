"""onnx's backend test suite through dispatch (issue 9): `onnx.backend.test.BackendTest(dispatch.backend)`.

As onnxruntime's repository runs the suite against `onnxruntime.backend`
(onnxruntime/test/python/onnx_backend_test_series.py): node, simple, pytorch-converted, pytorch-operator and
real tests. The real tests are the light model-zoo models that ship with onnx (onnx/backend/test/data/light,
random weights and a stored output); the full-size model zoo is downloaded from the internet at run time,
which these tests never do, and onnx 1.23 points every real test at its light model anyway.

The cases run are exactly those onnxruntime's own backend passes on this machine, listed in
tests/data/ort_backend_pass.txt (regenerate with `python tests/ort_backend_pass.py`, checked by
test_ort_pass_list_is_current); cases onnxruntime fails are excluded for that reason. Each runs under two
strategies on the backend's targets (dispatch.backend.BACKEND_TARGETS: gpu h100-sxm, cpu host-cpu, asic
tpu-v4-like):

* `optimal` (the default), and
* `only:asic`, ASIC first: every node the ASIC supports on the ASIC, the rest on the GPU (then the CPU);
  each prepared model is checked to have every MatMul, Gemm and Conv the ASIC supports on the ASIC.

Outputs are compared by onnx's runner (shape, dtype, assert_allclose with the case's rtol/atol). The light
model-zoo models (seconds each on the ASIC's NumPy kernels) are marked slow; everything else is quick.
EXCLUDED lists the cases left out, one reason each.
"""

from __future__ import annotations

import os
import re
import unittest
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.backend.test
import pytest
from onnx import helper, numpy_helper

import dispatch.backend as dispatch_backend
from dispatch.backend import DispatchBackend, DispatchBackendRep
from dispatch.errors import DispatchError

PASS_FILE = Path(__file__).parent / "data" / "ort_backend_pass.txt"
ORT_PASS = [s for s in (line.strip() for line in PASS_FILE.read_text().splitlines())
            if s and not s.startswith("#")]
MATRIX_OPS = ("MatMul", "Gemm", "Conv")

# pattern (re.search on the case name) -> why the case is left out, under both strategies. Keep it short.
EXCLUDED: dict[str, str] = {
    r"^test_sequence_model8_cpu$":
        "feeds X of shape (0,) in the symbolic dimension 'n'; run() refuses a size-0 symbolic dimension "
        "(dispatch/validate.py, _check_shape) as the frontend binds symbols to sizes >= 1 "
        "(tests/test_frontend.py): empty tensors are a design decision, not a bug here",
}
# ... and under the ASIC-first strategy only.
EXCLUDED_ASIC_FIRST: dict[str, str] = {}

SLOW_CATEGORIES = ("OnnxBackendRealModelTest",)  # the light model zoo: seconds per model on the ASIC


class AsicFirstBackend(DispatchBackend):
    """`only:asic`, and a check that every MatMul/Gemm/Conv the ASIC supports is planned on it."""

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> DispatchBackendRep:
        kwargs.setdefault("strategy", "only:asic")
        rep = super().prepare(model, device, **kwargs)
        check_matrix_ops_on_asic(rep, every=False)
        return rep


def check_matrix_ops_on_asic(rep: DispatchBackendRep, every: bool) -> int:
    """Assert MatMul/Gemm/Conv nodes sit on the ASIC: those it supports, or (every=True) all of them.
    Returns how many there are."""
    d = rep.dispatcher
    asic = d.targets["asic"]
    nodes = [n for n in d.graph.nodes if n.op_type in MATRIX_OPS and n.domain in ("", "ai.onnx")]
    for n in nodes:
        placed = d.plan.assignment[n.name]
        if every or asic.supports(n):
            assert placed == "asic", (f"{n.op_type} '{n.name}' is planned on {placed}, not the asic "
                                      f"({asic.unsupported_reason(n) or 'which supports it'})")
    return len(nodes)


def _backend_tests(backend: type[DispatchBackend], tag: str, excluded: dict[str, str]) -> dict[str, type]:
    """onnx's test classes for `backend`, holding only the CPU cases onnxruntime passes (less `excluded`)."""
    with warnings.catch_warnings():  # some node-case generators warn on overflow while building
        warnings.simplefilter("ignore")
        bt = onnx.backend.test.BackendTest(backend, __name__)
    for pattern in excluded:
        bt.exclude(pattern)
    keep = set(ORT_PASS)
    out = {}
    for name, cls in bt.test_cases.items():
        for attr in [a for a in vars(cls) if a.startswith("test_")]:
            if attr not in keep:
                delattr(cls, attr)
            elif name in SLOW_CATEGORIES:
                setattr(cls, attr, pytest.mark.slow(getattr(cls, attr)))
        cls.__name__ = cls.__qualname__ = f"{name}_{tag}"
        out[cls.__name__] = cls
    return out


globals().update(_backend_tests(DispatchBackend, "optimal", EXCLUDED))
globals().update(_backend_tests(AsicFirstBackend, "asic_first", {**EXCLUDED, **EXCLUDED_ASIC_FIRST}))


@pytest.fixture(autouse=True, scope="module")
def _onnx_home(tmp_path_factory: pytest.TempPathFactory):
    """The runner writes the light models' test data under $ONNX_HOME; keep it out of the home folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ONNX_HOME", str(tmp_path_factory.mktemp("onnx_home")))
        yield


# -- the pass list -----------------------------------------------------------------------------------------
def test_ort_pass_list_names_existing_cases() -> None:
    # Every listed case exists in the installed onnx's suite, and the list is not trivially small
    # (onnx 1.23.2 with onnxruntime 1.32.0: 1697 of 2033 CPU cases pass).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = onnx.backend.test.BackendTest(DispatchBackend, __name__)
    names = {a for cls in bt.test_cases.values() for a in vars(cls) if a.startswith("test_")}
    assert not set(ORT_PASS) - names
    assert len(ORT_PASS) > 1500
    for pattern, reason in {**EXCLUDED, **EXCLUDED_ASIC_FIRST}.items():
        assert reason and any(re.search(pattern, n) for n in ORT_PASS), pattern


@pytest.mark.parametrize("backend, excluded", [(DispatchBackend, EXCLUDED),
                                               (AsicFirstBackend, {**EXCLUDED, **EXCLUDED_ASIC_FIRST})],
                         ids=["optimal", "asic_first"])
def test_exclusions_still_fail(backend: type[DispatchBackend], excluded: dict[str, str]) -> None:
    # Each exclusion still matches a case that fails; one that passes now must leave the list.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = onnx.backend.test.BackendTest(backend, __name__)
    bt.include("(" + "|".join(excluded) + ")")
    result = unittest.TestResult()
    bt.test_suite.run(result)
    failed = {t._testMethodName for t, _ in result.errors + result.failures}
    for pattern in excluded:
        assert any(re.search(pattern, n) for n in failed), f"{pattern} passes now; take it off the list"


@pytest.mark.slow
def test_ort_pass_list_is_current() -> None:
    # Rerun onnxruntime's backend on the whole suite: the cases it passes are the listed ones.
    import onnxruntime.backend
    from ort_backend_pass import run_suite

    outcome = run_suite(onnxruntime.backend)
    passed = sorted(k for k, v in outcome.items() if v == "pass")
    assert passed == sorted(ORT_PASS), "regenerate the list: python tests/ort_backend_pass.py"


# -- the 52 MatMul/Gemm/Conv conformance cases, every one on the ASIC ----------------------------------------
def _conformance_cases() -> list[Any]:
    from test_asic_conformance import NODE_CASES, PYTORCH_CASES

    return [*NODE_CASES, *(c for c in PYTORCH_CASES if "ConvTranspose" not in c.name)]


CONFORMANCE = _conformance_cases()


def _filters_as_initializers(model: onnx.ModelProto, inputs: list[np.ndarray]) -> tuple[onnx.ModelProto,
                                                                                      list[np.ndarray]]:
    """A copy of a node test's model whose Conv filters are initializers (the values the case feeds)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [i.name for i in m.graph.input]
    filters = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    fed = dict(zip(names, inputs, strict=True))
    for name in filters:
        m.graph.initializer.append(numpy_helper.from_array(fed[name], name))
    keep = [i for i in m.graph.input if i.name not in filters]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    return m, [fed[i.name] for i in keep]


def _data_sets(case: Any) -> tuple[onnx.ModelProto, list[tuple[list[np.ndarray], list[np.ndarray]]]]:
    if case.model is not None:  # a node case: model and data in memory
        sets = [(list(i), list(o)) for i, o in case.data_sets]
        return case.model, sets
    import glob

    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
    sets = []
    for folder in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set_*"))):
        load = [numpy_helper.to_array(onnx.load_tensor(f))
                for kind in ("input", "output")
                for f in sorted(glob.glob(os.path.join(folder, f"{kind}_*.pb")))]
        n_in = len(glob.glob(os.path.join(folder, "input_*.pb")))
        sets.append((load[:n_in], load[n_in:]))
    return model, sets


def test_conformance_case_count() -> None:
    assert len(CONFORMANCE) == 52  # 24 node cases + 28 pytorch-converted Conv/Linear (onnx 1.23)


@pytest.mark.parametrize("case", CONFORMANCE, ids=[c.name for c in CONFORMANCE])
def test_conformance_on_asic(case: Any) -> None:
    model, sets = _data_sets(case)
    for inputs, expected in sets:
        m, feeds = (_filters_as_initializers(model, inputs) if case.model is not None else (model, inputs))
        rep = AsicFirstBackend.prepare(m, "CPU")
        try:
            assert check_matrix_ops_on_asic(rep, every=True) >= 1
            outputs = rep.run(feeds)
        finally:
            rep.close()
        onnx.backend.test.BackendTest.assert_similar_outputs(expected, list(outputs), case.rtol, case.atol)


# -- the backend's plumbing, on tiny graphs ---------------------------------------------------------------
def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           opset: int = 18) -> onnx.ModelProto:
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                             opset_imports=[helper.make_opsetid("", opset)])


F = onnx.TensorProto.FLOAT


@pytest.mark.parametrize("strategy", ["optimal", "only:asic"])
def test_folded_to_constants_three_targets(strategy: str) -> None:
    # Shape(x) folds to the constant [2, 3]: a plan of no nodes, on three targets (optimal once handed
    # scipy's LP solver an empty problem).
    m = _model([helper.make_node("Shape", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, [2, 3])],
               [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, [2])])
    rep = DispatchBackend.prepare(m, strategy=strategy)
    assert len(rep.dispatcher.graph) == 0
    (y,) = rep.run([np.zeros((2, 3), np.float32)])
    np.testing.assert_array_equal(y, [2, 3])


def test_outputs_in_model_order_by_index_and_name() -> None:
    # Two outputs declared b, a: run returns them in that order, and by name.
    x = helper.make_tensor_value_info("x", F, [2])
    m = _model([helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Abs", ["x"], ["b"])], [x],
               [helper.make_tensor_value_info("b", F, [2]), helper.make_tensor_value_info("a", F, [2])])
    out = dispatch_backend.run_model(m, np.array([-1.0, 2.0], np.float32))
    np.testing.assert_array_equal(out[0], [1.0, 2.0])
    np.testing.assert_array_equal(out["a"], [1.0, -2.0])


def test_sequence_and_optional_feeds() -> None:
    # A sequence input is a list of arrays; an optional input may be None (onnxruntime's backend takes both).
    seq = helper.make_tensor_sequence_value_info("s", F, None)
    n = helper.make_tensor_value_info("n", onnx.TensorProto.INT64, [])
    m = _model([helper.make_node("SequenceLength", ["s"], ["n"])], [seq], [n])
    for strategy in ("optimal", "only:asic"):
        (length,) = dispatch_backend.run_model(m, [[np.zeros(2, np.float32), np.ones(3, np.float32)]],
                                               strategy=strategy)
        assert length == 2
    with pytest.raises(DispatchError, match="holds dtype int64"):
        dispatch_backend.run_model(m, [[np.zeros(2, np.int64)]])
    opt = helper.make_value_info("o", helper.make_optional_type_proto(
        helper.make_tensor_type_proto(F, [2])))
    b = helper.make_tensor_value_info("b", onnx.TensorProto.BOOL, [])
    m = _model([helper.make_node("OptionalHasElement", ["o"], ["b"])], [opt], [b])
    assert not dispatch_backend.run_model(m, [None])[0]
    assert dispatch_backend.run_model(m, [np.zeros(2, np.float32)])[0]


def test_sequence_output_moved_to_the_host() -> None:
    # Under only:asic the MatMul runs on the ASIC and SplitToSequence elsewhere; the sequence it returns
    # is copied to the host element by element (a NumPy copy of the list would stack or fail).
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"]),
                helper.make_node("SplitToSequence", ["y"], ["s"], axis=0, keepdims=0)],
               [helper.make_tensor_value_info("x", F, [2, 3])],
               [helper.make_tensor_sequence_value_info("s", F, None)])
    m.graph.initializer.append(w)
    rep = AsicFirstBackend.prepare(m)
    placed = {n.op_type: rep.dispatcher.plan.assignment[n.name] for n in rep.dispatcher.graph.nodes}
    assert placed["MatMul"] == "asic" and placed["SplitToSequence"] != "asic"
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    (s,) = rep.run([x])
    assert isinstance(s, list) and len(s) == 2
    np.testing.assert_array_equal(s[1], [4, 5, 6])


def test_run_node() -> None:
    # run_node wraps one node in a model; Gemm with transB lands on the dispatcher like any model.
    node = helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((4, 3), np.float32)
    (y,) = dispatch_backend.run_node(node, [a, b])
    np.testing.assert_allclose(y, a @ b.T)  # rows of a summed: [[3]*4, [12]*4]


def test_bad_device_and_unknown_option() -> None:
    assert dispatch_backend.supports_device("CPU")
    assert not dispatch_backend.supports_device("TPU")
    x = helper.make_tensor_value_info("x", F, [2])
    m = _model([helper.make_node("Neg", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", F, [2])])
    with pytest.raises(DispatchError, match="Device 'TPU'"):
        DispatchBackend.prepare(m, "TPU")
    with pytest.raises(DispatchError, match="no option 'bogus'"):
        DispatchBackend.prepare(m, bogus=1)


def test_model_as_bytes_or_path(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", F, [2])
    m = _model([helper.make_node("Neg", ["x"], ["y"])], [x], [helper.make_tensor_value_info("y", F, [2])])
    onnx.save(m, tmp_path / "neg.onnx")
    for model in (m.SerializeToString(), tmp_path / "neg.onnx", str(tmp_path / "neg.onnx")):
        (y,) = dispatch_backend.run_model(model, {"x": np.array([1.0, -2.0], np.float32)})
        np.testing.assert_array_equal(y, [-1.0, 2.0])
    with pytest.raises(DispatchError, match="not a serialized ONNX model"):
        DispatchBackend.prepare(b"\xff\xff not a model")

"""The ASIC MatMul follows numpy.matmul's rank rules exactly, and rank-0 results stay arrays end to end.

Regression: a single 1-D x 1-D MatMul (onnx's node test test_matmul_1d_1d) under only:asic ended in
"internal error: TypeError: 'numpy.float64' object does not support item assignment": ufuncs on rank-0 arrays
return NumPy scalars, and validation's masked assignment could not take one.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from dispatch import Dispatcher
from dispatch.validate import compare
from targets.asic.kernels import INPLACE_KERNELS, KERNELS, matmul

# (a shape, b shape): every rank rule of numpy.matmul (= ONNX MatMul).
SHAPES = [
    ((3,), (3,)),  # 1-D x 1-D: rank 0
    ((3,), (3, 4)),  # 1-D x 2-D: 1 prepended, then dropped: (4,)
    ((2, 3), (3,)),  # 2-D x 1-D: 1 appended, then dropped: (2,)
    ((3,), (5, 3, 4)),  # 1-D x batched: (5, 4)
    ((5, 2, 3), (3,)),  # batched x 1-D: (5, 2)
    ((2, 3), (3, 4)),
    ((6, 2, 3), (3, 4)),  # batched x shared 2-D (the one-GEMM fast path)
    ((2, 3), (6, 3, 4)),  # shared 2-D x batched
    ((3, 1, 2, 3), (1, 4, 3, 5)),  # batch dims broadcast both ways: (3, 4, 2, 5)
    ((1, 2, 3), (7, 3, 2)),
    ((0, 3), (3, 4)),  # an empty dimension
    ((2, 0), (0, 3)),  # K = 0: zeros
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize(("sa", "sb"), SHAPES, ids=[f"{a}x{b}" for a, b in SHAPES])
def test_matmul_rank_rules_are_numpys(sa: tuple[int, ...], sb: tuple[int, ...], dtype: type) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    got = matmul(a, b)
    assert type(got) is np.ndarray and got.dtype == dtype and got.shape == np.shape(want)
    tol = 2e-3 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)
    (via_table,) = KERNELS["MatMul"]([a, b], {})
    assert type(via_table) is np.ndarray and via_table.shape == np.shape(want)


@pytest.mark.parametrize("op", ["Relu", "Clip", "Add"])
def test_epilogues_keep_rank_0_arrays(op: str) -> None:
    x = np.asarray(np.float32(-2.0))
    ins = [x, np.asarray(np.float32(5.0))] if op == "Add" else [x]
    for out in (KERNELS[op](list(ins), {}), INPLACE_KERNELS[op].kernel([v.copy() for v in ins], {}, 0)):
        assert type(out[0]) is np.ndarray and out[0].shape == ()
        assert float(out[0]) == {"Relu": 0.0, "Clip": -2.0, "Add": 3.0}[op]


def test_compare_rank_0_outputs() -> None:
    r = compare({"y": np.asarray(np.float32(3.0))}, {"y": np.asarray(np.float32(3.0))})
    assert r.ok and r.max_abs_err == 0.0
    r = compare({"y": np.asarray(np.float32(np.nan))}, {"y": np.asarray(np.float32(3.0))})
    assert not r.ok and r.max_abs_err == float("inf")


def _model(sa: tuple[int, ...], sb: tuple[int, ...], tail: list[str], elem: int) -> tuple:
    """MatMul(a, b) then each op of `tail` (Relu, or Add with the input c), as one graph."""
    out = np.matmul(np.zeros(sa), np.zeros(sb)).shape
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y0"])]
    for i, op in enumerate(tail):
        nodes.append(helper.make_node(op, [f"y{i}"] + (["c"] if op == "Add" else []), [f"y{i + 1}"]))
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "mm", [vi("a", elem, sa), vi("b", elem, sb), vi("c", elem, out)],
                              [vi(f"y{len(tail)}", elem, out)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out


@pytest.mark.parametrize(("sa", "sb", "tail"), [
    ((3,), (3,), []), ((3,), (3,), ["Add", "Relu"]), ((3,), (3, 4), ["Relu"]), ((2, 3), (3,), ["Add"]),
    ((3, 1, 2, 3), (1, 4, 3, 5), []),
])
def test_matmul_shapes_run_and_validate_on_the_asic(sa: tuple[int, ...], sb: tuple[int, ...],
                                                    tail: list[str]) -> None:
    dtype = np.float32  # the ASIC presets compute float32 or bfloat16, not float64 (kernels: tested above)
    model, out = _model(sa, sb, tail, TensorProto.FLOAT)
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal(sa).astype(dtype), "b": rng.standard_normal(sb).astype(dtype),
             "c": np.asarray(rng.standard_normal(out), dtype=dtype)}
    with Dispatcher(model, strategy="only:asic") as d:
        assert {s.target for s in d.plan.segments} == {"asic"}
        (y,) = d.run(feeds).values()
        assert type(y) is np.ndarray and y.shape == out and y.dtype == dtype
        assert d.validate(feeds).ok

"""Identical filters give bit-identical channels on the ASIC, whatever BLAS NumPy uses.

Regression: onnx's light SqueezeNet 1.1 (opset 9, every filter 0.02: 1000 logits of 6.8e9, then Softmax)
failed its own validation under only:asic with max abs err 1e-3 on outputs of 1e-3, on machines whose
OpenBLAS picks its AVX2 (Haswell, Zen) sgemm kernels: they round identical rows differently by position, and
one ulp of 6.8e9 is 512, so the Softmax split the classes. targets/asic/dedupe.py has the details.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from targets.asic.dedupe import distinct_filters, duplicate_rows
from targets.asic.kernels import KERNELS

ROOT = Path(__file__).resolve().parents[1]
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def frozen(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def test_duplicate_rows() -> None:
    assert duplicate_rows(np.eye(3, dtype=np.float32)) is None
    rows = np.array([[1, 2], [3, 4], [1, 2], [1, 2], [3, 5]], np.float32)
    keep, inverse = duplicate_rows(rows)
    np.testing.assert_array_equal(rows[keep][inverse], rows)
    assert keep.size == 3
    head_same = np.zeros((2, 20), np.float32)
    head_same[1, -1] = 1.0  # same first 8 weights, different tails: no duplicates
    assert duplicate_rows(head_same) is None


def test_conv_with_repeated_filters_computes_each_once_and_copies() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)[[0, 1, 0, 2, 1, 0]]  # 6 filters, 3 distinct
    b = np.array([0.5, 1.0, 0.5, 2.0, 1.0, 0.5], np.float32)
    x = (rng.standard_normal((2, 4, 9, 9)) * 1e6).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1]}
    kernel, args = distinct_filters("Conv", KERNELS["Conv"], ["x", frozen(w), frozen(b)], attrs, frozen)
    assert kernel is not KERNELS["Conv"] and args[1].shape == (3, 4, 3, 3) and args[2].shape == (3,)
    (y,) = kernel([x, args[1], args[2]], attrs)
    (want,) = KERNELS["Conv"]([x, w, b], attrs)
    assert y.shape == want.shape == (2, 6, 9, 9)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=np.abs(want).max() * 1e-6)
    for i, j in ((0, 2), (0, 5), (1, 4)):
        np.testing.assert_array_equal(y[:, i], y[:, j])  # bit-identical, as a systolic array gives them
    # a different bias makes the filter distinct
    b2 = b.copy()
    b2[2] = 7.0
    _, args = distinct_filters("Conv", KERNELS["Conv"], ["x", frozen(w), frozen(b2)], attrs, frozen)
    assert args[1].shape[0] == 4


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_matmul_and_gemm_with_repeated_columns(op: str) -> None:
    rng = np.random.default_rng(1)
    cols = rng.standard_normal((3, 16)).astype(np.float32)[[2, 0, 2, 1, 2]]  # 5 output columns, 3 distinct
    x = (rng.standard_normal((7, 16)) * 1e6).astype(np.float32)
    if op == "MatMul":
        args, attrs = ["x", frozen(np.ascontiguousarray(cols.T))], {}
    else:
        c = np.array([1, 2, 1, 3, 1], np.float32)
        args, attrs = ["x", frozen(cols), frozen(c)], {"transB": 1, "alpha": 0.5}
    kernel, new = distinct_filters(op, KERNELS[op], args, attrs, frozen)
    assert kernel is not KERNELS[op]
    (y,) = kernel([x, *new[1:]], attrs)
    (want,) = KERNELS[op]([x, *args[1:]], attrs)
    assert y.shape == want.shape == (7, 5)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=np.abs(want).max() * 1e-6)
    np.testing.assert_array_equal(y[:, 0], y[:, 2])
    np.testing.assert_array_equal(y[:, 0], y[:, 4])


def test_distinct_filters_leave_ordinary_layers_alone() -> None:
    rng = np.random.default_rng(2)
    w = frozen(rng.standard_normal((8, 4, 3, 3)).astype(np.float32))
    kernel, args = distinct_filters("Conv", KERNELS["Conv"], ["x", w, None], {}, frozen)
    assert kernel is KERNELS["Conv"] and args[1] is w
    grouped = frozen(np.zeros((4, 1, 3, 3), np.float32))  # depthwise: not rewritten
    kernel, _ = distinct_filters("Conv", KERNELS["Conv"], ["x", grouped], {"group": 4}, frozen)
    assert kernel is KERNELS["Conv"]
    kernel, _ = distinct_filters("MatMul", KERNELS["MatMul"], ["x", "w"], {}, frozen)  # run-time B
    assert kernel is KERNELS["MatMul"]


def _has_avx2() -> bool:
    try:
        return platform.machine() in ("x86_64", "AMD64") and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _has_avx2(), reason="OpenBLAS's Haswell kernels need an x86-64 CPU with AVX2")
@pytest.mark.skipif(not (LIGHT / "light_squeezenet.onnx").exists(), reason="onnx ships no light models")
def test_light_squeezenet_validates_under_only_asic_with_avx2_blas() -> None:
    # OPENBLAS_CORETYPE is read when NumPy loads OpenBLAS, so this runs in a fresh interpreter. On a NumPy
    # without OpenBLAS the variable is ignored and the check still holds.
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_NUM_THREADS="1")
    code = ("import sys; from dispatch import Dispatcher\n"
            f"with Dispatcher({str(LIGHT / 'light_squeezenet.onnx')!r}, strategy='only:asic') as d:\n"
            "    r = d.validate(); print(r.max_abs_err); sys.exit(0 if r.ok else 1)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) == 0.0  # every class exactly 1e-3, as onnxruntime gives

"""Identical filters give identical outputs, as they do on a systolic array.

A systolic array computes every output channel with the same sequence of multiply-adds, so two channels with
the same filter and bias come out bit-identical. NumPy's GEMM does not promise that: OpenBLAS's AVX2 sgemm
kernels (its Haswell and Zen builds) round a row differently depending on where it falls in the micro tile
(measured: 64 identical rows of 27 taps come out in 3 bit patterns, rows 6-11 of every 12 differing from
rows 0-5 by an ulp; with OPENBLAS_CORETYPE=SkylakeX all 64 agree). Usually that is an ulp nobody sees. On a
model whose output amplifies it, it is everything: onnx's light_squeezenet (SqueezeNet 1.1, opset 9, every
filter 0.02) has 1000 logits that all equal 6.8e9, where one fp32 ulp is 512, and a Softmax after them;
onnxruntime (MLAS keeps ties) gives every class 1e-3, the ASIC kernels gave half the classes 2e-3 and half
0: a 100% error under `only:asic` while the optimal plan (all onnxruntime) validated.

So a segment computes each distinct filter once and copies its channel to the duplicates: identical channels
stay identical whatever the BLAS, and a model with repeated filters does less work. Real models have no
duplicate filters; the compile-time check (on each filter's first 8 weights, then exactly) finds none and
leaves the kernel as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["duplicate_rows", "distinct_filters"]

Kernel = Callable[[list[np.ndarray | None], dict[str, Any]], list[np.ndarray]]
_HEAD = 8  # weights per filter in the quick check


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse) of np.unique over whole rows compared bytewise."""
    rows = np.ascontiguousarray(rows)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def duplicate_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For a 2-D array with repeated rows: (keep, inverse), the first row of each distinct value and, per row,
    the position in `keep` of its value (rows[keep][inverse] == rows). None when every row is distinct."""
    if rows.ndim != 2 or rows.shape[0] < 2 or rows.shape[1] == 0:
        return None
    if _unique_rows(rows[:, :_HEAD])[0].size == rows.shape[0]:
        return None  # the heads already differ: the common case, cheap
    keep, inverse = _unique_rows(rows)
    if keep.size == rows.shape[0]:
        return None
    return keep, inverse


def _expanded(kernel: Kernel, inverse: np.ndarray, axis: int) -> Kernel:
    def run(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        (y,) = kernel(inputs, attrs)
        return [np.take(y, inverse, axis=axis)]

    return run


def _with_bias(w_rows: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is None:
        return w_rows
    return np.concatenate([w_rows, bias.reshape(-1, 1).astype(w_rows.dtype, copy=False)], axis=1)


def distinct_filters(op_type: str, kernel: Kernel, args: Sequence[Any], attrs: dict[str, Any],
                     const: Callable[[np.ndarray], np.ndarray]) -> tuple[Kernel, list[Any]]:
    """The kernel and arguments of one step, rewritten to compute each distinct filter once when a Conv
    (group 1), MatMul or Gemm has repeated filters among its constant weights. `args` holds arrays for
    constants and names for run-time tensors; `const` wraps a new constant as the program stores them."""
    args = list(args)
    arrays = [a if isinstance(a, np.ndarray) else None for a in args]
    if op_type == "Conv" and len(args) >= 2 and arrays[1] is not None and int(attrs.get("group", 1)) == 1 \
            and arrays[1].ndim >= 3 and (len(args) < 3 or args[2] is None or arrays[2] is not None):
        w, b = arrays[1], (arrays[2] if len(args) > 2 else None)
        if (b is not None and b.shape != (w.shape[0],)) or w.size == 0:  # nothing to share in no filters
            return kernel, args
        dup = duplicate_rows(_with_bias(w.reshape(w.shape[0], -1), b))
        if dup is None:
            return kernel, args
        keep, inverse = dup
        args[1] = const(w[keep])
        if b is not None:
            args[2] = const(b[keep])
        return _expanded(kernel, inverse, 1), args
    if op_type == "MatMul" and len(args) == 2 and arrays[1] is not None and arrays[1].ndim == 2:
        dup = duplicate_rows(arrays[1].T)  # a filter is a column of B
        if dup is None:
            return kernel, args
        keep, inverse = dup
        args[1] = const(arrays[1][:, keep])
        return _expanded(kernel, inverse, -1), args
    if op_type == "Gemm" and len(args) >= 2 and arrays[1] is not None and arrays[1].ndim == 2:
        trans_b = int(attrs.get("transB", 0))
        b = arrays[1]
        cols = b if trans_b else b.T  # (N, K): one filter per output column
        c = arrays[2] if len(args) > 2 else None
        if len(args) > 2 and args[2] is not None and c is None:
            return kernel, args  # C computed at run time
        per_column = c is not None and c.size == cols.shape[0] and c.size > 1 and c.shape[-1] == c.size
        if c is not None and c.size != 1 and not per_column:
            return kernel, args  # C varies along the rows: columns are not interchangeable
        dup = duplicate_rows(_with_bias(cols, c.reshape(-1) if per_column else None))
        if dup is None:
            return kernel, args
        keep, inverse = dup
        args[1] = const(b[keep] if trans_b else b[:, keep])
        if per_column:
            args[2] = const(c.reshape(-1)[keep].reshape((1,) * (c.ndim - 1) + (keep.size,)))
        return _expanded(kernel, inverse, -1), args
    return kernel, args

"""The ASIC's element-wise kernels (the epilogues an accelerator fuses: Relu, Clip, Add, bias,
BatchNormalization) and the dtype rules every ASIC kernel shares (`FLOAT_DTYPES`, the accumulation dtype).

Split out of ``kernels.py``, which keeps the op_type tables (`KERNELS`, `INPLACE_KERNELS`); the GEMM and
Conv kernels are ``gemm.py``. Semantics follow the ONNX operator specs; sums run in the accumulation dtype
(float32 for 16- and 32-bit floats, float64 for float64) and come back in the input dtype. Relu, Clip and
Add have in-place variants (`InPlace`) for a runtime that owns the operand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dispatch.errors import DispatchError

Kernel = Callable[[list[np.ndarray | None], dict[str, Any]], list[np.ndarray]]

# The dtypes the ASIC's multipliers take (numpy dtype names; bfloat16 is ml_dtypes' type).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


# Accumulation dtype of the numpy-native float dtypes: _acc_dtype's fast path (dtype.name costs microseconds).
_ACC_OF = {np.dtype(t): np.dtype(np.float64 if t is np.float64 else np.float32)
           for t in (np.float16, np.float32, np.float64)}


def _acc_dtype(op: str, *arrays: np.ndarray) -> np.dtype:
    """The accumulation dtype for inputs that must share one floating-point dtype."""
    first = arrays[0].dtype
    if first in _ACC_OF and all(a.dtype == first for a in arrays[1:]):
        return _ACC_OF[first]
    names = sorted({a.dtype.name for a in arrays})
    if len(names) != 1:
        raise DispatchError(f"{op} got inputs of different dtypes ({', '.join(names)}): cast them to one.")
    if names[0] not in FLOAT_DTYPES:
        raise DispatchError(
            f"{op} on the ASIC takes {', '.join(FLOAT_DTYPES)} tensors, not {names[0]}: "
            "cast the input or place the node on another target."
        )
    return np.dtype(np.float64 if names[0] == "float64" else np.float32)


def _args(op: str, inputs: Sequence[np.ndarray | None], required: int, total: int) -> list[np.ndarray | None]:
    """The node's inputs padded with None to `total`, checking that the first `required` are present."""
    if len(inputs) > total:
        raise DispatchError(f"{op} takes at most {total} inputs, got {len(inputs)}.")
    args = list(inputs) + [None] * (total - len(inputs))
    if any(a is None for a in args[:required]):
        raise DispatchError(f"{op} needs its first {required} inputs, got {len(inputs)} with some omitted.")
    return args


# Dtypes numpy's clip ufunc keeps (ml_dtypes' bfloat16 would come back as float32). Its one-pass loop ran
# 2.4x faster than np.maximum on float32 here (0.19 vs 0.46 ms on 1.2 M elements; numpy 2.4, x86_64); the
# values are the same, except that a -0.0 input may stay -0.0 where np.maximum gives 0.0.
_CLIP_DTYPES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) elementwise, in x's dtype."""
    return _relu(np.asarray(x), None)


def _relu(x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    # np.asarray: a ufunc on a rank-0 array returns a NumPy scalar; kernels return arrays, rank 0 included.
    zero = x.dtype.type(0)
    if x.dtype in _CLIP_DTYPES:
        return np.asarray(np.clip(x, zero, x.dtype.type(np.inf), out=out))
    return np.asarray(np.maximum(x, zero, out=out))


def clip(
    x: np.ndarray, lo: float | np.ndarray | None = None, hi: float | np.ndarray | None = None
) -> np.ndarray:
    """min(max(x, lo), hi) elementwise in x's dtype; a bound of None is open; lo > hi gives hi (ONNX Clip)."""
    return _clip(np.asarray(x), lo, hi, None)


def _clip(
    x: np.ndarray, lo: float | np.ndarray | None, hi: float | np.ndarray | None, out: np.ndarray | None
) -> np.ndarray:
    bounds = []
    for bound in (lo, hi):
        if bound is not None:
            arr = np.asarray(bound)
            if arr.size != 1:
                raise DispatchError(f"Clip bounds must be scalars, got a bound of shape {arr.shape}.")
            bound = arr.reshape(()).astype(x.dtype)
        bounds.append(bound)
    lo_, hi_ = bounds
    if lo_ is None and hi_ is None:
        return x.copy() if out is None else x
    if x.dtype in _CLIP_DTYPES:
        inf = x.dtype.type(np.inf)
        return np.asarray(np.clip(x, -inf if lo_ is None else lo_, inf if hi_ is None else hi_, out=out))
    y = x if lo_ is None else np.asarray(np.maximum(x, lo_, out=out))
    return y if hi_ is None else np.asarray(np.minimum(y, hi_, out=out if y is x else y))


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b with numpy (ONNX multidirectional) broadcasting, summed in the accumulation dtype."""
    a, b = np.asarray(a), np.asarray(b)
    acc = _acc_dtype("Add", a, b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise DispatchError(f"Add operands of shapes {a.shape} and {b.shape} do not broadcast.") from None
    y = np.add(a.astype(acc, copy=False), b.astype(acc, copy=False))
    return np.asarray(y).astype(a.dtype, copy=False)  # rank 0 stays an array (a ufunc returns a scalar)


def add_bias(x: np.ndarray, bias: np.ndarray, axis: int = 1) -> np.ndarray:
    """x + bias with a 1-D bias along `axis` (1 for a Conv's channels, -1 for a Gemm's columns)."""
    x, bias = np.asarray(x), np.asarray(bias)
    ax = axis % x.ndim if x.ndim else 0
    if x.ndim == 0 or bias.shape != (x.shape[ax],):
        raise DispatchError(
            f"add_bias needs a 1-D bias the length of axis {axis} of {x.shape}, got shape {bias.shape}."
        )
    return add(x, bias.reshape(bias.shape[0], *(1,) * (x.ndim - 1 - ax)))


def _per_channel(p: np.ndarray, x_ndim: int, acc: np.dtype) -> np.ndarray:
    """A BatchNormalization parameter shaped to broadcast over X's channel axis 1."""
    p = np.asarray(p).astype(acc, copy=False)
    return p.reshape(p.shape[0], *(1,) * (x_ndim - 2)) if p.ndim == 1 else p


def batchnorm(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    epsilon: float = 1e-5,
) -> np.ndarray:
    """Inference-mode BatchNormalization: (x - mean) / sqrt(var + epsilon) · scale + bias over axis 1."""
    x = np.asarray(x)
    acc = _acc_dtype("BatchNormalization", x)
    if x.ndim < 2:
        raise DispatchError(f"BatchNormalization takes X of rank 2 or more, got shape {x.shape}.")
    s, bi, mu, v = (_per_channel(p, x.ndim, acc) for p in (scale, bias, mean, var))
    k = s / np.sqrt(v + acc.type(epsilon))
    return (x.astype(acc, copy=False) * k + (bi - mu * k)).astype(x.dtype, copy=False)


def fold_batchnorm(
    w: np.ndarray,
    b: np.ndarray | None,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    epsilon: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """Folds an inference BatchNormalization into the preceding Conv's weights and bias.

    With k = scale / sqrt(var + epsilon) per output channel: W2 = W·k and b2 = (b - mean)·k + bias,
    since BN(conv(x, W) + b) = (conv(x, W) + b - mean)·k + bias. Computed in float64 and returned in
    W's dtype, so the folded Conv matches Conv followed by BN.
    """
    w = np.asarray(w)
    m = w.shape[0]
    params = [np.asarray(p) for p in (scale, bias, mean, var)]
    if any(p.shape != (m,) for p in params) or (b is not None and np.asarray(b).shape != (m,)):
        raise DispatchError(
            f"fold_batchnorm needs bias and BatchNormalization parameters of shape ({m},) to match W's "
            f"{m} output channels, got {[p.shape for p in params]}."
        )
    s, bi, mu, v = (p.astype(np.float64) for p in params)
    k = s / np.sqrt(v + epsilon)
    b0 = np.zeros(m) if b is None else np.asarray(b).astype(np.float64)
    w2 = w.astype(np.float64) * k.reshape(m, *(1,) * (w.ndim - 1))
    return w2.astype(w.dtype), ((b0 - mu) * k + bi).astype(w.dtype)


def _relu_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    (x,) = _args("Relu", inputs, 1, 1)
    return [relu(x)]


def _clip_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    # Opset < 11: bounds are the attributes min and max (defaults -FLT_MAX and FLT_MAX, i.e. open for
    # float32); opset >= 11: optional scalar inputs 1 and 2, open when omitted.
    x, lo, hi = _args("Clip", inputs, 1, 3)
    return [clip(x, attrs.get("min") if lo is None else lo, attrs.get("max") if hi is None else hi)]


def _add_operands(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    # Opset < 7 broadcast B onto A starting at `axis` when broadcast=1; from opset 7 on, numpy rules.
    a, b = _args("Add", inputs, 2, 2)
    if attrs.get("broadcast") and "axis" in attrs and b.ndim < a.ndim:
        axis = int(attrs["axis"]) % a.ndim
        b = b.reshape(*b.shape, *(1,) * (a.ndim - axis - b.ndim))
    return a, b


def _add_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [add(*_add_operands(inputs, attrs))]


def _batchnorm_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    # Defaults from the BatchNormalization spec: epsilon 1e-5, training_mode 0 (opset 14+), spatial 1
    # (opsets 7-8: with spatial=0 the parameters have shape (C, D1, ...) and broadcast as they are).
    x, scale, bias, mean, var = _args("BatchNormalization", inputs, 5, 5)
    if int(attrs.get("training_mode", 0)):
        raise DispatchError("BatchNormalization with training_mode=1 is not supported: export in eval mode.")
    return [batchnorm(x, scale, bias, mean, var, float(attrs.get("epsilon", 1e-5)))]


# ---- INPLACE_KERNELS: ONNX op_type -> a variant that may write its result into an operand ----------


@dataclass(frozen=True)
class InPlace:
    """A kernel variant for a caller that owns some operands: `kernel(inputs, attrs, into)` returns what
    KERNELS[op](inputs, attrs) returns, but may overwrite inputs[into] with the result and return it
    (one pass, no new array). `operands`: the input positions `into` may name."""

    kernel: Callable[[list[np.ndarray | None], dict[str, Any], int], list[np.ndarray]]
    operands: tuple[int, ...]


def _relu_into(inputs: list[np.ndarray | None], attrs: dict[str, Any], into: int) -> list[np.ndarray]:
    (x,) = _args("Relu", inputs, 1, 1)
    x = np.asarray(x)
    return [_relu(x, x if x.flags.writeable else None)]


def _clip_into(inputs: list[np.ndarray | None], attrs: dict[str, Any], into: int) -> list[np.ndarray]:
    x, lo, hi = _args("Clip", inputs, 1, 3)
    x = np.asarray(x)
    lo, hi = (attrs.get("min") if lo is None else lo), (attrs.get("max") if hi is None else hi)
    return [_clip(x, lo, hi, x if x.flags.writeable else None)]


def _add_into(inputs: list[np.ndarray | None], attrs: dict[str, Any], into: int) -> list[np.ndarray]:
    a, b = (np.asarray(v) for v in _add_operands(inputs, attrs))
    dst = (a, b)[into]
    # Summing in place is exact only where the operands' dtype is the accumulation dtype.
    if a.dtype == b.dtype and a.dtype in _ACC_OF.values() and dst.flags.writeable:
        try:
            fits = np.broadcast_shapes(a.shape, b.shape) == dst.shape
        except ValueError:
            fits = False
        if fits:
            return [np.add(a, b, out=dst)]
    return [add(a, b)]

"""NumPy kernels of the simulated ASIC: MatMul, Gemm, Conv and the epilogues an accelerator fuses.

Semantics follow the ONNX operator specs (https://onnx.ai/onnx/operators/). Products accumulate in
float32, as a systolic array with fp16/bf16 multipliers and fp32 accumulators does (TPU v4: bf16 in,
fp32 accumulate); float64 inputs stay float64. Results are cast back to the input dtype.

Conv lowers to GEMM by im2col: the padded input is viewed as sliding windows
(`numpy.lib.stride_tricks.sliding_window_view`), strides and dilations are slices of that view, the
view is copied once into a (group, C/group·prod(kernel), prod(output)) column matrix, and one batched
`numpy.matmul` multiplies each group's weights by its columns (one BLAS call per image and group).

`KERNELS` maps an ONNX op_type to a function `(inputs, attrs) -> outputs`: `inputs` are the node's
positional inputs (None for an omitted optional one), `attrs` the attribute values as
`onnx.helper.get_attribute_value` returns them with bytes decoded to str. Missing attributes take the
spec's defaults. Adding an op is one function plus one line in `KERNELS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dispatch.errors import DispatchError

__all__ = [
    "FLOAT_DTYPES",
    "KERNELS",
    "Kernel",
    "add",
    "add_bias",
    "batchnorm",
    "clip",
    "conv",
    "conv_output_shape",
    "fold_batchnorm",
    "gemm",
    "matmul",
    "relu",
]

Kernel = Callable[[list[np.ndarray | None], dict[str, Any]], list[np.ndarray]]

# The dtypes the ASIC's multipliers take (numpy dtype names; bfloat16 is ml_dtypes' type).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _acc_dtype(op: str, *arrays: np.ndarray) -> np.dtype:
    """The accumulation dtype for inputs that must share one floating-point dtype."""
    names = sorted({a.dtype.name for a in arrays})
    if len(names) != 1:
        raise DispatchError(f"{op} got inputs of different dtypes ({', '.join(names)}): cast them to one.")
    if names[0] not in FLOAT_DTYPES:
        raise DispatchError(
            f"{op} on the ASIC takes {', '.join(FLOAT_DTYPES)} tensors, not {names[0]}: "
            "cast the input or place the node on another target."
        )
    return np.dtype(np.float64 if names[0] == "float64" else np.float32)


def _blasable(x: np.ndarray) -> np.ndarray:
    """`x` itself when numpy.matmul can hand it to BLAS, else a C-contiguous copy."""
    return x if x.flags.c_contiguous or x.flags.f_contiguous else np.ascontiguousarray(x)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX MatMul (numpy.matmul semantics): batch dims broadcast, 1-D operands promoted then dropped."""
    a, b = np.asarray(a), np.asarray(b)
    acc = _acc_dtype("MatMul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise DispatchError(f"MatMul takes operands of rank 1 or more, got shapes {a.shape} and {b.shape}.")
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != k_b:
        raise DispatchError(f"MatMul inner dimensions differ for shapes {a.shape} and {b.shape}.")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise DispatchError(f"MatMul batch dimensions of {a.shape} and {b.shape} do not broadcast.") from None
    a32, b32 = _blasable(a.astype(acc, copy=False)), _blasable(b.astype(acc, copy=False))
    if a32.ndim > 2 and b32.ndim == 2 and a32.flags.c_contiguous:
        # (..., M, K) @ (K, N): one GEMM over all rows instead of one per batch entry.
        y = (a32.reshape(-1, a32.shape[-1]) @ b32).reshape(*a32.shape[:-1], b32.shape[-1])
    else:
        y = np.matmul(a32, b32)
    return np.asarray(y).astype(a.dtype, copy=False)


def gemm(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    trans_a: int = 0,
    trans_b: int = 0,
) -> np.ndarray:
    """ONNX Gemm: alpha·A'·B' + beta·C, with C broadcast unidirectionally to (M, N)."""
    a, b = np.asarray(a), np.asarray(b)
    c = None if c is None else np.asarray(c)
    acc = _acc_dtype("Gemm", a, b, *([] if c is None else [c]))
    if a.ndim != 2 or b.ndim != 2:
        raise DispatchError(f"Gemm takes 2-D A and B, got shapes {a.shape} and {b.shape}: use MatMul.")
    a2 = a.T if trans_a else a
    b2 = b.T if trans_b else b
    if a2.shape[1] != b2.shape[0]:
        raise DispatchError(
            f"Gemm inner dimensions differ: A' is {a2.shape} and B' is {b2.shape}; check transA and transB."
        )
    y = np.matmul(_blasable(a2.astype(acc, copy=False)), _blasable(b2.astype(acc, copy=False)))
    if alpha != 1.0:
        y *= acc.type(alpha)
    if c is not None and beta != 0.0:
        try:
            ok = np.broadcast_shapes(c.shape, y.shape) == y.shape
        except ValueError:
            ok = False
        if not ok:
            raise DispatchError(f"Gemm's C of shape {c.shape} does not broadcast to the output {y.shape}.")
        c32 = c.astype(acc, copy=False)
        y += c32 if beta == 1.0 else acc.type(beta) * c32
    return y.astype(a.dtype, copy=False)


def _ints(name: str, values: Sequence[int] | None, n: int, default: int) -> tuple[int, ...]:
    """An attribute of one int per spatial axis, defaulted and length-checked."""
    if values is None or len(values) == 0:
        return (default,) * n
    if len(values) != n or any(int(v) < 1 for v in values):
        raise DispatchError(f"Conv {name} must be {n} positive integers, got {list(values)}.")
    return tuple(int(v) for v in values)


def _conv_pads(
    auto_pad: str,
    pads: Sequence[int] | None,
    size: Sequence[int],
    extent: Sequence[int],
    strides: Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(begin, end) padding per spatial axis following the Conv spec's auto_pad rules."""
    n = len(size)
    if auto_pad in ("NOTSET", ""):
        p = tuple(int(v) for v in pads) if pads else (0,) * (2 * n)
        if len(p) != 2 * n or min(p) < 0:
            raise DispatchError(f"Conv pads must be {2 * n} non-negative integers, got {list(pads or [])}.")
        return p[:n], p[n:]
    if auto_pad == "VALID":
        return (0,) * n, (0,) * n
    if auto_pad not in AUTO_PADS:
        raise DispatchError(f"Conv auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}.")
    # SAME_*: output = ceil(size / stride); the total padding needed for the dilated kernel extent is
    # split evenly, the odd pixel going at the end (SAME_UPPER) or at the beginning (SAME_LOWER).
    total = [max(0, (-(-s // st) - 1) * st + e - s) for s, e, st in zip(size, extent, strides, strict=True)]
    if auto_pad == "SAME_UPPER":
        begin = tuple(t // 2 for t in total)
    else:
        begin = tuple(t - t // 2 for t in total)
    return begin, tuple(t - b for t, b in zip(total, begin, strict=True))


def conv_output_shape(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    auto_pad: str = "NOTSET",
    dilations: Sequence[int] | None = None,
    group: int = 1,
    kernel_shape: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Checks a Conv's shapes and returns (output spatial shape, pads begin, pads end, dilations, strides)."""
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    nd = len(x_shape) - 2
    if nd not in (1, 2, 3) or len(w_shape) != len(x_shape):
        raise DispatchError(
            "Conv takes 3-D, 4-D or 5-D X and W of the same rank, "
            f"got shapes {tuple(x_shape)} and {tuple(w_shape)}."
        )
    c, m, cg, k = x_shape[1], w_shape[0], w_shape[1], tuple(w_shape[2:])
    if group < 1 or c != cg * group or m % group:
        raise DispatchError(
            f"Conv with group={group} needs X channels ({c}) = W.shape[1] ({cg}) x group "
            f"and W.shape[0] ({m}) divisible by group."
        )
    if kernel_shape and tuple(kernel_shape) != k:
        raise DispatchError(f"Conv kernel_shape {list(kernel_shape)} differs from W's spatial shape {k}.")
    dil = _ints("dilations", dilations, nd, 1)
    st = _ints("strides", strides, nd, 1)
    extent = tuple((ki - 1) * di + 1 for ki, di in zip(k, dil, strict=True))
    begin, end = _conv_pads(auto_pad, pads, x_shape[2:], extent, st)
    # floor((size + pads - dilated extent) / stride) + 1 per axis
    out = tuple(
        (s + b + e - ex) // sd + 1
        for s, b, e, ex, sd in zip(x_shape[2:], begin, end, extent, st, strict=True)
    )
    if min(out) < 1:
        raise DispatchError(
            f"Conv kernel extent {list(extent)} is larger than the padded input {tuple(x_shape)}: check pads."
        )
    return out, begin, end, dil, st


def conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    auto_pad: str = "NOTSET",
    dilations: Sequence[int] | None = None,
    group: int = 1,
    kernel_shape: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
) -> np.ndarray:
    """ONNX Conv, 1-D to 3-D, by im2col over a sliding-window view and one batched matmul over groups."""
    x, w = np.asarray(x), np.asarray(w)
    acc = _acc_dtype("Conv", x, w, *([] if b is None else [np.asarray(b)]))
    out, begin, end, dil, st = conv_output_shape(
        x.shape,
        w.shape,
        auto_pad=auto_pad,
        dilations=dilations,
        group=group,
        kernel_shape=kernel_shape,
        pads=pads,
        strides=strides,
    )
    nd = x.ndim - 2
    n, c = x.shape[:2]
    m, k = w.shape[0], w.shape[2:]
    if b is not None and np.shape(b) != (m,):
        raise DispatchError(f"Conv bias must have shape ({m},) to match W, got {np.shape(b)}.")
    extent = tuple((ki - 1) * di + 1 for ki, di in zip(k, dil, strict=True))
    xa = x.astype(acc, copy=False)
    if any(begin) or any(end):
        spatial = list(zip(x.shape[2:], begin, end, strict=True))
        padded = np.zeros((n, c, *(s + p + q for s, p, q in spatial)), acc)
        padded[(slice(None), slice(None), *(slice(p, p + s) for s, p, _ in spatial))] = xa
    else:
        padded = xa
    # Only the kernel extent that reaches an output is needed: trim the far edge so the view has no
    # windows the stride skips.
    used = tuple((o - 1) * s + e for o, s, e in zip(out, st, extent, strict=True))
    padded = padded[(slice(None), slice(None), *(slice(0, u) for u in used))]
    win = sliding_window_view(padded, extent, axis=tuple(range(2, 2 + nd)))  # (N, C, *positions, *extent)
    every = slice(None)
    win = win[(every, every, *(slice(None, None, s) for s in st), *(slice(None, None, d) for d in dil))]
    # (N, C, *k, *out) flattened to columns (N, group, C/group·prod(k), prod(out)): the one copy.
    cols = win.transpose(0, 1, *range(2 + nd, 2 + 2 * nd), *range(2, 2 + nd))
    cols = np.ascontiguousarray(cols.reshape(n, group, (c // group) * math.prod(k), math.prod(out)))
    wg = np.ascontiguousarray(w.astype(acc, copy=False).reshape(group, m // group, -1))
    y = np.matmul(wg, cols).reshape(n, m, *out)
    if b is not None:
        y += np.asarray(b).astype(acc, copy=False).reshape(m, *(1,) * nd)
    return y.astype(x.dtype, copy=False)


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) elementwise, in x's dtype."""
    x = np.asarray(x)
    return np.maximum(x, x.dtype.type(0))


def clip(
    x: np.ndarray, lo: float | np.ndarray | None = None, hi: float | np.ndarray | None = None
) -> np.ndarray:
    """min(max(x, lo), hi) elementwise in x's dtype; a bound of None is open; lo > hi gives hi (ONNX Clip)."""
    x = np.asarray(x)
    y = x
    for bound, fn in ((lo, np.maximum), (hi, np.minimum)):
        if bound is not None:
            arr = np.asarray(bound)
            if arr.size != 1:
                raise DispatchError(f"Clip bounds must be scalars, got a bound of shape {arr.shape}.")
            y = fn(y, arr.reshape(()).astype(x.dtype))
    return y if y is not x else x.copy()


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b with numpy (ONNX multidirectional) broadcasting, summed in the accumulation dtype."""
    a, b = np.asarray(a), np.asarray(b)
    acc = _acc_dtype("Add", a, b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise DispatchError(f"Add operands of shapes {a.shape} and {b.shape} do not broadcast.") from None
    return np.add(a.astype(acc, copy=False), b.astype(acc, copy=False)).astype(a.dtype, copy=False)


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


# ---- KERNELS: ONNX op_type -> (inputs, attrs) -> outputs ----------------------------------------


def _args(op: str, inputs: Sequence[np.ndarray | None], required: int, total: int) -> list[np.ndarray | None]:
    """The node's inputs padded with None to `total`, checking that the first `required` are present."""
    if len(inputs) > total:
        raise DispatchError(f"{op} takes at most {total} inputs, got {len(inputs)}.")
    args = list(inputs) + [None] * (total - len(inputs))
    if any(a is None for a in args[:required]):
        raise DispatchError(f"{op} needs its first {required} inputs, got {len(inputs)} with some omitted.")
    return args


def _matmul_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b = _args("MatMul", inputs, 2, 2)
    return [matmul(a, b)]


def _gemm_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    # Defaults from the Gemm spec: alpha = beta = 1.0, transA = transB = 0; C optional since opset 11.
    # Opset < 7 had a `broadcast` flag; unidirectional broadcasting covers both of its settings.
    a, b, c = _args("Gemm", inputs, 2, 3)
    return [
        gemm(
            a,
            b,
            c,
            alpha=float(attrs.get("alpha", 1.0)),
            beta=float(attrs.get("beta", 1.0)),
            trans_a=int(attrs.get("transA", 0)),
            trans_b=int(attrs.get("transB", 0)),
        )
    ]


def _conv_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    # Defaults from the Conv spec: auto_pad NOTSET, group 1, and dilations, pads, strides,
    # kernel_shape inferred (1 per axis, 0 per edge, 1 per axis, W's spatial shape).
    x, w, b = _args("Conv", inputs, 2, 3)
    return [
        conv(
            x,
            w,
            b,
            auto_pad=attrs.get("auto_pad", "NOTSET"),
            dilations=attrs.get("dilations"),
            group=int(attrs.get("group", 1)),
            kernel_shape=attrs.get("kernel_shape"),
            pads=attrs.get("pads"),
            strides=attrs.get("strides"),
        )
    ]


def _relu_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    (x,) = _args("Relu", inputs, 1, 1)
    return [relu(x)]


def _clip_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    # Opset < 11: bounds are the attributes min and max (defaults -FLT_MAX and FLT_MAX, i.e. open for
    # float32); opset >= 11: optional scalar inputs 1 and 2, open when omitted.
    x, lo, hi = _args("Clip", inputs, 1, 3)
    return [clip(x, attrs.get("min") if lo is None else lo, attrs.get("max") if hi is None else hi)]


def _add_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    # Opset < 7 broadcast B onto A starting at `axis` when broadcast=1; from opset 7 on, numpy rules.
    a, b = _args("Add", inputs, 2, 2)
    if attrs.get("broadcast") and "axis" in attrs and b.ndim < a.ndim:
        axis = int(attrs["axis"]) % a.ndim
        b = b.reshape(*b.shape, *(1,) * (a.ndim - axis - b.ndim))
    return [add(a, b)]


def _batchnorm_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    # Defaults from the BatchNormalization spec: epsilon 1e-5, training_mode 0 (opset 14+), spatial 1
    # (opsets 7-8: with spatial=0 the parameters have shape (C, D1, ...) and broadcast as they are).
    x, scale, bias, mean, var = _args("BatchNormalization", inputs, 5, 5)
    if int(attrs.get("training_mode", 0)):
        raise DispatchError("BatchNormalization with training_mode=1 is not supported: export in eval mode.")
    return [batchnorm(x, scale, bias, mean, var, float(attrs.get("epsilon", 1e-5)))]


KERNELS: dict[str, Kernel] = {
    "MatMul": _matmul_kernel,
    "Gemm": _gemm_kernel,
    "Conv": _conv_kernel,
    "Relu": _relu_kernel,
    "Clip": _clip_kernel,
    "Add": _add_kernel,
    "BatchNormalization": _batchnorm_kernel,
}

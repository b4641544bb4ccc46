"""The ASIC's GEMM and Conv kernels: MatMul, Gemm and Conv.

The element-wise epilogues are in ``epilogues.py``.

Semantics follow the ONNX operator specs (https://onnx.ai/onnx/operators/). Products accumulate in
float32, as a systolic array with fp16/bf16 multipliers and fp32 accumulators does (TPU v4: bf16 in,
fp32 accumulate); float64 inputs stay float64. Results are cast back to the input dtype.

Conv lowers to GEMM by im2col: the padded input is viewed as its windows (a strided view in which
strides and dilations are steps), the view is copied once into a (group, C/group·prod(kernel),
prod(output)) column matrix, and one batched `numpy.matmul` multiplies each group's weights by its
columns (one BLAS call per image and group). Depthwise convs (one input channel per group) build their
columns from contiguous runs of a flattened, stride-phase-split copy of the input (`_Runs`), in channel
blocks that stay in cache, for one batched matmul per block. The shape checks are cached per layer shape.
The op_type tables that name these kernels are in ``kernels.py``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from dispatch.errors import DispatchError
from targets.asic.epilogues import _acc_dtype, _args

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


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
    """ONNX Conv, 1-D to 3-D, by im2col and one batched matmul over groups (depthwise: over channels)."""
    x, w = np.asarray(x), np.asarray(w)
    acc = _acc_dtype("Conv", x, w, *([] if b is None else [np.asarray(b)]))
    out, begin, end, dil, st = _conv_geometry(
        x.shape, w.shape, auto_pad, _key(dilations), group, _key(kernel_shape), _key(pads), _key(strides)
    )
    m = w.shape[0]
    if b is not None and np.shape(b) != (m,):
        raise DispatchError(f"Conv bias must have shape ({m},) to match W, got {np.shape(b)}.")
    xa, wa = x.astype(acc, copy=False), w.astype(acc, copy=False)
    ba = None if b is None else np.asarray(b).astype(acc, copy=False)
    if x.size == 0 or w.size == 0:  # a zero-size operand: an empty output, or sums of nothing plus the bias
        y = np.zeros((x.shape[0], m, *out), acc)
        if ba is not None:
            y += ba.reshape((1, m) + (1,) * len(out))
        return y.astype(x.dtype, copy=False)
    if group > 1 and w.shape[1] == 1:
        y = _conv_depthwise(xa, wa, ba, _Runs.build(xa.shape, w.shape[2:], out, begin, dil, st))
    else:
        y = _conv_im2col(xa, wa, ba, group, out, begin, end, dil, st)
    return y.astype(x.dtype, copy=False)


def _key(values: Sequence[int] | None) -> tuple[int, ...] | None:
    """An int-list attribute as a hashable tuple (None stays None)."""
    return None if values is None else tuple(values)


@functools.lru_cache(maxsize=4096)
def _conv_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    auto_pad: str,
    dilations: tuple[int, ...] | None,
    group: int,
    kernel_shape: tuple[int, ...] | None,
    pads: tuple[int, ...] | None,
    strides: tuple[int, ...] | None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """conv_output_shape, remembered per shape and attributes: networks repeat layers, and the checks cost
    about as much as a small layer's arithmetic."""
    return conv_output_shape(
        x_shape,
        w_shape,
        auto_pad=auto_pad,
        dilations=dilations,
        group=group,
        kernel_shape=kernel_shape,
        pads=pads,
        strides=strides,
    )


def _conv_im2col(
    xa: np.ndarray,
    wa: np.ndarray,
    ba: np.ndarray | None,
    group: int,
    out: tuple[int, ...],
    begin: tuple[int, ...],
    end: tuple[int, ...],
    dil: tuple[int, ...],
    st: tuple[int, ...],
) -> np.ndarray:
    """im2col through a strided view of the windows, copied once into a (N, group, C/group·∏k, ∏O) column
    matrix for one batched matmul."""
    nd = xa.ndim - 2
    n, c = xa.shape[:2]
    m, k = wa.shape[0], wa.shape[2:]
    if any(begin) or any(end):
        spatial = list(zip(xa.shape[2:], begin, end, strict=True))
        padded = np.zeros((n, c, *(s + p + q for s, p, q in spatial)), xa.dtype)
        padded[(slice(None), slice(None), *(slice(p, p + s) for s, p, _ in spatial))] = xa
    else:
        padded = xa
    # The windows as a read-only view (N, C, *k, *out): tap t of output o along an axis reads padded
    # position o·stride + t·dilation, within the padded size by conv_output_shape. Flattened to columns
    # (N, group, C/group·prod(k), prod(out)): the one copy (none for a 1x1 conv at stride 1).
    sn, sc, *sp = padded.strides
    taps = (d * s for d, s in zip(dil, sp, strict=True))
    steps = (t * s for t, s in zip(st, sp, strict=True))
    view = as_strided(padded, (n, c, *k, *out), (sn, sc, *taps, *steps), writeable=False)
    cols = np.ascontiguousarray(view.reshape(n, group, (c // group) * math.prod(k), math.prod(out)))
    wg = np.ascontiguousarray(wa.reshape(group, m // group, -1))
    y = np.matmul(wg, cols).reshape(n, m, *out)
    if ba is not None:
        y += ba.reshape(m, *(1,) * nd)
    return y


# Depthwise columns are built and multiplied in channel blocks of at most this many bytes. Measured on
# MobileNetV2's depthwise layers (x86_64, 1 MiB L2 per core): 2 MiB blocks were 3-20% faster than 0.5 MiB
# or 8 MiB ones and than one unblocked column matrix.
_DW_BLOCK_BYTES = 2 << 20


@dataclass(frozen=True)
class _Runs:
    """Where each kernel tap of a Conv reads a flattened, stride-phase-split copy of the padded input.

    Along an axis with stride s and dilation d, output o and tap t read padded position
    o·s + t·d = s·(o + e) + r, with phase r = t·d mod s and shift e = t·d div s. Phase image r holds the
    padded positions j·s + r, j < Q = O + max e, so in it every tap is a stride-1 window shifted by e.
    Flattened row-major (axis strides R_i = ∏ Q_{i+1..}), tap (t_1, ..., t_n) reads the contiguous run
    [offset, offset + L) with offset = Σ e_i·R_i and L = O_1·R_1: the outputs plus, on every output row,
    R_1 − ∏ O_{2..n} "wide" columns that `crop` drops. Copying a tap's columns is then one contiguous
    run per channel, where a sliding-window view copies rows of O_n elements.
    """

    n: int
    c: int
    size: tuple[int, ...]  # input spatial shape
    out: tuple[int, ...]  # output spatial shape O
    q: tuple[int, ...]  # phase image shape Q
    begin: tuple[int, ...]  # padding before each axis
    strides: tuple[int, ...]
    phases: tuple[tuple[int, ...], ...]  # the phase r of every axis, for each phase image used
    taps: tuple[tuple[int, int], ...]  # (phase image, offset) per tap, taps in W's C order
    length: int  # L
    plane: int  # flat length of one phase image: ∏ Q plus the tail the last taps read past it

    @classmethod
    @functools.lru_cache(maxsize=1024)  # noqa: B019 -- the class lives as long as the module; keys are shapes
    def build(
        cls,
        x_shape: Sequence[int],
        k: Sequence[int],
        out: Sequence[int],
        begin: Sequence[int],
        dil: Sequence[int],
        st: Sequence[int],
    ) -> _Runs:
        nd = len(k)
        shift = [[t * d // s for t in range(kk)] for kk, d, s in zip(k, dil, st, strict=True)]
        phase = [[t * d % s for t in range(kk)] for kk, d, s in zip(k, dil, st, strict=True)]
        q = tuple(o + e[-1] for o, e in zip(out, shift, strict=True))
        r = [math.prod(q[i + 1 :]) for i in range(nd)]
        taps = list(itertools.product(*(range(kk) for kk in k)))
        phases = sorted({tuple(phase[i][t[i]] for i in range(nd)) for t in taps})
        index = {p: j for j, p in enumerate(phases)}
        offsets = tuple(
            (index[tuple(phase[i][t[i]] for i in range(nd))], sum(shift[i][t[i]] * r[i] for i in range(nd)))
            for t in taps
        )
        # Past the last full row the last taps read Σ_{i>1} max e_i·R_i more elements (all wide columns).
        tail = sum(shift[i][-1] * r[i] for i in range(1, nd))
        return cls(
            n=int(x_shape[0]),
            c=int(x_shape[1]),
            size=tuple(int(s) for s in x_shape[2:]),
            out=tuple(out),
            q=q,
            begin=tuple(begin),
            strides=tuple(st),
            phases=tuple(phases),
            taps=offsets,
            length=out[0] * r[0],
            plane=math.prod(q) + tail,
        )

    def planes(self, xa: np.ndarray) -> np.ndarray:
        """The phase images of the zero-padded input, flattened: (phases, N, C, plane), one copy of X."""
        n, c, full = self.n, self.c, math.prod(self.q)
        planes = np.zeros((len(self.phases), n, c, self.plane), xa.dtype)
        for j, phase in enumerate(self.phases):
            dst, src = [], []
            for s, b0, r, size, q in zip(self.strides, self.begin, phase, self.size, self.q, strict=True):
                # Input index i sits at padded position b0 + i: in phase r when i = i0 (mod s), where it
                # lands at j0 + (i - i0) / s; indices past Q are never read.
                i0 = (r - b0) % s
                j0 = (b0 + i0) // s
                count = min(-(-(size - i0) // s), q - j0)
                if count <= 0:
                    break
                dst.append(slice(j0, j0 + count))
                src.append(slice(i0, i0 + (count - 1) * s + 1, s))
            else:
                planes[j, :, :, :full].reshape(n, c, *self.q)[(Ellipsis, *dst)] = xa[(Ellipsis, *src)]
        return planes

    def crop(self, y: np.ndarray, m: int, bias: np.ndarray | None) -> np.ndarray:
        """(N, M, L) wide results -> (N, M, *O): drops the wide columns and adds the bias in one pass."""
        nd = len(self.out)
        full = y.reshape(self.n, m, self.out[0], *self.q[1:])
        b = None if bias is None else bias.reshape(m, *(1,) * nd)
        if self.q[1:] == self.out[1:]:
            if b is not None:
                full += b
            return full
        view = full[(Ellipsis, *(slice(0, o) for o in self.out[1:]))]
        res = np.empty((self.n, m, *self.out), y.dtype)
        if b is None:
            np.copyto(res, view)
        else:
            np.add(view, b, out=res)
        return res


def _conv_depthwise(xa: np.ndarray, wa: np.ndarray, ba: np.ndarray | None, runs: _Runs) -> np.ndarray:
    """group = C, one input channel per group, any channel multiplier: per block of channels, the taps'
    contiguous runs are copied into (N, block, taps, L) columns and one batched matmul multiplies each
    channel's (multiplier, taps) filters by its (taps, L) columns.

    Tap accumulation (out += W[:, tap]·X[shifted run]: 2·taps - 1 numpy passes over the output) was
    measured 3-40% slower on MobileNetV2's layers than this one copy and one BLAS pass; im2col through a
    sliding window, 10-40% slower, because it copies rows of O_n elements where this copies whole runs.
    """
    planes, n, c, length, taps = runs.planes(xa), runs.n, runs.c, runs.length, runs.taps
    m = wa.shape[0]
    wt = wa.reshape(c, m // c, len(taps))  # output channel g·(M/C) + j reads input channel g
    block = max(1, _DW_BLOCK_BYTES // (n * len(taps) * length * xa.itemsize))
    block = -(-c // -(-c // block))  # even blocks
    cols = np.empty((n, min(block, c), len(taps), length), xa.dtype)
    y = np.empty((n, c, m // c, length), xa.dtype)
    for c0 in range(0, c, block):
        c1 = min(c, c0 + block)
        blk = cols[:, : c1 - c0]
        for t, (p, off) in enumerate(taps):
            blk[:, :, t] = planes[p, :, c0:c1, off : off + length]
        np.matmul(wt[c0:c1], blk, out=y[:, c0:c1])
    return runs.crop(y.reshape(n, m, length), m, ba)


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

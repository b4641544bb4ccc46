"""Integer kernels of the simulated ASIC: MatMulInteger, ConvInteger, QLinearMatMul and QLinearConv.

Semantics follow the ONNX operator specs; the arithmetic is what an int8 systolic array does: 8-bit
operands with their zero points subtracted, products summed in int32, and for the QLinear ops a
requantisation of the int32 sums to 8 bits. The results are bit-exact against onnxruntime's CPU kernels
(tests/test_quant_kernels.py checks random scales and zero points, per tensor and per channel):

* Accumulation. The operands minus their zero points are integers in [-255, 255], exact in float32, and
  with a = max|A − a_zp| and b = max|B − b_zp| over the dtypes' ranges every partial sum of K products
  is an integer below a·b·K in magnitude. float32 (24-bit mantissa) holds every integer below 2^24, so
  the sums go through the float GEMM and im2col kernels of ``kernels.py`` in float32 (BLAS), exact in any
  summation order, in chunks of K below 2^24 / (a·b) (at least 258 for 8-bit operands) whose results are
  added in float64, and are cast to int32 exactly. A grouped conv too long for one chunk runs in float64
  (exact for K < 2^37). Measured, one thread, BERT-base's FFN GEMMs (128 x 768 x 3072 and 128 x 3072 x
  768, uint8 x int8): 26-31 ms against 44-50 ms when every sum ran in float64; a NumPy integer matmul,
  without BLAS, is slower still.
  Padded positions of a conv read the zero point (the operand is zero after the subtraction), as the
  spec's reference and onnxruntime's im2col do.
* Requantisation, as onnxruntime's MLAS does it (``MlasRequantizeOutput`` and the QGEMM/ConvSym output
  processors): the multiplier is computed in float32 as ``a_scale · b_scale / y_scale`` (per output
  channel or column when a scale is a vector), the int32 sum (bias included) is converted to float32 and
  multiplied by it, rounded to the nearest integer with ties to even, the zero point added, and the
  result saturated to the output type's range.

QuantizeLinear (float32 → 8 bits: ``x / scale`` in float32, ties to even, zero point, saturation) and
DequantizeLinear (``float32(x − zp) · scale``) run on the vector unit, also bit-exact, per tensor or per
axis (no blocked quantisation).

``QKERNELS`` maps op_type to a function ``(inputs, attrs) -> outputs`` like ``kernels.KERNELS``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dispatch.errors import DispatchError
from targets.asic.kernels import Kernel, conv, matmul

__all__ = ["INT8_DTYPES", "QKERNELS", "conv_integer", "dequantize_linear", "matmul_integer", "qlinear_conv",
           "qlinear_matmul", "quantize_linear", "requantize"]

# The 8-bit operand types of the integer ops (ONNX allows uint8 and int8 for each operand).
INT8_DTYPES = ("int8", "uint8")


def _q(op: str, name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.name not in INT8_DTYPES:
        raise DispatchError(f"{op} takes int8 or uint8 {name}, not {x.dtype.name}: quantize it first.")
    return x


def _zero_point(op: str, name: str, zp: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """The zero point as float64 (0 when omitted); it must have the operand's dtype."""
    if zp is None:
        return np.zeros((), np.float64)
    zp = np.asarray(zp)
    if zp.dtype != dtype:
        raise DispatchError(f"{op}'s {name} is {zp.dtype.name} but its operand is {dtype.name}; "
                            "they must match.")
    return zp.astype(np.float64)


# float32 holds every integer of magnitude below this exactly
_EXACT32 = 2**24


def _centred(op: str, name: str, x: np.ndarray, zp: np.ndarray | None,
             axis: int | None) -> tuple[np.ndarray, float]:
    """x − zero point in float32 (exact) and max |x − zp| over x's dtype range; a 1-D zero point runs along
    `axis` (None: it must be a scalar)."""
    x = _q(op, name, x)
    z = _zero_point(op, f"{name} zero point", zp, x.dtype)
    if z.size == 1:  # one element, whatever its rank: per tensor, as onnxruntime reads it
        z = z.reshape(())
    else:
        if axis is None or z.ndim != 1 or x.ndim == 0 or z.shape[0] != x.shape[axis]:
            raise DispatchError(f"{op}'s {name} zero point of shape {z.shape} matches neither a scalar "
                                f"nor axis {axis} of {name} {x.shape}.")
        z = z.reshape(z.shape[0], *(1,) * (x.ndim - 1 - axis % x.ndim))
    info = np.iinfo(x.dtype)
    bound = float(np.max(np.maximum(np.abs(info.min - z), np.abs(info.max - z))))
    z32 = z.astype(np.float32)
    return x.astype(np.float32) - z32, bound


def _int32(y: np.ndarray) -> np.ndarray:
    """Exact integer sums (float32 or float64) as int32."""
    if y.size and np.abs(y).max() >= 2**31:
        raise DispatchError("An integer GEMM's sum overflows int32: the reduction is too long for 8-bit "
                            "operands; split it.")
    return y.astype(np.int32)


def matmul_integer(a: np.ndarray, b: np.ndarray, a_zero_point: np.ndarray | None = None,
                   b_zero_point: np.ndarray | None = None) -> np.ndarray:
    """ONNX MatMulInteger: (A − a_zp) @ (B − b_zp) in int32; a_zp per row of A (axis −2) or scalar,
    b_zp per column of B (axis −1) or scalar."""
    a_, a_max = _centred("MatMulInteger", "A", a, a_zero_point, -2 if np.ndim(a) >= 2 else None)
    b_, b_max = _centred("MatMulInteger", "B", b, b_zero_point, -1)
    k = a_.shape[-1] if a_.ndim else 0
    chunk = max(1, int((_EXACT32 - 1) // max(a_max * b_max, 1.0)))
    if chunk >= k:
        return _int32(matmul(a_, b_))
    total = np.zeros((), np.float64)
    for i in range(0, k, chunk):
        b_part = b_[i:i + chunk] if b_.ndim == 1 else b_[..., i:i + chunk, :]
        total = total + matmul(a_[..., i:i + chunk], b_part).astype(np.float64)
    return _int32(total)


def _conv_args(attrs: dict[str, Any]) -> dict[str, Any]:
    return {"auto_pad": attrs.get("auto_pad", "NOTSET"), "dilations": attrs.get("dilations"),
            "group": int(attrs.get("group", 1)), "kernel_shape": attrs.get("kernel_shape"),
            "pads": attrs.get("pads"), "strides": attrs.get("strides")}


def conv_integer(x: np.ndarray, w: np.ndarray, x_zero_point: np.ndarray | None = None,
                 w_zero_point: np.ndarray | None = None, **conv_attrs: Any) -> np.ndarray:
    """ONNX ConvInteger: Conv of (X − x_zp) and (W − w_zp) in int32; w_zp scalar or per output channel."""
    x_, x_max = _centred("ConvInteger", "X", x, x_zero_point, None)
    w_, w_max = _centred("ConvInteger", "W", w, w_zero_point, 0)
    taps = math.prod(w_.shape[2:]) if w_.ndim > 2 else 1
    per_channel = max(x_max * w_max * taps, 1.0)  # bound of one input channel's contribution
    channels = max(1, int((_EXACT32 - 1) // per_channel))
    c = w_.shape[1] if w_.ndim > 1 else 0
    if channels >= c:
        return _int32(conv(x_, w_, None, **conv_attrs))
    if int(conv_attrs.get("group", 1)) != 1:
        return _int32(conv(x_.astype(np.float64), w_.astype(np.float64), None, **conv_attrs))
    total = np.zeros((), np.float64)
    for c0 in range(0, c, channels):
        part = conv(x_[:, c0:c0 + channels], w_[:, c0:c0 + channels], None, **conv_attrs)
        total = total + part.astype(np.float64)
    return _int32(total)


def _scale(op: str, name: str, s: np.ndarray) -> np.ndarray:
    s = np.asarray(s)
    if s.dtype != np.float32:
        raise DispatchError(f"{op}'s {name} must be float32, not {s.dtype.name}.")
    return s


def requantize(acc: np.ndarray, multiplier: np.ndarray, y_zero_point: np.ndarray) -> np.ndarray:
    """round_half_even(float32(acc) · multiplier) + y_zp, saturated to y_zp's 8-bit type (MLAS's order)."""
    zp = np.asarray(y_zero_point)
    info = np.iinfo(zp.dtype)
    y = np.rint(acc.astype(np.float32) * multiplier) + zp.astype(np.float32)
    return np.clip(y, info.min, info.max).astype(zp.dtype)


def _multiplier(op: str, a_scale: np.ndarray, b_scale: np.ndarray, y_scale: np.ndarray) -> np.ndarray:
    """a_scale · b_scale / y_scale in float32, the order onnxruntime evaluates it in."""
    a, b, y = (_scale(op, n, s) for n, s in (("first scale", a_scale), ("second scale", b_scale),
                                              ("y_scale", y_scale)))
    if a.size != 1 or y.size != 1:
        raise DispatchError(f"{op} takes a per-tensor input and output scale, got shapes {a.shape} and "
                            f"{y.shape}.")
    return (a.reshape(()) * b) / y.reshape(())


def _output_zero_point(op: str, zp: np.ndarray | None) -> np.ndarray:
    if zp is None:
        return np.zeros((), np.uint8)  # the spec's default output type
    zp = np.asarray(zp)
    if zp.dtype.name not in INT8_DTYPES or zp.size != 1:
        raise DispatchError(f"{op}'s y_zero_point must be one int8 or uint8 value, got {zp.dtype.name} "
                            f"of shape {zp.shape}.")
    return zp.reshape(())


def qlinear_conv(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None, w: np.ndarray,
                 w_scale: np.ndarray, w_zero_point: np.ndarray | None, y_scale: np.ndarray,
                 y_zero_point: np.ndarray | None, b: np.ndarray | None = None,
                 **conv_attrs: Any) -> np.ndarray:
    """ONNX QLinearConv: ConvInteger + int32 bias, requantised per output channel (w_scale 1-D) or tensor."""
    acc = conv_integer(x, w, x_zero_point, w_zero_point, **conv_attrs)
    m = acc.shape[1]
    if b is not None:
        b = np.asarray(b)
        if b.dtype != np.int32 or b.shape != (m,):
            raise DispatchError(f"QLinearConv's bias must be int32 of shape ({m},), got {b.dtype.name} "
                                f"{b.shape}.")
        acc = acc + b.reshape(m, *(1,) * (acc.ndim - 2))
    mult = _multiplier("QLinearConv", x_scale, w_scale, y_scale)
    if mult.size > 1:
        if mult.shape != (m,):
            raise DispatchError(f"QLinearConv's w_scale of shape {np.shape(w_scale)} is neither a scalar nor "
                                f"one per output channel ({m}).")
        mult = mult.reshape(m, *(1,) * (acc.ndim - 2))
    return requantize(acc, mult.reshape(mult.shape if mult.size > 1 else ()),
                      _output_zero_point("QLinearConv", y_zero_point))


def qlinear_matmul(a: np.ndarray, a_scale: np.ndarray, a_zero_point: np.ndarray | None, b: np.ndarray,
                   b_scale: np.ndarray, b_zero_point: np.ndarray | None, y_scale: np.ndarray,
                   y_zero_point: np.ndarray | None) -> np.ndarray:
    """ONNX QLinearMatMul: MatMulInteger requantised per tensor, or per column of B (b_scale 1-D)."""
    acc = matmul_integer(a, b, a_zero_point, b_zero_point)
    mult = _multiplier("QLinearMatMul", a_scale, b_scale, y_scale)
    if mult.size > 1 and (mult.ndim != 1 or mult.shape[0] != acc.shape[-1]):
        raise DispatchError(f"QLinearMatMul's b_scale of shape {np.shape(b_scale)} is neither a scalar nor "
                            f"one per column of B ({acc.shape[-1]}).")
    return requantize(acc, mult if mult.size > 1 else mult.reshape(()),
                      _output_zero_point("QLinearMatMul", y_zero_point))


def _along(p: np.ndarray, x: np.ndarray, axis: int, op: str) -> np.ndarray:
    """A scale or zero point broadcast over x: a scalar as it is, a 1-D one along `axis`."""
    p = np.asarray(p)
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    ax = axis % x.ndim if x.ndim else 0
    if p.ndim != 1 or x.ndim == 0 or p.shape[0] != x.shape[ax]:
        raise DispatchError(f"{op}'s scale or zero point of shape {p.shape} matches neither a scalar nor "
                            f"axis {axis} of the input {x.shape}; blocked quantisation is not supported.")
    return p.reshape(p.shape[0], *(1,) * (x.ndim - 1 - ax))


def quantize_linear(x: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray | None = None,
                    axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear from float32: saturate(round_half_even(x / y_scale) + y_zp), the division in
    float32 as onnxruntime's MlasQuantizeLinear does it."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise DispatchError(f"QuantizeLinear on the ASIC takes float32 input, not {x.dtype.name}.")
    s = _along(_scale("QuantizeLinear", "y_scale", y_scale), x, axis, "QuantizeLinear")
    zp = np.zeros((), np.uint8) if y_zero_point is None else np.asarray(y_zero_point)
    if zp.dtype.name not in INT8_DTYPES:
        raise DispatchError(f"QuantizeLinear on the ASIC quantises to int8 or uint8, not {zp.dtype.name}.")
    info = np.iinfo(zp.dtype)
    z = _along(zp, x, axis, "QuantizeLinear").astype(np.float32)
    return np.clip(np.rint(x / s) + z, info.min, info.max).astype(zp.dtype)


def dequantize_linear(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None = None,
                      axis: int = 1) -> np.ndarray:
    """ONNX DequantizeLinear to float32: float32(x − x_zp) · x_scale (onnxruntime's order); x is 8-bit, or
    int32 (a QDQ model's bias)."""
    x = np.asarray(x)
    if x.dtype != np.int32:
        x = _q("DequantizeLinear", "x", x)
    s = _along(_scale("DequantizeLinear", "x_scale", x_scale), x, axis, "DequantizeLinear")
    zp = _along(_zero_point("DequantizeLinear", "x_zero_point", x_zero_point, x.dtype).astype(np.int64),
                x, axis, "DequantizeLinear")
    return (x.astype(np.int64) - zp).astype(np.float32) * s


# ---- QKERNELS: ONNX op_type -> (inputs, attrs) -> outputs ----------------------------------------------


def _args(op: str, inputs: Sequence[np.ndarray | None], required: Sequence[int],
          total: int) -> list[np.ndarray | None]:
    if len(inputs) > total:
        raise DispatchError(f"{op} takes at most {total} inputs, got {len(inputs)}.")
    args = list(inputs) + [None] * (total - len(inputs))
    if any(args[i] is None for i in required):
        raise DispatchError(f"{op} needs its inputs {', '.join(map(str, required))}; some are omitted.")
    return args


def _matmul_integer_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [matmul_integer(*_args("MatMulInteger", inputs, (0, 1), 4))]


def _conv_integer_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [conv_integer(*_args("ConvInteger", inputs, (0, 1), 4), **_conv_args(attrs))]


def _qlinear_matmul_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [qlinear_matmul(*_args("QLinearMatMul", inputs, (0, 1, 3, 4, 6), 8))]


def _qlinear_conv_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [qlinear_conv(*_args("QLinearConv", inputs, (0, 1, 3, 4, 6), 9), **_conv_args(attrs))]


def _quantize_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    if int(attrs.get("block_size", 0)):
        raise DispatchError("QuantizeLinear with block_size (blocked quantisation) is not supported.")
    x, s, zp = _args("QuantizeLinear", inputs, (0, 1), 3)
    return [quantize_linear(x, s, zp, int(attrs.get("axis", 1)))]


def _dequantize_kernel(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    if int(attrs.get("block_size", 0)):
        raise DispatchError("DequantizeLinear with block_size (blocked quantisation) is not supported.")
    x, s, zp = _args("DequantizeLinear", inputs, (0, 1), 3)
    return [dequantize_linear(x, s, zp, int(attrs.get("axis", 1)))]


QKERNELS: dict[str, Kernel] = {
    "QuantizeLinear": _quantize_kernel,
    "DequantizeLinear": _dequantize_kernel,
    "MatMulInteger": _matmul_integer_kernel,
    "ConvInteger": _conv_integer_kernel,
    "QLinearMatMul": _qlinear_matmul_kernel,
    "QLinearConv": _qlinear_conv_kernel,
}

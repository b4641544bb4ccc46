"""How the ASIC's multipliers see float operands: rounding to the array's compute dtype (docs/numerics.md).

A systolic array with bf16 (or fp16) multipliers and fp32 accumulators computes a float32 MatMul, Gemm
or Conv as: round both operands to the compute dtype (round to nearest, ties to even, as the hardware's
conversion does), multiply exactly (a bf16·bf16 or fp16·fp16 product fits in fp32's 24-bit significand),
accumulate in fp32. The epilogue (bias, Gemm's alpha/beta, activation, residual Add) runs in fp32 and the
result is stored as float32, so the tensors downstream carry compute-dtype-rounded inputs' products and
every other op runs unchanged.

`ROUNDING` maps a spec dtype to the function that rounds float32 values to it (returned as float32);
`UNIT_ROUNDOFF` gives its unit roundoff u (half an ulp at 1: 2^-p for a p-bit significand), from which
validation derives tolerances (dispatch/validate.py). Integer ops (QLinearConv, MatMulInteger ...) are
int8 with int32 accumulation already (``qkernels``) and are untouched here; a float op on a design that
prefers int8 runs at the preset's float ``compute_dtype`` (a real NPU runs only quantized ops in int8).

`NUMERICS`: "emulate" (default) rounds as above; "exact" computes in float32 throughout (the reference
semantics of the ONNX spec, and what the ASIC did before emulation existed).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dispatch.errors import DispatchError

__all__ = ["NUMERICS", "ROUNDING", "UNIT_ROUNDOFF", "EMULATED_OPS", "check_numerics", "to_bf16", "to_fp16"]

NUMERICS = ("emulate", "exact")

# The float ops whose operands go through the multipliers (operand positions rounded: A and B, X and W;
# a Gemm's C and a Conv's bias are the fp32 epilogue).
EMULATED_OPS = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0, 1)}


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), returned as float32. Subnormals round like normals,
    values past bf16's largest finite round to ±inf, infinities stay, and NaN becomes the quiet NaN
    0x7FC00000 (what torch's and XLA's float -> bfloat16 conversions do)."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit, then truncating the low 16 bits, rounds to nearest with
    # ties to even; a carry out of the significand bumps the exponent (and past the largest finite, to inf).
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) & np.uint32(0xFFFF0000)
    rounded = np.where(np.isnan(x), np.uint32(0x7FC00000), rounded)  # the carry would corrupt a NaN
    return rounded.astype(np.uint32, copy=False).view(np.float32).reshape(x.shape)


def to_fp16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest IEEE half (ties to even, overflow to ±inf, gradual underflow), as float32."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


# Spec dtype -> rounding of float32 operands to it (None: float32 already, nothing to round).
ROUNDING: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "bf16": to_bf16,   # 8-bit significand (7 stored)
    "fp16": to_fp16,   # 11-bit significand (10 stored)
    "fp32": None,
}

# Spec dtype -> unit roundoff u = 2^-p (p significand bits, round to nearest).
UNIT_ROUNDOFF: dict[str, float] = {"bf16": 2.0**-8, "fp16": 2.0**-11, "fp32": 2.0**-24}


def check_numerics(mode: object) -> str:
    """`mode` when it is one of NUMERICS, else a DispatchError naming the choices."""
    if mode not in NUMERICS:
        raise DispatchError(f"ASIC numerics must be one of {', '.join(NUMERICS)}, not {mode!r}: 'emulate' "
                            "rounds MatMul/Gemm/Conv operands to the preset's compute dtype, 'exact' "
                            "computes in float32.")
    return str(mode)


def rounded_operands(kernel: Callable, positions: tuple[int, ...], rnd: Callable[[np.ndarray], np.ndarray]
                     ) -> Callable:
    """`kernel` with the float32 inputs at `positions` rounded by `rnd` on every call."""
    def run(inputs: list[np.ndarray | None], attrs: dict) -> list[np.ndarray]:
        args = list(inputs)
        for i in positions:
            if i < len(args) and isinstance(args[i], np.ndarray) and args[i].dtype == np.float32:
                args[i] = rnd(args[i])
        return kernel(args, attrs)
    return run

"""NumPy kernels of the simulated ASIC: MatMul, Gemm, Conv and the epilogues an accelerator fuses.

Semantics follow the ONNX operator specs (https://onnx.ai/onnx/operators/). Products accumulate in
float32, as a systolic array with fp16/bf16 multipliers and fp32 accumulators does (TPU v4: bf16 in,
fp32 accumulate); float64 inputs stay float64. Results are cast back to the input dtype.

Conv lowers to GEMM by im2col: the padded input is viewed as its windows (a strided view in which
strides and dilations are steps), the view is copied once into a (group, C/group·prod(kernel),
prod(output)) column matrix, and one batched `numpy.matmul` multiplies each group's weights by its
columns (one BLAS call per image and group). Depthwise convs (one input channel per group) build their
columns from contiguous runs of a flattened, stride-phase-split copy of the input (`_Runs`), in channel
blocks that stay in cache, for one batched matmul per block. The shape checks are cached per layer shape.
Relu, Clip and Add also have in-place variants (`INPLACE_KERNELS`) for a runtime that owns the operand.

`KERNELS` maps an ONNX op_type to a function `(inputs, attrs) -> outputs`: `inputs` are the node's
positional inputs (None for an omitted optional one), `attrs` the attribute values as
`onnx.helper.get_attribute_value` returns them with bytes decoded to str. Missing attributes take the
spec's defaults. Adding an op is one function plus one line in `KERNELS`.

This module holds the tables; the GEMM and Conv kernels live in ``gemm.py``, the element-wise ones
(and the shared dtype rules) in ``epilogues.py``.
"""

from __future__ import annotations

from targets.asic.epilogues import (
    FLOAT_DTYPES,
    InPlace,
    Kernel,
    _add_into,
    _add_kernel,
    _batchnorm_kernel,
    _clip_into,
    _clip_kernel,
    _relu_into,
    _relu_kernel,
    add,
    add_bias,
    batchnorm,
    clip,
    fold_batchnorm,
    relu,
)
from targets.asic.gemm import (
    _conv_kernel,
    _gemm_kernel,
    _matmul_kernel,
    conv,
    conv_output_shape,
    gemm,
    matmul,
)

__all__ = [
    "FLOAT_DTYPES",
    "INPLACE_KERNELS",
    "InPlace",
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


KERNELS: dict[str, Kernel] = {
    "MatMul": _matmul_kernel,
    "Gemm": _gemm_kernel,
    "Conv": _conv_kernel,
    "Relu": _relu_kernel,
    "Clip": _clip_kernel,
    "Add": _add_kernel,
    "BatchNormalization": _batchnorm_kernel,
}


INPLACE_KERNELS: dict[str, InPlace] = {
    "Relu": InPlace(_relu_into, (0,)),
    "Clip": InPlace(_clip_into, (0,)),
    "Add": InPlace(_add_into, (0, 1)),
}

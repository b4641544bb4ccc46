"""The op_type tables of the simulated ASIC's NumPy kernels.

`KERNELS` maps an ONNX op_type to a function `(inputs, attrs) -> outputs`: `inputs` are the node's
positional inputs (None for an omitted optional one), `attrs` the attribute values as
`onnx.helper.get_attribute_value` returns them with bytes decoded to str. Missing attributes take the
spec's defaults. Adding an op is one function plus one line in `KERNELS`. `INPLACE_KERNELS` holds the
variants (Relu, Clip, Add) that may write into an operand the runtime owns.

The GEMM and Conv kernels (their semantics and the im2col lowering) live in ``gemm.py``, the
element-wise ones (and the shared dtype rules) in ``epilogues.py``.
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

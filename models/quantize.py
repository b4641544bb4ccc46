"""Reduced-precision variants of zoo models: int8 by onnxruntime.quantization, fp16 by its converter.

* ``qoperator``: ``quantize_static`` in operator form for Conv and MatMul (QLinearConv, QLinearMatMul),
  per-channel int8 weights, uint8 activations; the other ops stay float between DequantizeLinear and
  QuantizeLinear. Quantising them too would bring in onnxruntime's com.microsoft ops (QLinearAdd, QGemm,
  QLinearGlobalAveragePool), whose shapes onnx's shape inference cannot infer, leaving every tensor after
  them without a static shape.
* ``qdq``: ``quantize_static`` in QDQ form: QuantizeLinear/DequantizeLinear pairs around the float ops.
* ``dynamic``: ``quantize_dynamic``: MatMul becomes DynamicQuantizeLinear + MatMulInteger (BERT's form).
* ``fp16``: every float32 tensor float16 (weights, inputs, outputs) by
  ``onnxruntime.transformers.float16.convert_float_to_float16``, which keeps the few ops that lack fp16 in
  float32 behind Casts and clamps constants to fp16's finite range.

Static calibration reads ``CALIBRATION_SAMPLES`` random feeds drawn from the zoo's example distribution
(standard normal images, token ids within the vocabulary), seeded, with the MinMax method. Weights are
quantised to 7 bits (``reduce_range``), as onnxruntime recommends for x86 without VNNI: its AVX2 u8s8
kernels sum products in saturating int16 pairs, which 7-bit weights never overflow, so onnxruntime's
results are the exact int32 arithmetic on every x86 machine (the ASIC's kernels are exact always).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx

__all__ = ["CALIBRATION_SAMPLES", "VARIANTS", "make_variant"]

CALIBRATION_SAMPLES = 4


def _reader(feeds: Callable[[int], Mapping[str, np.ndarray]]) -> object:
    from onnxruntime.quantization import CalibrationDataReader

    class _Random(CalibrationDataReader):
        """CALIBRATION_SAMPLES feed dicts, sample i from ``feeds(i)``."""

        def __init__(self) -> None:
            self._it: Iterator[Mapping[str, np.ndarray]] = (feeds(i) for i in range(CALIBRATION_SAMPLES))

        def get_next(self) -> Mapping[str, np.ndarray] | None:
            return next(self._it, None)

    return _Random()


def _quiet() -> None:
    # quantize_static logs a pre-processing suggestion at WARNING on the root logger on every call.
    logging.getLogger().setLevel(logging.ERROR)


def _static(src: Path, dst: Path, feeds: Callable[[int], Mapping[str, np.ndarray]], qdq: bool) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    _quiet()
    quantize_static(str(src), str(dst), _reader(feeds),
                    quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator, per_channel=True,
                    op_types_to_quantize=None if qdq else ["Conv", "MatMul"],
                    reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _dynamic(src: Path, dst: Path, feeds: Callable[[int], Mapping[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet()
    quantize_dynamic(str(src), str(dst), reduce_range=True, weight_type=QuantType.QInt8)


def _fp16(src: Path, dst: Path, feeds: Callable[[int], Mapping[str, np.ndarray]]) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=False)
    onnx.save(model, str(dst))


VARIANTS: dict[str, Callable[[Path, Path, Callable[[int], Mapping[str, np.ndarray]]], None]] = {
    "qoperator": lambda src, dst, feeds: _static(src, dst, feeds, qdq=False),
    "qdq": lambda src, dst, feeds: _static(src, dst, feeds, qdq=True),
    "dynamic": _dynamic,
    "fp16": _fp16,
}


def make_variant(src: Path, kind: str, feeds: Callable[[int], Mapping[str, np.ndarray]]) -> onnx.ModelProto:
    """The `kind` variant of the float32 model at `src` (see the module docstring); `feeds(i)` is
    calibration sample i. The quantizer writes files, so it works in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="dispatch-variant-") as tmp:
        dst = Path(tmp) / "variant.onnx"
        VARIANTS[kind](src, dst, feeds)
        return onnx.load(str(dst))

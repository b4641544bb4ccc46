"""The simulated systolic ASIC: a spec's [asic] table, what it can run, what that costs, and running it.

Support (``unsupported_reason``). The ASIC runs exactly the ops in ``kernels.KERNELS`` (MatMul, Gemm,
Conv, Relu, Clip, Add, BatchNormalization) and ``qkernels.QKERNELS`` (MatMulInteger, ConvInteger,
QLinearMatMul, QLinearConv; QuantizeLinear and DequantizeLinear on the vector unit), from the default ONNX
domain, within these limits:

* every input and output has a static shape (the array schedule is compiled for fixed sizes);
* float ops: every tensor's dtype is one the spec lists in ``dtypes`` that the NumPy kernels compute in
  (float32, float16, bfloat16). Timing and energy use the array's ``compute_dtype``: a float32 graph on
  tpu-v4-like is timed as bf16 multiplies with fp32 accumulation (what XLA does with fp32 matmuls on a
  TPU by default); on edge-npu as fp16 at a quarter of its int8 rate. With ``numerics="emulate"`` (the
  default) the kernels compute that way too: MatMul/Gemm/Conv round their float32 operands to the compute
  dtype (``numerics.ROUNDING``) and accumulate in fp32, with an fp32 epilogue, so validation shows what the
  ASIC's numerics cost (docs/numerics.md); ``numerics="exact"`` computes in the tensors' dtype with fp32
  accumulation, so float32 outputs match onnxruntime;
* integer ops: the spec lists int8; 8-bit operands and zero points (int8 or uint8), float32 scales
  (per tensor for the input and output, per tensor or per channel for the weights), an int32 bias, and
  constant weights (ConvInteger, QLinearConv), scales and output zero point. They are timed in int8:
  one-byte words, the spec's ``macs_per_pe_cycle`` for int8 (1 when absent) and a MAC energy scaled from
  ``pj_per_mac`` by Horowitz's int8/compute-dtype ratio (``AsicParams.energy_for``); their results are
  bit-exact against onnxruntime's CPU kernels (``qkernels``). A QDQ model's Conv, MatMul or Gemm (both
  operands dequantized from 8 bits, the output only quantized back) is timed in int8 as well, as an int8
  compiler would run it, while the NumPy kernels evaluate it as written, in float;
* Conv: the weights W are constant (the compiler lays out the im2col filter matrix ahead of time);
  MatMul and Gemm may multiply two activations (attention on a TPU does);
* on a design whose weights must stay on chip (``weight_capacity_bytes`` > 0, the wafer-scale one), a
  node whose constant inputs, stored in the compute dtype, exceed that capacity is not supported
  (the partitioner also sums weights over all nodes it places there, via ``capacity_bytes``);
* BatchNormalization only in inference mode, with constant parameters, directly after a Conv this
  target supports whose output feeds nothing else: the BN is folded into that Conv's weights;
* Add: the non-constant operand keeps its shape (the output has the shape of an activation input),
  and the other operand is a constant (a bias: per channel, per column, a scalar or a table) or a
  second activation of the same shape (a residual add on the vector unit). Broadcasting between two
  activations (e.g. (N, C, 1, 1) + (N, C, H, W)) is not an epilogue the array runs;
* Clip: the bounds are attributes or constant inputs;
* Relu: always (in a supported dtype).

Cost (``cost``). MatMul, Gemm and Conv (and their integer forms) map to GEMMs timed by
``mapping.map_gemm`` (``timing.simulate_gemm`` under the split over the arrays of least cycles, see
docs/wafer-scale.md) on ``AsicParams.timing_array(dtype)`` (the dtype's word size and MAC rate):

* MatMul (..., M, K) @ (K, N) with a 2-D (or 1-D) B: the batch dims fold into M, one GEMM of
  (∏batch·M) × K × N. With a batched B every batch entry is its own GEMM: ``batch`` = ∏ of the
  broadcast batch dims, spread over the arrays by ``map_gemm(..., batch)``. 1-D operands give
  M = 1 or N = 1.
* Gemm: M × K × N from A' and B' (transA, transB).
* Conv: im2col, ``timing.conv_gemm_dims`` → groups × (M = N·∏out) × (K = C/g·∏k) × (N = C_out/g).
* latency = total cycles / clock; energy = ``timing.energy_j`` (MACs, SRAM and DRAM bytes, static
  power = the spec's idle_w times the latency).

Epilogues (Relu, Clip, Add, BatchNormalization, and a Conv's or Gemm's bias / alpha / beta) run on
the vector unit at ``vector_lanes`` element-operations per cycle: ⌈elements·ops/vector_lanes⌉
cycles, with ops = 1 for Relu, Add, bias and BN (one fused multiply-add per element once folded),
and one per bound for Clip; the integer ops add one for zero-point corrections, one for an int32 bias
and two for requantisation (scale with rounding, zero point with saturation). Energy per element:
ops·``pj_per_vector_op`` plus one SRAM read and one write of a compute-dtype word, plus static power
over the time. The epilogue time is not overlapped with the GEMM it follows, so it is an upper bound
(a fused epilogue on real hardware hides it).
Costs are cached per (op_type, input shapes and dtypes, attributes), since networks repeat layers.

Execution (``compile``): the nodes run in order through ``KERNELS``; constants come from
``Value.const``; a BatchNormalization whose Conv is in the same segment is folded into it at
compile time (``kernels.fold_batchnorm``), otherwise it runs as its own kernel. Relu, Clip and Add
write into an operand that an earlier node of the segment produced and nothing later reads
(``kernels.INPLACE_KERNELS``), so activations and residual sums allocate nothing. No onnxruntime.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dispatch.cost import Cost, OpCost
from dispatch.errors import DispatchError
from dispatch.ir import Graph, Node, Value
from targets.asic.dedupe import distinct_filters
from targets.asic.kernels import (
    INPLACE_KERNELS,
    KERNELS,
    Kernel,
    conv_output_shape,
    fold_batchnorm,
)
from targets.asic.mapping import map_gemm
from targets.asic.numerics import EMULATED_OPS, ROUNDING, UNIT_ROUNDOFF, check_numerics, rounded_operands
from targets.asic.params import DTYPE_NAMES, WORD_BYTES, AsicParams, parse_asic_params
from targets.asic.qkernels import INT8_DTYPES, QKERNELS
from targets.asic.timing import (
    GemmTiming,
    conv_gemm_dims,
    energy_j,
)
from targets.base import Executable, Target, TargetSpec, register_kind

__all__ = ["ALL_KERNELS", "AsicTarget", "AsicParams", "DTYPE_NAMES", "WORD_BYTES", "parse_asic_params"]

# Every op the ASIC runs: the float kernels and the integer ones.
ALL_KERNELS: dict[str, Kernel] = {**KERNELS, **QKERNELS}

# The integer ops: the positions of their 8-bit operands (with zero points), float32 scales, int32 bias,
# the constant weight (None: both operands may be activations), and whether they requantise (QLinear).
@dataclass(frozen=True)
class _QuantOp:
    operands: tuple[int, ...]
    zero_points: tuple[int, ...]
    scales: tuple[int, ...]
    bias: int | None
    weight: int | None
    requantizes: bool


_QUANT_OPS = {
    "MatMulInteger": _QuantOp((0, 1), (2, 3), (), None, None, False),
    "ConvInteger": _QuantOp((0, 1), (2, 3), (), None, 1, False),
    "QLinearMatMul": _QuantOp((0, 3), (2, 5, 7), (1, 4, 6), None, None, True),
    "QLinearConv": _QuantOp((0, 3), (2, 5, 7), (1, 4, 6), 8, 3, True),
}
# QuantizeLinear / DequantizeLinear on the vector unit: (input dtypes, output dtypes) and element-wise ops
# per output (a scale multiply with rounding, a zero point add with saturation).
_QDQ = {"QuantizeLinear": (("float32",), INT8_DTYPES),
        "DequantizeLinear": ((*INT8_DTYPES, "int32"), ("float32",))}  # int32: a QDQ model's bias
_QDQ_OPS = 2

# Element-wise operations per output element of each epilogue op (Clip: one per bound present).
_EPILOGUE_OPS = {"Relu": 1, "Add": 1, "BatchNormalization": 1}


def _conv_shape_reason(node: Node, weight: int) -> str | None:
    """Why the convolution of input 0 by input `weight` has no output shape the kernels can make, or None."""
    x, w = node.inputs[0], node.inputs[weight]
    try:
        conv_output_shape(x.shape, w.shape, auto_pad=node.attr("auto_pad", "NOTSET"),
                          dilations=node.attr("dilations"), group=int(node.attr("group", 1)),
                          kernel_shape=node.attr("kernel_shape"), pads=node.attr("pads"),
                          strides=node.attr("strides"))
    except DispatchError as e:
        return str(e).rstrip(".")
    return None


# -- support helpers -------------------------------------------------------------------------------------
def _is_const(v: Value | None) -> bool:
    return v is not None and v.const is not None


def _compile_time(v: Value | None) -> bool:
    """A constant, or the DequantizeLinear of constants (a QDQ model's weights): known when compiling."""
    if _is_const(v):
        return True
    p = v.producer if v is not None else None
    return p is not None and p.op_type == "DequantizeLinear" and all(_is_const(i) for i in p.present_inputs)


def _dequantized(v: Value | None) -> bool:
    """v is the output of a DequantizeLinear from 8 bits."""
    p = v.producer if v is not None else None
    return p is not None and p.op_type == "DequantizeLinear" and _dtype_name(p.inputs[0]) in INT8_DTYPES


def _qdq_wrapped(node: Node) -> bool:
    """A QDQ model's GEMM or conv: both operands dequantized from 8 bits and every use of its output a
    QuantizeLinear back to 8 bits. An int8 accelerator's compiler runs it as the integer op (onnxruntime
    fuses it into QLinearConv / QLinearMatMul alike), so it is timed in int8; the NumPy kernels still
    evaluate it as written, in float."""
    if node.op_type not in ("Conv", "MatMul", "Gemm") or not node.outputs[0].consumers \
            or node.outputs[0].is_graph_output:
        return False
    return _dequantized(node.input(0)) and _dequantized(node.input(1)) and all(
        c.op_type == "QuantizeLinear" and _dtype_name(c.outputs[0]) in INT8_DTYPES
        for c in node.outputs[0].consumers)


def _per_tensor(v: Value | None) -> bool:
    return v is not None and v.const is not None and v.const.size == 1


def _qdq_fusion(n: Node, in_segment: set[str], wanted: set[str]) -> tuple[Node, list[Any]] | None:
    """When DequantizeLinear -> `n` (Conv or MatMul) -> QuantizeLinear lies in this segment as onnxruntime's
    QDQ fusion finds it (8-bit operands, a per-tensor input and output scale, per-tensor or per-channel
    weights, an int32 bias dequantized at x_scale · w_scale): the QuantizeLinear and the arguments of the
    QLinearConv / QLinearMatMul computing `n` and it at once, bit-exact with onnxruntime's fused kernel."""
    if n.op_type not in ("Conv", "MatMul") or not _qdq_wrapped(n):
        return None
    out = n.outputs[0]
    if len(out.consumers) != 1 or out.name in wanted:
        return None
    q, dx, dw = out.consumers[0], n.inputs[0].producer, n.inputs[1].producer
    if any(m is None or m.name not in in_segment for m in (q, dx, dw)):
        return None
    if not (_per_tensor(dx.input(1)) and _per_tensor(q.input(1)) and _is_const(dw.input(1))
            and (q.input(2) is None or _is_const(q.input(2))) and all(
                v is None or _is_const(v) for v in (dx.input(2), dw.input(2)))):
        return None
    w_scale = dw.inputs[1].const
    if w_scale.size > 1:  # per channel: along Conv's output channels (axis 0) or MatMul's columns (axis 1)
        axis = int(dw.attr("axis", 1)) % len(dw.inputs[0].shape)
        if axis != (0 if n.op_type == "Conv" else len(dw.inputs[0].shape) - 1):
            return None

    def arg(v: Value | None) -> Any:
        return None if v is None else (_const(v.const) if v.const is not None else v.name)

    args = [arg(dx.inputs[0]), arg(dx.input(1)), arg(dx.input(2)), arg(dw.inputs[0]), arg(dw.input(1)),
            arg(dw.input(2)), arg(q.input(1)), arg(q.input(2))]
    if n.op_type == "Conv" and n.input(2) is not None:
        db = n.input(2).producer
        if db is None or db.op_type != "DequantizeLinear" or db.name not in in_segment or \
                not _is_const(db.inputs[0]) or _dtype_name(db.inputs[0]) != "int32":
            return None
        zp, scale = db.input(2), db.inputs[1].const
        expected = (dx.inputs[1].const.reshape(()) * w_scale).reshape(-1)
        if (zp is not None and np.any(zp.const)) or not np.array_equal(
                np.broadcast_to(scale.reshape(-1), expected.shape), expected):
            return None
        args.append(arg(db.inputs[0]))
    return q, args


def _dtype_name(v: Value) -> str:
    return v.dtype.name if v.dtype is not None else "unknown"


def _single_consumer_conv(bn: Node) -> Node | None:
    """The Conv feeding `bn` when BN is its output's only use (so folding loses nothing), else None."""
    x = bn.input(0)
    conv = x.producer if x is not None else None
    if conv is None or conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
        return None
    if x.is_graph_output or len(x.consumers) != 1 or not _is_const(conv.input(1)):
        return None
    return conv


def _bn_params_const(bn: Node) -> bool:
    return all(_is_const(bn.input(i)) for i in range(1, 5))


@register_kind("asic")
class AsicTarget(Target):
    """A simulated systolic-array accelerator: NumPy kernels for results, the systolic model for cost.

    ``AsicTarget(name, spec, numerics="emulate", **overrides)``: `numerics` is "emulate" (float
    MatMul/Gemm/Conv operands rounded to the compute dtype, fp32 accumulation) or "exact" (float32);
    `overrides` replace keys of the spec's [asic] table (for sweeps over hardware parameters), e.g.
    ``make_target("asic", "tpu-v4-like", rows=256, cols=256)``.
    """

    def __init__(self, name: str, spec: TargetSpec, numerics: str = "emulate", **overrides: Any) -> None:
        super().__init__(name, spec)
        self.numerics = check_numerics(numerics)
        table = {**dict(spec.params), **overrides}
        self.params = parse_asic_params(table, f"Spec '{Path(spec.source).name}' [asic]", spec.idle_w)
        self.provider = f"numpy (simulated {spec.name})"
        self.capacity_bytes = self.params.weight_capacity_bytes or None
        self._cost_cache: dict[tuple, Cost] = {}
        self._lock = threading.Lock()

    # -- figures ---------------------------------------------------------------------------------------
    @property
    def peak_flops(self) -> float:
        return self.params.peak_flops

    def describe(self) -> dict[str, Any]:
        a = self.params.array
        return {**super().describe(), "peak_flops": self.peak_flops,
                "compute_dtype": self.params.compute_dtype, "numerics": self.numerics,
                "array": f"{a.num_arrays} x {a.rows}x{a.cols} {a.dataflow} at {a.clock_hz / 1e9:g} GHz",
                "offchip_bandwidth_Bps": a.offchip_bandwidth_Bps, "capacity_bytes": self.capacity_bytes}

    def segment_overhead(self) -> Cost:
        """The spec's optional launch_us per segment (program launch), at idle power."""
        return Cost(self.params.launch_s, self.params.launch_s * self.spec.idle_w)

    def weight_bytes(self, node: Node, op: OpCost | None = None) -> int:
        """Constant inputs stored on chip in the dtype the node is timed in: elements · word bytes."""
        word = WORD_BYTES[self.timing_dtype(node)]
        return sum(v.size for v in node.present_inputs if v.const is not None) * word

    def timing_dtype(self, node: Node) -> str:
        """The spec dtype the array multiplies `node`'s operands in: int8 for the integer ops and for a
        QDQ-wrapped GEMM or conv on a design with int8 arrays (``_qdq_wrapped``), else the compute dtype
        (float tensors of every accepted precision are multiplied in it)."""
        if node.op_type in _QUANT_OPS or node.op_type in _QDQ or (self.params.int8 and _qdq_wrapped(node)):
            return "int8"
        return self.params.compute_dtype

    # -- support ---------------------------------------------------------------------------------------
    def unsupported_reason(self, node: Node) -> str | None:
        """Why this ASIC cannot run `node` (a short sentence), or None when it can; see the module doc."""
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            return f"{op} is in domain '{node.domain}'; the ASIC runs default-domain ONNX ops only"
        if op not in ALL_KERNELS:
            return f"no ASIC kernel for {op} (it runs {', '.join(sorted(ALL_KERNELS))})"
        for v in (*node.present_inputs, *node.outputs):
            if not v.static:
                return f"tensor '{v.name}' has no static shape ({v.shape}); bind dynamic dims with --shape"
            if op in _QUANT_OPS or op in _QDQ:
                continue  # _check_quant / _check_qdq check the dtypes of every position
            if _dtype_name(v) not in self.params.numpy_dtypes:
                why = " (the NumPy kernels compute in floating point)" if v.dtype is not None and \
                    v.dtype.kind in "iub" else ""
                return (f"tensor '{v.name}' is {_dtype_name(v)}; {self.spec.name} runs "
                        f"{', '.join(sorted(self.params.numpy_dtypes))} tensors{why}")
        if len(node.outputs) != 1:
            return f"{op} with {len(node.outputs)} outputs (the ASIC kernels produce one)"
        check = self._check_quant if op in _QUANT_OPS else self._check_qdq if op in _QDQ else \
            getattr(self, f"_check_{op}", None)
        reason = check(node) if check is not None else None
        if reason is not None:
            return reason
        cap = self.params.weight_capacity_bytes
        if cap and self.weight_bytes(node) > cap:
            return (f"its weights take {self.weight_bytes(node)} bytes in {self.params.compute_dtype}, more "
                    f"than the {cap} bytes {self.spec.name} holds on chip (weights must stay resident)")
        return None

    def _check_Conv(self, node: Node) -> str | None:
        if not _compile_time(node.input(1)):
            return ("Conv weights are computed at run time; the ASIC needs constant filters (or the "
                    "DequantizeLinear of constant ones)")
        return _conv_shape_reason(node, 1)

    def _check_quant(self, node: Node) -> str | None:
        """An integer op: int8 in the spec's dtypes; 8-bit operands and zero points, float32 scales (per
        tensor for the input and output), an int32 bias; constant weights, scales and output zero point."""
        op, q = node.op_type, _QUANT_OPS[node.op_type]
        if not self.params.int8:
            return f"{self.spec.name} has no int8 MACs (its dtypes are {', '.join(self.params.dtypes)})"
        want = {**dict.fromkeys(q.operands + q.zero_points, "int8 or uint8"),
                **dict.fromkeys(q.scales, "float32"), **({q.bias: "int32"} if q.bias is not None else {})}
        for i, kind in want.items():
            v = node.input(i)
            if v is not None and _dtype_name(v) not in kind.split(" or "):
                return f"{op} input {i} ('{v.name}') is {_dtype_name(v)}; the int8 arrays take {kind} there"
        out = _dtype_name(node.outputs[0])
        if out not in ((*INT8_DTYPES,) if q.requantizes else ("int32",)):
            return f"{op} output is {out}"
        const = ([q.weight] if q.weight is not None else []) + list(q.scales)
        if q.requantizes:
            const += [q.zero_points[-1]]
        for i in const:
            v = node.input(i)
            if v is not None and v.const is None:
                return (f"{op} input {i} ('{v.name}') is computed at run time; the ASIC compiles constant "
                        "weights, scales and output zero points")
        if q.requantizes and (node.inputs[q.scales[0]].size != 1 or node.inputs[q.scales[2]].size != 1):
            return f"{op} scales of the input and output must be per tensor"
        if q.weight is not None:
            return _conv_shape_reason(node, q.weight)
        if min(len(node.inputs[q.operands[0]].shape), len(node.inputs[q.operands[1]].shape)) < 1:
            return f"{op} operands must have rank 1 or more"
        return None

    def _check_qdq(self, node: Node) -> str | None:
        """QuantizeLinear float32 -> int8/uint8, DequantizeLinear back: constant scale and zero point, per
        tensor or per axis (no blocks), on a design with int8 arrays."""
        op, (ins, outs) = node.op_type, _QDQ[node.op_type]
        if not self.params.int8:
            return f"{self.spec.name} has no int8 MACs (its dtypes are {', '.join(self.params.dtypes)})"
        x, s, zp, y = node.inputs[0], node.input(1), node.input(2), node.outputs[0]
        if _dtype_name(x) not in ins or _dtype_name(y) not in outs:
            return (f"{op} from {_dtype_name(x)} to {_dtype_name(y)}; the ASIC converts float32 <-> "
                    "int8/uint8 and int32 -> float32")
        runtime_zp = zp is not None and not _is_const(zp)
        if s is None or _dtype_name(s) != "float32" or not _is_const(s) or runtime_zp:
            return f"{op} needs a constant float32 scale and a constant zero point"
        if int(node.attr("block_size", 0)):
            return f"{op} with block_size (blocked quantisation)"
        if s.size != 1 and (len(s.shape) != 1 or not x.shape
                            or s.shape[0] != x.shape[int(node.attr("axis", 1)) % len(x.shape)]):
            return f"{op} scale of shape {s.shape} is neither per tensor nor per axis"
        return None

    def _check_Gemm(self, node: Node) -> str | None:
        if len(node.inputs[0].shape) != 2 or len(node.inputs[1].shape) != 2:
            return "Gemm operands must be 2-D"
        return None

    def _check_MatMul(self, node: Node) -> str | None:
        if min(len(node.inputs[0].shape), len(node.inputs[1].shape)) < 1:
            return "MatMul operands must have rank 1 or more"
        return None

    def _check_Clip(self, node: Node) -> str | None:
        if any(v is not None and v.const is None for v in node.inputs[1:]):
            return "Clip bounds are computed at run time; the epilogue needs constant bounds"
        return None

    def _check_Add(self, node: Node) -> str | None:
        a, b = node.input(0), node.input(1)
        out = node.outputs[0].shape
        acts = [v for v in (a, b) if v is not None and v.const is None]
        if not acts or all(v.shape != out for v in acts):
            return "Add broadcasts its activation operand; the ASIC adds a bias or a same-shape tensor"
        if len(acts) == 2 and a.shape != b.shape:
            return (f"Add broadcasts between two activations {a.shape} and {b.shape}; the ASIC adds a "
                    "constant bias or two same-shape tensors")
        return None

    def _check_BatchNormalization(self, node: Node) -> str | None:
        if int(node.attr("training_mode", 0)):
            return "BatchNormalization in training mode; export the model in eval mode"
        if not _bn_params_const(node):
            return "BatchNormalization parameters are computed at run time; folding needs constants"
        conv = _single_consumer_conv(node)
        if conv is None:
            return "BatchNormalization is not directly after a Conv it can be folded into (sole consumer)"
        channels = conv.inputs[1].shape[0]
        if any(node.inputs[i].shape != (channels,) for i in range(1, 5)):
            return f"BatchNormalization parameters are not per-channel vectors of length {channels}"
        reason = self.unsupported_reason(conv)
        if reason is not None:
            return f"the Conv it would fold into is not supported: {reason}"
        return None

    # -- cost ------------------------------------------------------------------------------------------
    def cost(self, node: Node, op: OpCost | None = None) -> Cost:
        """Predicted latency and energy of `node` on the array (see the module docstring).

        An unsupported node costs infinity (callers ask `supports` first).
        """
        if self.unsupported_reason(node) is not None:
            return Cost(math.inf, math.inf)
        key = (node.op_type, self.timing_dtype(node),
               tuple(None if v is None else (v.shape, _dtype_name(v), v.const is not None)
                     for v in node.inputs),
               tuple(v.shape for v in node.outputs),
               repr(sorted(node.attrs.items())))
        with self._lock:
            hit = self._cost_cache.get(key)
        if hit is not None:
            return hit
        c = self._compute_cost(node)
        with self._lock:
            self._cost_cache[key] = c
        return c

    def gemm_timing(self, node: Node) -> GemmTiming | None:
        """The systolic timing of a MatMul, Gemm or Conv node, or of an integer one in int8 (None for
        epilogue ops), on the array as timed for the node's dtype (``timing_dtype``)."""
        cfg = self.params.timing_array(self.timing_dtype(node))
        op = node.op_type
        if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a_at, b_at = _QUANT_OPS[op].operands if op in _QUANT_OPS else (0, 1)
            a, b = node.inputs[a_at].shape, node.inputs[b_at].shape
            k = a[-1]
            n = 1 if len(b) == 1 else b[-1]
            if len(b) <= 2:  # shared B: fold every row of A into M
                return map_gemm(max(1, math.prod(a[:-1])), k, n, cfg)
            m = 1 if len(a) == 1 else a[-2]
            batch = math.prod(np.broadcast_shapes(a[:-2], b[:-2]))
            return map_gemm(m, k, n, cfg, max(1, batch))
        if node.op_type == "Gemm":
            a, b = node.inputs[0].shape, node.inputs[1].shape
            m, k = (a[1], a[0]) if node.attr("transA", 0) else a
            n = b[0] if node.attr("transB", 0) else b[1]
            return map_gemm(m, k, n, cfg)
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w_at = _QUANT_OPS[op].weight if op in _QUANT_OPS else 1
            x, w, y = node.inputs[0].shape, node.inputs[w_at].shape, node.outputs[0].shape
            groups, m, k, n = conv_gemm_dims(x[0], x[1], w[0], w[2:], y[2:], int(node.attr("group", 1)))
            return map_gemm(m, k, n, cfg, groups)
        return None

    def _epilogue_ops(self, node: Node) -> int:
        """Element-wise operations per output element on the vector unit."""
        op = node.op_type
        if op == "Clip":
            bounds = [v for v in node.inputs[1:] if v is not None]
            bounds += [node.attrs[k] for k in ("min", "max") if k in node.attrs]
            return max(1, len(bounds))
        if op == "Gemm":
            has_c = node.input(2) is not None and node.attr("beta", 1.0) != 0.0
            scale_a = node.attr("alpha", 1.0) != 1.0
            return int(has_c) + int(scale_a) + int(has_c and node.attr("beta", 1.0) != 1.0)
        if op == "Conv":
            return int(node.input(2) is not None)
        if op in _QDQ:
            return _QDQ_OPS
        if op in _QUANT_OPS:
            # Zero points: the correction terms of Jacob et al., CVPR 2018, eq. 7 (row sums of the activation
            # times the weight zero point, column sums times the activation's, folded with the constant
            # term), one add per output; QLinear: bias add, scale multiply with rounding, zero point add with
            # saturation.
            q = _QUANT_OPS[op]
            zps = int(any(node.input(i) is not None for i in q.zero_points[:2]))
            bias = int(q.bias is not None and node.input(q.bias) is not None)
            return zps + bias + (2 if q.requantizes else 0)
        return _EPILOGUE_OPS.get(op, 0)

    def _epilogue_cost(self, elements: int, ops: int) -> Cost:
        if elements == 0 or ops == 0:
            return Cost()
        p = self.params
        seconds = math.ceil(elements * ops / p.vector_lanes) / p.array.clock_hz
        pj = elements * (ops * p.pj_per_vector_op + 2 * p.word_bytes * p.energy.pj_per_sram_byte)
        return Cost(seconds, pj * 1e-12 + p.energy.static_w * seconds)

    def _compute_cost(self, node: Node) -> Cost:
        epilogue = self._epilogue_cost(node.outputs[0].size, self._epilogue_ops(node))
        t = self.gemm_timing(node)
        if t is None:
            return epilogue
        return Cost(t.latency_s, energy_j(t, self.params.energy_for(self.timing_dtype(node)))) + epilogue

    # -- execution -------------------------------------------------------------------------------------
    def emulated_roundoff(self, node: Node) -> float | None:
        """The unit roundoff `node`'s operands are rounded to when run here (emulated float MatMul/Gemm/Conv
        on a 16-bit compute dtype), else None."""
        if self.operand_rounding() is None or node.op_type not in EMULATED_OPS:
            return None
        if not any(v.dtype == np.float32 for v in node.present_inputs[:2]):
            return None
        return UNIT_ROUNDOFF[self.params.compute_dtype]

    def operand_rounding(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """How the float MatMul/Gemm/Conv operands are rounded when run: None when exact or fp32."""
        return ROUNDING[self.params.compute_dtype] if self.numerics == "emulate" else None

    def compile(self, graph: Graph, nodes: Sequence[Node], inputs: Sequence[str],
                outputs: Sequence[str]) -> Executable:
        """A thread-safe callable running `nodes` in order with the NumPy kernels, feeds -> `outputs`."""
        for n in nodes:
            reason = self.unsupported_reason(n)
            if reason is not None:
                raise DispatchError(f"Node '{n.name}' cannot run on ASIC target '{self.name}': {reason}.")
        program = _Program.build(self.name, nodes, inputs, outputs, self.operand_rounding())
        return replace(program, notes=graph.notes)  # floating-point events are reported as the model's notes


# -- compiled program ----------------------------------------------------------------------------------
Arg = str | np.ndarray | None  # a tensor name read at run time, a constant, or an omitted input


@dataclass(frozen=True)
class _Step:
    node: str
    kernel: Kernel
    args: tuple[Arg, ...]
    attrs: dict[str, Any]
    outputs: tuple[str, ...]
    frees: tuple[str, ...]  # names no later step or output needs


def _const(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False  # shared by every call: nobody may write into it
    return view


@dataclass(frozen=True)
class _Program:
    target: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    steps: tuple[_Step, ...]
    notes: list[str] = field(default_factory=list, compare=False)  # where NumPy's FP events are noted

    @classmethod
    def build(cls, target: str, nodes: Sequence[Node], inputs: Sequence[str],
              outputs: Sequence[str], rounding: Callable[[np.ndarray], np.ndarray] | None = None) -> _Program:
        """rounding: applied to the float32 operands of MatMul/Gemm/Conv (``numerics.EMULATED_OPS``):
        constants once here (after any BatchNormalization is folded, as a compiler would), run-time tensors
        on every call."""
        in_segment = {n.name for n in nodes}
        wanted = set(outputs)
        folded: dict[str, Node] = {}  # Conv name -> the BN folded into it
        for n in nodes:
            conv = _single_consumer_conv(n) if n.op_type == "BatchNormalization" else None
            bias = conv.input(2) if conv is not None else None
            if (conv is not None and conv.name in in_segment and conv.outputs[0].name not in wanted
                    and (bias is None or bias.const is not None)):
                folded[conv.name] = n
        skip = {bn.name for bn in folded.values()}
        qdq: dict[str, tuple[Node, list[Arg]]] = {}  # Conv/MatMul -> (its QuantizeLinear, QLinear args)
        for n in nodes:
            fusion = _qdq_fusion(n, in_segment, wanted)
            if fusion is not None:
                qdq[n.name] = fusion
                skip.add(fusion[0].name)
        op_types = {n.name: n.op_type for n in nodes}
        raw: list[tuple[str, Kernel, list[Arg], dict[str, Any], tuple[str, ...]]] = []
        for n in nodes:
            if n.name in skip:
                continue
            args: list[Arg] = [None if v is None else (_const(v.const) if v.const is not None else v.name)
                               for v in n.inputs]
            outs = tuple(v.name for v in n.outputs)
            if n.name in folded:
                bn = folded[n.name]
                w, b = n.inputs[1].const, (n.input(2).const if n.input(2) is not None else None)
                w2, b2 = fold_batchnorm(w, b, *(bn.inputs[i].const for i in range(1, 5)),
                                        epsilon=float(bn.attr("epsilon", 1e-5)))
                args = [args[0], _const(w2), _const(b2)]
                outs = tuple(v.name for v in bn.outputs)
            if n.name in qdq:  # DequantizeLinear -> Conv/MatMul -> QuantizeLinear as one integer kernel
                q, args = qdq[n.name]
                op = "QLinearConv" if n.op_type == "Conv" else "QLinearMatMul"
                raw.append((n.name, QKERNELS[op], args, dict(n.attrs), tuple(v.name for v in q.outputs)))
                continue
            emulated = EMULATED_OPS.get(n.op_type) if rounding is not None else None
            if emulated:
                args = [_const(rounding(a)) if i in emulated and isinstance(a, np.ndarray)
                        and a.dtype == np.float32 else a for i, a in enumerate(args)]
            kernel, args = distinct_filters(n.op_type, ALL_KERNELS[n.op_type], args, n.attrs, _const)
            if emulated and any(isinstance(a, str) for i, a in enumerate(args) if i in emulated):
                kernel = rounded_operands(kernel, emulated, rounding)
            raw.append((n.name, kernel, args, dict(n.attrs), outs))
        if qdq:  # a DequantizeLinear whose only readers were fused into integer kernels has nothing to do
            read = {a for r in raw for a in r[2] if isinstance(a, str)}
            raw = [r for r in raw if op_types[r[0]] != "DequantizeLinear"
                   or any(o in read or o in wanted for o in r[4])]
        # Check the dataflow: every tensor read is fed or produced earlier; every output is available.
        available = set(inputs)
        last_use: dict[str, int] = {}
        for i, (name, _, args, _, outs) in enumerate(raw):
            for a in args:
                if isinstance(a, str):
                    if a not in available:
                        raise DispatchError(f"Node '{name}' on ASIC target '{target}' reads '{a}', which is "
                                            "neither a segment input nor produced earlier in the segment.")
                    last_use[a] = i
            available.update(outs)
        missing = [o for o in outputs if o not in available]
        if missing:
            raise DispatchError(f"ASIC target '{target}' cannot produce {', '.join(missing)} from this "
                                "segment; list only tensors its nodes compute or its inputs.")
        # A step may write its result into an operand that an earlier step of this segment produced (kernels
        # return fresh arrays), that no later step reads and that is not a segment output: Relu, Clip and
        # residual Adds then run in place, without allocating (INPLACE_KERNELS).
        produced_at = {t: i for i, (*_, outs) in enumerate(raw) for t in outs}
        steps = []
        for i, (name, kernel, args, attrs, outs) in enumerate(raw):
            frees = tuple(t for t, j in last_use.items() if j == i and t not in wanted)
            inplace = INPLACE_KERNELS.get(op_types[name])
            if inplace is not None:
                owned = [k for k in inplace.operands if k < len(args) and isinstance(args[k], str)
                         and args[k] in frees and produced_at.get(args[k], i) < i]
                if owned:
                    kernel = functools.partial(inplace.kernel, into=owned[0])
            steps.append(_Step(name, kernel, tuple(args), attrs, outs, frees))
        return cls(target, tuple(inputs), tuple(outputs), tuple(steps))

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise DispatchError(f"ASIC target '{self.target}' needs the input(s) {', '.join(missing)}; "
                                "feed every segment input.")
        env: dict[str, np.ndarray] = {n: np.asarray(feeds[n]) for n in self.inputs}
        step = [""]

        def on_fp_error(kind: str, _flag: int) -> None:  # instead of a RuntimeWarning on stderr
            note = (f"NumPy reported {kind} in the ASIC kernel of node '{step[0]}' (NaN or Inf among its "
                    "inputs, or a result past the dtype's range); its outputs follow IEEE arithmetic, as "
                    "onnxruntime's do")
            with _NOTES_LOCK:
                if note not in self.notes:
                    self.notes.append(note)

        # errstate is per thread (a context variable), unlike warnings.catch_warnings
        with np.errstate(divide="call", over="call", invalid="call", under="ignore", call=on_fp_error):
            for s in self.steps:
                step[0] = s.node
                args = [env[a] if isinstance(a, str) else a for a in s.args]
                for name, value in zip(s.outputs, s.kernel(args, s.attrs), strict=True):
                    env[name] = value
                for name in s.frees:
                    del env[name]
        return {n: env[n] for n in self.outputs}


_NOTES_LOCK = threading.Lock()

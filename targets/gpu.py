"""onnxruntime-backed targets: a GPU ("gpu") and the host CPU ("cpu").

Both execute segments through onnxruntime (one InferenceSession per compiled segment, the provider chosen
among TensorRT, CUDA, CPU and recorded) and predict with the same roofline per operator:

    latency = max(flops / (peak · eff_compute[class]), bytes / (bw · eff_memory[class])) + overhead[class]

* `peak`: the spec's figure for the chosen precision for the matrix classes gemm and conv (tensor cores),
  the fp32 vector peak for every other class. `flops`: the analysis' count, or for element-wise kernels
  that evaluate erf, tanh, exp ... the per-element work in `_ELEMENT_FLOPS`.
* `bytes`: activations stream at the cache bandwidth (`cache_bandwidth_GBps`, if the spec has one) when
  they fit in the last-level cache (`l2_bytes`), else at DRAM bandwidth; weights only when the whole
  model's weights stay resident between runs (a quarter of the cache), else from DRAM.
* `overhead`: per kernel, the host's launch (spec `launch_us`) or, with a calibrated profile, the fitted fixed
  cost; under the TensorRT fusion table, whose engine is enqueued ahead of the device (or launched as one
  CUDA graph), the device-side gap between back-to-back kernels instead (spec `kernel_gap_us`), the host's
  cost being the segment's (`session_us`). A profile may also scale the busy time of one kernel when
  compute- or memory-bound (`kernel_scale`).
* Views (Reshape, Flatten ...) move nothing: only the fixed cost remains (none on a GPU: no kernel).

Precision changes only the prediction (the model still runs in its own dtypes): for fp16/bf16 the
float32 tensors a node touches are counted at 2 bytes per element (int8 and fp8: 1), as they would be
stored; tf32 keeps fp32 storage and only changes the matrix peak.

Fusion (targets/fusion.py, one table per graph compiler). The table is onnxruntime's graph transformers
("onnxruntime", the default) or TensorRT's builder ("tensorrt": when TensorRT is the provider here, or
the spec's `[gpu] fusion = "tensorrt"`, or the `fusion` option of the target). A node the compiler folds
into a neighbour's kernel costs nothing extra, except activations a fused convolution applies as a second
pass (the table's `second_pass`). That holds only when both run in one segment on this target, so `cost`
prices every node as its own kernel and `fusion` names the partner and the saving; the partitioner and the
plan subtract it only for a pair in one segment (docs/partitioning.md). The partner's kernel is priced as
the fused one (the table's `kernel_of`) either way; TensorRT's fused attention ("fMHA") is priced as both
of its products, reading Q, K, V and writing its output once.

Energy follows the linear utilisation model of Fan, Weber and Barroso ("Power provisioning for a
warehouse-sized computer", ISCA 2007): P = idle_w + (active_w - idle_w) · u, where u is the share of the
op's latency that its limiting roofline resource is busy (launch and fixed overheads draw idle power).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from dispatch.cost import Cost, OpCost
from dispatch.errors import DispatchError
from dispatch.ir import Graph, Node
from targets.base import Executable, Target, TargetSpec, list_presets, register_kind
from targets.fusion import TABLES, FusionTable, absorbed_by, attention_members, fusion_partner, kernel_of
from targets.profile import Profile, find_profile
from targets.roofline import PRECISIONS, STORE_BYTES, ClassParams, DeviceModel, GemmShape
from targets.subgraph import extract_shared
from targets.support import Support, gpu_support, local_support, signature
from targets.upcast import LOW_FLOATS, elem_type, low_floats, upcast_model

__all__ = [
    "GpuTarget",
    "CpuTarget",
    "OrtTarget",
    "DeviceModel",
    "ClassParams",
    "PRECISIONS",
    "gemm_shape",
    "PROVIDER_ORDER",
    "choose_provider",
    "session_options",
    "op_class",
    "absorbed_by",
    "attention_members",
    "element_flops",
    "kernel_of",
    "fusion_partner",
    "model_weight_bytes",
]

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

# The op class of onnxruntime's own operators (domain com.microsoft), which the analysis table, keyed by
# ONNX op_type, does not know (it reports them as "other"), and of the few ONNX ops it lacks.
_CLASS_OF = {
    "FusedMatMul": "gemm", "FusedGemm": "gemm", "FusedConv": "conv", "Gelu": "elementwise",
    "FastGelu": "elementwise", "BiasGelu": "elementwise", "SkipLayerNormalization": "normalization",
    "SimplifiedLayerNormalization": "normalization", "TopK": "reduction",
}  # fmt: skip

# -- providers and sessions ---------------------------------------------------------------------------
def choose_provider(available: Sequence[str] | None = None, wanted: Sequence[str] | None = None) -> str:
    """The first of TensorRT, CUDA, CPU (or of `wanted`) that onnxruntime offers here."""
    have = list(ort.get_available_providers() if available is None else available)
    order = list(wanted) if wanted else list(PROVIDER_ORDER)
    for p in order:
        if p in have:
            return p
    raise DispatchError(
        f"None of the execution providers {', '.join(order)} is available in this "
        f"onnxruntime build; choose among {', '.join(have)}."
    )


def _provider_list(provider: str) -> list[str]:
    """The session's provider list: the chosen one, with the CPU provider behind it for any leftovers."""
    return [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]


# onnxruntime's ConstantFolding can inline an If whose condition the frontend folded to a constant; a branch
# that gives Range a (1,)-shaped bound (onnx's expanded affine_grid: Split outputs) then fails Range's shape
# inference, though its kernel takes it (tests/test_backend.py, test_affine_grid_2d*_expanded). Only a
# session refused for that reason is built again without ConstantFolding.
_RANGE_SCALARS = "Input to 'Range' op should be scalars"


def _session(model: bytes, so: ort.SessionOptions, providers: list[Any]) -> ort.InferenceSession:
    """The segment's session; again without ConstantFolding when that pass left Range a (1,)-shaped bound."""
    try:
        return ort.InferenceSession(model, so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        if _RANGE_SCALARS not in str(e):
            raise
    return ort.InferenceSession(model, so, providers=providers, disabled_optimizers=["ConstantFolding"])


def session_options(threads: int | None = None, profile_prefix: str | None = None) -> ort.SessionOptions:
    """The options every session of these targets uses (and calibration measures with): ORT_ENABLE_ALL."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4  # fatal only: every error also raises, with the same message
    if threads:
        so.intra_op_num_threads = threads
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


# -- classes and fusion -----------------------------------------------------------------------------
def op_class(node: Node, op: OpCost) -> str:
    """The analysis' class, or the table above when the analysis had no entry (class 'other')."""
    if op.free:
        return "view"
    if op.op_class != "other":
        return op.op_class
    return _CLASS_OF.get(node.op_type, "other")


# -- work the analysis may not count -----------------------------------------------------------------
# The work a kernel does per output element, for the roofline. The analysis counts FLOPs by convention (one
# per elementary function, so Erf = 1); a CPU or GPU kernel evaluates erf, tanh or exp as a polynomial or
# rational approximation of some twenty operations. These figures are assumed from the usual degree of such
# approximations; calibration fits the element-wise compute efficiency against them, so only their ratios
# to plain arithmetic matter.
_ELEMENT_FLOPS = {
    "Sqrt": 4, "Reciprocal": 4, "Exp": 12, "Log": 12, "Pow": 20,
    **dict.fromkeys(("Erf", "Tanh", "Sigmoid", "Softplus", "Sin", "Cos", "HardSwish", "Elu", "Selu"), 20),
    **dict.fromkeys(("Gelu", "FastGelu", "Mish"), 24),
}  # fmt: skip


def element_flops(node: Node, op: OpCost) -> float:
    """The analysis' FLOPs, or for element-wise ops at least the per-element figure above times the output."""
    per = _ELEMENT_FLOPS.get(node.op_type, 0) if node.domain in ("", "ai.onnx", "com.microsoft") else 0
    out = node.outputs[0].size if node.outputs else 0
    return float(max(op.flops, per * out))


# -- the kernel as a GEMM (tile and wave quantisation, targets/roofline.py) --------------------------
_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1}
_MATMULS = {"MatMul": 1, "Gemm": 1, "FusedMatMul": 1, "FusedGemm": 1, "MatMulInteger": 1, "QLinearMatMul": 3}
_MIN_TC_CHANNELS = 8  # cuDNN: tensor-core convolutions need channels per group a multiple of 8


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _known(dims: Sequence[Any]) -> bool:
    """Every dimension a known size (the IR writes an unknown one as -1 or a symbol)."""
    return all(isinstance(d, int) and d >= 0 for d in dims)


def gemm_shape(node: Node) -> tuple[GemmShape | None, bool]:
    """(the node's kernel as a GEMM, whether it runs on the vector units instead of the matrix units).

    Convolutions are implicit GEMMs: M = batch · output pixels, N = output channels per group, K = input
    channels per group · kernel area, one GEMM per group. A depthwise or grouped convolution with fewer than
    8 channels per group runs on the vector units (no tiles). A MatMul whose second operand is 2-D (weights)
    is one GEMM over every leading dimension of the first (M = their product); batched MatMuls (attention)
    are one GEMM per batch element. None when a shape is unknown."""
    t = node.op_type
    out = node.outputs[0].shape if node.outputs else None
    if not out or not _known(out):
        return None, False
    if t in _WEIGHT_INPUT:
        w = node.input(_WEIGHT_INPUT[t])
        if w is None or not w.shape or len(out) < 3 or not _known(w.shape):
            return None, False
        groups = int(node.attr("group", 1))
        per_in, per_out = int(w.shape[1]), int(w.shape[0]) // max(groups, 1)
        if groups > 1 and min(per_in, per_out) < _MIN_TC_CHANNELS:
            return None, True
        m = out[0] * _prod(out[2:])
        return GemmShape(m=m, n=per_out, k=per_in * _prod(w.shape[2:]), groups=groups), False
    if t in _MATMULS:
        a, b = node.input(0), node.input(_MATMULS[t])
        if a is None or b is None or not a.shape or not b.shape or len(out) < 2:
            return None, False
        if not _known((*a.shape, *b.shape)):
            return None, False
        k = int(a.shape[0] if (t in ("Gemm", "FusedGemm") and node.attr("transA", 0)) else a.shape[-1])
        if len(b.shape) <= 2:
            return GemmShape(m=_prod(out[:-1]), n=int(out[-1]), k=k), False
        return GemmShape(m=int(out[-2]), n=int(out[-1]), k=k, groups=_prod(out[:-2])), False
    return None, False


def _dequantized_matrix_input(node: Node) -> bool:
    """Whether a float Conv/MatMul/Gemm reads its data input from a DequantizeLinear (the QDQ form)."""
    if node.op_type not in ("Conv", "MatMul", "Gemm"):
        return False
    x = node.input(0)
    return x is not None and x.producer is not None and x.producer.op_type == "DequantizeLinear"


_WEIGHTS: weakref.WeakKeyDictionary[Node, int] = weakref.WeakKeyDictionary()


def model_weight_bytes(node: Node) -> int:
    """Bytes of every constant input of every node connected to `node` (its model's weights), cached."""
    hit = _WEIGHTS.get(node)
    if hit is not None:
        return hit
    seen: dict[int, Node] = {id(node): node}
    stack = [node]
    while stack:
        n = stack.pop()
        for m in (*n.predecessors, *n.successors):
            if id(m) not in seen:
                seen[id(m)] = m
                stack.append(m)
    consts = {id(v): v.nbytes for n in seen.values() for v in n.present_inputs if v.const is not None}
    total = sum(consts.values())
    for n in seen.values():
        _WEIGHTS[n] = total
    return total


def _is_low(a: Any) -> bool:
    """Whether an array or a Value holds float16 or bfloat16."""
    return a.dtype is not None and elem_type(a.dtype) in LOW_FLOATS


# -- the executable ---------------------------------------------------------------------------------
class OrtExecutable:
    """One InferenceSession for one segment; calling it runs the session (thread-safe, as ORT's run is)."""

    def __init__(self, session: ort.InferenceSession, keep_alive: Sequence[Any] = (), provider: str = "",
                 widened: Mapping[str, np.dtype] | None = None) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self._keep = list(keep_alive)  # OrtValues whose buffers the session uses
        self.provider = provider  # what runs it here, e.g. "CPUExecutionProvider (fp16 upcast to fp32)"
        self._widened = dict(widened or {})  # tensor -> its own dtype, for a session run in float32

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise DispatchError(
                f"The segment needs the inputs {', '.join(missing)}, which were not fed; "
                "pass them in the feeds."
            )
        args = {n: feeds[n] for n in self.input_names}
        if self._widened:
            args = {n: a.astype(np.float32) if n in self._widened else a for n, a in args.items()}
        try:
            outs = self.session.run(self.output_names, args)
        except InvalidArgument as e:  # the feeds passed the shape/dtype check, so their values are at fault
            why = str(e).split("Status Message: ")[-1]
            raise DispatchError(f"onnxruntime rejected the input values ({why}); check the feeds, e.g. that "
                                "indices are within range.") from None
        if self._widened:
            outs = [a.astype(self._widened[n]) if n in self._widened else a
                    for n, a in zip(self.output_names, outs, strict=True)]
        return dict(zip(self.output_names, outs, strict=False))


# -- the targets ------------------------------------------------------------------------------------
class OrtTarget(Target):
    """Shared by GpuTarget and CpuTarget: onnxruntime execution, roofline prediction, optional profile."""

    def __init__(
        self,
        name: str,
        spec: TargetSpec,
        precision: str = "fp32",
        profile: Any = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        fusion: str | None = None,
    ) -> None:
        super().__init__(name, spec)
        if spec.kind != self.kind:
            raise DispatchError(
                f"Spec '{spec.name}' is a {spec.kind} spec, but a {self.kind} target needs a "
                f"{self.kind} spec; presets: {', '.join(list_presets())}."
            )
        if precision not in PRECISIONS:
            raise DispatchError(f"Unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}.")
        have = DeviceModel.from_spec(spec).peak_flops
        if precision not in have:
            raise DispatchError(f"Spec '{spec.name}' gives no {precision} peak (the part has no {precision} "
                                f"units); choose one of {', '.join(d for d in PRECISIONS if d in have)}.")
        self.precision = precision
        if threads is None:
            threads = spec.params.get("threads", 0)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise DispatchError(
                f"threads must be a whole number >= 0 (0: onnxruntime's default), not {threads!r}."
            )
        self.threads = threads or None  # onnxruntime intra-op threads; None: its default (all cores)
        self.provider = self._choose(providers)
        self.fusion_table = self._fusion_table(fusion)
        self.base_model = DeviceModel.from_spec(spec)
        self.capacity_bytes = None  # weights stream from device memory; no on-chip limit
        self.profile = self._load_profile(profile)
        self.model = self.base_model.with_profile(self.profile) if self.profile else self.base_model

    def _choose(self, providers: Sequence[str] | None) -> str:
        return choose_provider(wanted=providers)

    def _fusion_table(self, fusion: str | None) -> FusionTable:
        """The graph compiler's fusions: the `fusion` option, else the spec's `fusion` key, else TensorRT's
        when TensorRT is the provider here, else onnxruntime's (targets/fusion.py)."""
        name = fusion if fusion is not None else self.spec.params.get("fusion")
        if name is None:
            name = "tensorrt" if self.provider == "TensorrtExecutionProvider" else "onnxruntime"
        if name not in TABLES:
            raise DispatchError(f"Unknown fusion table {name!r} for spec '{self.spec.name}'; choose one of "
                                f"{', '.join(TABLES)}.")
        return TABLES[name]

    def _load_profile(self, profile: Any) -> Any:
        if profile is False:
            return None
        if profile is None:
            return find_profile(self.spec.name, self.provider)
        prof = profile if isinstance(profile, Profile) else Profile.load(profile)
        if prof.spec != self.spec.name:
            raise DispatchError(
                f"Profile '{prof.path or prof.spec}' was fitted for spec '{prof.spec}', not "
                f"'{self.spec.name}'; calibrate this spec or pass a profile for it."
            )
        return prof

    # -- support
    def unsupported_reason(self, node: Node) -> str | None:
        """The provider here decides: its kernels, then a session of the node alone (targets/support.py)."""
        return self.local.reason(node)

    @property
    def local(self) -> Support:
        return local_support(self.provider)

    def _widen(self, nodes: Sequence[Node]) -> set[str]:
        """Low-precision float types ('fp16', 'bf16') the segment runs as float32 here.

        A segment touching bfloat16 always does: onnxruntime's Python binding exchanges no bfloat16 arrays
        (feeds, outputs and shared initializers all fail), and bfloat16 values cross the boundary exactly
        as float32 (every bfloat16 is a float32)."""
        kinds = low_floats(nodes)
        return kinds if "bf16" in kinds else set()

    # -- cost
    def precision_of(self, node: Node, op: OpCost | None = None) -> str:
        """The precision a node is predicted at: its own where its dtype says so, else the target's.

        * integer MACs (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger: `mac_dtype` "int8") and a
          float Conv/MatMul/Gemm fed by a DequantizeLinear (the QDQ form, which TensorRT and onnxruntime's
          CUDA provider run as one int8 kernel) run at the part's int8 peak, where the spec has one;
        * a float16/bfloat16 node runs on the part's fp16/bf16 units whatever the target's precision;
        * everything else (float32 tensors) at the target's precision (`--precision`)."""
        peaks = self.model.peak_flops
        if "int8" in peaks and (
            (op is not None and op.mac_dtype == "int8") or _dequantized_matrix_input(node)
        ):
            return "int8"
        kinds = low_floats([node])
        tensors = (*node.present_inputs, *node.outputs)
        if len(kinds) == 1 and not any(v.dtype == np.float32 for v in tensors):
            return kinds.pop()
        return self.precision

    def _split_bytes(self, node: Node, op: OpCost, precision: str = "fp32") -> tuple[float, float]:
        """(activation bytes, weight bytes) moved, float32 tensors counted at the precision's storage size."""
        weights = float(min(op.param_bytes, op.bytes_read))
        acts = float(op.bytes_moved) - weights
        if STORE_BYTES[precision] == 4 or not op.bytes_moved:
            return acts, weights
        f32 = sum(v.nbytes for v in (*node.present_inputs, *node.outputs) if v.dtype == np.float32)
        io = sum(v.nbytes for v in (*node.present_inputs, *node.outputs)) or 1
        keep = 1 - min(1.0, f32 / io) * (1 - STORE_BYTES[precision] / 4)
        return acts * keep, weights * keep

    def weights_resident(self, node: Node) -> bool:
        """Whether the model's weights stay in the last-level cache from one run to the next: assumed when
        they take at most a quarter of it (activations, and on a shared host other tenants, use the rest)."""
        return model_weight_bytes(node) <= self.model.cache_bytes / 4

    def fusion(self, node: Node, op: OpCost) -> tuple[str, Cost] | None:
        """(the node whose kernel absorbs this one, this node's own cost) when the graph compiler fuses it
        away; activations a fused convolution applies as a second pass (the table's `second_pass`) keep
        their cost."""
        fused = self.fusion_table.fused(node)
        if fused is None or fused[0] is None:
            return None
        partner, why = fused
        if node.op_type in self.fusion_table.second_pass and "FusedConv" in why:
            return None
        return partner.name, self.cost(node, op)

    def cost(self, node: Node, op: OpCost) -> Cost:
        """The node as its own kernel; `fusion` says what is saved when onnxruntime folds it into another."""
        cls = op_class(node, op)
        precision = self.precision_of(node, op)
        kernel = self.fusion_table.kernel_of(node)
        if kernel == "fMHA":
            busy, overhead = self._attention_busy(node, precision)
        else:
            acts, weights = self._split_bytes(node, op, precision)
            flops = element_flops(node, op)
            resident = self.weights_resident(node)
            shape, vector = gemm_shape(node) if cls in ("gemm", "conv") else (None, False)
            busy, overhead = self.model.roofline(cls, flops, acts, weights, precision, resident, kernel,
                                                 shape, vector)
        if cls == "view":
            busy = 0.0  # no data moves; only the fixed cost of the (aliasing) kernel call remains
        elif self.fusion_table.stream:
            overhead = self.model.kernel_gap_s  # enqueued ahead: the device-side gap, not a host launch
        a = node.input(0)
        if kernel == "Gemm" and node.op_type == "MatMul" and a is not None and a.shape and len(a.shape) > 2:
            # MatMulAddFusion flattens an N-D input for the Gemm: a Reshape before it and one after it
            overhead += 2 * self.model.classes["view"].overhead_s
        latency = busy + overhead
        s = self.spec
        return Cost(latency, s.idle_w * latency + (s.active_w - s.idle_w) * busy)

    def _attention_busy(self, pv: Node, precision: str) -> tuple[float, float]:
        """TensorRT's fused attention at its P·V MatMul: both products (Q·Kᵀ and P·V, 2 · M · N · K each) on
        the matrix units; Q, K, V read and the output written once, at the precision's
        storage size (the scores stay on chip)."""
        members = attention_members(pv)
        assert members is not None and members[0] is pv
        qk = members[1][0]
        q, k, v, out = qk.input(0), qk.input(1), pv.input(1), pv.outputs[0]
        flops = 2.0 * qk.outputs[0].size * q.shape[-1] + 2.0 * out.size * pv.input(0).shape[-1]
        acts = sum(x.nbytes * (STORE_BYTES[precision] / 4 if x.dtype == np.float32 else 1.0)
                   for x in (q, k, v, out))
        # one block per (batch, head, 64 query rows), each looping over all keys ([FA] in the GPU specs):
        # tiled as P·V (M = seq, N = head size, K = seq), never split-K
        shape, _ = gemm_shape(pv)
        if shape is not None:
            shape = GemmShape(shape.m, shape.n, shape.k, shape.groups, split_k=False)
        return self.model.roofline("gemm", flops, acts, 0.0, precision, False, "fMHA", shape)

    def segment_overhead(self) -> Cost:
        t = self.model.session_s
        return Cost(t, self.spec.idle_w * t)

    # -- execution
    def compile(
        self, graph: Graph, nodes: Sequence[Node], inputs: Sequence[str], outputs: Sequence[str]
    ) -> Executable:
        """One onnxruntime session for these nodes, weights shared with the Graph. Not cached here: the
        runtime compiles each segment once and owns the result, so dropping a plan frees its sessions."""
        return self._build(graph, nodes, inputs, outputs)

    def _build(
        self, graph: Graph, nodes: Sequence[Node], inputs: Sequence[str], outputs: Sequence[str]
    ) -> OrtExecutable:
        model, shared = extract_shared(graph, nodes, inputs, outputs)
        provider, widened = self.provider, {}
        kinds = self._widen(nodes)
        if kinds:  # the planned provider runs these dtypes, the one here does not: run them as float32
            model, _ = upcast_model(model)
            shared = {k: a.astype(np.float32) if _is_low(a) else a for k, a in shared.items()}
            widened = {n: graph.values[n].dtype for n in (*inputs, *outputs) if _is_low(graph.values[n])}
            provider = f"{self.provider} ({'/'.join(sorted(kinds))} upcast to fp32)"
        model = self._expand(model, nodes)
        so = session_options(self.threads)
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in shared.values()]
        if shared:
            so.add_external_initializers(list(shared), values)
        try:
            sess = _session(model.SerializeToString(), so, _provider_list(self.provider))
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DispatchError(
                f"onnxruntime could not build a session for the segment starting at "
                f"'{nodes[0].name}' on {self.provider} ({first}); place those nodes "
                "elsewhere."
            ) from None
        return OrtExecutable(sess, keep_alive=[values, shared], provider=provider, widened=widened)

    def _expand(self, model: onnx.ModelProto, nodes: Sequence[Node]) -> onnx.ModelProto:
        return model

    # -- reports
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        spec_label = self.spec.description or self.spec.name
        d.update(
            precision=self.precision,
            measured_on=self.provider,
            predicted_for=self.spec.name,
            note=f"measured on {self.provider}; predicted for {spec_label} at {self.precision}",
            calibrated=self.profile is not None,
            profile=(
                self.profile.describe()
                if self.profile
                else "none: efficiencies and overheads are the spec's defaults"
            ),
        )
        return d


@register_kind("gpu")
class GpuTarget(OrtTarget):
    """A GPU: predicted from its spec; executed by the best onnxruntime provider present here."""

    def unsupported_reason(self, node: Node) -> str | None:
        """The planned part's provider decides (CUDA's coverage, see targets/support.py); on a machine without
        it the node must also run here, natively or with float16/bfloat16 widened to float32."""
        for v in (*node.present_inputs, *node.outputs):
            if v.dtype is not None and (v.dtype == np.dtype(object) or v.dtype.kind in "US"):
                return f"'{v.name}' holds strings, which GPU kernels do not process"
        sig = signature(node)
        why = self.planned.reason(node, sig=sig)
        if why is not None or self.provider != "CPUExecutionProvider":
            return why
        here = self.local.reason(node, sig=sig)
        if here is None or (low_floats([node]) and self.local.reason(node, upcast=True, sig=sig) is None):
            return None
        return f"{self.planned.coverage.provider} would run it, but it must run here and {here}"

    @property
    def planned(self) -> Support:
        return gpu_support(self.provider)

    def _widen(self, nodes: Sequence[Node]) -> set[str]:
        """On the CPU provider: when a float16/bfloat16 node has no kernel here for its types (the planned
        GPU has), the whole segment runs as float32 (outputs cast back)."""
        if super()._widen(nodes):
            return super()._widen(nodes)
        if self.provider != "CPUExecutionProvider":
            return set()
        if any(low_floats([n]) and not self.local.has_kernel(n) for n in nodes):
            return low_floats(nodes)
        return set()

    def _expand(self, model: onnx.ModelProto, nodes: Sequence[Node]) -> onnx.ModelProto:
        """On a GPU provider, ONNX function ops it has no kernel for are inlined here, so their bodies run on
        it (onnxruntime would otherwise hand the whole op to the CPU provider behind it)."""
        if self.provider == "CPUExecutionProvider":
            return model
        return self.planned.inline_functions(model, nodes)


@register_kind("cpu")
class CpuTarget(OrtTarget):
    """The host CPU through onnxruntime's CPU provider; its link is the host itself (no transfer cost)."""

    def __init__(
        self,
        name: str,
        spec: TargetSpec,
        precision: str = "fp32",
        profile: Any = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        if providers and list(providers) != ["CPUExecutionProvider"]:
            raise DispatchError(
                "A cpu target runs on CPUExecutionProvider only; drop the providers option "
                "or use a gpu target."
            )
        super().__init__(name, spec, precision, profile, ["CPUExecutionProvider"], threads, "onnxruntime")

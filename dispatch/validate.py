"""Outputs against onnxruntime: `compare` with tolerances that follow each output's precision.

The feeds side (`check_feeds`, `generate_feeds`, `FeedSpec`) lives in ``feeds.py`` and is re-exported here.
`compare` reports, per output, the largest absolute and relative error against a reference;
`reference_outputs` is that reference: onnxruntime (CPU execution provider) running the whole folded,
shape-inferred model on the same feeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import onnx

from dispatch.errors import DispatchError
from dispatch.feeds import (  # noqa: F401  (re-exported: validate was their home)
    FeedChecker,
    FeedSpec,
    check_feeds,
    container_advice,
    feed_specs,
    generate_feeds,
)
from dispatch.ir import Graph
from targets.asic.numerics import UNIT_ROUNDOFF

__all__ = ["FeedSpec", "FeedChecker", "feed_specs", "check_feeds", "generate_feeds", "OutputError",
           "ValidationResult", "compare", "emulated_layers", "graph_depth", "plan_emulation",
           "quantized_spread", "reference_outputs", "DEFAULT_RTOL", "DEFAULT_ATOL"]

# The check is normwise, per output: max |a − r| ≤ atol + rtol · max |r|. Elementwise relative checks fail
# on deep fp32 networks for reasons that are not errors: a differently ordered sum of K products drifts by
# about sqrt(K)·2^-24 of the magnitudes summed, not of the result, and small outputs inherit the noise of
# large intermediates. Measured: onnxruntime against itself with graph optimisations off differs on
# ResNet-50's logits (max |r| = 6.83) by 9.3e-5, elementwise 6.7e-3 relative, normwise 1.4e-5 (the ASIC
# kernels: 1.08e-4 and 1.6e-5). rtol 1e-4 leaves a factor of about 6 above that; a real fault (a wrong
# bias, a dropped node) moves outputs by a sizable fraction of their scale. atol 1e-5 covers outputs near 0.
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5
# Outputs stored in a 16-bit float carry that format's rounding from every node that wrote them, and two
# correct evaluations round at different places (onnxruntime's CPU provider casts around each float16 node
# without a float16 kernel; a segment run upcast keeps float32 inside and rounds at its boundary). Their
# tolerances have a floor in units of the format's unit roundoff u (float16 2^-11, bfloat16 2^-8): rtol 20u,
# atol 2u (float16: 9.8e-3 and 9.8e-4). Measured, fp16 zoo models run upcast on the gpu target against
# onnxruntime: BERT-base max |a - r| 7.8e-3 at max |r| 4.70 (3.4u of the scale), ResNet-50 0; 20u leaves a
# factor of about 6, as rtol does for float32.
# In a deep graph the roundings add up along a path: independent errors of relative size u at each of the
# `depth` nodes of the longest path grow like a random walk, u·sqrt(depth) times the network's gain, so the
# rtol floor is u·max(20, 5·sqrt(depth)). Measured: ResNet-50 in float16 with all 53 convs on the ASIC (every
# node's output rounded to float16; the reference does not round there: one upcast GPU segment matches it)
# differs by 0.0117 of the output scale = 24u at depth 118 (2.2·sqrt(118)·u); the floor, 54u, leaves 2.2x.
_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}
_DEPTH_GROWTH = 5.0
# An ASIC that emulates its multipliers (targets/asic/numerics.py; derivation in docs/numerics.md) rounds the
# operands of each float32 MatMul/Gemm/Conv to its compute dtype (unit roundoff u: bf16 2^-8, fp16 2^-11) and
# accumulates in fp32. One K-long dot product then errs by e = sum a_i·b_i·(d_i + f_i), |d_i|, |f_i| <= u:
# at worst 2u·sum|a_i·b_i|; with independent roundings (variance u²/3 each), sqrt(2/3)·u·||a∘b||_2, which is
# at most sqrt(2/3)·u·sqrt(K)·max|a_i·b_i| and, for a layer whose output is not a cancellation, a few u of
# the output's scale. The fp32 accumulation adds about sqrt(K)·2^-24, negligible. Over a path through L
# emulated layers the per-layer errors are independent and add like a random walk, u·sqrt(L) times the
# network's gain: rtol floor u·max(20, 8·sqrt(L)), L = emulated layers on the output's longest path
# (`emulated_layers`). The 8 is that random walk's coefficient (sqrt(2/3) per layer) times the gain, set from
# a measurement with a margin, as the floors above are: ResNet-50 (zoo, bf16 on tpu-v4-like, L = 50) errs by
# 0.102 of its output scale = 26u = 3.7·sqrt(50)·u, so 8·sqrt(L)·u = 0.221 leaves 2.2x; BERT-base (L = 72,
# LayerNorm re-normalises every block) errs by 1.0u. Table: benchmarks/results/asic_numerics.md.
_EMULATION_GROWTH = 8.0

@dataclass(frozen=True)
class OutputError:
    """How far one output is from its reference.

    scale = max |r|; max_rel_err = max |a − r| / max(|r|, atol), elementwise (the floor keeps references near
    zero from dominating); ok: shapes agree, NaNs sit where the reference has them, and
    max_abs_err ≤ atol + rtol · scale.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float
    scale: float
    ok: bool
    tolerances: tuple[float, float] | None = None  # (rtol, atol) when the output's dtype raised them
    raised_for: str = ""  # why: "16-bit float", "quantized" or e.g. "bf16 ASIC numerics, 54 layers"


@dataclass(frozen=True)
class ValidationResult:
    """Per-output errors against the reference, the tolerances used and the verdict."""

    outputs: tuple[OutputError, ...]
    rtol: float
    atol: float

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def max_abs_err(self) -> float:
        return max((o.max_abs_err for o in self.outputs), default=0.0)

    @property
    def max_rel_err(self) -> float:
        return max((o.max_rel_err for o in self.outputs), default=0.0)

    def as_dict(self) -> dict[str, object]:
        return {"validated": self.ok, "max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err,
                "rtol": self.rtol, "atol": self.atol,
                "outputs": [{"name": o.name, "max_abs_err": o.max_abs_err, "max_rel_err": o.max_rel_err,
                             "scale": o.scale, "ok": o.ok,
                             **({"rtol": o.tolerances[0], "atol": o.tolerances[1], "raised_for": o.raised_for}
                                if o.tolerances else {})}
                            for o in self.outputs]}


def graph_depth(graph: Graph) -> int:
    """Nodes on the longest path from an input to an output (1 for a graph without nodes)."""
    depth: dict[str, int] = {}
    for n in graph.nodes:
        d = 1 + max((depth.get(v.name, 0) for v in n.present_inputs), default=0)
        for o in n.outputs:
            depth[o.name] = d
    return max((depth.get(o.name, 1) for o in graph.outputs), default=1)


def emulated_layers(graph: Graph, emulated: Mapping[str, float]) -> dict[str, tuple[float, int]]:
    """Per graph output reached by emulated nodes: (the largest unit roundoff u among them, the most emulated
    nodes on one path to it). `emulated`: node name -> the unit roundoff its operands were rounded to."""
    count: dict[str, tuple[float, int]] = {}
    for n in graph.nodes:
        u, layers = 0.0, 0
        for v in n.present_inputs:
            vu, vl = count.get(v.name, (0.0, 0))
            u, layers = max(u, vu), max(layers, vl)
        if n.name in emulated:
            u, layers = max(u, emulated[n.name]), layers + 1
        if layers:
            for o in n.outputs:
                count[o.name] = (u, layers)
    return {o.name: count[o.name] for o in graph.outputs if o.name in count}


def plan_emulation(graph: Graph, assignment: Mapping[str, str],
                   targets: Mapping[str, object]) -> dict[str, tuple[float, int]]:
    """`emulated_layers` for a plan: the nodes whose target says it rounds their operands (a target's
    ``emulated_roundoff(node)``, the ASIC's in emulate mode) -> `compare`'s `emulation` argument."""
    emulated = {}
    for n in graph.nodes:
        target = targets.get(assignment.get(n.name, ""))
        u = getattr(target, "emulated_roundoff", lambda _: None)(n)
        if u is not None:
            emulated[n.name] = u
    return emulated_layers(graph, emulated)


def _emulation_floor(u: float, layers: int) -> float:
    return u * max(20.0, _EMULATION_GROWTH * float(np.sqrt(max(layers, 1))))


_U_NAME = {u: name for name, u in UNIT_ROUNDOFF.items()}


def _compare_one(name: str, a: np.ndarray, r: np.ndarray, rtol: float, atol: float,
                 depth: int = 1) -> OutputError:
    a, r = np.asarray(a), np.asarray(r)
    u = _ROUNDOFF.get(r.dtype.name)
    floor = None if u is None else u * max(20.0, _DEPTH_GROWTH * float(np.sqrt(max(depth, 1))))
    if u is not None and (rtol < floor or atol < 2 * u):
        rtol, atol = max(rtol, floor), max(atol, 2 * u)
        return replace(_compare_one(name, a.astype(np.float32), r.astype(np.float32), rtol, atol),
                       tolerances=(rtol, atol), raised_for="16-bit float")
    inf = float("inf")
    if a.shape != r.shape:
        return OutputError(name, tuple(a.shape), inf, inf, inf, False)
    if a.size == 0:
        return OutputError(name, tuple(a.shape), 0.0, 0.0, 0.0, True)
    if not (np.issubdtype(r.dtype, np.number) or r.dtype == np.bool_):
        same = bool(np.array_equal(a, r))
        return OutputError(name, tuple(a.shape), 0.0 if same else inf, 0.0 if same else inf, 0.0, same)
    # Flattened: ufuncs on rank-0 arrays return NumPy scalars, which the masked assignment below cannot take.
    a64, r64 = a.astype(np.float64).reshape(-1), r.astype(np.float64).reshape(-1)
    nan_a, nan_r = np.isnan(a64), np.isnan(r64)
    same = (a64 == r64) | (nan_a & nan_r)  # equal infinities too: inf - inf would be NaN
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(np.where(same, 0.0, np.where(nan_a | nan_r, np.inf, a64 - r64)))
    # NaN on one side only, or an infinity against another value: an infinite error (set above)
    finite_r = np.abs(r64[np.isfinite(r64)])
    scale = float(finite_r.max()) if finite_r.size else 0.0
    rel = diff / np.maximum(np.abs(np.nan_to_num(r64)), max(atol, np.finfo(np.float64).tiny))
    max_abs = float(diff.max())
    return OutputError(name, tuple(a.shape), max_abs, float(rel.max()), scale, max_abs <= atol + rtol * scale)


def compare(outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
            rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, *, depth: int = 1,
            atol_floors: Mapping[str, float] | None = None,
            emulation: Mapping[str, tuple[float, int]] | None = None) -> ValidationResult:
    """Compare every reference output with the same-named output (a missing one fails with infinite error).

    depth: nodes on the graph's longest path (`graph_depth`), for the floor of 16-bit float tolerances;
    atol_floors: a floor on atol per output (`quantized_spread`); emulation: per output, the unit roundoff and
    emulated layers behind it (`emulated_layers`), which floor rtol at u·max(20, 8·sqrt(L))."""
    if rtol < 0 or atol < 0:
        raise DispatchError(f"Tolerances must be non-negative, got rtol={rtol} and atol={atol}; fix them.")
    errs = []
    for name, r in reference.items():
        if name not in outputs:
            inf = float("inf")
            errs.append(OutputError(name, tuple(np.shape(r)), inf, inf, inf, False))
        else:
            floor = (atol_floors or {}).get(name, 0.0)
            e = _compare_one(name, outputs[name], r, rtol, max(atol, floor), depth)
            if floor > atol and e.tolerances is None:
                e = replace(e, tolerances=(rtol, floor), raised_for="quantized")
            if name in (emulation or {}) and e.tolerances is None and np.asarray(r).dtype == np.float32:
                u, layers = emulation[name]
                erl = _emulation_floor(u, layers)
                if erl > rtol:
                    e = replace(_compare_one(name, outputs[name], r, erl, max(atol, floor)),
                                tolerances=(erl, max(atol, floor)),
                                raised_for=f"{_U_NAME.get(u, f'u={u:g}')} ASIC numerics, {layers} layers")
            errs.append(e)
    return ValidationResult(tuple(errs), rtol, atol)


def reference_outputs(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime (CPUExecutionProvider) running the whole folded, shape-inferred model of `graph`.

    A float16/bfloat16 model that the CPU provider cannot run (it has almost no bfloat16 kernels) runs upcast
    to float32 instead (targets.upcast: the same values, widened exactly), its outputs cast back to their
    dtypes: the reference is then the float32 evaluation of the 16-bit model's weights and inputs."""
    import onnxruntime as ort

    from targets.upcast import low_floats, upcast_model

    if "bf16" in low_floats(graph.nodes):  # onnxruntime's Python binding exchanges no bfloat16 arrays
        return _upcast_reference(graph, feeds, upcast_model(graph.model)[0])
    names = [o.name for o in graph.outputs]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        opts, _weights = graph.session_options_with_weights(opts)  # _weights: alive while the session runs
        sess = ort.InferenceSession(graph.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime's own types; only 16-bit models get a second way
        if not low_floats(graph.nodes):
            raise
        return _upcast_reference(graph, feeds, upcast_model(graph.model)[0])
    return dict(zip(names, sess.run(names, dict(feeds)), strict=True))


# A quantized model has two correct evaluations in onnxruntime itself: at its extended optimisation level it
# fuses DequantizeLinear -> op -> QuantizeLinear into integer kernels (QLinearConv ...), which round otherwise
# than the float ops as written (what it runs with optimisations off); one rounding step in a hidden layer
# grows through the network (measured on resnet50-qdq: 0.458 apart on outputs of scale 6.72). A plan runs the
# patterns that a segment boundary or a target splits as written and the others fused, so its outputs may be
# as far from the reference as the two evaluations are apart, and no farther: that distance floors atol.
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def quantized_spread(graph: Graph, feeds: Mapping[str, np.ndarray],
                     reference: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per output, max |onnxruntime without graph optimisations − `reference`| for a model with quantize or
    dequantize nodes (see _QDQ_OPS); {} for any other model."""
    if not any(n.op_type in _QDQ_OPS for n in graph.nodes):
        return {}
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts, _weights = graph.session_options_with_weights(opts)  # _weights: alive while the session runs
    sess = ort.InferenceSession(graph.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in graph.outputs]
    spread = {}
    for name, y in zip(names, sess.run(names, dict(feeds)), strict=True):
        a, r = np.asarray(y), np.asarray(reference[name])
        if a.shape == r.shape and a.size and np.issubdtype(r.dtype, np.number):
            spread[name] = float(np.nanmax(np.abs(a.astype(np.float64) - r.astype(np.float64))))
    return spread


def _upcast_reference(graph: Graph, feeds: Mapping[str, np.ndarray], model: onnx.ModelProto
                      ) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    def wide(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32) if a.dtype.name in _ROUNDOFF else a

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    weights = {k: wide(np.asarray(a)) for k, a in graph.weights.items()}
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()]  # alive while the session runs
    if values:
        opts.add_external_initializers(list(weights), values)
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in graph.outputs]
    outs = sess.run(names, {k: wide(np.asarray(v)) for k, v in feeds.items()})
    return {o.name: np.asarray(y).astype(o.dtype) if o.dtype is not None else y
            for o, y in zip(graph.outputs, outs, strict=True)}

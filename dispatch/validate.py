"""Feeds in, outputs out: check feeds against the model's inputs, generate feeds, compare with onnxruntime.

`check_feeds` names the input and says what to do (one sentence, `DispatchError`). `compare` reports, per
output, the largest absolute and relative error against a reference; `reference_outputs` is that reference:
onnxruntime (CPU execution provider) running the whole folded, shape-inferred model on the same feeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from dispatch.errors import DispatchError
from dispatch.ir import Graph, numpy_dtype
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

_ANY = "?"  # a dimension with neither a value nor a name: any size, tied to nothing


@dataclass(frozen=True)
class FeedSpec:
    """One graph input as declared: dims are ints (fixed) or strings (symbolic); None dims: unknown rank.

    kind: "tensor", "sequence" (a list of arrays of `dtype`; dims None) or "other" (maps and the like, passed
    to onnxruntime as given); optional: the input is an ONNX optional, so None is a valid feed.
    """

    name: str
    dtype: np.dtype | None
    dims: tuple[int | str, ...] | None
    kind: str = "tensor"
    optional: bool = False

    def describe(self) -> str:
        """e.g. 'float32 (batch, 3, 32, 32)'."""
        dt = self.dtype.name if self.dtype is not None else "any dtype"
        if self.kind == "sequence":
            return f"list of {dt} arrays"
        if self.dims is None:
            return f"{dt} of any shape"
        if not self.dims:
            return f"rank-0 {dt} (shape ())"
        return f"{dt} ({', '.join(str(d) for d in self.dims)}{',' if len(self.dims) == 1 else ''})"


def _feed_spec(name: str, tp: onnx.TypeProto, optional: bool = False) -> FeedSpec:
    which = tp.WhichOneof("value")
    if which == "optional_type":
        return _feed_spec(name, tp.optional_type.elem_type, True)
    if which == "sequence_type":
        elem = tp.sequence_type.elem_type
        dtype = numpy_dtype(elem.tensor_type.elem_type) if elem.HasField("tensor_type") else None
        return FeedSpec(name, dtype, None, "sequence", optional)
    if which not in (None, "tensor_type"):
        return FeedSpec(name, None, None, "other", optional)
    t = tp.tensor_type
    dims: tuple[int | str, ...] | None = None
    if which == "tensor_type" and t.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or _ANY) for d in t.shape.dim)
    # an optional tensor's shape is not bound to a plan: it may be absent, so it keys no signature
    return FeedSpec(name, numpy_dtype(t.elem_type), None if optional else dims, "tensor", optional)


def feed_specs(model: Graph | onnx.ModelProto) -> tuple[FeedSpec, ...]:
    """The fed inputs (initializers excluded) of a Graph or a ModelProto, with symbolic dims kept as names."""
    proto = model.model if isinstance(model, Graph) else model
    inits = {i.name for i in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        specs.append(_feed_spec(vi.name, vi.type))
    return tuple(specs)


def _spelled(dtype: np.dtype) -> str:
    """How to write the dtype in Python: np.float32, or ml_dtypes.bfloat16 for the types NumPy lacks."""
    return f"np.{dtype.name}" if hasattr(np, dtype.name) else f"ml_dtypes.{dtype.name}"


class FeedChecker:
    """Checks feeds against fixed specs; built once, so a check is a few dictionary and tuple lookups."""

    def __init__(self, specs: Sequence[FeedSpec]) -> None:
        self.specs = tuple(specs)
        self.names = tuple(s.name for s in self.specs)
        self._by_name = {s.name: s for s in self.specs}

    def check(self, feeds: Mapping[str, np.ndarray]) -> tuple[tuple[int, ...], ...]:
        """Raise DispatchError on a bad feed; return the feeds' shapes in input order (their signature)."""
        if not isinstance(feeds, Mapping):
            first = self.names[0] if self.names else "input"
            raise DispatchError(f"Feeds must be a dict of input name -> numpy array, not "
                                f"{type(feeds).__name__}; pass e.g. {{{first!r}: array}}.")
        if len(feeds) != len(self.specs) or any(k not in self._by_name for k in feeds):
            self._names_error(feeds)
        shapes = []
        symbols: dict[str, tuple[int, str]] = {}
        for spec in self.specs:
            x = feeds[spec.name]
            if spec.kind != "tensor" or spec.optional:
                self._check_container(spec, x)
                shapes.append(())  # not a shape the plan is specialised to
                continue
            if not isinstance(x, np.ndarray):
                want = _spelled(spec.dtype) if spec.dtype is not None else "np.float32"
                what = f"NumPy scalar ({type(x).__name__})" if isinstance(x, np.generic) else type(x).__name__
                raise DispatchError(f"Input '{spec.name}' is a {what}, not a numpy array; pass "
                                    f"np.asarray(value, dtype={want}) (a rank-0 array for a scalar).")
            if spec.dtype is not None and x.dtype != spec.dtype:
                raise DispatchError(f"Input '{spec.name}' has dtype {x.dtype} but the model expects "
                                    f"{spec.dtype}; cast it with .astype({_spelled(spec.dtype)}).")
            if spec.dims is not None:
                self._check_shape(spec, x.shape, symbols)
            shapes.append(x.shape)
        return tuple(shapes)

    @staticmethod
    def _check_container(spec: FeedSpec, x: object) -> None:
        """None for an optional input; a list of arrays of the dtype for a sequence; other kinds unchecked."""
        if x is None:
            if spec.optional:
                return
            raise DispatchError(f"Input '{spec.name}' is None but it is not optional; pass a "
                                f"{spec.describe()}.")
        if spec.kind == "other":
            return
        items = x if spec.kind == "sequence" else [x]
        if spec.kind == "sequence" and not isinstance(x, (list, tuple)):
            raise DispatchError(f"Input '{spec.name}' is a sequence but a {type(x).__name__} was given; pass "
                                f"a list of numpy arrays.")
        for e in items:
            if not isinstance(e, np.ndarray):
                raise DispatchError(f"Input '{spec.name}' holds a {type(e).__name__}, not a numpy array; "
                                    f"pass a {spec.describe()}.")
            if spec.dtype is not None and e.dtype != spec.dtype:
                raise DispatchError(f"Input '{spec.name}' holds dtype {e.dtype} but the model expects "
                                    f"{spec.dtype}; cast it with .astype({_spelled(spec.dtype)}).")

    def _names_error(self, feeds: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in self.names if n not in feeds]
        if missing:
            spec = self._by_name[missing[0]]
            raise DispatchError(f"Input '{spec.name}' is missing from the feeds; pass a {spec.describe()} "
                                f"array under that name (the model's inputs are {list(self.names)}).")
        extra = [k for k in feeds if k not in self._by_name]
        raise DispatchError(f"Feed '{extra[0]}' is not an input of the model; remove it (the model's inputs "
                            f"are {list(self.names)}).")

    @staticmethod
    def _check_shape(spec: FeedSpec, shape: tuple[int, ...], symbols: dict[str, tuple[int, str]]) -> None:
        dims = spec.dims or ()
        if len(shape) != len(dims):
            raise DispatchError(f"Input '{spec.name}' has {len(shape)} dimensions (shape {tuple(shape)}) but "
                                f"the model expects {len(dims)}, {spec.describe()}; reshape it to that rank.")
        for i, (d, size) in enumerate(zip(dims, shape, strict=True)):
            if isinstance(d, int):
                if size != d:
                    raise DispatchError(f"Input '{spec.name}' has shape {tuple(shape)} but the model expects "
                                        f"{spec.describe()}: dimension {i} must be {d}; resize the input.")
                continue
            if size < 1:
                raise DispatchError(f"Input '{spec.name}' has size {size} in its symbolic dimension '{d}'; "
                                    "give it at least one element.")
            if d == _ANY:
                continue
            prev = symbols.setdefault(d, (size, spec.name))
            if prev[0] != size:
                raise DispatchError(f"Inputs '{prev[1]}' and '{spec.name}' give the symbolic dimension '{d}' "
                                    f"the sizes {prev[0]} and {size}; feed arrays that agree on it.")


def check_feeds(model: Graph | onnx.ModelProto | Sequence[FeedSpec],
                feeds: Mapping[str, np.ndarray]) -> tuple[tuple[int, ...], ...]:
    """Check names (missing, unexpected), dtypes and shapes (fixed dims exact, symbolic dims any size but
    consistent); raise DispatchError naming the input. Returns the feeds' shapes in input order.

    A Graph from `dispatch.load` has its symbolic dims bound; pass the original ModelProto to allow any size.
    """
    specs = feed_specs(model) if isinstance(model, (Graph, onnx.ModelProto)) else model
    return FeedChecker(specs).check(feeds)


# -- generated feeds ------------------------------------------------------------------------------------
_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Slice"}


def _index_bound(graph: Graph, name: str, depth: int = 0) -> int | None:
    """The smallest table size among Gather nodes that use `name` (maybe reshaped or cast) as indices."""
    v = graph.values[name]
    bounds = []
    for c in v.consumers:
        if c.op_type in ("Gather", "GatherElements") and c.input(1) is v:
            data = c.input(0)
            axis = int(c.attr("axis", 0))
            if data is not None and data.shape is not None and data.shape[axis] > 0:
                bounds.append(data.shape[axis])
        elif c.op_type in _PASS_THROUGH and c.input(0) is v and depth < 8:
            b = _index_bound(graph, c.outputs[0].name, depth + 1)
            if b is not None:
                bounds.append(b)
    return min(bounds) if bounds else None


def container_advice(spec: FeedSpec) -> str | None:
    """The sentence for an input that neither a generated feed nor an .npz can give (a sequence, a map, an
    optional), saying what can be done; None for a plain tensor."""
    if spec.kind == "tensor" and not spec.optional:
        return None
    dt = spec.dtype.name if spec.dtype is not None else "tensor"
    what, example = {"sequence": (f"sequence of {dt} arrays", "[np.array(...), ...]"),
                     "tensor": (f"optional {dt} tensor", "None or np.array(...)")}.get(
        spec.kind, ("map or other non-tensor value", "the value onnxruntime takes for it"))
    if spec.optional and spec.kind != "tensor":
        what = f"optional {what}"
    article = "an" if what[0] in "aeiou" else "a"
    return (f"Input '{spec.name}' is {article} {what}, which the command line can neither generate nor read "
            f"from an .npz; run the model from Python: "
            f"Dispatcher(model).run({{'{spec.name}': {example}, ...}}).")


def generate_feeds(graph: Graph, seed: int = 0, *, int_high: int = 2,
                   max_memory: int | str | None = None) -> dict[str, np.ndarray]:
    """Random feeds for every input of `graph` (unknown dims taken as 1, declared zero-size dims kept), each
    an ndarray of the input's dtype and rank (rank 0 included: a 0-d array, never a NumPy scalar, which
    onnxruntime refuses). A feed larger than `max_memory` (dispatch.budget) is refused before it is made.

    Floats (float16/32/64, and bfloat16 or float8 through ml_dtypes): standard normal, cast. Integers used as
    Gather indices (embedding ids): uniform in [0, table size); other integers: uniform in [0, int_high)
    (0/1 suits masks and segment ids), within the dtype's range. Bools: fair coin.
    """
    from dispatch.budget import check_bytes, resolve_budget

    budget = resolve_budget(max_memory)
    for spec in feed_specs(graph):
        advice = container_advice(spec)
        if advice is not None:
            raise DispatchError(advice)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        if v.dtype is None:
            raise DispatchError(f"Input '{v.name}' has no declared dtype, so no feed can be generated; "
                                "pass the inputs with --inputs PATH.npz.")
        shape = tuple(d if d >= 0 else 1 for d in v.shape) if v.shape is not None else ()
        check_bytes(f"The generated feed for input '{v.name}'", v.dtype, shape, budget)
        if v.dtype == np.bool_:
            x = rng.random(shape) < 0.5
        elif np.issubdtype(v.dtype, np.integer):
            high = min(_index_bound(graph, v.name) or int_high, int(np.iinfo(v.dtype).max) + 1)
            x = rng.integers(0, high, size=shape)
        elif np.issubdtype(v.dtype, np.floating) or v.dtype.name.startswith(("bfloat16", "float8")):
            x = rng.standard_normal(shape)
        else:
            raise DispatchError(f"Input '{v.name}' has dtype {v.dtype}, for which no feed can be generated; "
                                "pass the inputs with --inputs PATH.npz.")
        feeds[v.name] = np.asarray(x).astype(v.dtype).reshape(shape)
    return feeds


# -- comparison -------------------------------------------------------------------------------------------
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

"""Feeds: what each graph input declares (`FeedSpec`), checking given feeds against it (`check_feeds`: one
sentence naming the input and what to do, `DispatchError`) and generating seeded feeds for a graph.

Split out of ``validate.py``, which compares outputs with onnxruntime and re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from dispatch.errors import DispatchError
from dispatch.ir import Graph, numpy_dtype

__all__ = ["FeedSpec", "FeedChecker", "feed_specs", "check_feeds", "container_advice", "generate_feeds"]

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

"""The graph the rest of the tool walks: Values with dtype, static shape and constant data; Nodes in order."""

from __future__ import annotations

import gc
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from dispatch.errors import DispatchError

__all__ = ["Value", "Node", "Graph", "numpy_dtype", "gc_paused", "external_placeholder", "outer_scope_reads",
           "SHARED_MIN_BYTES"]

# Initializers at least this large live only in Value.const; Graph.model keeps a typed placeholder for them.
SHARED_MIN_BYTES = 4096


def numpy_dtype(elem_type: int) -> np.dtype | None:
    """NumPy dtype of an ONNX TensorProto element type (None when undefined)."""
    if not elem_type:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(eq=False)
class Value:
    """A tensor: static shape (None: unknown rank, -1: unknown dim), dtype, and its data if constant."""

    name: str
    dtype: np.dtype | None = None
    shape: tuple[int, ...] | None = None
    const: np.ndarray | None = None
    producer: Node | None = None
    consumers: list[Node] = field(default_factory=list)
    is_graph_input: bool = False
    is_graph_output: bool = False

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def static(self) -> bool:
        """True when every dimension is known."""
        shape = self.shape
        return shape is not None and (not shape or min(shape) >= 0)

    @property
    def size(self) -> int:
        """Number of elements (0 when the shape is not static)."""
        return math.prod(self.shape) if self.static else 0  # type: ignore[arg-type]

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize if self.dtype is not None else 0

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.dtype}, {self.shape})"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: building ~10^5 linked objects otherwise triggers repeated full
    collections that double the time to build a large graph. The previous state is restored."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_EMPTY = Value("")  # stands for an omitted optional input


def _attr_value(a: onnx.AttributeProto) -> Any:
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode() for s in v]
    if isinstance(v, onnx.TensorProto):
        return onnx.numpy_helper.to_array(v)
    return v


_PLAIN = {onnx.TensorProto.FLOAT: np.dtype(np.float32), onnx.TensorProto.DOUBLE: np.dtype(np.float64),
          onnx.TensorProto.FLOAT16: np.dtype(np.float16), onnx.TensorProto.BOOL: np.dtype(np.bool_),
          **{getattr(onnx.TensorProto, t.upper()): np.dtype(t)
             for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}}


def _tensor_array(t: onnx.TensorProto) -> np.ndarray:
    """numpy_helper.to_array, with a fast path for little-endian raw data of plain types (read-only view)."""
    dtype = _PLAIN.get(t.data_type)
    if dtype is not None and sys.byteorder == "little" and t.HasField("raw_data") \
            and t.data_location != onnx.TensorProto.EXTERNAL:
        return np.frombuffer(t.raw_data, dtype=dtype).reshape(tuple(t.dims))
    return onnx.numpy_helper.to_array(t)


def external_placeholder(name: str, arr: np.ndarray) -> onnx.TensorProto:
    """An initializer with the right type and dims whose data lives outside the model (in memory).

    onnxruntime accepts it when the data comes through `SessionOptions.add_external_initializers`.
    """
    t = onnx.TensorProto()
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.dims.extend(arr.shape)
    t.data_location = onnx.TensorProto.EXTERNAL
    loc = t.external_data.add()
    loc.key, loc.value = "location", f"memory/{name}"
    return t


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def _graph_reads(g: onnx.GraphProto) -> dict[str, None]:
    """Names a subgraph reads that it does not define (its inputs, initializers and node outputs), in order of
    first use, nested subgraphs included."""
    defined = {i.name for i in g.input} | {i.name for i in g.initializer} | \
        {i.name for i in g.sparse_initializer} | {o for n in g.node for o in n.output} | {""}
    used: dict[str, None] = {}
    for n in g.node:
        used.update(dict.fromkeys(n.input))
        for sub in _subgraphs(n):
            used.update(_graph_reads(sub))
    return {name: None for name in used if name not in defined}


def outer_scope_reads(node: onnx.NodeProto) -> list[str]:
    """Tensors of the enclosing graph that the node's subgraphs (If branches, Loop and Scan bodies) read:
    inputs the node takes without listing them. Empty for a node without subgraphs."""
    if not node.attribute:
        return []
    reads: dict[str, None] = {}
    for sub in _subgraphs(node):
        reads.update(_graph_reads(sub))
    return list(reads)


class _Values(dict):
    """name -> Value, creating the Value on first lookup (used only while a Graph is built)."""

    def __missing__(self, name: str) -> Value:
        v = self[name] = Value(name)
        return v


@dataclass(eq=False)
class Node:
    """One operator. Inputs are positional (None where an optional input is omitted).

    `implicit_inputs`: the outer-scope tensors an If, Loop or Scan reads inside its subgraphs. They are
    inputs like the others wherever the node's data flow matters (present_inputs, predecessors, the Values'
    consumers, hence the partitioner's transfers and segment inputs), but have no position in `inputs`.
    """

    name: str
    op_type: str
    domain: str
    inputs: tuple[Value | None, ...]
    outputs: tuple[Value, ...]
    attrs: dict[str, Any]
    index: int  # position in the graph's topological order
    proto: onnx.NodeProto
    implicit_inputs: tuple[Value, ...] = ()
    opset: int = 0  # the version of its domain the model imports (0: not known)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, i: int) -> Value | None:
        """The i-th input, or None when it is absent or omitted."""
        return self.inputs[i] if i < len(self.inputs) else None

    @property
    def present_inputs(self) -> list[Value]:
        """The inputs given, then the implicit (outer-scope) ones not among them."""
        present = [v for v in self.inputs if v is not None]
        if self.implicit_inputs:
            present += [v for v in self.implicit_inputs if v not in present]
        return present

    @property
    def predecessors(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for v in self.present_inputs:
            if v.producer is not None:
                seen.setdefault(v.producer.index, v.producer)
        return list(seen.values())

    @property
    def successors(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for v in self.outputs:
            for c in v.consumers:
                seen.setdefault(c.index, c)
        return list(seen.values())

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op_type})"


class Graph:
    """A model's main graph in topological order, with Values linked to producers and consumers.

    `model` is the ModelProto after shape inference and constant folding; node names are unique.
    """

    def __init__(self, model: onnx.ModelProto, *, name: str = "", path: str | None = None,
                 opset: int = 0, notes: Sequence[str] = ()) -> None:
        self.model = model
        self.name = name or model.graph.name or "model"
        self.path = path
        self.opset = opset
        self.notes = list(notes)
        self.values: dict[str, Value] = _Values()
        self.nodes: list[Node] = []
        with gc_paused():
            self._build()
        self.values = dict(self.values)  # a plain dict: looking up a missing name must raise KeyError
        self.weights = self._move_weights_out()

    def _move_weights_out(self) -> dict[str, np.ndarray]:
        """Keep each large weight once, in Value.const: Graph.model gets a placeholder instead of the data.

        Sessions get the arrays through `weights` (see `session_options_with_weights`); `full_model()`
        re-embeds them for writing a file.
        """
        moved: dict[str, np.ndarray] = {}
        inits = self.model.graph.initializer
        for i, t in enumerate(inits):
            arr = self.values[t.name].const
            if arr is None or arr.dtype == object or arr.nbytes < SHARED_MIN_BYTES:
                continue
            moved[t.name] = np.asarray(arr, order="C")  # ascontiguousarray would make a scalar 1-D
            self.values[t.name].const = moved[t.name]
            inits[i].CopyFrom(external_placeholder(t.name, arr))
        if moved:
            # protobuf (upb) frees a message's memory only with the whole message: re-read the now small
            # model into a fresh one and point the nodes at it, so the old one, weights included, is freed.
            self.model = onnx.ModelProto.FromString(self.model.SerializeToString())
            for node, proto in zip(self.nodes, self.model.graph.node, strict=True):
                node.proto = proto
        return moved

    def full_model(self) -> onnx.ModelProto:
        """A self-contained copy of `model`, the weights embedded again (for saving to a file)."""
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        for i, t in enumerate(m.graph.initializer):
            if t.name in self.weights:
                m.graph.initializer[i].CopyFrom(onnx.numpy_helper.from_array(self.weights[t.name], t.name))
        return m

    def session_options_with_weights(self, options: Any = None) -> tuple[Any, list[Any]]:
        """onnxruntime SessionOptions that hand the moved-out weights to a session of `model`, without copies.

        Returns (options, values): the session reads the buffers of `values`, so keep them alive with it.
        """
        import onnxruntime as ort

        so = options if options is not None else ort.SessionOptions()
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.weights.values()]
        if values:
            so.add_external_initializers(list(self.weights), values)
        return so, values

    # -- construction ---------------------------------------------------------------------------
    def _value(self, name: str) -> Value:
        return self.values[name]  # created on first use (_Values.__missing__)

    def _build(self) -> None:
        g = self.model.graph
        dtypes: dict[int, np.dtype | None] = {}
        for vi in (*g.input, *g.value_info, *g.output):
            v = self._value(vi.name)
            if vi.type.HasField("tensor_type"):
                t = vi.type.tensor_type
                et = t.elem_type
                if et not in dtypes:
                    dtypes[et] = numpy_dtype(et)
                v.dtype = dtypes[et] or v.dtype
                if t.HasField("shape"):
                    v.shape = tuple([d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim])
        for init in g.initializer:
            v = self._value(init.name)
            try:
                v.const = _tensor_array(init)
            except (ValueError, TypeError) as e:  # data that does not match the declared dims or type
                raise DispatchError(f"Initializer '{init.name}' cannot be read ({e}); re-export the model.") \
                    from None
            v.dtype, v.shape = v.const.dtype, tuple(v.const.shape)
        init_names = {i.name for i in g.initializer}
        for vi in g.input:
            if vi.name not in init_names:
                self.values[vi.name].is_graph_input = True
        for vi in g.output:
            self.values[vi.name].is_graph_output = True

        used_names: set[str] = set()
        values = self.values
        opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in self.model.opset_import}
        for i, p in enumerate(g.node):
            name = p.name or f"{p.op_type}_{i}"
            if name in used_names:
                name = f"{name}_{i}"
            if name != p.name:
                p.name = name  # names are unique and written into the protos
            used_names.add(name)
            ins = tuple([values[n] if n else None for n in p.input])
            outs = tuple([values[n] for n in p.output if n])
            implicit = tuple([values[n] for n in outer_scope_reads(p)]) if p.attribute else ()
            node = Node(name, p.op_type, p.domain, ins, outs,
                        {a.name: _attr_value(a) for a in p.attribute} if p.attribute else {}, i, p, implicit)
            node.opset = opsets.get("" if p.domain == "ai.onnx" else p.domain, 0)
            for v in node.present_inputs:
                v.consumers.append(node)
            for v in outs:
                v.producer = node
            self.nodes.append(node)
        self.by_name = {n.name: n for n in self.nodes}

    # -- queries --------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[Value]:
        """Graph inputs that are fed at run time (initializers excluded)."""
        return [self.values[vi.name] for vi in self.model.graph.input if self.values[vi.name].is_graph_input]

    @property
    def outputs(self) -> list[Value]:
        return [self.values[vi.name] for vi in self.model.graph.output]

    def node(self, name: str) -> Node:
        try:
            return self.by_name[name]
        except KeyError:
            raise DispatchError(f"The model has no node named {name!r}; node names are listed by "
                                "'python -m dispatch MODEL --ops all'.") from None

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def param_bytes(self) -> int:
        return sum(i.nbytes for i in self.values.values() if i.is_const and i.producer is None)

    @property
    def num_params(self) -> int:
        return sum(i.size for i in self.values.values() if i.is_const and i.producer is None)

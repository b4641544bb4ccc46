"""Load an ONNX model into a Graph: read safely, check, bind symbolic dims, infer shapes, fold constants."""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import helper, numpy_helper

from dispatch.attributes import check_attributes
from dispatch.budget import MAX_DIM, check_declared, check_inferred, resolve_budget
from dispatch.consistency import check_reshape_and_bias, infer_consistent
from dispatch.errors import DispatchError
from dispatch.fold import fold_constants
from dispatch.ir import Graph, gc_paused, outer_scope_reads
from dispatch.opset import KNOWN_DOMAINS, MAX_OPSET, MIN_OPSET, check_opset

__all__ = ["load", "load_model_proto", "MIN_OPSET", "MAX_OPSET", "KNOWN_DOMAINS", "parse_shapes"]

# Initializers larger than this go to onnx.checker and shape inference as typed inputs without their data:
# serialising the weights is what makes those calls slow, and impossible past protobuf's 2 GiB limit.
_LIGHT_MAX_ELEMENTS = 1024


# -- reading ------------------------------------------------------------------------------------------
def _zoo_hint() -> str:
    try:
        from models import list_models

        return ", ".join(list_models())
    except Exception:  # the zoo is optional (it needs torch)
        return "see 'python -m models list'"


def load_model_proto(source: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """Read a model from a path (external data confined to its folder), a zoo name, or a ModelProto."""
    if isinstance(source, onnx.ModelProto):
        return source, None
    if not isinstance(source, (str, os.PathLike)):
        raise DispatchError(f"The model must be a .onnx path, a zoo model name or an onnx.ModelProto, not "
                            f"{type(source).__name__}; pass one of those.")
    path = Path(source)
    if not path.exists():
        try:
            from models import build, is_zoo_name
        except ImportError:
            is_zoo_name = None
        if is_zoo_name is not None and is_zoo_name(str(source)):
            path = build(str(source))
        else:
            raise DispatchError(f"Model file '{source}' does not exist; give the path of an .onnx file "
                                f"or a zoo model name ({_zoo_hint()}).")
    if path.is_dir():
        raise DispatchError(f"'{path}' is a directory; give the path of the .onnx file inside it.")
    if path.stat().st_size == 0:
        raise DispatchError(f"'{path}' is empty (0 bytes); re-export or re-download the model.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, TypeError) as e:
        raise DispatchError(f"'{path}' is not a readable ONNX model ({type(e).__name__}); check that the "
                            "file is an .onnx model and was not truncated.") from None
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise DispatchError(f"'{path}' is not an ONNX model (no IR version or no graph nodes); check that "
                            "the file is an .onnx model and was not truncated.")
    _check_strings(model, f"'{path}'")
    _load_external_data(model, path.parent)
    return model, str(path)


def _check_strings(message: Message, where: str) -> None:
    """Check every string field is UTF-8 (protobuf does not check proto2 strings when parsing), so that a
    corrupt name fails here as one sentence, not later as UnicodeDecodeError. Bytes fields (tensor data)
    are not touched."""
    for field in message.DESCRIPTOR.fields:
        if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if not repeated and field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_STRING:
            # upb hands back the raw bytes of a string that is not UTF-8 (assigning them elsewhere raises)
            if any(isinstance(v, bytes) for v in (value if repeated else [value])):
                raise DispatchError(f"{where} holds a {field.name} that is not valid UTF-8; the file is "
                                    "corrupt: re-export the model.")
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if repeated else [value]):
                _check_strings(item, where)


def _load_external_data(model: onnx.ModelProto, base: Path) -> None:
    tensors = [t for t in onnx.external_data_helper._get_all_tensors(model)
               if t.data_location == onnx.TensorProto.EXTERNAL]
    if not tensors:
        return
    root = base.resolve()
    for t in tensors:
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (root / loc).resolve()
        if not loc or os.path.isabs(loc) or os.path.commonpath([root, target]) != str(root):
            raise DispatchError(f"Initializer '{t.name}' points to external data '{loc}' outside the model's "
                                f"folder '{root}'; move the data file next to the model.")
        if not target.is_file():
            raise DispatchError(f"Initializer '{t.name}' needs the external data file '{loc}', which is "
                                f"missing from '{root}'; copy it next to the model.")
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(root))
    except (OSError, ValueError) as e:
        raise DispatchError(f"External data of the model in '{root}' could not be read ({e}); "
                            "re-save the model with its data files.") from None


# -- structure checks -----------------------------------------------------------------------------------
def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Name every node uniquely, check every input has a source, and sort topologically (Kahn)."""
    nodes = graph.node
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    names: set[str] = set()
    seen = set(available)
    ordered = True  # most models are sorted already: one pass checks it
    for i, n in enumerate(nodes):
        name = n.name
        if not name or name in names:
            n.name = name = f"{name or n.op_type}_{i}"
        names.add(name)
        if ordered:
            ordered = all(x in seen for x in n.input) and \
                (not n.attribute or all(x in seen for x in outer_scope_reads(n)))
            seen.update(n.output)
    if ordered:
        return
    inputs: list[Sequence[str]] = []
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        ins = list(n.input)
        ins += outer_scope_reads(n)  # If/Loop/Scan bodies: hidden dependencies
        inputs.append(ins if len(ins) == len(set(ins)) else list(dict.fromkeys(ins)))
        producer.update(dict.fromkeys(n.output, i))
    indeg = [0] * len(nodes)
    users: list[list[int]] = [[] for _ in nodes]
    for i, ins in enumerate(inputs):
        for name in ins:
            if name in available:
                continue
            p = producer.get(name)
            if p is None:
                raise DispatchError(f"Input '{name}' of node '{nodes[i].name}' is produced by no node and is "
                                    "neither a graph input nor an initializer; fix the model's wiring.")
            indeg[i] += 1
            users[p].append(i)
    order = [i for i, d in enumerate(indeg) if d == 0]
    for i in order:  # order grows while we walk it
        for j in users[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                order.append(j)
    if len(order) != len(nodes):
        stuck = next(nodes[i].name for i, d in enumerate(indeg) if d > 0)
        raise DispatchError(f"The graph has a cycle through node '{stuck}'; an ONNX graph must be acyclic, "
                            "so re-export the model.")
    if any(i != j for i, j in enumerate(order)):
        copies = [onnx.NodeProto() for _ in order]
        for c, i in zip(copies, order, strict=True):
            c.CopyFrom(nodes[i])
        del graph.node[:]
        graph.node.extend(copies)


def _densify_sparse(graph: onnx.GraphProto, budget: int) -> None:
    """Sparse initializers become dense ones (onnxruntime densifies them too), so that every node reading
    one finds its value; each is checked against the memory budget before it is expanded."""
    from dispatch.budget import check_bytes

    if not len(graph.sparse_initializer):
        return
    dense = []
    for sp in graph.sparse_initializer:
        name, dims = sp.values.name, tuple(sp.dims)
        values = numpy_helper.to_array(sp.values).reshape(-1)
        indices = numpy_helper.to_array(sp.indices).astype(np.int64)
        check_bytes(f"Sparse initializer '{name}'", values.dtype, dims, budget, "densify it smaller")
        size = math.prod(dims)
        flat = indices.reshape(-1)
        if indices.ndim == 2 and indices.size:  # (NNZ, rank) coordinates rather than linear indices
            flat = np.ravel_multi_index(tuple(indices.T), dims, mode="raise")
        if flat.shape != values.shape or (flat.size and (flat.min() < 0 or flat.max() >= size)):
            raise DispatchError(f"Sparse initializer '{name}' has {values.size} values but indices that do "
                                f"not fit them or its shape {list(dims)}; re-export the model.")
        out = np.zeros(size, dtype=values.dtype)
        out[flat] = values
        dense.append(numpy_helper.from_array(out.reshape(dims), name))
    del graph.sparse_initializer[:]
    graph.initializer.extend(dense)


def _drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    """Initializers also listed as graph inputs (IR < 4 style) are constants, not feeds."""
    inits = {i.name for i in graph.initializer}
    if any(i.name in inits for i in graph.input):
        keep = [i for i in graph.input if i.name not in inits]
        del graph.input[:]
        graph.input.extend(keep)


# -- symbolic dimensions --------------------------------------------------------------------------------
def parse_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse CLI bindings 'NAME=1x3x224x224' (an input's whole shape) or 'SYMBOL=8' (one symbolic dim)."""
    out: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x")) if sep and name else ()
        except ValueError:
            shape = ()
        if not shape or any(d <= 0 or d > MAX_DIM for d in shape):
            raise DispatchError(f"Cannot read the shape binding '{item}'; write NAME=1x3x224x224 for an "
                                "input or SYMBOL=8 for a symbolic dimension, with positive integers.")
        if out.get(name, shape) != shape:
            raise DispatchError(f"'{name}' is bound twice, to {'x'.join(map(str, out[name]))} and "
                                f"{'x'.join(map(str, shape))}; give it one shape.")
        out[name] = shape
    return out


def _dims_of(key: str, val: object) -> tuple[int, ...]:
    """A binding's sizes as positive ints: one int (a symbol) or a sequence of ints (an input's shape)."""
    items = (val,) if isinstance(val, numbers.Integral) or not isinstance(val, Sequence) else tuple(val)
    if isinstance(val, str) or not items or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and 0 < int(d) <= MAX_DIM
            for d in items):
        raise DispatchError(f"The shape binding for '{key}' is {val!r}, but sizes must be positive integers; "
                            "write NAME=1x3x224x224 for an input or SYMBOL=8 for a symbolic dimension.")
    return tuple(int(d) for d in items)


def _bind_dims(graph: onnx.GraphProto, shapes: Mapping[str, Sequence[int] | int]) -> list[str]:
    """Fix every symbolic input dimension: by input name, by symbol, or to 1 (with a note)."""
    inputs = {i.name: i for i in graph.input}
    symbols = {d.dim_param for i in graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
    for key in shapes:
        if key not in inputs and key not in symbols:
            raise DispatchError(f"The shape binding names '{key}', which is neither a model input nor a "
                                f"symbolic dimension; inputs are {sorted(inputs)} and symbols "
                                f"{sorted(symbols)}.")
    by_symbol: dict[str, int] = {}
    for key, val in shapes.items():
        dims = _dims_of(key, val)
        if key in inputs:
            ttype = inputs[key].type.tensor_type
            if not ttype.HasField("shape"):  # unknown rank: the binding gives it
                for size in dims:
                    ttype.shape.dim.add().dim_value = size
                continue
            tdims = ttype.shape.dim
            if len(tdims) != len(dims):
                raise DispatchError(f"The shape binding for input '{key}' gives {len(dims)} dimensions but "
                                    f"the model declares {len(tdims)}; give one size per dimension.")
            for d, size in zip(tdims, dims, strict=True):
                if d.HasField("dim_value") and d.dim_value != size:
                    raise DispatchError(f"The shape binding for input '{key}' sets a dimension to {size}, "
                                        f"but the model fixes it at {d.dim_value}; bind only symbolic "
                                        "dimensions.")
                if d.dim_param:
                    prev = by_symbol.setdefault(d.dim_param, size)
                    if prev != size:
                        raise DispatchError(f"Symbolic dimension '{d.dim_param}' is bound to both {prev} and "
                                            f"{size}; give it one size.")
                elif not d.HasField("dim_value"):
                    d.dim_value = size
        else:
            if len(dims) != 1:
                raise DispatchError(f"Symbol '{key}' is one dimension; bind it as {key}=N.")
            prev = by_symbol.setdefault(key, dims[0])
            if prev != dims[0]:
                raise DispatchError(f"Symbolic dimension '{key}' is bound to both {prev} and {dims[0]}; "
                                    "give it one size.")
    notes: list[str] = []
    defaulted: set[str] = set()
    for i in graph.input:
        for k, d in enumerate(i.type.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                continue
            sym = d.dim_param or f"{i.name}[{k}]"
            size = by_symbol.get(sym)
            if size is None:
                size = 1
                defaulted.add(sym)
            d.Clear()
            d.dim_value = size
    if defaulted:
        notes.append(f"symbolic dimension(s) {', '.join(sorted(defaulted))} set to 1; bind them with "
                     "--shape NAME=SIZE")
    return notes


# -- checker, shape inference and constant folding -------------------------------------------------------
def _light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large initializers as typed graph inputs (no data), for checker and inference."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g, lg = model.graph, light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    lg.sparse_initializer.extend(g.sparse_initializer)
    for t in g.initializer:
        if math.prod(t.dims) <= _LIGHT_MAX_ELEMENTS:
            lg.initializer.append(t)
        else:
            lg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def _check(light: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(light)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise DispatchError(f"The model fails onnx.checker ({first}); fix or re-export the model.") from None
    except UnicodeDecodeError as e:  # a name or op type whose bytes are not UTF-8 (a corrupt file)
        raise DispatchError(f"The model holds a string that is not valid UTF-8 ({e.reason} at byte "
                            f"{e.start}); the file is corrupt: re-export the model.") from None
    for v in (*light.graph.input, *light.graph.output):  # onnx.checker lets a negative size through
        if v.type.WhichOneof("value") != "tensor_type":
            continue
        dims = [d.dim_value for d in v.type.tensor_type.shape.dim]
        if any(d.HasField("dim_value") and d.dim_value < 0 for d in v.type.tensor_type.shape.dim):
            raise DispatchError(f"The model declares {v.name!r} with shape {dims}, and a size cannot be "
                                "negative; fix the declaration or leave that dimension symbolic.")


def _check_inferred_sizes(light: onnx.ModelProto, budget: int) -> None:
    """Shape inference without data propagation (which materialises values; see dispatch/budget.py), strict
    first to refuse contradicting shapes (dispatch/consistency.py), then every tensor of static shape checked
    against the budget."""
    try:
        inferred = infer_consistent(light)  # DispatchError when declared shapes contradict each other
    except (onnx.shape_inference.InferenceError, RuntimeError):
        return  # the inference with data propagation reports it
    check_inferred(inferred.graph, budget)


def _infer(model: onnx.ModelProto, light: onnx.ModelProto | None = None) -> None:
    """Run onnx shape inference with data propagation (strict first: dispatch/consistency.py); write the
    inferred value_info and outputs to model."""
    try:
        inferred = infer_consistent(light if light is not None else _light_copy(model), data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DispatchError(f"Shape inference failed ({first}); check the shape bindings (--shape or "
                            "shapes=).") from None
    g = model.graph
    del g.value_info[:]
    g.value_info.extend(inferred.graph.value_info)
    del g.output[:]
    g.output.extend(inferred.graph.output)
    if _same_shape_fallback(g):  # each round reaches one more op of a chain of them
        _infer(model)


# Operators whose output 0 has input 0's type and shape but for which onnx's shape inference (1.23) infers
# nothing (they are defined as functions); without this, every shape after them would be unknown.
_SAME_SHAPE = {"GroupNormalization", "MeanVarianceNormalization"}


def _same_shape_fallback(g: onnx.GraphProto) -> bool:
    """Give the outputs of _SAME_SHAPE ops their input's type when inference left them without a shape."""
    nodes = [n for n in g.node if n.op_type in _SAME_SHAPE and n.domain in ("", "ai.onnx")]
    if not nodes:
        return False
    info = {vi.name: vi for vi in (*g.input, *g.value_info, *g.output)}
    outputs = {o.name: o for o in g.output}
    changed = False
    for n in nodes:
        src, dst = info.get(n.input[0]), info.get(n.output[0])
        if src is None or not src.type.tensor_type.HasField("shape") or \
                (dst is not None and dst.type.tensor_type.HasField("shape")):
            continue
        vi = outputs.get(n.output[0]) or g.value_info.add()
        vi.type.CopyFrom(src.type)
        vi.name = n.output[0]
        changed = True
    return changed


class _Stopwatch:
    """Records the seconds each stage took into a caller's dict (or nowhere)."""

    def __init__(self, out: dict[str, float] | None) -> None:
        self.out, self.t = out, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        if self.out is not None:
            self.out[stage] = self.out.get(stage, 0.0) + now - self.t
        self.t = now


def load(source: str | os.PathLike | onnx.ModelProto,
         shapes: Mapping[str, Sequence[int] | int] | None = None, *,
         timings: dict[str, float] | None = None, max_memory: int | str | None = None) -> Graph:
    """Load, check, bind symbolic dimensions, infer shapes and fold constants; return the Graph.

    `timings`, when given, receives the seconds spent per stage: read (parse the file, external data),
    sort (opset and domain checks, topological sort, shape bindings), check (onnx.checker on the model
    without its large weights), infer (onnx shape inference), fold (constant folding), graph (the IR).
    A ModelProto passed in is not modified. `max_memory` (bytes or a size like '4G'; default half of the
    available memory) bounds every tensor: one that would exceed it is refused before it is allocated
    (dispatch/budget.py).
    """
    budget = resolve_budget(max_memory)
    with gc_paused():
        return _load(source, shapes, _Stopwatch(timings), budget)


def _load(source: str | os.PathLike | onnx.ModelProto, shapes: Mapping[str, Sequence[int] | int] | None,
          clock: _Stopwatch, budget: int) -> Graph:
    proto, path = load_model_proto(source)
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(proto)
    else:
        model = proto  # freshly read: ours to change
    clock("read")
    try:
        _densify_sparse(model.graph, budget)
    except ValueError as e:  # ravel_multi_index: a coordinate outside the shape
        raise DispatchError(f"A sparse initializer has an index outside its shape ({e}); re-export the "
                            "model.") from None
    _drop_initializer_inputs(model.graph)
    if model.ir_version < 4:
        model.ir_version = 4  # initializers are no longer inputs, as IR 4 allows
    model, opset, notes = check_opset(model)  # opsets below 7 come back upgraded (a new model)
    g = model.graph
    _sort_nodes(g)
    notes += _bind_dims(g, shapes or {})
    check_declared(model, budget)
    clock("sort")
    light = _light_copy(model)
    _check(light)
    clock("check")
    _check_inferred_sizes(light, budget)
    _infer(model, light)
    check_attributes(model.graph)
    clock("infer")
    fp_events: set[str] = set()  # NumPy's floating-point warnings while folding, reported as a note instead
    with np.errstate(divide="call", over="call", invalid="call", under="ignore",
                     call=lambda kind, _flag: fp_events.add(kind)):
        # Fold, re-infer, fold again until nothing new becomes static: a chain of shape computations
        # (Swin's Shape -> Gather -> Mod -> Pad per block) needs one round per link. It ends: a round that
        # asks for another folded (and deleted) at least one node.
        while fold_constants(model, opset):
            clock("fold")
            _infer(model)
            clock("infer")
        clock("fold")
    if fp_events:
        notes.append(f"constant folding met NumPy's {', '.join(sorted(fp_events))} (log(0), 0/0 ...); the "
                     "folded values keep the IEEE results (inf, NaN), as onnxruntime computes them")
    check_reshape_and_bias(model.graph)
    check_inferred(model.graph, budget)
    name = Path(path).stem if path else (model.graph.name or "model")
    graph = Graph(model, name=name, path=path, opset=opset, notes=notes)
    clock("graph")
    return graph

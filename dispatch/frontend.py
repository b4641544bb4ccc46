"""Load an ONNX model into a Graph: read safely, check, bind symbolic dims, infer shapes, fold constants."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from dispatch.errors import DispatchError
from dispatch.ir import Graph

__all__ = ["load", "load_model_proto", "MIN_OPSET", "MAX_OPSET", "KNOWN_DOMAINS", "parse_shapes"]

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
# Domains whose operators onnx or onnxruntime define; anything else has no implementation to run.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
# Operators never folded: their value is not a function of their inputs, or they hold subgraphs.
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty", "Optional"}
_FOLD_MAX_ELEMENTS = 1 << 24  # do not materialise constants larger than this (64 MiB of fp32)


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
        raise DispatchError(f"'{path}' is not a readable ONNX model ({type(e).__name__}); check that the file "
                            "is an .onnx model and was not truncated.") from None
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise DispatchError(f"'{path}' is not an ONNX model (no IR version or no graph nodes); check that "
                            "the file is an .onnx model and was not truncated.")
    _load_external_data(model, path.parent)
    return model, str(path)


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
def _check_opset(model: onnx.ModelProto) -> int:
    opset = 0
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    if not opset:
        raise DispatchError("The model imports no default ONNX opset; re-export it with an opset "
                            f"between {MIN_OPSET} and {MAX_OPSET}.")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise DispatchError(f"The model uses opset {opset}, but only opsets {MIN_OPSET} to {MAX_OPSET} are "
                            "supported; convert it with onnx.version_converter.")
    for n in model.graph.node:
        if n.domain not in KNOWN_DOMAINS:
            raise DispatchError(f"Node '{n.name or n.op_type}' uses operator '{n.op_type}' of unknown domain "
                                f"'{n.domain}'; only the domains {sorted(KNOWN_DOMAINS)} can be run, so "
                                "replace the custom operator before dispatching.")
    return opset


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Name every node uniquely, check every input has a source, and sort topologically (Kahn)."""
    names: set[str] = set()
    for i, n in enumerate(graph.node):
        if not n.name or n.name in names:
            n.name = f"{n.name or n.op_type}_{i}"
        names.add(n.name)
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    producer: dict[str, int] = {}
    for i, n in enumerate(graph.node):
        for o in n.output:
            producer[o] = i
    indeg = [0] * len(graph.node)
    users: list[list[int]] = [[] for _ in graph.node]
    for i, n in enumerate(graph.node):
        for name in set(n.input):
            if name in available:
                continue
            if name not in producer:
                raise DispatchError(f"Input '{name}' of node '{n.name}' is produced by no node and is neither a "
                                    "graph input nor an initializer; fix the model's wiring.")
            indeg[i] += 1
            users[producer[name]].append(i)
    order = [i for i, d in enumerate(indeg) if d == 0]
    for i in order:  # order grows while we walk it
        for j in users[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                order.append(j)
    if len(order) != len(graph.node):
        stuck = next(graph.node[i].name for i, d in enumerate(indeg) if d > 0)
        raise DispatchError(f"The graph has a cycle through node '{stuck}'; an ONNX graph must be acyclic, "
                            "so re-export the model.")
    if order != list(range(len(order))):
        nodes = [graph.node[i] for i in order]
        copies = [onnx.NodeProto() for _ in nodes]
        for c, n in zip(copies, nodes):
            c.CopyFrom(n)
        del graph.node[:]
        graph.node.extend(copies)


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
        if not shape or any(d <= 0 for d in shape):
            raise DispatchError(f"Cannot read the shape binding '{item}'; write NAME=1x3x224x224 for an input "
                                "or SYMBOL=8 for a symbolic dimension, with positive integers.")
        out[name] = shape
    return out


def _bind_dims(graph: onnx.GraphProto, shapes: Mapping[str, Sequence[int] | int]) -> list[str]:
    inputs = {i.name: i for i in graph.input}
    symbols = {d.dim_param for i in graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
    for key in shapes:
        if key not in inputs and key not in symbols:
            raise DispatchError(f"--shape names '{key}', which is neither a model input nor a symbolic "
                                f"dimension; inputs are {sorted(inputs)} and symbols {sorted(symbols)}.")
    by_symbol: dict[str, int] = {}
    for key, val in shapes.items():
        dims = (val,) if isinstance(val, int) else tuple(val)
        if key in inputs:
            tdims = inputs[key].type.tensor_type.shape.dim
            if len(tdims) != len(dims):
                raise DispatchError(f"--shape gives input '{key}' {len(dims)} dimensions but the model declares "
                                    f"{len(tdims)}; give one size per dimension.")
            for d, size in zip(tdims, dims):
                if d.HasField("dim_value") and d.dim_value != size:
                    raise DispatchError(f"--shape sets a dimension of input '{key}' to {size}, but the model fixes "
                                        f"it at {d.dim_value}; bind only symbolic dimensions.")
                if d.dim_param:
                    prev = by_symbol.setdefault(d.dim_param, size)
                    if prev != size:
                        raise DispatchError(f"Symbolic dimension '{d.dim_param}' is bound to both {prev} and "
                                            f"{size}; give it one size.")
        else:
            if len(dims) != 1:
                raise DispatchError(f"Symbol '{key}' is one dimension; bind it as {key}=N.")
            by_symbol[key] = dims[0]
    notes: list[str] = []
    defaulted: set[str] = set()
    for i in graph.input:
        for d in i.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                continue
            sym = d.dim_param or f"{i.name}[?]"
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


# -- shape inference and constant folding ---------------------------------------------------------------
def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DispatchError(f"Shape inference failed ({first}); check the input shapes given with --shape.") \
            from None


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    out = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[vi.name] = tuple(d.dim_value for d in t.shape.dim)
    return out


def _eval_node(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int) -> list[np.ndarray] | None:
    """Evaluate one node on constant inputs with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    present = [n for n in node.input if n]
    g = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(feeds[n].dtype), feeds[n].shape)
         for n in dict.fromkeys(present)],
        [helper.make_empty_tensor_value_info(o) for o in node.output if o])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    try:
        res = ReferenceEvaluator(m).run(None, {n: feeds[n] for n in present})
    except Exception:  # an op the reference runtime cannot evaluate stays in the graph
        return None
    return [np.asarray(r) for r in res]


def _fold_constants(model: onnx.ModelProto, opset: int) -> bool:
    """Replace every node whose value depends only on constants by initializers. Returns True if any."""
    g = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = _static_shapes(model)
    folded: set[int] = set()
    for idx, node in enumerate(g.node):
        if node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD:
            continue
        outs: list[np.ndarray] | None = None
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes and node.input[0] not in consts:
            shp = np.array(shapes[node.input[0]], dtype=np.int64)
            if node.op_type == "Size":
                outs = [np.array(int(np.prod(shp)), dtype=np.int64)]
            else:
                attrs = {a.name: a.i for a in node.attribute}
                outs = [shp[attrs.get("start", 0):attrs.get("end", len(shp))]]
        elif all(n in consts for n in node.input if n):
            outs = _eval_node(node, consts, opset)
        if outs is None or any(o.size > _FOLD_MAX_ELEMENTS for o in outs):
            continue
        for name, arr in zip([o for o in node.output if o], outs):
            consts[name] = arr
        folded.add(idx)
    if not folded:
        return False
    keep = [n for i, n in enumerate(g.node) if i not in folded]
    needed = {n for node in keep for n in node.input} | {o.name for o in g.output}
    produced = {o for node in keep for o in node.output}
    old_inits = {i.name for i in g.initializer}
    new_inits = [i for i in g.initializer if i.name in needed]
    for name in sorted(needed - produced - old_inits):
        if name in consts:
            new_inits.append(numpy_helper.from_array(np.asarray(consts[name]), name))
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    stale = {i.name for i in new_inits}
    vis = [v for v in g.value_info if v.name not in stale]
    del g.value_info[:]
    g.value_info.extend(vis)
    return True


def load(source: str | os.PathLike | onnx.ModelProto,
         shapes: Mapping[str, Sequence[int] | int] | None = None) -> Graph:
    """Load, check, bind symbolic dimensions, infer shapes and fold constants; return the Graph."""
    proto, path = load_model_proto(source)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    _drop_initializer_inputs(g)
    if model.ir_version < 4:
        model.ir_version = 4  # initializers are no longer inputs, as IR 4 allows
    opset = _check_opset(model)
    _sort_nodes(g)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise DispatchError(f"The model fails onnx.checker ({first}); fix or re-export the model.") from None
    notes = _bind_dims(g, shapes or {})
    model = _infer(model)
    for _ in range(4):
        if not _fold_constants(model, opset):
            break
        model = _infer(model)
    name = Path(path).stem if path else (model.graph.name or "model")
    return Graph(model, name=name, path=path, opset=opset, notes=notes)

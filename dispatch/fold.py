"""Constant folding: every node whose value depends only on constants becomes an initializer.

`fold_constants(model, opset)` runs onnx's reference evaluator once over all the constant nodes (node by node
when that fails), treats Shape/Size of a tensor of static shape as constants, and says whether shape inference
should run again (dispatch.frontend loops until nothing new becomes static).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dispatch.budget import generated_elements
from dispatch.ir import outer_scope_reads

__all__ = ["fold_constants"]

# Operators never folded: their value is not a function of their inputs, or they hold subgraphs.
# DequantizeLinear is kept so that quantized weights stay quantized (QDQ models; onnxruntime's ConstantFolding
# has the same skip_dequantize_linear rule).
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty", "Optional",
            "DequantizeLinear"}
# A folded constant larger than this (64 MiB of fp32) that is also larger than every input it is computed from
# (ConstantOfShape, Expand, Tile, Range ...) is left as a node: materialising it would only bloat the model.
_FOLD_MAX_ELEMENTS = 1 << 24
# Operators whose output size is an operand's value: folded only when that size is known before evaluating.
_SIZED_BY_OPERAND = {"ConstantOfShape", "Expand", "Tile", "Range"}

def _static_dims(vi: onnx.ValueInfoProto | None) -> tuple[int, ...] | None:
    """The value's shape when every dimension is known, else None."""
    if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
    return dims if all(d >= 0 for d in dims) else None


def _run_reference(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray],
                   opset: int) -> dict[str, np.ndarray]:
    """Evaluate nodes (in topological order) on constant feeds with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    outs = [o for n in nodes for o in n.output if o]
    g = helper.make_graph(nodes, "fold", [helper.make_empty_tensor_value_info(n) for n in feeds],
                          [helper.make_empty_tensor_value_info(o) for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return {o: np.asarray(r) for o, r in zip(outs, ReferenceEvaluator(m).run(None, feeds), strict=True)}


def _evaluate(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], opset: int) -> dict[str, np.ndarray]:
    """Outputs of the constant nodes: one reference run for all; if that fails, node by node, leaving out the
    nodes the reference runtime cannot evaluate and those that depend on them."""
    try:
        return _run_reference(nodes, feeds, opset)
    except Exception:  # noqa: BLE001 - any op the reference runtime rejects; retried one node at a time below
        pass
    values = dict(feeds)
    out: dict[str, np.ndarray] = {}
    for n in nodes:
        ins = list(dict.fromkeys(i for i in n.input if i))
        if not all(i in values for i in ins):
            continue
        try:
            res = _run_reference([n], {i: values[i] for i in ins}, opset)
        except Exception:  # noqa: BLE001 - an op the reference runtime cannot evaluate stays in the graph
            continue
        values.update(res)
        out.update(res)
    return out


def _same_shape(value: np.ndarray, vi: onnx.ValueInfoProto | None) -> bool:
    """False when shape inference gave the value a static shape that the computed array does not have (a
    scalar the evaluator returned as 1-D, say): folding it would change a rank, so the node is kept."""
    dims = _static_dims(vi)
    return dims is None or tuple(value.shape) == dims


def _shape_value(node: onnx.NodeProto, dims: tuple[int, ...]) -> np.ndarray:
    """Shape (its start/end slice clamps like Python slicing, as the spec says) or Size of a static shape."""
    shp = np.array(dims, dtype=np.int64)
    if node.op_type == "Size":
        return np.array(int(np.prod(shp)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    return shp[attrs.get("start", 0):attrs.get("end", len(shp))]


def fold_constants(model: onnx.ModelProto, opset: int) -> bool:
    """Replace every node whose value depends only on constants by initializers (Shape/Size of a tensor of
    static shape count as constants). Costs one pass over the nodes plus the work on the constant ones.

    Returns True when shape inference should run again: a kept node reads a folded value and still has an
    output of unknown shape.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    sizes: dict[str, int] = {name: math.prod(t.dims) for name, t in inits.items()}  # known constants
    info: dict[str, onnx.ValueInfoProto] = {}
    shape_values: dict[str, np.ndarray] = {}
    folded: set[int] = set()
    candidates: list[int] = []
    limit: dict[int, float] = {}  # candidate -> the size above which its output is too big to materialise
    for idx, node in enumerate(g.node):
        if node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD:
            continue
        ins = node.input
        if node.op_type in ("Shape", "Size") and ins[0] not in sizes:
            if not info:
                info = {vi.name: vi for vi in (*g.input, *g.value_info, *g.output)}
            dims = _static_dims(info.get(ins[0]))
            if dims is not None:
                shape_values[node.output[0]] = arr = _shape_value(node, dims)
                sizes[node.output[0]] = arr.size
                folded.add(idx)
            continue
        if all(n in sizes for n in ins if n):
            if not info:
                info = {vi.name: vi for vi in (*g.input, *g.value_info, *g.output)}
            # A Constant's data is in the model already; anything else may not blow up past the limit.
            limit[idx] = biggest = math.inf if node.op_type == "Constant" else \
                max(_FOLD_MAX_ELEMENTS, max((sizes[n] for n in ins if n), default=0))
            out_dims = [_static_dims(info.get(o)) for o in node.output if o]
            out_sizes = [math.prod(d) if d is not None else 0 for d in out_dims]
            if out_dims[:1] == [None] and node.op_type in _SIZED_BY_OPERAND:  # its size: from its operands
                known = [shape_values.get(n) if n in shape_values else
                         numpy_helper.to_array(inits[n]) if n in inits and sizes[n] <= 64 else None
                         for n in ins]
                first = _static_dims(info.get(ins[0])) if ins else None
                out_sizes[0] = generated_elements(node.op_type, known, first)
                if out_sizes[0] is None:  # not known before evaluating it: left as a node
                    continue
            if any(s > biggest for s in out_sizes):
                continue
            candidates.append(idx)
            sizes.update(zip([o for o in node.output if o], out_sizes, strict=True))
    if not folded and not candidates:
        return False
    values = dict(shape_values)
    if candidates:
        produced = {o for i in candidates for o in g.node[i].output}
        needed = {n for i in candidates for n in g.node[i].input if n and n not in produced}
        feeds = {n: shape_values[n] if n in shape_values else numpy_helper.to_array(inits[n]) for n in needed}
        values.update(_evaluate([g.node[i] for i in candidates], feeds, opset))
        unsure: set[str] = set()  # outputs not folded, and everything computed from them
        for i in candidates:
            node = g.node[i]
            outs = [o for o in node.output if o]
            if all(o in values and values[o].size <= limit[i] and _same_shape(values[o], info.get(o))
                   for o in outs) and not any(n in unsure for n in node.input):
                folded.add(i)
            else:
                unsure.update(outs)
    if not folded:
        return False

    folded_outs = {o for i in folded for o in g.node[i].output if o}
    read_by_folded = {n for i in folded for n in g.node[i].input if n}
    needed = {o.name for o in g.output}
    reinfer = False
    for idx, node in enumerate(g.node):
        if idx in folded:
            continue
        ins = [n for n in node.input if n]
        needed.update(ins)
        needed.update(outer_scope_reads(node))  # a subgraph's reads keep their initializers too
        if not reinfer and any(n in folded_outs for n in ins):
            reinfer = any(_static_dims(info.get(o)) is None for o in node.output if o)
    for i in sorted(folded, reverse=True):
        del g.node[i]
    drop = [k for k, t in enumerate(g.initializer) if t.name in read_by_folded and t.name not in needed]
    for k in reversed(drop):
        del g.initializer[k]
    stale = [k for k, vi in enumerate(g.value_info) if vi.name in folded_outs]
    for k in reversed(stale):
        del g.value_info[k]
    g.initializer.extend(numpy_helper.from_array(np.asarray(values[name]), name)
                         for name in sorted(folded_outs & needed))
    return reinfer

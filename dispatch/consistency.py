"""Declared shapes that contradict each other, refused at load whether or not the plan is run.

onnx's shape inference in its default (lenient) mode leaves an output unknown, or keeps the declared shape,
when a node's input shapes cannot go together: a MatMul of [2, 3] by [4, 4], an Add of [3] and [4], a graph
output declared [3, 3] where the node computes [2, 4]. A plan made from such a model prices shapes that
cannot exist, and onnxruntime fails (or warns and merges) only when it runs. So each inference of the
frontend (without data propagation, then with it after each round of constant folding, which makes computed
shapes constant) runs in strict mode first; when it raises one of the contradictions below, the model is
refused in one sentence naming the node, the shapes and the rule. Any other strict-mode error (an operator
without an inference function, a custom domain) is left to the lenient inference, as before.

A Reshape to a constant shape of another element count passes both modes (onnx infers the target shape
without comparing counts: onnx/defs/tensor/defs.cc, Reshape's inference), so `check_reshape_and_bias`
compares the counts after constant folding, by the operator's rules (0 copies the input's dimension unless
allowzero, one -1 takes what is left); it also checks that Gemm's bias C broadcasts one way to (M, N),
which Gemm's inference (onnx/defs/math/defs.cc) does not look at.
"""

from __future__ import annotations

import math
import re

import onnx

from dispatch.errors import DispatchError

__all__ = ["infer_consistent", "check_reshape_and_bias"]

# The messages of onnx 1.23's inference functions that mean "these declared shapes contradict each other".
_CONTRADICTIONS = (
    "Incompatible dimensions",  # MatMul's inner dimensions, broadcasting (Add, Mul, Where, Expand ...)
    "Dimension mismatch in unification",  # Gemm's K after transA/transB, and every unified dimension
    "must have same rank",  # Concat
    "Can't merge shape info",  # an inferred dimension against a declared one (value_info, graph outputs)
    "Inferred shape and existing shape differ",  # the same, for a whole shape or its rank
)
_ERROR = re.compile(r"\(op_type:([^,]*), node name: ([^)]*)\): \[ShapeInferenceError\] ([^\n]*)")
_FIX = "fix the declared shapes in the model (or the --shape bindings) so that they agree"


def _shape_text(t: onnx.TypeProto) -> str:
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return "of unknown shape"
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.tensor_type.shape.dim]
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _types(g: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    out = {vi.name: vi.type for vi in (*g.input, *g.value_info, *g.output)}
    for t in g.initializer:
        out[t.name] = onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims))
    return out


def _refusal(node: onnx.NodeProto, detail: str, lenient: onnx.ModelProto, declared: onnx.ModelProto) -> str:
    types = _types(lenient.graph)
    said = {vi.name: vi.type for vi in (*declared.graph.value_info, *declared.graph.output)}
    ints = [f"{a.name}={a.i}" for a in node.attribute if a.type == onnx.AttributeProto.INT]
    what = f"Node '{node.name}' ({', '.join([node.op_type, *ints])})"
    ins = " and ".join(f"'{i}' {_shape_text(types[i])}" if i in types else f"'{i}' of unknown shape"
                       for i in node.input if i)
    outs = [f"'{o}' as {_shape_text(said[o])}" for o in node.output
            if o in said and any(d.HasField("dim_value") for d in said[o].tensor_type.shape.dim)]
    produce = f" and produce {' and '.join(outs)}" if outs else ""
    return f"{what} cannot take inputs {ins}{produce} (onnx shape inference: {detail}); {_FIX}."


def infer_consistent(light: onnx.ModelProto, data_prop: bool = False) -> onnx.ModelProto:
    """onnx shape inference, strict first: DispatchError for a contradiction, else the inferred model (the
    lenient inference's errors, when even it fails, pass through)."""
    infer = onnx.shape_inference.infer_shapes
    try:
        return infer(light, check_type=False, strict_mode=True, data_prop=data_prop)
    except onnx.shape_inference.InferenceError as e:
        found = next((m for m in _ERROR.finditer(str(e)) if any(c in m[3] for c in _CONTRADICTIONS)), None)
    except RuntimeError:
        found = None
    if found is None:
        return infer(light, check_type=False, strict_mode=False, data_prop=data_prop)
    op_type, name, detail = found[1], found[2], found[3].strip()
    node = next((n for n in light.graph.node if n.name == name and n.op_type == op_type), None)
    if node is None:  # inside a subgraph: onnx's own words
        raise DispatchError(f"{op_type} node '{name}' has inputs whose declared shapes contradict each other "
                            f"(onnx shape inference: {detail}); {_FIX}.")
    try:
        lenient = infer(light, check_type=False, strict_mode=False, data_prop=data_prop)
    except (onnx.shape_inference.InferenceError, RuntimeError):
        lenient = light
    raise DispatchError(_refusal(node, detail, lenient, light))


def _static(t: onnx.TypeProto | None) -> tuple[int, ...] | None:
    if t is None or t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims) if all(d.HasField("dim_value") for d in dims) else None


def _check_gemm_bias(n: onnx.NodeProto, types: dict[str, onnx.TypeProto]) -> None:
    """Gemm's C must broadcast one way to (M, N) (onnx's Gemm inference does not look at C)."""
    a, b, c = (_static(types.get(x)) for x in n.input[:3])
    if a is None or b is None or c is None or len(a) != 2 or len(b) != 2:
        return
    attrs = {x.name: x.i for x in n.attribute}
    mn = (a[1] if attrs.get("transA") else a[0], b[0] if attrs.get("transB") else b[1])
    if len(c) > 2 or any(d not in (1, want) for d, want in zip(reversed(c), reversed(mn), strict=False)):
        raise DispatchError(
            f"Node '{n.name}' (Gemm) has bias '{n.input[2]}' of shape {list(c)}, which does not broadcast to "
            f"its output {list(mn)} (each dimension of C must be 1 or the output's); fix the declared shapes "
            "in the model (or the --shape bindings) so that they agree.")


def check_reshape_and_bias(graph: onnx.GraphProto) -> None:
    """Refuse a Reshape of a static input to a constant shape holding another number of elements, and a Gemm
    whose bias cannot broadcast to its output: the contradictions onnx's inference does not see."""
    consts = {t.name: t for t in graph.initializer}
    types = _types(graph)
    for n in graph.node:
        if n.op_type == "Gemm" and n.domain in ("", "ai.onnx") and len(n.input) == 3 and n.input[2]:
            _check_gemm_bias(n, types)
        if n.op_type != "Reshape" or n.domain not in ("", "ai.onnx") or len(n.input) < 2 or \
                n.input[1] not in consts:
            continue
        dims = _static(types.get(n.input[0]))
        if dims is None:
            continue
        target = [int(v) for v in onnx.numpy_helper.to_array(consts[n.input[1]]).reshape(-1)]
        allowzero = next((a.i for a in n.attribute if a.name == "allowzero"), 0)
        if not allowzero:
            target = [dims[i] if v == 0 and i < len(dims) else v for i, v in enumerate(target)]
        if any(v < -1 for v in target) or target.count(-1) > 1:
            continue  # onnx's inference and the checker report these
        size, known = math.prod(dims), math.prod(v for v in target if v != -1)
        fits = size == known if -1 not in target else (size % known == 0 if known else size == 0)
        if not fits:
            times = " times the -1 dimension" if -1 in target else ""
            raise DispatchError(
                f"Node '{n.name}' (Reshape) cannot reshape '{n.input[0]}' of shape {list(dims)} ({size} "
                f"elements) to {target} ({known} elements{times}); fix the target shape or the declared "
                "input shape in the model (or the --shape bindings).")

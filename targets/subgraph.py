"""Cut a sub-model out of a Graph: exactly the given nodes, with the initializers they use and nothing else.

`extract` returns a self-contained ModelProto (weights embedded), for anyone who wants a runnable slice.
`extract_shared` is what the onnxruntime targets compile: large weights stay in the Graph's NumPy arrays
and reach onnxruntime through `SessionOptions.add_external_initializers`, which uses the caller's buffers
(the model carries only an external-data placeholder), so a segment of BERT does not copy its weights
into a second protobuf and a third onnxruntime buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dispatch.errors import DispatchError
from dispatch.ir import Graph, Node, external_placeholder, outer_scope_reads

__all__ = ["extract", "extract_shared", "SHARE_MIN_BYTES"]

# Weights smaller than this are embedded in the sub-model (scalars, shape tensors); larger ones are shared.
SHARE_MIN_BYTES = 4096


def _node_reads(n: onnx.NodeProto) -> set[str]:
    """Every tensor a node reads, including outer-scope names its subgraphs capture."""
    return {i for i in n.input if i} | set(outer_scope_reads(n))


def _value_info(graph: Graph, name: str) -> onnx.ValueInfoProto:
    """The ValueInfoProto the model already has for `name` (keeps sequence/optional types), else built."""
    g = graph.model.graph
    for vi in (*g.input, *g.value_info, *g.output):
        if vi.name == name and vi.type.WhichOneof("value") is not None:
            out = onnx.ValueInfoProto()
            out.CopyFrom(vi)
            return out
    v = graph.values.get(name)
    if v is None or v.dtype is None:
        return helper.make_empty_tensor_value_info(name)
    shape = None if v.shape is None else [d if d >= 0 else None for d in v.shape]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), shape)


def _check(graph: Graph, nodes: Sequence[Node], inputs: Sequence[str], outputs: Sequence[str]) -> list[Node]:
    if not nodes:
        raise DispatchError("Cannot extract an empty segment; give at least one node.")
    ordered = sorted(dict.fromkeys(nodes), key=lambda n: n.index)
    for n in ordered:
        if not (0 <= n.index < len(graph.nodes) and graph.nodes[n.index] is n):
            raise DispatchError(
                f"Node '{n.name}' does not belong to graph '{graph.name}'; extract nodes of "
                "the graph you pass."
            )
    produced = {o.name for n in ordered for o in n.outputs}
    for name in outputs:
        if name not in produced and name not in inputs:
            raise DispatchError(
                f"Segment output '{name}' is produced by none of the {len(ordered)} nodes; "
                "list only tensors those nodes compute."
            )
    for name in inputs:
        if name not in graph.values:
            raise DispatchError(f"Segment input '{name}' is not a tensor of graph '{graph.name}'.")
    return ordered


def _build(
    graph: Graph,
    nodes: Sequence[Node],
    inputs: Sequence[str],
    outputs: Sequence[str],
    share_min_bytes: int | None,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    ordered = _check(graph, nodes, inputs, outputs)
    feeds = list(dict.fromkeys(inputs))
    available = set(feeds)
    inits: list[onnx.TensorProto] = []
    shared: dict[str, np.ndarray] = {}
    for n in ordered:
        for name in sorted(_node_reads(n.proto)):
            if name in available:
                continue
            v = graph.values.get(name)
            if v is None or v.const is None:
                raise DispatchError(
                    f"Node '{n.name}' reads '{name}', which is neither a segment input, a "
                    "constant nor computed earlier in the segment; add it to the inputs."
                )
            arr = np.asarray(v.const, order="C")  # not ascontiguousarray: it makes a scalar 1-D
            if share_min_bytes is not None and arr.nbytes >= share_min_bytes and arr.dtype != object:
                inits.append(external_placeholder(name, arr))
                shared[name] = arr
            else:
                inits.append(numpy_helper.from_array(arr, name))
            available.add(name)
        available.update(o.name for o in n.outputs)
    protos = []
    for n in ordered:
        p = onnx.NodeProto()
        p.CopyFrom(n.proto)
        protos.append(p)
    g = helper.make_graph(
        protos,
        f"{graph.name}_segment",
        [_value_info(graph, i) for i in feeds],
        [_value_info(graph, o) for o in dict.fromkeys(outputs)],
        initializer=inits,
    )
    model = helper.make_model(g, opset_imports=list(graph.model.opset_import))
    model.ir_version = graph.model.ir_version
    used_ops = {(n.domain, n.op_type) for n in ordered}
    model.functions.extend(f for f in graph.model.functions if (f.domain, f.name) in used_ops)
    return model, shared


def extract(
    graph: Graph, nodes: Iterable[Node], inputs: Sequence[str], outputs: Sequence[str]
) -> onnx.ModelProto:
    """A self-contained model of exactly `nodes` (run in graph order) from `inputs` to `outputs`.

    Only the initializers those nodes read are kept (subgraph captures included); they are copied in.
    """
    model, _ = _build(graph, list(nodes), inputs, outputs, None)
    return model


def extract_shared(
    graph: Graph,
    nodes: Iterable[Node],
    inputs: Sequence[str],
    outputs: Sequence[str],
    share_min_bytes: int = SHARE_MIN_BYTES,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Like `extract`, but weights of `share_min_bytes` or more are returned as the Graph's own arrays.

    The model holds external-data placeholders for them; hand the arrays to onnxruntime with
    `SessionOptions.add_external_initializers` (and keep the OrtValues alive as long as the session).
    """
    return _build(graph, list(nodes), inputs, outputs, share_min_bytes)

"""Data movement (op_class "movement", bytes only, no FLOPs) and pure views (op_class "view", free).

A view (Reshape, Squeeze, Unsqueeze, Flatten, Identity) reinterprets its input's buffer: no bytes move.
Everything else here reads its inputs and writes its outputs, except that a gather or slice reads only
the elements it keeps (plus its index tensors), and Shape/Size read no tensor data at all.
"""

from __future__ import annotations

from dispatch.analysis.common import bytes_only
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["VIEWS", "MOVEMENT", "view", "movement", "gather", "slice_", "shape"]

VIEWS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
MOVEMENT = ("Transpose", "Concat", "Split", "Expand", "Pad", "Tile", "Dropout", "DepthToSpace",
            "SpaceToDepth", "ReverseSequence", "Compress", "Trilu", "OneHot", "Range", "ConstantOfShape",
            "Constant", "EyeLike", "ScatterND", "ScatterElements", "Scatter", "NonZero", "Unique")


def view(node: Node) -> OpCost:
    """A pure view: free, no bytes."""
    return bytes_only(node, op_class="view", free=True)


def movement(node: Node) -> OpCost:
    """Reads every input, writes every output."""
    return bytes_only(node, op_class="movement")


def _indexed(node: Node, data_index: int = 0) -> OpCost:
    """Reads the output's worth of the data input plus every other input (indices, starts, ends ...)."""
    others = sum(v.nbytes for i, v in enumerate(node.inputs) if v is not None and i != data_index)
    written = node.outputs[0].nbytes if node.outputs else 0
    return bytes_only(node, op_class="movement", bytes_read=written + others)


def gather(node: Node) -> OpCost:
    """Gather/GatherElements/GatherND: the rows it picks and the indices (an embedding lookup reads a few rows
    of its table, not the table)."""
    return _indexed(node)


def slice_(node: Node) -> OpCost:
    """Slice: the elements it keeps and its starts/ends/axes/steps."""
    return _indexed(node)


def shape(node: Node) -> OpCost:
    """Shape/Size read metadata only and write a small int64 tensor."""
    return bytes_only(node, op_class="movement", bytes_read=0)

"""Float16 and bfloat16 run as float32: where the provider here cannot run a dtype the planned one can (the
CPU provider has few float16 and almost no bfloat16 kernels; CUDA has them), the GPU target runs the segment
with every such tensor, initializer, attribute and Cast target widened to float32, and casts its outputs back.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dispatch.ir import Node

__all__ = ["LOW_FLOATS", "FLOAT", "elem_type", "low_floats", "upcast_model"]

LOW_FLOATS = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
FLOAT = onnx.TensorProto.FLOAT


@functools.cache
def elem_type(dtype: np.dtype | None) -> int:
    """ONNX element type of a NumPy dtype (0: unknown; strings are onnx.TensorProto.STRING)."""
    if dtype is None:
        return 0
    if dtype == np.dtype(object) or dtype.kind in "US":
        return onnx.TensorProto.STRING
    try:
        return int(helper.np_dtype_to_tensor_dtype(dtype))
    except (KeyError, TypeError, ValueError):
        return 0


def low_floats(nodes: Iterable[Node]) -> set[str]:
    """'fp16' / 'bf16' for the float16 / bfloat16 tensors these nodes read or write."""
    found = set()
    for n in nodes:
        for v in (*n.present_inputs, *n.outputs):
            t = elem_type(v.dtype)
            if t in LOW_FLOATS:
                found.add(LOW_FLOATS[t])
    return found


def _widen_tensor(t: onnx.TensorProto) -> None:
    if t.data_type in LOW_FLOATS and t.data_location != onnx.TensorProto.EXTERNAL:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    elif t.data_type in LOW_FLOATS:
        t.data_type = FLOAT


def _widen_type(tp: onnx.TypeProto) -> None:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type" and tp.tensor_type.elem_type in LOW_FLOATS:
        tp.tensor_type.elem_type = FLOAT
    elif kind in ("sequence_type", "optional_type"):
        _widen_type(getattr(tp, kind).elem_type)


_DTYPE_ATTRS = {"Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
                "RandomNormalLike": "dtype", "RandomUniformLike": "dtype", "Bernoulli": "dtype",
                "Multinomial": "dtype"}


def _widen_graph(g: onnx.GraphProto) -> None:
    for vi in (*g.input, *g.output, *g.value_info):
        _widen_type(vi.type)
    for t in g.initializer:
        _widen_tensor(t)
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(a.t)
            elif a.type == onnx.AttributeProto.INT and a.name == _DTYPE_ATTRS.get(n.op_type) \
                    and a.i in LOW_FLOATS:
                a.i = FLOAT
            elif a.type == onnx.AttributeProto.GRAPH:
                _widen_graph(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _widen_graph(sub)


def upcast_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """A copy of `model` with every float16/bfloat16 tensor, attribute and Cast target made float32, and
    whether anything changed. External (shared) initializers only change type: widen their arrays too."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    before = m.SerializeToString()
    _widen_graph(m.graph)
    return m, m.SerializeToString() != before

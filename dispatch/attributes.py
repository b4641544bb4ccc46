"""Operator attributes checked at load time, where onnx's lenient shape inference lets them pass.

onnx's checker accepts a Conv with strides 0, dilations 0, negative pads or a group that does not divide its
channels, and shape inference (not strict) only leaves its output unknown; onnxruntime then fails when it
builds or runs a session, far from the cause. Each such attribute is refused here in one sentence naming
the node, the attribute and the rule (the rules are those of the ONNX operator specification and of
onnx's own shape inference: onnx/defs/nn/defs.cc, convPoolShapeInference).
"""

from __future__ import annotations

import onnx

from dispatch.errors import DispatchError

__all__ = ["check_attributes"]

# op_type -> (index of the data input X, index of the weight input W or None, W's layout)
_CONV_LIKE = {"Conv": (0, 1, "MC"), "ConvInteger": (0, 1, "MC"), "QLinearConv": (0, 3, "MC"),
              "ConvTranspose": (0, 1, "CM"), "MaxPool": (0, None, ""), "AveragePool": (0, None, ""),
              "LpPool": (0, None, "")}


def _dims(info: dict[str, onnx.ValueInfoProto], shapes: dict[str, tuple[int, ...]],
          name: str) -> tuple[int, ...] | None:
    if name in shapes:
        return shapes[name]
    vi = info.get(name)
    if vi is None or vi.type.WhichOneof("value") != "tensor_type" or \
            not vi.type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)


def _refuse(node: onnx.NodeProto, what: str) -> None:
    raise DispatchError(f"{node.op_type} node '{node.name}' has {what}; fix the attribute in the model (onnx "
                        "and onnxruntime refuse it too).")


def check_attributes(graph: onnx.GraphProto) -> None:
    """Refuse invalid strides, dilations, pads, kernel_shape and group of convolutions and pools."""
    info = {vi.name: vi for vi in (*graph.input, *graph.value_info, *graph.output)}
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for n in graph.node:
        if n.domain not in ("", "ai.onnx", "com.microsoft") or n.op_type not in _CONV_LIKE:
            continue
        attrs = {a.name: a for a in n.attribute}
        for name, low, rule in (("strides", 1, "every stride must be at least 1"),
                                ("dilations", 1, "every dilation must be at least 1"),
                                ("kernel_shape", 1, "every kernel size must be at least 1"),
                                ("pads", 0, "pads must not be negative")):
            values = list(attrs[name].ints) if name in attrs else []
            if any(v < low for v in values):
                _refuse(n, f"{name} {values}: {rule}")
        group = attrs["group"].i if "group" in attrs else 1
        if group < 1:
            _refuse(n, f"group {group}: it must be at least 1")
        xi, wi, layout = _CONV_LIKE[n.op_type]
        x = _dims(info, shapes, n.input[xi]) if len(n.input) > xi else None
        rank = len(x) - 2 if x is not None and len(x) >= 3 else None
        if rank is not None and "pads" in attrs and len(attrs["pads"].ints) != 2 * rank:
            _refuse(n, f"pads {list(attrs['pads'].ints)}: a {rank}-D input needs {2 * rank} values "
                       "(a begin and an end per spatial axis)")
        if wi is None or len(n.input) <= wi:
            continue
        w = _dims(info, shapes, n.input[wi])
        if x is None or w is None or len(w) < 2 or x[1] < 0 or min(w[:2]) < 0:
            continue
        if layout == "MC" and (x[1] != w[1] * group or w[0] % group):
            _refuse(n, f"group {group} with {x[1]} input channels and weights of shape {list(w)}: the input "
                       f"channels must equal group x W's dimension 1 ({group} x {w[1]} = {group * w[1]}) and "
                       f"group must divide the {w[0]} output channels")
        if layout == "CM" and (x[1] != w[0] or x[1] % group):
            _refuse(n, f"group {group} with {x[1]} input channels and weights of shape {list(w)}: W's "
                       f"dimension 0 must equal the input channels and group must divide them")

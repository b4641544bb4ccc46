"""Which nodes a GPU's graph compiler folds into a neighbour's kernel: one table per compiler, by op_type.

A rule takes a node and answers (partner, why) when the compiler folds the node into the kernel of
`partner` (so the node adds no kernel of its own), else None. Every pair a rule names is joined by a directed
path, so the two share a segment exactly when that path runs on one target (segments are convex); the
partitioner and the plan subtract the absorbed node's cost only for a pair in one segment
(docs/partitioning.md). `kernel_of` names the kernel a node becomes once its partners are folded into it.

Two tables:

* "onnxruntime" (`ORT`): onnxruntime's graph transformers at ORT_ENABLE_ALL, the same on its CPU and CUDA
  providers: Conv+activation (FusedConv), Conv+residual Add, MatMul+bias Add -> Gemm, Gemm+activation
  (FusedGemm), MatMul+scale -> FusedMatMul, the Erf GELU pattern -> Gelu, Add+LayerNormalization ->
  SkipLayerNormalization. A test checks that the kernels these rules predict for the small zoo models are
  those of onnxruntime's optimised graph. Activations a fused convolution applies as a second pass over its
  output keep their cost (`second_pass`): MLAS applies ReLU inside its convolution kernel and the others
  afterwards, and CUDA's fused convolution (cuDNN's convolution-bias-activation) takes ReLU only. Measured
  here, 1x1 conv 16->96 at 112x112: 354 µs alone, 360 µs with Relu, 471 µs with Clip.
* "tensorrt" (`TRT`): the fusions of NVIDIA's TensorRT builder [TRT-F] [TRT-A]:
  - an element-wise (PointWise) node joins the kernel of its producer when that is a Conv, MatMul/Gemm or
    another element-wise kernel ("Convolution and Activation", "Convolution and ElementWise Operation" (sum
    with a same-shape tensor: the residual Add), "Convolution and Scale" (BatchNormalization), "Fully
    Connected and Activation/ElementWise", "PointWise Fusion": adjacent point-wise layers, a whole GELU
    included, become one kernel). The producer's output may feed only element-wise nodes (they all join).
  - attention: MatMul(Q, K) -> [scale] -> [Add or Where mask] -> Softmax -> MatMul(·, V) is one fused
    multi-head attention kernel ("Fused Attention"; demoBERT's fMHA plugin), which also takes the head
    transposes of Q, K, V and of its output (it reads and writes the packed [batch, sequence, heads · head]
    layout). The kernel is the last MatMul's: `kernel_of` names it "fMHA" and the target prices both
    products there, reading Q, K, V and writing the output once (the scores never leave the chip).
  - a Transpose of the last two axes feeding a MatMul is the multiply's transposed operand
    (IMatrixMultiplyLayer's MatrixOperation::kTRANSPOSE), no kernel.
  - Q/DQ [TRT-Q]: a DequantizeLinear read only by a Conv/MatMul/Gemm is that layer's int8 input, and a
    QuantizeLinear after a Conv/MatMul/Gemm or point-wise kernel is its int8 output (the layer runs in int8).
  Normalisations, pools, reductions, gathers and other shuffles remain kernels of their own.

[TRT-F] NVIDIA TensorRT Developer Guide, "Layer Fusion" / "Types of Fusions" (docs.nvidia.com/deeplearning/
        tensorrt/latest/performance/fusion-catalog.html, the Layer Fusion Catalog, read 2026).
[TRT-A] NVIDIA TensorRT Developer Guide, "Fused Attention" (docs.nvidia.com/deeplearning/tensorrt/latest/
        inference-library/transformers-fused-attention.html): MatMul-Softmax-MatMul built from primitive
        layers is fused into one attention kernel, the scale applied to Q or the scores, an optional add mask.
[TRT-Q] NVIDIA TensorRT Developer Guide, "Working with Quantized Types", "Q/DQ Fusion": DequantizeLinear and
        QuantizeLinear layers are fused with the weighted layers (convolution, fully connected, MatMul) and
        the point-wise layers around them into quantized layers.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dispatch.ir import Node

__all__ = ["FusionTable", "TABLES", "ORT", "TRT", "table_for", "absorbed_by", "fusion_partner", "kernel_of",
           "attention_members", "ACTIVATIONS"]

Rule = Callable[[Node], "tuple[Node | None, str] | None"]

ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid")  # ORT's FusedConv/FusedGemm
_SECOND_PASS = ("Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid")


@dataclass(frozen=True)
class FusionTable:
    """One compiler's fusions: `rules[op_type]` are tried in order; `kernel` names the fused kernel.

    `second_pass`: activations a fused convolution still applies as a pass of their own (they keep their
    cost). `stream`: the compiler's engine runs its kernels back to back on a stream, enqueued ahead of the
    device (so a kernel costs the device-side gap, not a host launch; targets/gpu.py)."""

    name: str
    rules: Mapping[str, tuple[Rule, ...]]
    kernel: Callable[[Node], str]
    second_pass: tuple[str, ...] = ()
    stream: bool = False

    def fused(self, node: Node) -> tuple[Node | None, str] | None:
        """(the node whose kernel absorbs `node`, why), the partner None where none can be named; or None."""
        for rule in self.rules.get(node.op_type, ()):
            hit = rule(node)
            if hit is not None:
                return hit
        return None

    def absorbed_by(self, node: Node) -> str | None:
        """Why the compiler folds this node into a neighbour (so it adds no kernel), or None."""
        hit = self.fused(node)
        return hit[1] if hit else None

    def partner(self, node: Node) -> Node | None:
        """The node whose kernel absorbs `node`, or None when nothing absorbs it."""
        hit = self.fused(node)
        return hit[0] if hit else None

    def kernel_of(self, node: Node) -> str:
        """The kernel this node becomes once its absorbed neighbours are folded into it."""
        return self.kernel(node)


# -- shared helpers ---------------------------------------------------------------------------------------
def _sole(v: Any) -> Node | None:
    """The producer of value v when v feeds exactly one node and is no graph output (so the producer may
    absorb that node: onnxruntime fuses nothing whose intermediate tensor must be kept)."""
    if v is None or v.producer is None or len(v.consumers) != 1 or v.is_graph_output:
        return None
    return v.producer


def _is_scalar_const(v: Any) -> bool:
    return v is not None and v.const is not None and v.const.size == 1


# -- onnxruntime --------------------------------------------------------------------------------------------
def _add_fusion(node: Node) -> tuple[Node, str] | None:
    """(the node an Add is folded into, why): its MatMul/Gemm/Conv producer or its LayerNormalization."""
    a, b = node.input(0), node.input(1)
    for x, y in ((a, b), (b, a)):
        p = _sole(x)
        if p is None:
            continue
        if p.op_type in ("MatMul", "Gemm") and y is not None and y.const is not None:
            return p, f"bias of {p.name} (MatMulAddFusion)"
        if (
            p.op_type == "Conv"
            and y is not None
            and (y.const is not None or y.shape == node.outputs[0].shape)
        ):
            return p, f"sum into {p.name} (ConvAddFusion / NCHWc Conv with Sum)"
    out = node.outputs[0]
    if (
        len(out.consumers) == 1
        and not out.is_graph_output  # measured: onnxruntime keeps Add and LayerNormalization then
        and out.consumers[0].op_type == "LayerNormalization"
        and a is not None
        and b is not None
        and a.const is None
        and b.const is None
        and a.shape == b.shape
    ):
        return out.consumers[0], f"skip input of {out.consumers[0].name} (SkipLayerNormFusion)"
    return None


def _absorbed_add(node: Node) -> str | None:
    fused = _add_fusion(node)
    return fused[1] if fused else None


def _has_bias(matmul: Node) -> bool:
    """Whether MatMulAddFusion turns this MatMul and the Add after it into a Gemm."""
    outs = matmul.outputs[0].consumers
    return len(outs) == 1 and outs[0].op_type == "Add" and "MatMulAddFusion" in (_absorbed_add(outs[0]) or "")


def _gelu_members(erf: Node) -> set[str]:
    """Names of the nodes ORT's GeluFusion folds into `erf`: x/√2 -> Erf -> +1 -> ·x -> ·0.5."""
    members: set[str] = set()
    if erf.outputs[0].is_graph_output:  # onnxruntime keeps the Erf (measured: no Gelu then)
        return members
    div = _sole(erf.input(0))
    if div is not None and div.op_type == "Div" and _is_scalar_const(div.input(1)):
        members.add(div.name)
    cur = erf
    for op_type in ("Add", "Mul", "Mul"):
        outs = cur.outputs[0].consumers
        if len(outs) != 1 or outs[0].op_type != op_type or cur.outputs[0].is_graph_output:
            break
        cur = outs[0]
        members.add(cur.name)
    return members


def _ort_activation(node: Node) -> tuple[Node | None, str] | None:
    """An activation after a Conv/Gemm (FusedConv / FusedGemm), or after an Add fused into its producer."""
    p = _sole(node.input(0))
    if p is None:
        return None
    if p.op_type in ("Conv", "Gemm"):
        return p, f"activation of {p.name} (FusedConv / FusedGemm)"
    fused = _add_fusion(p) if p.op_type == "Add" else None
    if fused and "SkipLayerNorm" not in fused[1]:
        return fused[0], f"activation after {p.name}, which is fused into its producer"
    return None


def _ort_add(node: Node) -> tuple[Node | None, str] | None:
    return _add_fusion(node)


def _ort_scale(node: Node) -> tuple[Node | None, str] | None:
    """A scalar Mul/Div before or after a MatMul (MatMulScaleFusion -> FusedMatMul)."""
    x = node.input(0)
    t = node.op_type
    if not (_is_scalar_const(node.input(1)) or (t == "Mul" and _is_scalar_const(x))):
        return None
    src = node.input(1) if _is_scalar_const(x) else x
    p = _sole(src)
    if p is not None and p.op_type == "MatMul":
        return p, f"scale of {p.name} (MatMulScaleFusion)"
    out = node.outputs[0]
    m = out.consumers[0] if len(out.consumers) == 1 and not out.is_graph_output else None
    if m is not None and m.op_type == "MatMul" and not _has_bias(m):
        # (a MatMul that takes a bias becomes a Gemm first, which takes no scale)
        return m, f"scale of {m.name} (MatMulScaleFusion)"
    return None


def _ort_gelu(node: Node) -> tuple[Node | None, str] | None:
    """Part of an Erf GELU: the Erf within three hops whose group holds this node."""
    seen = [node]
    for _ in range(3):
        nxt = []
        for n in seen:
            nxt += [p for p in n.predecessors] + n.successors
        for n in nxt:
            if n.op_type == "Erf" and node.name in _gelu_members(n):
                return n, f"part of the GELU at {n.name} (GeluFusion)"
        seen = nxt
    return None


def _kept_scale(p: Node, matmul: Node) -> bool:
    """A scalar scale feeding only `matmul` whose output is also a graph output: onnxruntime folds the scale
    into a FusedMatMul and keeps the Mul/Div for the graph output (measured)."""
    out = p.outputs[0]
    if p.op_type not in ("Mul", "Div") or not out.is_graph_output or len(out.consumers) != 1:
        return False
    if not (_is_scalar_const(p.input(1)) or (p.op_type == "Mul" and _is_scalar_const(p.input(0)))):
        return False
    return not _has_bias(matmul)


def _ort_kernel(node: Node) -> str:
    """The onnxruntime kernel this node becomes once its absorbed neighbours are fused into it."""
    t = node.op_type
    outs = node.outputs[0].consumers if node.outputs else []
    if t == "LayerNormalization" and any(
        p.op_type == "Add" and "SkipLayerNorm" in (_absorbed_add(p) or "") for p in node.predecessors
    ):
        return "SkipLayerNormalization"
    if t == "Erf" and _gelu_members(node):
        return "Gelu"
    if t == "MatMul" and len(outs) == 1:
        why = ORT.absorbed_by(outs[0]) or ""
        if "MatMulScaleFusion" in why:
            return "FusedMatMul"
        if "MatMulAddFusion" in why:
            return "Gemm"
    if t == "MatMul" and any("MatMulScaleFusion" in (ORT.absorbed_by(p) or "") or _kept_scale(p, node)
                             for p in node.predecessors):
        return "FusedMatMul"
    if t == "Conv":
        w = node.input(1)
        group = node.attr("group", 1)
        if group > 1 and w is not None and w.shape and w.shape[1] > 1:
            return "Conv(grouped)"  # neither dense nor depthwise: onnxruntime's im2col + GEMM per group
    return t


ORT = FusionTable(
    name="onnxruntime",
    rules={
        **dict.fromkeys(ACTIVATIONS, (_ort_activation,)),
        "Add": (_ort_add, _ort_gelu),
        "Mul": (_ort_scale, _ort_gelu),
        "Div": (_ort_scale, _ort_gelu),
    },
    kernel=_ort_kernel,
    second_pass=_SECOND_PASS,
)


# -- TensorRT -----------------------------------------------------------------------------------------------
# Element-wise ops TensorRT runs as PointWise layers (activations, arithmetic, unary functions, and the
# per-channel scale a BatchNormalization is at inference).
POINTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Log", "Erf",
    "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
    "PRelu", "Gelu", "Mish", "BatchNormalization", "Cast", "Where",
})  # fmt: skip
_EPILOGUE_HOSTS = frozenset({"Conv", "MatMul", "Gemm", "ConvTranspose"})

_TRT_KERNEL: weakref.WeakKeyDictionary[Node, Node] = weakref.WeakKeyDictionary()
_ATTENTION: weakref.WeakKeyDictionary[Node, tuple[Node, list[Node]] | None] = weakref.WeakKeyDictionary()


def attention_members(node: Node) -> tuple[Node, list[Node]] | None:
    """(the P·V MatMul, every node its fused attention kernel takes) when `node` is part of the pattern
    MatMul(Q, K) -> [Mul/Div by a scalar] -> [Add or Where mask] -> Softmax -> MatMul(·, V), with the
    Transposes that feed Q, K, V and the one after the output; else None."""
    if node in _ATTENTION:
        return _ATTENTION[node]
    hit = None
    for softmax in _softmaxes_near(node):
        found = _attention_at(softmax)
        if found is not None and (node is found[0] or node in found[1]):
            hit = found
            break
    _ATTENTION[node] = hit
    return hit


def _softmaxes_near(node: Node, hops: int = 4) -> list[Node]:
    """The Softmax nodes within `hops` edges of `node` (either direction), nearest first."""
    found, seen, frontier = [], {id(node)}, [node]
    for _ in range(hops + 1):
        nxt = []
        for n in frontier:
            if n.op_type == "Softmax":
                found.append(n)
            for m in (*n.predecessors, *n.successors):
                if id(m) not in seen:
                    seen.add(id(m))
                    nxt.append(m)
        frontier = nxt
    return found


def _attention_at(softmax: Node) -> tuple[Node, list[Node]] | None:
    """The attention pattern around this Softmax, or None when it is not one."""
    chain = [softmax]
    cur = _sole(softmax.input(0))
    while cur is not None and cur.op_type in ("Mul", "Div", "Add", "Where"):
        consts = [v for v in cur.present_inputs if v.const is not None]
        if cur.op_type in ("Mul", "Div") and not (len(consts) == 1 and consts[0].size == 1):
            return None
        chain.append(cur)
        ups = [_sole(v) for v in cur.present_inputs if v.const is None]
        ups = [p for p in ups if p is not None and p.op_type in ("MatMul", "Mul", "Div", "Add", "Where")]
        cur = ups[0] if len(ups) == 1 else None
    if cur is None or cur.op_type != "MatMul" or any(v.const is not None for v in cur.present_inputs):
        return None
    qk = cur
    outs = softmax.outputs[0].consumers
    if len(outs) != 1 or softmax.outputs[0].is_graph_output or outs[0].op_type != "MatMul":
        return None
    pv = outs[0]
    v_in = pv.input(1)
    if pv.input(0) is not softmax.outputs[0] or v_in is None or v_in.const is not None:
        return None
    members = [qk, *chain]
    for v in (qk.input(0), qk.input(1), v_in):
        p = _sole(v)
        if p is not None and p.op_type == "Transpose":
            members.append(p)
    out = pv.outputs[0]
    if len(out.consumers) == 1 and not out.is_graph_output and out.consumers[0].op_type == "Transpose":
        members.append(out.consumers[0])
    return pv, members


def _attention(node: Node) -> tuple[Node | None, str] | None:
    hit = attention_members(node)
    if hit is None or node is hit[0] or node not in hit[1]:
        return None
    return hit[0], f"part of the fused attention at {hit[0].name} (TensorRT MHA fusion)"


def _trt_kernel_node(node: Node) -> Node:
    """The node whose kernel `node` runs in under TensorRT (itself when it is a kernel of its own)."""
    hit = _TRT_KERNEL.get(node)
    if hit is None:
        fused = TRT.fused(node)
        hit = node if fused is None or fused[0] is None else _trt_kernel_node(fused[0])
        _TRT_KERNEL[node] = hit
    return hit


def _pointwise(node: Node) -> tuple[Node | None, str] | None:
    """A point-wise node joins its producer's kernel (a Conv/MatMul/Gemm epilogue or a point-wise kernel)
    when the tensor between them feeds nothing but point-wise nodes and is no graph output. The residual
    Add may take its second operand from anywhere ("Convolution and ElementWise Operation")."""
    candidates = [v for v in node.present_inputs if v.const is None and v.producer is not None]
    # prefer the operand only this node reads (the residual Add joins the Conv, not the skip branch)
    candidates.sort(key=lambda v: len(v.consumers) != 1)
    for v in candidates:
        if v.is_graph_output:
            continue
        if len(v.consumers) != 1 and not all(c.op_type in POINTWISE for c in v.consumers):
            continue  # the producer's output is read by a kernel of another kind: it is written out whole
        kernel = _trt_kernel_node(v.producer)
        if kernel is node or not (kernel.op_type in _EPILOGUE_HOSTS or kernel.op_type in POINTWISE):
            continue
        what = "epilogue of" if kernel.op_type in _EPILOGUE_HOSTS else "point-wise kernel of"
        return kernel, f"{what} {kernel.name} (TensorRT PointWise / epilogue fusion)"
    return None


def _matmul_operand(node: Node) -> tuple[Node | None, str] | None:
    """A Transpose of the last two axes whose only reader is a MatMul: the multiply's transposed operand."""
    perm = node.attr("perm")
    x = node.input(0)
    rank = len(x.shape) if x is not None and x.shape is not None else 0
    out = node.outputs[0]
    if (
        perm is None or rank < 2 or len(out.consumers) != 1 or out.is_graph_output
        or list(perm) != [*range(rank - 2), rank - 1, rank - 2] or out.consumers[0].op_type != "MatMul"
    ):
        return None
    m = out.consumers[0]
    return m, f"transposed operand of {m.name} (TensorRT MatrixMultiply kTRANSPOSE)"


def _dequantize(node: Node) -> tuple[Node | None, str] | None:
    """A DequantizeLinear read only by a Conv/MatMul/Gemm: that layer's int8 input (weights quantised at
    build time, activations read as int8); one right after a fused QuantizeLinear: the int8 tensor that
    kernel writes, read by the next layer [TRT-Q]."""
    out = node.outputs[0]
    if out.is_graph_output:
        return None
    if len(out.consumers) == 1 and out.consumers[0].op_type in _EPILOGUE_HOSTS:
        kernel = _trt_kernel_node(out.consumers[0])
        return kernel, f"int8 input of {kernel.name} (TensorRT Q/DQ fusion)"
    x = node.input(0)
    q = x.producer if x is not None and len(x.consumers) == 1 and not x.is_graph_output else None
    if q is not None and q.op_type == "QuantizeLinear":  # a Q -> DQ pair: the int8 tensor between kernels
        kernel = _trt_kernel_node(q)
        if kernel is not q:
            return kernel, f"int8 tensor of {kernel.name} read by the next layer (TensorRT Q/DQ fusion)"
    return None


def _quantize(node: Node) -> tuple[Node | None, str] | None:
    """A QuantizeLinear after a Conv/MatMul/Gemm or point-wise kernel: that kernel's int8 output [TRT-Q]."""
    v = node.input(0)
    if v is None or v.producer is None or v.is_graph_output or len(v.consumers) != 1:
        return None
    kernel = _trt_kernel_node(v.producer)
    if kernel.op_type not in _EPILOGUE_HOSTS and kernel.op_type not in POINTWISE:
        return None
    return kernel, f"int8 output of {kernel.name} (TensorRT Q/DQ fusion)"


def _trt_kernel(node: Node) -> str:
    hit = attention_members(node) if node.op_type == "MatMul" else None
    if hit is not None and hit[0] is node:
        return "fMHA"
    return node.op_type


TRT = FusionTable(
    name="tensorrt",
    rules={
        **dict.fromkeys(POINTWISE, (_attention, _pointwise)),
        "MatMul": (_attention,),
        "Softmax": (_attention,),
        "Transpose": (_attention, _matmul_operand),
        "DequantizeLinear": (_dequantize,),
        "QuantizeLinear": (_quantize,),
    },
    kernel=_trt_kernel,
    stream=True,
)

TABLES = {"onnxruntime": ORT, "tensorrt": TRT}


def table_for(name: str) -> FusionTable:
    """The table called `name` ('onnxruntime' or 'tensorrt')."""
    return TABLES[name]


# The onnxruntime table's answers as functions (the names the calibration and the tests use).
def absorbed_by(node: Node) -> str | None:
    """Why onnxruntime fuses this node into a neighbour (so it adds no kernel), or None."""
    return ORT.absorbed_by(node)


def fusion_partner(node: Node) -> Node | None:
    """The node whose onnxruntime kernel absorbs `node`, or None."""
    return ORT.partner(node)


def kernel_of(node: Node) -> str:
    """The onnxruntime kernel this node becomes once its absorbed neighbours are fused into it."""
    return ORT.kernel_of(node)

"""What an onnxruntime execution provider can run: its kernels, ONNX functions, and onnxruntime's rewrites.

A provider's *coverage* is its kernel table: (domain, op_type) -> kernels, each an opset range and the types
every type parameter accepts. Two sources:

* the onnxruntime installed here (`get_all_opkernel_def`), for the providers it has;
* `targets/coverage/cuda_kernels.json`, CUDAExecutionProvider's table from onnxruntime's generated
  docs/OperatorKernels.md (`targets/coverage/make_cuda_coverage.py` says how), for GPU presets on machines
  without that provider: support is the planned part's provider, not the local one.

`Support(coverage, probe).reason(node)` says why the provider cannot run a node, or None when it can:

1. a kernel of the table matches the node's op, domain, opset and input/output types: it runs;
2. otherwise, with `probe` (the provider present here), onnxruntime itself decides: a session of the node
   alone is built (its dtypes, ranks, attributes and small integer constants). That covers everything
   onnxruntime does before it looks for kernels: ONNX functions it inlines (HardSwish, Mish, Celu, opset-20
   Gelu, GroupNormalization ...), float16 nodes the CPU provider runs between inserted Casts (its
   InsertCastTransformer), Constant nodes made initializers. Its error message is the reason;
3. otherwise (a coverage table without a provider here): an op whose ONNX schema has a function body, or a
   context-dependent function, is expanded with `onnx.inliner` (types inferred), and it runs when every node
   of the body does (recursively); Constant nodes count as run (onnxruntime makes them initializers).
   A GPU target on a real CUDA provider inlines such ops before it builds the session (`inline_functions`),
   so their bodies run on CUDA: onnxruntime would otherwise give the whole op to the CPU provider behind it.

A one-node model needs typed inputs, so a sequence, an untyped tensor or a subgraph attribute ends the
decision at step 1, except SequenceMap: its sequences are typed from its own body graph (the element types
its body takes and gives), so onnxruntime probes it (it inlines the op's function) and the inliner expands
it for a coverage table (a Loop over SequenceAt/SequenceInsert around the body).

Each answer is cached per signature: (domain, op, opset, input and output types) for step 1, plus input
ranks, attributes and small integer constants for steps 2 and 3, so a 50,000-node graph costs a dictionary
lookup or two per node once its few distinct signatures are known (benchmarks/bench_support.py).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner
from onnx import helper, numpy_helper

from dispatch.ir import Node
from targets.upcast import FLOAT, LOW_FLOATS, elem_type, upcast_model

__all__ = ["Coverage", "Kernel", "Support", "local_coverage", "cuda_coverage", "local_support", "gpu_support",
           "signature", "kernel_reason", "COVERAGE_DIR"]

COVERAGE_DIR = Path(__file__).parent / "coverage"
_SMALL_CONST = 64  # elements: integer constants up to this size (axes, shapes, pads) go into a probe as they
# are, and into its cache key; weights and other constants are fed like activations (values do not decide
# whether a kernel exists)
_MAX_DEPTH = 4  # function bodies nested deeper than this are not expanded


@dataclass(frozen=True)
class Kernel:
    since: int
    until: int  # inclusive; a large number when open-ended
    types: Mapping[str, frozenset[str]]  # type parameter -> accepted 'tensor(float)' strings


@dataclass(frozen=True)
class Coverage:
    """A provider's kernel table and where it came from."""

    provider: str
    source: str
    kernels: Mapping[tuple[str, str], tuple[Kernel, ...]]  # (domain, op_type) -> kernels


@functools.cache
def local_coverage(provider: str) -> Coverage:
    """The kernels the onnxruntime installed here registered for `provider`."""
    import onnxruntime as ort
    from onnxruntime.capi import _pybind_state as C

    table: dict[tuple[str, str], list[Kernel]] = {}
    for k in C.get_all_opkernel_def():
        if k.provider == provider:
            lo, hi = k.version_range
            types = {t: frozenset(v) for t, v in k.type_constraints.items()}
            table.setdefault((k.domain, k.op_name), []).append(Kernel(lo, hi, types))
    return Coverage(provider, f"the kernel registry of onnxruntime {ort.__version__} here",
                    {key: tuple(v) for key, v in table.items()})


@functools.cache
def cuda_coverage() -> Coverage:
    """CUDAExecutionProvider's kernels from targets/coverage/cuda_kernels.json."""
    doc = json.loads((COVERAGE_DIR / "cuda_kernels.json").read_text())
    table = {(dom, op): tuple(Kernel(k["since"], k["until"] if k["until"] is not None else 1 << 30,
                                     {t: frozenset(v) for t, v in k["types"].items()}) for k in ks)
             for dom, ops in doc["domains"].items() for op, ks in ops.items()}
    return Coverage(doc["provider"], f"onnxruntime's docs/OperatorKernels.md ({doc['source']})", table)


# -- signatures -------------------------------------------------------------------------------------------
@functools.cache
def _type_str(elem: int) -> str:
    return f"tensor({onnx.TensorProto.DataType.Name(elem).lower()})"


def _domain(d: str) -> str:
    return "" if d in ("", "ai.onnx") else d


@functools.cache
def _latest(domain: str) -> int:
    """The newest opset onnx knows for a domain (1 for domains it does not know, e.g. com.microsoft)."""
    if domain == "":
        return onnx.defs.onnx_opset_version()
    return max((s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.domain == domain),
               default=1)


def signature(node: Node) -> tuple:
    """(domain, op_type, opset, input types, output types): what kernel matching depends on."""
    domain = node.domain
    if domain == "ai.onnx":
        domain = ""
    t = elem_type
    ins = tuple([-1 if v is None else t(v.dtype) for v in node.inputs])
    return domain, node.op_type, node.opset or _latest(domain), ins, tuple([t(v.dtype) for v in node.outputs])


@functools.cache
def _schema(domain: str, op_type: str, opset: int) -> Any:
    try:
        return onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        pass
    from onnxruntime.capi import _pybind_state as C

    best = None
    for s in C.get_all_operator_schema():
        if s.domain == domain and s.name == op_type and s.since_version <= opset and (
                best is None or s.since_version > best.since_version):
            best = s
    return best


@functools.cache
def _formal(domain: str, op_type: str, opset: int) -> tuple[tuple, tuple] | None:
    """((type_str, variadic) per input, same per output) of the schema in force at `opset`; None: none."""
    s = _schema(domain, op_type, opset)
    if s is None:
        return None
    if isinstance(s, onnx.defs.OpSchema):
        var = onnx.defs.OpSchema.FormalParameterOption.Variadic
        return (tuple((p.type_str, p.option == var) for p in s.inputs),
                tuple((p.type_str, p.option == var) for p in s.outputs))
    var = s.FormalParameterOption.Variadic
    return (tuple((p.typeStr, p.option == var) for p in s.inputs),
            tuple((p.typeStr, p.option == var) for p in s.outputs))


def _pairs(formal: tuple[tuple, tuple], ins: tuple[int, ...], outs: tuple[int, ...]) -> list[tuple[str, str]]:
    """(type parameter, actual type) for every input and output of known type."""
    pairs: list[tuple[str, str]] = []
    for params, types in zip(formal, (ins, outs), strict=True):
        for i, t in enumerate(types):
            if i < len(params):
                tstr = params[i][0]
            elif params and params[-1][1]:  # a variadic last parameter takes the rest
                tstr = params[-1][0]
            else:
                break
            if t > 0:
                pairs.append((tstr, _type_str(t)))
    return pairs


def _where(domain: str, op_type: str) -> str:
    return f"{domain}::{op_type}" if domain else op_type


def kernel_reason(cov: Coverage, sig: tuple) -> str | None:
    """Why no kernel of `cov` matches the signature, or None when one does."""
    domain, op_type, opset, ins, outs = sig
    where = _where(domain, op_type)
    kernels = cov.kernels.get((domain, op_type))
    if not kernels:
        return f"onnxruntime's {cov.provider} has no kernel for {where}"
    formal = _formal(domain, op_type, opset)
    if formal is None:
        return f"{where} has no operator schema in onnx or onnxruntime"
    pairs = _pairs(formal, ins, outs)
    in_range = [k for k in kernels if k.since <= opset <= k.until] or list(kernels)
    for k in in_range:
        if all(actual in k.types[t] for t, actual in pairs if t in k.types):
            return None
    types = ", ".join(sorted({f"{t}={a}" for t, a in pairs if not t.startswith("tensor(")}))
    return f"onnxruntime's {cov.provider} has no {where} kernel for {types} at opset {opset}"


# -- one-node models --------------------------------------------------------------------------------------
def _value_info(name: str, elem: int, shape: tuple[int, ...] | None) -> onnx.ValueInfoProto:
    if elem <= 0:
        return helper.make_empty_tensor_value_info(name)
    dims = None if shape is None else [d if d >= 0 else f"d{i}" for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, elem, dims)


def _sequence_map_types(node: Node) -> dict[str, onnx.TypeProto] | None:
    """SequenceMap's sequences typed from its own body (input i of the node is a sequence of, or a tensor of,
    the type of the body's input i; output j a sequence of the body's output j), which a one-node model
    needs: the IR keeps no type for a sequence. None for any other node, or a body reading outer names."""
    if node.op_type != "SequenceMap" or node.domain not in ("", "ai.onnx") or node.implicit_inputs:
        return None
    body = next((a.g for a in node.proto.attribute if a.name == "body"), None)
    if body is None or len(body.input) != len(node.inputs) or len(body.output) != len(node.outputs):
        return None
    out: dict[str, onnx.TypeProto] = {}
    for v, b in zip((*node.inputs, *node.outputs), (*body.input, *body.output), strict=True):
        if v is None or b.type.WhichOneof("value") != "tensor_type":
            return None
        t = onnx.TypeProto()
        if v.dtype is None or v in node.outputs:  # a sequence: its elements are what the body takes or gives
            t.sequence_type.elem_type.CopyFrom(b.type)
        else:
            t.tensor_type.elem_type = elem_type(v.dtype)
        out[v.name] = t
    return out


def _one_node_model(node: Node, opset: int, upcast: bool) -> onnx.ModelProto:
    """The node alone: small integer constants as initializers, other inputs fed, the node's own dtypes."""
    inputs, inits, typed = [], [], []
    sequences = _sequence_map_types(node) or {}
    for v in dict.fromkeys(node.present_inputs):  # a tensor read twice is one input
        info = _value_info(v.name, elem_type(v.dtype), v.shape)
        if v.name in sequences and sequences[v.name].HasField("sequence_type"):
            info = helper.make_value_info(v.name, sequences[v.name])
        if _shape_like(v):
            inits.append(numpy_helper.from_array(np.asarray(v.const), v.name))
            typed.append(info)  # the inliner types function bodies from value_info, not initializers
        else:
            inputs.append(info)
    outputs = [helper.make_value_info(v.name, sequences[v.name]) if v.name in sequences
               else _value_info(v.name, elem_type(v.dtype), None) for v in node.outputs]
    p = onnx.NodeProto()
    p.CopyFrom(node.proto)
    g = helper.make_graph([p], "probe", inputs, outputs, initializer=inits, value_info=typed)
    domain = _domain(node.domain)
    imports = [helper.make_opsetid(domain, opset)]
    if domain:
        imports.append(helper.make_opsetid("", onnx.defs.onnx_opset_version()))
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = min(m.ir_version, onnx.IR_VERSION)
    return upcast_model(m)[0] if upcast else m


def _shape_like(v: Any) -> bool:
    """A small integer constant: axes, a shape, pads. Such values can decide a probe (shape inference)."""
    c = v.const
    return c is not None and c.size <= _SMALL_CONST and c.dtype.kind in "iub"


def _ranks(node: Node) -> tuple:
    return tuple(len(v.shape) if v.shape is not None else -1 for v in node.present_inputs)


def _context(node: Node) -> tuple:
    """What a probe or an expansion may depend on beyond the signature: attributes, ranks, small constants."""
    attrs = tuple(a.SerializeToString() for a in node.proto.attribute)
    consts = tuple(v.const.tobytes() if _shape_like(v) else None for v in node.present_inputs)
    return attrs, _ranks(node), consts


def _typed(sig: tuple, proto: onnx.NodeProto) -> bool:
    """Whether a one-node model can stand for the node: every input and output a tensor of known type, no
    subgraph attribute (onnx's inliner crashes on untyped inputs, e.g. the sequences of SequenceMap)."""
    return all(t != 0 for t in (*sig[3], *sig[4])) and not any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in proto.attribute)


def _has_function(domain: str, op_type: str, opset: int) -> bool:
    s = _schema(domain, op_type, opset)
    return isinstance(s, onnx.defs.OpSchema) and (s.has_function or s.has_context_dependent_function)


_CONSTANT_TYPES = {"value_float": onnx.TensorProto.FLOAT, "value_floats": onnx.TensorProto.FLOAT,
                   "value_int": onnx.TensorProto.INT64, "value_ints": onnx.TensorProto.INT64,
                   "value_string": onnx.TensorProto.STRING, "value_strings": onnx.TensorProto.STRING}


def _body(model: onnx.ModelProto, domain: str, op_type: str) -> list[tuple[tuple, onnx.NodeProto]] | None:
    """(signature, proto) of every node of the op's function body, types inferred; None: cannot expand."""
    try:
        expanded = onnx.inliner.inline_selected_functions(model, [(domain, op_type)],
                                                          inline_schema_functions=True)
        expanded = onnx.shape_inference.infer_shapes(expanded)
    except Exception:  # onnx raises several types for bodies it cannot instantiate
        return None
    g = expanded.graph
    if len(g.node) == 1 and g.node[0].op_type == op_type:
        return None
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:
        if n.op_type == "Constant" and n.attribute:
            types[n.output[0]] = _CONSTANT_TYPES.get(n.attribute[0].name) or n.attribute[0].t.data_type
    opsets = {_domain(o.domain): o.version for o in expanded.opset_import}
    out = []
    for n in g.node:
        d = _domain(n.domain)
        sig = (d, n.op_type, opsets.get(d, _latest(d)),
               tuple(types.get(i, 0) if i else -1 for i in n.input), tuple(types.get(o, 0) for o in n.output))
        out.append((sig, n))
    return out


# -- the predicate ----------------------------------------------------------------------------------------
class Support:
    """Whether `coverage`'s provider runs a node (see the module's docstring); answers cached per signature.

    `probe`: build one-node sessions on the onnxruntime here for what the kernel table does not decide (only
    for the provider present). Without it, ONNX functions are expanded and checked against the table.
    Thread-safe: the caches are filled under a lock.
    """

    def __init__(self, coverage: Coverage, probe: bool = False) -> None:
        self.coverage = coverage
        self.probe = probe
        self._kernel: dict[tuple, str | None] = {}
        self._full: dict[tuple, str | None] = {}
        self._lock = threading.Lock()
        self.probes = 0  # one-node sessions built (each a cache miss), for tests and benchmarks
        self.expansions = 0

    def has_kernel(self, node: Node) -> bool:
        """Whether a kernel of the table matches the node's own signature (no function, cast or rewrite)."""
        sig = signature(node)
        hit = self._kernel.get(sig, 0)
        if hit == 0:
            hit = kernel_reason(self.coverage, sig)
            with self._lock:
                self._kernel[sig] = hit
        return hit is None

    def inline_functions(self, model: onnx.ModelProto, nodes: Iterable[Node]) -> onnx.ModelProto:
        """`model` (made of `nodes`) with the ONNX function ops the table has no kernel for inlined: their
        bodies, which it runs, take their place. Unchanged (the same object) when there are none."""
        ops = sorted({(_domain(n.domain), n.op_type) for n in nodes
                      if not self.has_kernel(n) and _has_function(*signature(n)[:3])})
        if not ops:
            return model
        return onnx.inliner.inline_selected_functions(model, ops, inline_schema_functions=True)

    def reason(self, node: Node, upcast: bool = False, sig: tuple | None = None) -> str | None:
        """Why the provider cannot run `node` (with float16/bfloat16 widened to float32 when `upcast`);
        `sig`: the node's signature when the caller has it already."""
        sig = sig or signature(node)
        if upcast:
            sig = _widened(sig)
        hit = self._kernel.get(sig, 0)
        if hit is None:
            return None
        if hit == 0:
            hit = kernel_reason(self.coverage, sig)
            with self._lock:
                self._kernel[sig] = hit
            if hit is None:
                return None
        key = (sig, _context(node))
        full = self._full.get(key, 0)
        if full != 0:
            return full
        full = self._decide(node, sig, hit, upcast)
        with self._lock:
            self._full[key] = full
        return full

    def _decide(self, node: Node, sig: tuple, why: str, upcast: bool) -> str | None:
        domain, op_type, opset = sig[:3]
        if domain == "" and op_type == "Constant":
            return None  # onnxruntime turns Constant nodes into initializers when it loads a graph
        if not _typed(sig, node.proto) and _sequence_map_types(node) is None:
            return why  # a sequence, an untyped tensor or a subgraph: no one-node model stands for it
        if self.probe:
            return self._probe(node, sig, upcast)
        if not _has_function(domain, op_type, opset):
            return why
        self.expansions += 1
        body = _body(_one_node_model(node, opset, upcast), domain, op_type)
        if body is None:
            return f"{why}, and its ONNX function body could not be expanded"
        bad = self._body_reason(body, 1)
        return None if bad is None else f"{why}; its ONNX function body needs {bad}"

    def _body_reason(self, body: list[tuple[tuple, onnx.NodeProto]], depth: int) -> str | None:
        for sig, proto in body:
            domain, op_type, opset = sig[:3]
            if domain == "" and op_type == "Constant":
                continue
            if domain == "" and op_type == "CastLike":  # its function: a Cast to the second input's type
                sig = ("", "Cast", max(opset, 13), sig[3][:1], sig[4])
            why = kernel_reason(self.coverage, sig)
            if why is None:
                continue
            if depth >= _MAX_DEPTH or not _has_function(domain, op_type, opset) or not _typed(sig, proto):
                return f"{_where(domain, op_type)} ({why})"
            inner = _body(_proto_model(proto, sig), domain, op_type)
            if inner is None:
                return f"{_where(domain, op_type)} ({why}; its function body could not be expanded)"
            bad = self._body_reason(inner, depth + 1)
            if bad is not None:
                return bad
        return None

    def _probe(self, node: Node, sig: tuple, upcast: bool) -> str | None:
        import onnxruntime as ort

        self.probes += 1
        model = _one_node_model(node, sig[2], upcast)
        so = ort.SessionOptions()  # as the targets' sessions: every graph optimisation, one thread, no log
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = 1
        so.log_severity_level = 4
        try:
            ort.InferenceSession(model.SerializeToString(), so, providers=[self.coverage.provider])
        except Exception as e:  # onnxruntime raises its own exception types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            msg = msg.split(" : ")[-1].strip()
            types = ", ".join(sorted({_type_str(t) for t in (*sig[3], *sig[4]) if t > 0}))
            return (f"onnxruntime's {self.coverage.provider} cannot run {_where(sig[0], sig[1])} on "
                    f"{types or 'these types'} (a session of the node alone fails: {msg})")
        return None


@functools.cache
def local_support(provider: str) -> Support:
    """The provider present here, decided by its kernels and one-node sessions; one per provider."""
    return Support(local_coverage(provider), probe=True)


@functools.cache
def gpu_support(provider_here: str) -> Support:
    """What a GPU preset's provider runs: CUDA's table from targets/coverage/ on a machine without a GPU
    provider, else the registry of the CUDA provider present (TensorRT hands the rest to CUDA)."""
    if provider_here == "CPUExecutionProvider":
        return Support(cuda_coverage())
    cuda = "CUDAExecutionProvider" if provider_here == "TensorrtExecutionProvider" else provider_here
    return Support(local_coverage(cuda))


def _proto_model(proto: onnx.NodeProto, sig: tuple) -> onnx.ModelProto:
    """A one-node model of a function-body node (inputs typed, ranks unknown)."""
    domain, _, opset, ins, outs = sig
    inputs = [_value_info(n, t, None) for n, t in zip(proto.input, ins, strict=False) if n]
    outputs = [_value_info(n, t, None) for n, t in zip(proto.output, outs, strict=False)]
    g = helper.make_graph([proto], "body", inputs, outputs)
    imports = [helper.make_opsetid(domain, opset)]
    if domain:
        imports.append(helper.make_opsetid("", onnx.defs.onnx_opset_version()))
    return helper.make_model(g, opset_imports=imports)


def _widened(sig: tuple) -> tuple:
    domain, op_type, opset, ins, outs = sig
    return (domain, op_type, opset, tuple(FLOAT if t in LOW_FLOATS else t for t in ins),
            tuple(FLOAT if t in LOW_FLOATS else t for t in outs))

"""Property-based fuzzing (issue 14, item 5).

(a) Random valid ONNX graphs over the supported op set, planned with every strategy on the default targets
and run: the outputs equal onnxruntime's within dispatch.validate's tolerance, or the Dispatcher refuses
with a DispatchError; any other exception fails. (b) Byte-level mutations of valid small models fed to
dispatch.frontend.load, the Dispatcher and the CLI: success or a DispatchError / exit 2, never another
exception or a traceback. Derandomized for CI; benchmarks/bench_fuzz.py runs the same properties longer.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from dispatch import Dispatcher, DispatchError
from dispatch.cli import main
from dispatch.frontend import load
from dispatch.validate import compare, graph_depth, plan_emulation

STRATEGIES = ("optimal", "priority", "greedy", "heft", "only:gpu", "only:asic")
OPSET = 17
NP = {T.FLOAT: np.float32, T.FLOAT16: np.float16, T.INT64: np.int64}
# ops per input kind: "nchw" a 4-D float tensor, "mat" a 2-D tensor. float16 and int64 chains use the ops
# onnxruntime's CPU provider has kernels for in those types.
OPS = {
    (T.FLOAT, 4): ["Conv", "Relu", "Add", "Mul", "Sub", "Sigmoid", "Tanh", "Softmax", "Transpose", "Concat",
                   "MaxPool", "AveragePool", "BatchNormalization", "ReduceMean", "Flatten"],
    (T.FLOAT, 2): ["MatMul", "Gemm", "Relu", "Add", "Mul", "Sub", "Sigmoid", "Tanh", "Softmax", "Transpose",
                   "Concat", "ReduceMean", "Reshape"],
    (T.FLOAT16, 2): ["MatMul", "Add", "Mul", "Sub", "Relu", "Sigmoid", "Tanh", "Softmax", "Transpose",
                     "Concat", "Reshape"],
    (T.INT64, 2): ["Add", "Mul", "Sub", "Transpose", "Concat", "Reshape"],
}
QUICK = int(os.environ.get("DISPATCH_FUZZ_EXAMPLES", "0")) or None  # a longer run from the environment


@dataclass
class Builder:
    """Grows a graph one node at a time on a current tensor whose shape is tracked here."""

    elem: int
    shape: list[int]
    cur: str = "x"
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    n: int = 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def const(self, arr: np.ndarray) -> str:
        nm = self.name("w")
        self.inits.append(nh.from_array(arr.astype(NP[self.elem]), nm))
        return nm

    def const_i64(self, values: list[int]) -> str:
        nm = self.name("s")
        self.inits.append(nh.from_array(np.array(values, np.int64), nm))
        return nm

    def node(self, op: str, inputs: list[str], shape: list[int], **attrs) -> None:
        out = self.name("t")
        self.nodes.append(h.make_node(op, [self.cur, *inputs], [out], name=self.name(op), **attrs))
        self.cur, self.shape = out, shape


def _values(draw, shape, elem) -> np.ndarray:
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if elem == T.INT64:
        return rng.integers(-3, 4, size=shape).astype(np.int64)
    return rng.standard_normal(shape).astype(NP[elem])


def _add_op(draw, b: Builder, op: str) -> None:  # noqa: C901 - one branch per op, kept together
    s, rank = b.shape, len(b.shape)
    if op in ("Relu", "Sigmoid", "Tanh"):
        b.node(op, [], s)
    elif op == "Softmax":
        b.node(op, [], s, axis=draw(st.integers(-rank, rank - 1)))
    elif op in ("Add", "Mul", "Sub"):
        # a broadcast operand: each dim kept or 1, some leading dims dropped
        keep = draw(st.lists(st.booleans(), min_size=rank, max_size=rank))
        other = [d if k else 1 for d, k in zip(s, keep, strict=True)][draw(st.integers(0, rank)):]
        arr = _values(draw, other, b.elem)
        b.node(op, [b.const(arr)], s)
    elif op == "Transpose":
        perm = draw(st.permutations(range(rank)))
        b.node(op, [], [s[p] for p in perm], perm=list(perm))
    elif op == "Concat":
        axis = draw(st.integers(0, rank - 1))
        other = list(s)
        other[axis] = draw(st.integers(1, 3))
        out = list(s)
        out[axis] += other[axis]
        b.node(op, [b.const(_values(draw, other, b.elem))], out, axis=axis)
    elif op == "Reshape":
        total = int(np.prod(s))
        first = draw(st.sampled_from([d for d in range(1, total + 1) if total % d == 0]))
        b.node(op, [b.const_i64([first, -1])], [first, total // first])
    elif op == "Flatten":
        b.node(op, [], [s[0], int(np.prod(s[1:]))], axis=1)
    elif op == "ReduceMean":
        axes = sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1)))
        keep = draw(st.integers(0, 1))
        out = [1 if i in axes else d for i, d in enumerate(s)] if keep else \
            [d for i, d in enumerate(s) if i not in axes]
        if not out:
            out, keep = [1] * rank, 1
        b.node(op, [], out, axes=axes, keepdims=keep)
    elif op == "MatMul":
        n = draw(st.integers(1, 6))
        b.node(op, [b.const(_values(draw, [s[1], n], b.elem))], [s[0], n])
    elif op == "Gemm":
        n, trans_b = draw(st.integers(1, 6)), draw(st.integers(0, 1))
        w = _values(draw, [n, s[1]] if trans_b else [s[1], n], b.elem)
        bias = _values(draw, draw(st.sampled_from([[n], [1], [s[0], n]])), b.elem)
        b.node(op, [b.const(w), b.const(bias)], [s[0], n], transB=trans_b,
               alpha=draw(st.sampled_from([1.0, 0.5])), beta=draw(st.sampled_from([1.0, 2.0])))
    elif op == "Conv":
        _add_conv(draw, b)
    elif op in ("MaxPool", "AveragePool"):
        k = [draw(st.integers(1, min(3, d))) for d in s[2:]]
        st_ = [draw(st.integers(1, 2)) for _ in k]
        pads = [draw(st.integers(0, kk - 1)) for kk in k] * 2
        out = [(d + pads[i] + pads[i + 2] - k[i]) // st_[i] + 1 for i, d in enumerate(s[2:])]
        b.node(op, [], [s[0], s[1], *out], kernel_shape=k, strides=st_, pads=pads)
    elif op == "BatchNormalization":
        c = s[1]
        ins = [b.const(_values(draw, [c], b.elem)), b.const(_values(draw, [c], b.elem)),
               b.const(_values(draw, [c], b.elem)), b.const(np.abs(_values(draw, [c], b.elem)) + 0.5)]
        b.node(op, ins, s, epsilon=1e-5)
    else:
        raise AssertionError(op)


def _add_conv(draw, b: Builder) -> None:
    n, c, hh, ww = b.shape
    groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
    m = groups * draw(st.integers(1, 2))
    k = [draw(st.integers(1, 3)) for _ in range(2)]
    dil = [draw(st.integers(1, 2)) for _ in range(2)]
    strides = [draw(st.integers(1, 2)) for _ in range(2)]
    pads = [draw(st.integers(0, 1)) for _ in range(4)]
    out = []
    for i, d in enumerate((hh, ww)):
        span = (k[i] - 1) * dil[i] + 1
        size = d + pads[i] + pads[i + 2]
        if span > size:  # the kernel would not fit: shrink it to 1 (always valid)
            k[i], span = 1, 1
        out.append((size - span) // strides[i] + 1)
    w = _values(draw, [m, c // groups, *k], b.elem)
    ins = [b.const(w)] + ([b.const(_values(draw, [m], b.elem))] if draw(st.booleans()) else [])
    b.node("Conv", ins, [n, m, *out], kernel_shape=k, strides=strides, pads=pads, dilations=dil, group=groups)


@st.composite
def graphs(draw) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A valid model and a feed for it: 1 to 4 ops chained on one input."""
    kinds = [(T.FLOAT, 4), (T.FLOAT, 4), (T.FLOAT, 2), (T.FLOAT16, 2), (T.INT64, 2)]
    elem, rank = draw(st.sampled_from(kinds))
    shape = [draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(3, 6)),
             draw(st.integers(3, 6))] if rank == 4 else [draw(st.integers(1, 4)), draw(st.integers(1, 8))]
    b = Builder(elem, shape)
    x_shape = list(shape)
    for _ in range(draw(st.integers(1, 4))):
        ops = OPS[(elem, len(b.shape))] if (elem, len(b.shape)) in OPS else ["Relu" if elem != T.INT64
                                                                             else "Add"]
        _add_op(draw, b, draw(st.sampled_from(ops)))
    g = h.make_graph(b.nodes, "fuzz", [h.make_tensor_value_info("x", elem, x_shape)],
                     [h.make_tensor_value_info(b.cur, elem, b.shape)], b.inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)  # the generator builds valid models only
    return model, {"x": _values(draw, x_shape, elem)}


def check_graph(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tally: Counter | None = None) -> None:
    """Every strategy: outputs equal onnxruntime's within tolerance, or a DispatchError."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    for strategy in STRATEGIES:
        try:
            with Dispatcher(model, strategy=strategy) as d:
                outputs = d.run(feeds)
                result = compare(outputs, reference, d.rtol, d.atol, depth=graph_depth(d.graph),
                                 emulation=plan_emulation(d.graph, d.plan.assignment, d.targets))
        except DispatchError as e:
            if tally is not None:
                tally[f"refused ({refusal_class(e)})"] += 1
            continue
        assert result.ok, (strategy, result, onnx.printer.to_text(model))
        if tally is not None:
            tally["passed"] += 1


def refusal_class(e: DispatchError) -> str:
    """A short class for a refusal sentence: its first six words, quoted names and numbers as '…' and N."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", str(e))
    text = re.sub(r"\d+", "N", text.split(":")[0].split(";")[0].split("(")[0])
    return " ".join(text.split()[:6])


@settings(derandomize=True, max_examples=QUICK or 150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(graphs())
def test_random_graphs_match_onnxruntime_under_every_strategy(case):
    check_graph(*case)


# -- byte-level mutations --------------------------------------------------------------------------------
def _small_models() -> list[bytes]:
    x = h.make_tensor_value_info("x", T.FLOAT, ["batch", 2, 5, 5])
    conv = h.make_graph(
        [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c"], ["y"])],
        "conv", [x], [h.make_tensor_value_info("y", T.FLOAT, ["batch", 3, 5, 5])],
        [nh.from_array(np.ones((3, 2, 3, 3), np.float32), "w")])
    a = h.make_tensor_value_info("a", T.FLOAT, [4, 6])
    mm = h.make_graph(
        [h.make_node("MatMul", ["a", "b"], ["m"]), h.make_node("Add", ["m", "c"], ["s"]),
         h.make_node("Softmax", ["s"], ["y"], axis=-1)],
        "mm", [a], [h.make_tensor_value_info("y", T.FLOAT, [4, 3])],
        [nh.from_array(np.arange(18, dtype=np.float32).reshape(6, 3) / 10, "b"),
         nh.from_array(np.ones(3, np.float32), "c")])
    opsets = [h.make_opsetid("", OPSET)]
    return [h.make_model(g, opset_imports=opsets).SerializeToString() for g in (conv, mm)]


SMALL = _small_models()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SMALL)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and len(data) > 1:
            del data[pos:pos + draw(st.integers(1, 4))]
        else:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
    return bytes(data)


def _non_finite_weights(data: bytes) -> bool:
    model = onnx.load_from_string(data)
    return any(not np.isfinite(nh.to_array(t).astype(np.float64)).all() for t in model.graph.initializer)


def check_mutation(data: bytes, tally: Counter | None = None) -> None:
    """load, Dispatcher (+ a run) and the CLI on the bytes: success or a DispatchError / exit 0 or 2."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        with open(path, "wb") as f:
            f.write(data)
        outcome = "loaded"
        try:
            load(path)
            with Dispatcher(path) as d:
                d.run(d.example_feeds())
            outcome = "ran"
        except DispatchError as e:
            outcome = f"refused ({refusal_class(e)})"
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main([path, "--quiet", "--repeat", "1"])
        if rc == 1:  # known: an infinite weight meeting a Conv's zero padding is NaN on the ASIC (im2col
            # multiplies the padding, inf * 0), finite in onnxruntime (skips it): the CLI's validation says so
            assert "differ from onnxruntime" in err.getvalue() and _non_finite_weights(data), err.getvalue()
        assert rc in (0, 1, 2), (rc, err.getvalue(), data)
        assert "Traceback" not in err.getvalue() + out.getvalue(), (err.getvalue(), data)
        if rc == 2:
            assert len(err.getvalue().strip().splitlines()) == 1, (err.getvalue(), data)
        if tally is not None:
            tally[outcome] += 1
            tally[f"cli exit {rc}"] += 1


@settings(derandomize=True, max_examples=QUICK or 300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_models_never_raise_anything_but_dispatch_error(data):
    check_mutation(data)


def test_unmutated_small_models_run():
    # the mutation bases themselves load and run: a mutation that changes nothing must succeed
    for data in SMALL:
        tally: Counter = Counter()
        check_mutation(data, tally)
        assert tally["ran"] == 1 and tally["cli exit 0"] == 1, tally


@pytest.mark.parametrize(("old", "new", "words"), [
    # a flipped bit in "Conv" (b"\x80onv") made onnx.checker raise UnicodeDecodeError through load
    (b"\x04Conv", b"\x04\x80onv", "not valid UTF-8"),
    # (2,000 examples) the graph's name b"\x80onv" raised UnicodeDecodeError in dispatch.frontend._light_copy;
    # every string field is now decoded once, at load
    (b"\x12\x04conv", b"\x12\x04\x80onv", "name that is not valid UTF-8"),
], ids=["op type", "graph name"])
def test_string_that_is_not_utf8_is_one_sentence(tmp_path, old, new, words):
    # found by the mutation fuzzer
    data = SMALL[0].replace(old, new, 1)
    assert data != SMALL[0]
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    with pytest.raises(DispatchError, match=words):
        load(str(path))
    check_mutation(data)  # the CLI: exit 2, one line

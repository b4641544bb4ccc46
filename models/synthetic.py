"""Synthetic ONNX graphs of exactly N nodes for load, analysis and partition benchmarks and tests.

The graph is a transformer/CNN hybrid on a (batch, seq, hidden) activation: attention blocks, MLPs with an
erf-GELU, LayerNorm, depthwise/grouped/dilated 1-D convolutions with BatchNorm and pooling, Gemm, an fp16
island (Cast → MatMul → Cast), Split/Concat and Pad/Slice movement, Where, reductions, and a torch-style
Shape → Gather → Unsqueeze → Concat → Reshape chain that the frontend folds. Blocks fork from earlier
activations and residual Adds join them back, so the graph has branches and no dead ends. Weights are
random normal scaled by 1/sqrt(fan_in) from a fixed seed, so outputs stay finite and non-degenerate.
Only numpy and onnx are needed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["synthetic_model", "BLOCKS"]

_MIN_OPSET = 17  # LayerNormalization first appears in opset 17


class _Builder:
    """Emits nodes and initializers; `cur` is the current (batch, seq, hidden) activation."""

    def __init__(self, rng: np.random.Generator, seq: int, hidden: int, heads: int, opset: int) -> None:
        self.rng, self.seq, self.hidden, self.heads, self.opset = rng, seq, hidden, heads, opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.cur = "input"
        self.live: list[str] = ["input"]  # recent main-track activations, candidates for forks and residuals
        self.pending: list[str] = []  # activations left behind by a fork, to be joined by a residual Add
        self._n = 0

    # -- primitives -------------------------------------------------------------------------------------
    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs: object) -> list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs

    def op(self, op: str, *inputs: str, **attrs: object) -> str:
        return self.node(op, list(inputs), **attrs)[0]

    def const(self, array: np.ndarray, stem: str = "c") -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape: int, fan_in: int, dtype: type = np.float32) -> str:
        w = self.rng.standard_normal(shape) / np.sqrt(fan_in)
        return self.const(w.astype(dtype), "w")

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64), "shape")

    def residual(self, x: str) -> str:
        """x + an earlier activation: a left-behind fork first, else a random recent one."""
        other = self.pending.pop() if self.pending else self.live[self.rng.integers(len(self.live))]
        return self.op("Add", x, other)

    def block_input(self, allow_fork: bool) -> str:
        """Usually the current activation; sometimes (a fork) an earlier one, leaving `cur` to join later."""
        if allow_fork and len(self.live) > 1 and not self.pending and self.rng.random() < 0.15:
            self.pending.append(self.cur)
            return self.live[self.rng.integers(len(self.live) - 1)]
        return self.cur

    def finish(self, out: str) -> None:
        self.cur = out
        self.live = (self.live + [out])[-8:]

    def snapshot(self) -> tuple[int, int, str, list[str], list[str], int]:
        return len(self.nodes), len(self.inits), self.cur, list(self.live), list(self.pending), self._n

    def restore(self, s: tuple[int, int, str, list[str], list[str], int]) -> None:
        del self.nodes[s[0]:], self.inits[s[1]:]
        self.cur, self.live, self.pending, self._n = s[2], s[3], s[4], s[5]


# -- blocks: each maps the current activation to a new (batch, seq, hidden) activation ----------------------
def _mlp(b: _Builder, x: str) -> str:
    h = b.hidden
    y = b.op("Add", b.op("MatMul", x, b.weight(h, 2 * h, fan_in=h)), b.weight(2 * h, fan_in=2 * h))
    kind = b.rng.integers(4)
    if kind == 0:  # erf GELU as torch exports it: x·0.5·(1 + erf(x/√2))
        e = b.op("Erf", b.op("Div", y, b.const(np.float32(np.sqrt(2.0)))))
        y = b.op("Mul", b.op("Mul", y, b.op("Add", e, b.const(np.float32(1.0)))), b.const(np.float32(0.5)))
    elif kind == 1:
        y = b.op("Mul", y, b.op("Sigmoid", y))  # SiLU
    else:
        y = b.op("Relu" if kind == 2 else "Tanh", y)
    y = b.op("Add", b.op("MatMul", y, b.weight(2 * h, h, fan_in=2 * h)), b.weight(h, fan_in=h))
    return b.residual(y)


def _attention(b: _Builder, x: str) -> str:
    h, s, nh = b.hidden, b.seq, b.heads
    d = h // nh
    if b.rng.random() < 0.3:  # torch-style dynamic shape chain; folds to a constant once the batch is known
        batch = b.op("Unsqueeze", b.op("Gather", b.op("Shape", x), b.const(np.int64(0)), axis=0), b.ints(0))
        split_shape = b.op("Concat", batch, b.ints(s, nh, d), axis=0)
    else:
        split_shape = b.ints(0, 0, nh, d)  # 0 copies the (possibly symbolic) dimension
    q, k, v = (b.op("Reshape", b.op("MatMul", x, b.weight(h, h, fan_in=h)), split_shape) for _ in range(3))
    q = b.op("Transpose", q, perm=[0, 2, 1, 3])
    k = b.op("Transpose", k, perm=[0, 2, 3, 1])
    v = b.op("Transpose", v, perm=[0, 2, 1, 3])
    scores = b.op("Mul", b.op("MatMul", q, k), b.const(np.float32(1.0 / np.sqrt(d))))
    if b.rng.random() < 0.5:  # causal mask as an additive constant
        mask = np.triu(np.full((s, s), -1e4, dtype=np.float32), 1)[None, None]
        scores = b.op("Add", scores, b.const(mask, "mask"))
    ctx = b.op("MatMul", b.op("Softmax", scores, axis=-1), v)
    ctx = b.op("Reshape", b.op("Transpose", ctx, perm=[0, 2, 1, 3]), b.ints(0, 0, h))
    return b.residual(b.op("MatMul", ctx, b.weight(h, h, fan_in=h)))


def _layernorm(b: _Builder, x: str) -> str:
    h = b.hidden
    scale = b.const((1.0 + 0.02 * b.rng.standard_normal(h)).astype(np.float32), "gamma")
    bias = b.const((0.02 * b.rng.standard_normal(h)).astype(np.float32), "beta")
    return b.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=1e-5)


def _conv(b: _Builder, x: str) -> str:
    """1-D convolution over the sequence as a (k×1) Conv: dense, grouped or depthwise, maybe dilated."""
    h = b.hidden
    groups = int(b.rng.choice([1, 4, h]))
    dil = int(b.rng.choice([1, 2]))
    y = b.op("Unsqueeze", b.op("Transpose", x, perm=[0, 2, 1]), b.ints(3))  # (B, H, S, 1)
    y = b.op("Conv", y, b.weight(h, h // groups, 3, 1, fan_in=3 * h // groups), b.weight(h, fan_in=h),
             kernel_shape=[3, 1], pads=[dil, 0, dil, 0], dilations=[dil, 1], group=groups)
    if b.rng.random() < 0.5:
        y = b.op("BatchNormalization", y, b.const(np.ones(h, np.float32)), b.const(np.zeros(h, np.float32)),
                 b.const((0.1 * b.rng.standard_normal(h)).astype(np.float32)),
                 b.const(np.ones(h, np.float32)), epsilon=1e-5)
    y = b.op("Relu", y) if b.rng.random() < 0.5 else b.op("Clip", y, b.const(np.float32(-6)),
                                                           b.const(np.float32(6)))
    if b.rng.random() < 0.5:
        pool = "MaxPool" if b.rng.random() < 0.5 else "AveragePool"
        y = b.op(pool, y, kernel_shape=[3, 1], pads=[1, 0, 1, 0], strides=[1, 1])
    return b.op("Transpose", b.op("Squeeze", y, b.ints(3)), perm=[0, 2, 1])


def _gemm(b: _Builder, x: str) -> str:
    h, s = b.hidden, b.seq
    y = b.op("Gemm", b.op("Reshape", x, b.ints(-1, h)), b.weight(h, h, fan_in=h), b.weight(h, fan_in=h),
             transB=1)
    return b.op("Reshape", y, b.ints(-1, s, h))


def _fp16(b: _Builder, x: str) -> str:
    h = b.hidden
    y = b.op("MatMul", b.op("Cast", x, to=TensorProto.FLOAT16), b.weight(h, h, fan_in=h, dtype=np.float16))
    return b.op("Cast", y, to=TensorProto.FLOAT)


def _concat(b: _Builder, x: str) -> str:
    h = b.hidden
    cat = b.op("Concat", b.op("Tanh", x), b.op("Mul", x, b.const(np.float32(0.5))), axis=-1)
    return b.residual(b.op("MatMul", cat, b.weight(2 * h, h, fan_in=2 * h)))


def _split(b: _Builder, x: str) -> str:
    half = b.hidden // 2
    lo, hi = b.node("Split", [x, b.ints(half, b.hidden - half)], n_out=2, axis=-1)
    return b.op("Concat", b.op("Relu", lo), b.op("Sigmoid", hi), axis=-1)


def _pad_slice(b: _Builder, x: str) -> str:
    y = b.op("Pad", x, b.ints(0, 0, 0, 0, 0, 2))
    return b.op("Slice", y, b.ints(0), b.ints(b.hidden), b.ints(2))


def _center(b: _Builder, x: str) -> str:
    if b.opset >= 18:  # ReduceMean takes axes as an input from opset 18
        return b.op("Sub", x, b.op("ReduceMean", x, b.ints(-1), keepdims=1))
    return b.op("Sub", x, b.op("ReduceMean", x, axes=[-1], keepdims=1))


def _where(b: _Builder, x: str) -> str:
    cond = b.op("Greater", x, b.const(np.float32(0.0)))
    return b.op("Where", cond, x, b.op("Mul", x, b.const(np.float32(0.1))))


def _unary(b: _Builder, x: str) -> str:
    op = str(b.rng.choice(["Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "Softsign", "Erf"]))
    return b.op(op, x)


# name -> (block, relative frequency, may read an earlier activation instead of the current one)
BLOCKS: dict[str, tuple[Callable[[_Builder, str], str], float, bool]] = {
    "mlp": (_mlp, 3.0, True),
    "attention": (_attention, 2.0, True),
    "layernorm": (_layernorm, 3.0, False),
    "conv": (_conv, 2.0, True),
    "gemm": (_gemm, 1.0, True),
    "fp16": (_fp16, 0.5, False),
    "concat": (_concat, 1.0, True),
    "split": (_split, 1.0, False),
    "pad_slice": (_pad_slice, 0.5, False),
    "center": (_center, 0.5, False),
    "where": (_where, 0.5, False),
    "unary": (_unary, 1.0, False),
}


def synthetic_model(num_nodes: int, seed: int = 0, *, batch: int | str = 1, seq: int = 16, hidden: int = 32,
                    heads: int = 4, opset: int = _MIN_OPSET) -> onnx.ModelProto:
    """An ONNX model of exactly `num_nodes` nodes: input 'input' (batch, seq, hidden) → output 'output'.

    `batch` may be a symbol name (a string) to make the batch dimension symbolic. The same arguments give
    the same model. `hidden` must be a multiple of `heads` and of 4 (grouped convolutions use 4 groups).
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be at least 1, got {num_nodes}")
    if hidden % heads or hidden % 4:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads}) and of 4")
    if opset < _MIN_OPSET:
        raise ValueError(f"opset must be at least {_MIN_OPSET}, got {opset}")
    rng = np.random.default_rng(seed)
    b = _Builder(rng, seq, hidden, heads, opset)
    names = list(BLOCKS)
    probs = np.array([BLOCKS[n][1] for n in names])
    probs /= probs.sum()
    while len(b.nodes) < num_nodes:
        left = num_nodes - len(b.nodes)
        if left <= len(b.pending) + 1:  # wind down: join what forks left behind, then pad with unary ops
            x = b.op("Add", b.cur, b.pending.pop()) if b.pending else _unary(b, b.cur)
            b.finish(x)
            continue
        fn, _, forks = BLOCKS[names[rng.choice(len(names), p=probs)]]
        state = b.snapshot()
        out = fn(b, b.block_input(forks and left > 64))
        if len(b.nodes) + len(b.pending) > num_nodes:  # the block does not fit: undo it, use a unary op
            b.restore(state)
            out = _unary(b, b.cur)
        b.finish(out)
    b.nodes[-1].output[0] = "output"  # the last node produces the current activation, which nothing reads
    shape = [batch, seq, hidden]
    graph = helper.make_graph(
        b.nodes, f"synthetic_{num_nodes}_{seed}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="dispatch.models.synthetic")
    model.ir_version = min(model.ir_version, 10)  # onnxruntime 1.18+ reads IR 10
    return model

"""Recurrent layers: RNN, GRU, LSTM (ONNX operator set, one node per layer).

Every step of every direction multiplies the input by W (gates·H × I) and the previous hidden state by R
(gates·H × H), so MACs = directions · seq · batch · gates·H · (I + H), the count of torch's FlopCounterMode
for the same layer run as one addmm per weight matrix and step (torch/utils/flop_counter.py: addmm_flop),
biases excluded. gates: LSTM 4 (i, o, f, c), GRU 3 (z, r, h), RNN 1.

FLOPs = 2·MACs plus, per step, direction, batch row and hidden unit: the sum of the two products for each gate
(gates adds), the biases Wb and Rb when B is given (2·gates adds), and the cell update counted one FLOP per
activation, multiply or add: LSTM 3 σ + 2 tanh + 3 mul + 1 add = 9; GRU 2 σ + 1 tanh + r⊙(R·h) 1 mul +
(1 − z)⊙h̃ + z⊙h 2 mul, 1 sub, 1 add = 8; RNN 1 activation.
"""

from __future__ import annotations

from dispatch.analysis.common import bytes_only, static
from dispatch.cost import OpCost
from dispatch.ir import Node

__all__ = ["GATES", "CELL_FLOPS", "recurrent"]

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
CELL_FLOPS = {"RNN": 1, "GRU": 8, "LSTM": 9}


def recurrent(node: Node) -> OpCost:
    """RNN/GRU/LSTM(X, W, R, B, ...): X is [seq, batch, I] (layout 0) or [batch, seq, I] (layout 1), W is
    [directions, gates·H, I]."""
    x, w = node.input(0), node.input(1)
    if not static(x, w) or len(x.shape) != 3 or len(w.shape) != 3:
        return bytes_only(node, op_class="gemm", modeled=False)
    gates = GATES[node.op_type]
    seq, batch = (x.shape[1], x.shape[0]) if node.attr("layout", 0) else (x.shape[0], x.shape[1])
    directions, gh, inputs = w.shape
    hidden = gh // gates
    steps = directions * seq * batch
    macs = steps * gh * (inputs + hidden)
    bias = 2 * gh if node.input(3) is not None else 0
    flops = 2 * macs + steps * (gh + bias + CELL_FLOPS[node.op_type] * hidden)
    return bytes_only(node, op_class="gemm", flops=flops, macs=macs)

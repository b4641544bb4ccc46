"""Costs that add: the work of an operator (OpCost) and its price on a target (Cost)."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["OpCost", "Cost", "OP_CLASSES"]

# Classes of operator; the GPU roofline keeps one efficiency per class.
OP_CLASSES = ("gemm", "conv", "elementwise", "reduction", "normalization", "movement", "view", "other")


@dataclass(frozen=True)
class OpCost:
    """The work one operator does, independent of where it runs.

    flops counts a multiply-add as two; macs counts it once (Conv, MatMul, Gemm, Einsum only); mac_dtype is
    "int8" for the integer ops (8-bit operands, int32 sums), "" for float MACs in the tensors' dtype.
    bytes_read/bytes_written are the sizes of the inputs/outputs; param_bytes the constant inputs.
    """

    flops: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    param_bytes: int = 0
    op_class: str = "other"
    free: bool = False  # a pure view: no data moves (Reshape, Squeeze, Identity ...)
    modeled: bool = True  # False: no compute model for this op_type; bytes only
    mac_dtype: str = ""  # "int8": integer MACs; "": float MACs in the tensors' dtype

    def __add__(self, other: OpCost) -> OpCost:
        if not isinstance(other, OpCost):
            return NotImplemented
        return OpCost(
            flops=self.flops + other.flops,
            macs=self.macs + other.macs,
            bytes_read=self.bytes_read + other.bytes_read,
            bytes_written=self.bytes_written + other.bytes_written,
            param_bytes=self.param_bytes + other.param_bytes,
            op_class=self.op_class if self.op_class == other.op_class else "other",
            free=self.free and other.free,
            modeled=self.modeled and other.modeled,
            mac_dtype=self._sum_mac_dtype(other),
        )

    def _sum_mac_dtype(self, other: OpCost) -> str:
        """The MAC dtype of a sum: the one dtype of the terms with MACs, "mixed" when they differ."""
        kinds = {c.mac_dtype for c in (self, other) if c.macs}
        if len(kinds) == 1:
            return kinds.pop()
        return "mixed" if kinds else self.mac_dtype or other.mac_dtype

    def __radd__(self, other: object) -> OpCost:
        if other == 0:  # sum() starts from 0
            return self
        return NotImplemented

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved (0 when nothing moves)."""
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Cost:
    """Predicted latency and energy of some work on a target; costs add."""

    latency_s: float = 0.0
    energy_j: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.latency_s + other.latency_s, self.energy_j + other.energy_j)

    def __radd__(self, other: object) -> Cost:
        if other == 0:
            return self
        return NotImplemented

    def scaled(self, factor: float) -> Cost:
        return Cost(self.latency_s * factor, self.energy_j * factor)

    def objective(self, name: str) -> float:
        """The scalar a partitioner minimises: latency, energy, or energy-delay product."""
        if name == "latency":
            return self.latency_s
        if name == "energy":
            return self.energy_j
        if name == "edp":
            return self.latency_s * self.energy_j
        raise ValueError(name)

"""A plan: every node placed on a target, grouped into convex segments, with the transfers between them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dispatch.cost import Cost

__all__ = ["Segment", "Transfer", "Slot", "Plan"]


@dataclass(frozen=True)
class Segment:
    """Consecutive work on one target that runs as one call: its nodes in topological order."""

    id: int
    target: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]  # tensors it reads that come from outside the segment (graph inputs, transfers)
    outputs: tuple[str, ...]  # tensors it produces that are used outside it (other segments, graph outputs)
    cost: Cost  # predicted: sum of its nodes' costs plus the target's per-segment overhead


@dataclass(frozen=True)
class Transfer:
    """A tensor moved from the target that produced it to a target that consumes it (paid once per pair)."""

    tensor: str
    src: str
    dst: str
    nbytes: int
    cost: Cost
    src_segment: int  # the segment producing it (-1: a graph input, produced on the host)
    dst_segment: int  # the first segment on dst that needs it


@dataclass(frozen=True)
class Slot:
    """One interval of the predicted schedule: a segment on its target or a transfer on its link."""

    kind: str  # "segment" | "transfer"
    ref: int  # segment id, or index into Plan.transfers
    resource: str  # target name, or "link:src->dst"
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Plan:
    """The partitioner's answer, with its predicted figures."""

    strategy: str
    objective: str
    assignment: Mapping[str, str]  # node name -> target name
    segments: tuple[Segment, ...]  # in an executable order
    transfers: tuple[Transfer, ...]
    predicted: Cost  # sequential: segments + transfers one after another
    makespan_s: float  # when targets overlap on independent branches (list schedule)
    schedule: tuple[Slot, ...]
    lower_bound_s: float  # every node on its cheapest target, no transfers, no launches
    optimal: bool  # proven optimal for the objective under the cost model
    gap: float | None = None  # relative MIP gap when a time limit stopped the solver
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def transfer_bytes(self) -> int:
        return sum(t.nbytes for t in self.transfers)

"""only:TARGET: everything on one target; a node it cannot run falls back to the next target in order."""

from __future__ import annotations

from typing import Any

from dispatch.errors import DispatchError
from dispatch.partition.priority import first_supported
from dispatch.problem import Assignment, Problem

__all__ = ["only"]


def only(problem: Problem, *, target: str | None = None, **_: Any) -> Assignment:
    """All nodes on `target`; unsupported ones on the next target after it (wrapping) that supports them."""
    if target is None:
        raise DispatchError("Strategy 'only' needs a target; write only:TARGET, e.g. "
                            f"only:{problem.target_names[0]}.")
    j = problem.target_index(target)
    t = problem.num_targets
    return Assignment(first_supported(problem, [(j + i) % t for i in range(t)]))

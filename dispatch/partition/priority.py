"""priority: what onnxruntime does. Targets in the given order; each claims every node it supports."""

from __future__ import annotations

from typing import Any

import numpy as np

from dispatch.problem import Assignment, Problem

__all__ = ["priority", "first_supported"]


def first_supported(problem: Problem, order: list[int]) -> np.ndarray:
    """For every node, the first target in `order` that supports it."""
    sup = problem.supported[:, order]
    return np.asarray(order, np.int64)[np.argmax(sup, axis=1)]


def priority(problem: Problem, **_: Any) -> Assignment:
    """Each node on the first target, in the order the targets were given, that supports it."""
    return Assignment(first_supported(problem, list(range(problem.num_targets))))

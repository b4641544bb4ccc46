"""greedy: each node on its cheapest target for the objective, transfers and launches ignored."""

from __future__ import annotations

from typing import Any

import numpy as np

from dispatch.problem import Assignment, Problem, objective_weights

__all__ = ["greedy"]


def greedy(problem: Problem, **_: Any) -> Assignment:
    """Per node: the supported target minimising the node's own objective (latency·energy for edp, latency
    for makespan)."""
    if problem.objective == "edp":
        cost = np.where(problem.supported, problem.node_lat * problem.node_en, np.inf)
    elif problem.objective == "makespan":
        cost = problem.scalar(1.0, 0.0)[0]
    else:
        cost = problem.scalar(*objective_weights(problem.objective))[0]
    return Assignment(np.argmin(cost, axis=1).astype(np.int64))  # ties: the first target in the given order

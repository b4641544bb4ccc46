"""Plans as data: save a placement as JSON, load it back (validated against the model) into a Plan.

The file (format "dispatch-plan", version 1) holds the assignment node -> target, which is what loading
reads; segments, transfers and predicted figures are written for people and ignored on load. Edit the
assignment by hand to try a placement, then load it with --load-plan: the plan is rebuilt from it (segments,
transfers, figures) with strategy "loaded".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dispatch.cost import OpCost
from dispatch.errors import DispatchError
from dispatch.fileio import write_text
from dispatch.ir import Graph
from dispatch.plan import Plan, build_plan
from dispatch.problem import Assignment, Problem
from targets.base import Target

__all__ = ["save_plan", "load_assignment", "load_plan", "plan_to_dict", "FORMAT", "VERSION"]

FORMAT = "dispatch-plan"
VERSION = 1


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The JSON content of a saved plan."""
    return {
        "format": FORMAT, "version": VERSION, "strategy": plan.strategy, "objective": plan.objective,
        "assignment": dict(plan.assignment),
        "segments": [{"id": s.id, "target": s.target, "nodes": list(s.nodes)} for s in plan.segments],
        "transfers": [{"tensor": t.tensor, "src": t.src, "dst": t.dst, "bytes": t.nbytes}
                      for t in plan.transfers],
        "predicted": {"latency_s": plan.predicted.latency_s, "energy_j": plan.predicted.energy_j,
                      "makespan_s": plan.makespan_s},
        "optimal": plan.optimal,
    }


def save_plan(plan: Plan, path: str | os.PathLike) -> None:
    """Write the plan's placement (and, for reading, its segments and figures) as JSON."""
    write_text(path, json.dumps(plan_to_dict(plan), indent=1) + "\n", "the plan")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DispatchError(f"Key '{k}' appears twice in the plan file; keep one entry for it.")
        out[k] = v
    return out


def _read(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise DispatchError(f"Plan file '{p}' is a folder; give a file written by --save-plan.")
    if not p.is_file():
        raise DispatchError(f"Plan file '{p}' does not exist; give a file written by --save-plan.")
    try:
        data = json.loads(p.read_text(), object_pairs_hook=_no_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DispatchError(f"Plan file '{p}' is not valid JSON ({e}); fix it or save the plan "
                            "again.") from None
    except RecursionError:  # json nests one Python frame per level: a 100,000-deep file ends here
        raise DispatchError(f"Plan file '{p}' nests too deeply to be a plan (a plan is two levels deep); "
                            "give a file written by --save-plan.") from None
    except DispatchError as e:
        raise DispatchError(f"Plan file '{p}': {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DispatchError(f"'{p}' is not a plan file (no \"format\": \"{FORMAT}\"); give a file written by "
                            "--save-plan.")
    if data.get("version") != VERSION:
        raise DispatchError(f"Plan file '{p}' has version {data.get('version')!r}; this dispatch reads "
                            f"version {VERSION}, so save the plan again.")
    if not isinstance(data.get("assignment"), dict):
        raise DispatchError(f"Plan file '{p}' has no \"assignment\" object (node -> target); save the plan "
                            "again.")
    return data


def load_assignment(path: str | os.PathLike, graph: Graph, targets: Mapping[str, Target] | Sequence[str],
                    supported: np.ndarray | None = None,
                    reasons: Sequence[Mapping[int, str]] | None = None) -> np.ndarray:
    """The file's node -> target mapping as target indices, checked: every node once, known targets, support.

    `supported`/`reasons` (from a Problem) add the check that each target can run its nodes.
    """
    data = _read(path)
    names = list(targets)
    index = {name: j for j, name in enumerate(names)}
    assign = np.full(len(graph.nodes), -1, np.int64)
    for node_name, target in data["assignment"].items():
        node = graph.by_name.get(node_name)
        if node is None:
            raise DispatchError(f"Plan file '{path}' places node '{node_name}', which the model does not "
                                "have; remove it or save a plan for this model.")
        if not isinstance(target, str) or target not in index:
            raise DispatchError(f"Plan file '{path}' puts node '{node_name}' on target {target!r}, which is "
                                f"not among the targets ({', '.join(names)}); use one of them.")
        j = index[target]
        if supported is not None and not supported[node.index, j]:
            why = reasons[j][node.index] if reasons is not None else "unsupported"
            ok = [names[b] for b in np.flatnonzero(supported[node.index])]
            raise DispatchError(f"Plan file '{path}' puts node '{node_name}' ({node.op_type}) on '{target}', "
                                f"which cannot run it ({why}); put it on {' or '.join(ok)}.")
        assign[node.index] = j
    missing = np.flatnonzero(assign < 0)
    if missing.size:
        name = graph.nodes[int(missing[0])].name
        more = f" ({missing.size - 1} more nodes are missing too)" if missing.size > 1 else ""
        raise DispatchError(f"Plan file '{path}' does not place node '{name}'{more}; add \"{name}\": "
                            f"\"<target>\" to its assignment.")
    return assign


def load_plan(path: str | os.PathLike, graph: Graph, targets: Mapping[str, Target], *,
              opcosts: Sequence[OpCost] | None = None, objective: str | None = None,
              problem: Problem | None = None) -> Plan:
    """Read a saved placement, validate it against the model and targets, and rebuild the Plan ("loaded").

    The objective is the file's unless given; pass `problem` to reuse one already built for these targets.
    """
    if problem is None:
        obj = objective or _read(path).get("objective", "latency")
        problem = Problem.build(graph, opcosts, targets, obj)
    a = load_assignment(path, graph, problem.target_names, problem.supported, problem.reasons)
    over = problem.capacity_violations(a)
    if over:
        raise DispatchError(f"Plan file '{path}' does not fit the targets: {over[0]}; move some of those "
                            "nodes to another target.")
    return build_plan(problem, Assignment(a, notes=(f"loaded from {path}",)), "loaded")

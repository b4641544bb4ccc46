"""Why a node sits where it does: its cost on every target, and what moving it would change (what-if).

A what-if re-builds the plan with that one node moved, so the change counts the node's own cost, the
transfers that appear or vanish, segments that split or merge (each with its launch), fusion pairs that
join or leave one segment, and the idle power of a target that starts or stops holding nodes: the printed
objective of dispatch/objective.py.
"""

from __future__ import annotations

from typing import Any

from dispatch.plan import Plan, assignment_array, build_plan
from dispatch.problem import Problem

__all__ = ["explain", "render_explain"]


def explain(plan: Plan, problem: Problem, node_name: str) -> dict[str, Any]:
    """{node, op_type, target, objective, costs: {target: ...}, what_if: {target: ...}} for one node."""
    node = problem.graph.node(node_name)  # DispatchError naming the node when it is not in the model
    v = node.index
    a = assignment_array(problem, plan.assignment)
    here = int(a[v])
    costs: dict[str, dict[str, Any]] = {}
    what_if: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(problem.target_names):
        if not problem.supported[v, j]:
            costs[name] = {"supported": False, "reason": problem.reasons[j][v]}
            what_if[name] = {"supported": False, "reason": problem.reasons[j][v]}
            continue
        costs[name] = {"supported": True, "latency_s": float(problem.node_lat[v, j]),
                       "energy_j": float(problem.node_en[v, j]),
                       "weight_bytes": int(problem.weight_bytes[v, j])}
        if j == here:
            continue
        moved = a.copy()
        moved[v] = j
        alt = build_plan(problem, moved, "what-if")
        what_if[name] = {
            "supported": True,
            "delta_objective": alt.objective_value() - plan.objective_value(),
            "delta_latency_s": alt.predicted.latency_s - plan.predicted.latency_s,
            "delta_energy_j": alt.predicted.energy_j - plan.predicted.energy_j,
            "delta_makespan_s": alt.makespan_s - plan.makespan_s,
            "delta_transfer_bytes": alt.transfer_bytes - plan.transfer_bytes,
            "delta_segments": len(alt.segments) - len(plan.segments),
            "capacity": problem.capacity_violations(moved),
        }
    return {"node": node.name, "op_type": node.op_type, "target": problem.target_names[here],
            "objective": plan.objective, "strategy": plan.strategy, "costs": costs, "what_if": what_if}


def _num(x: float, unit: str) -> str:
    if unit == "s":
        return f"{x * 1e6:+.3f} us"
    if unit == "J":
        return f"{x * 1e3:+.4f} mJ"
    return f"{x:+.4g}"


def render_explain(info: dict[str, Any]) -> str:
    """Plain text of `explain`'s answer, as the CLI prints it for --explain NODE."""
    lines = [f"{info['node']} ({info['op_type']}) is on {info['target']} "
             f"(strategy {info['strategy']}, objective {info['objective']})"]
    lines.append("  cost on each target:")
    for name, c in info["costs"].items():
        mark = " *" if name == info["target"] else ""
        if c["supported"]:
            lines.append(f"    {name:<12} {c['latency_s'] * 1e6:12.3f} us {c['energy_j'] * 1e3:12.4f} mJ"
                         f"{mark}")
        else:
            lines.append(f"    {name:<12} cannot run it: {c['reason']}")
    if len(info["what_if"]) == 0:
        lines.append("  no other target to move it to")
        return "\n".join(lines)
    lines.append("  if moved (whole plan re-evaluated: node, transfers, launches, fusion, idle power):")
    unit = {"latency": "s", "energy": "J", "makespan": "s"}.get(info["objective"], "")
    for name, w in info["what_if"].items():
        if not w["supported"]:
            lines.append(f"    to {name:<9} impossible: {w['reason']}")
            continue
        tail = f"; exceeds capacity: {w['capacity'][0]}" if w["capacity"] else ""
        verdict = "worse" if w["delta_objective"] > 0 else "better" if w["delta_objective"] < 0 else "same"
        parts = [f"latency {_num(w['delta_latency_s'], 's')}" if info["objective"] != "latency" else "",
                 f"energy {_num(w['delta_energy_j'], 'J')}" if info["objective"] != "energy" else "",
                 f"makespan {_num(w['delta_makespan_s'], 's')}",
                 f"transfers {int(w['delta_transfer_bytes']):+d} B",
                 f"segments {int(w['delta_segments']):+d}"]
        lines.append(f"    to {name:<9} {info['objective']} {_num(w['delta_objective'], unit)} ({verdict}); "
                     + ", ".join(x for x in parts if x) + tail)
    return "\n".join(lines)

"""The report: plain data first (the JSON contract of DESIGN.md), then renderers for the terminal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from dispatch.cost import OpCost
from dispatch.ir import Graph

__all__ = ["SCHEMA_VERSION", "model_section", "totals_section", "nodes_section", "analysis_report",
           "render_analysis"]

SCHEMA_VERSION = 1


def model_section(graph: Graph) -> dict[str, Any]:
    return {"name": graph.name, "path": graph.path, "opset": graph.opset, "num_nodes": len(graph),
            "params": graph.num_params, "param_bytes": graph.param_bytes, "notes": list(graph.notes)}


def totals_section(costs: Sequence[OpCost]) -> dict[str, int]:
    total = sum(costs, OpCost())
    return {"flops": total.flops, "macs": total.macs, "bytes_read": total.bytes_read,
            "bytes_written": total.bytes_written, "param_bytes": total.param_bytes}


def nodes_section(graph: Graph, costs: Sequence[OpCost]) -> list[dict[str, Any]]:
    rows = []
    for n, c in zip(graph.nodes, costs):
        rows.append({"name": n.name, "op_type": n.op_type, "op_class": c.op_class, "flops": c.flops,
                     "macs": c.macs, "bytes_read": c.bytes_read, "bytes_written": c.bytes_written,
                     "param_bytes": c.param_bytes, "arithmetic_intensity": round(c.arithmetic_intensity, 6),
                     "modeled": c.modeled, "free": c.free,
                     "output_shapes": [list(v.shape) if v.shape is not None else None for v in n.outputs]})
    return rows


def analysis_report(graph: Graph, costs: Sequence[OpCost]) -> dict[str, Any]:
    """The analysis part of the JSON report: schema_version, model, totals, nodes."""
    return {"schema_version": SCHEMA_VERSION, "model": model_section(graph),
            "totals": totals_section(costs), "nodes": nodes_section(graph, costs)}


# -- terminal -----------------------------------------------------------------------------------------
def _si(x: float, unit: str = "") -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def render_analysis(console: Any, graph: Graph, costs: Sequence[OpCost], *, ops: str = "25") -> None:
    """Model summary, op-type histogram and the per-operator table sorted by FLOPs (measured: none)."""
    from rich.table import Table

    t = totals_section(costs)
    console.print(f"[bold]{graph.name}[/bold]  opset {graph.opset}, {len(graph)} nodes, "
                  f"{graph.num_params:,} parameters ({_si(graph.param_bytes, 'B')})")
    console.print(f"  {_si(t['macs'], 'MAC')}, {_si(t['flops'], 'FLOP')}, "
                  f"read {_si(t['bytes_read'], 'B')}, written {_si(t['bytes_written'], 'B')}  "
                  "(derived from shapes; FLOPs = 2·MACs + element-wise work)")
    for note in graph.notes:
        console.print(f"  note: {note}")

    hist = Counter(n.op_type for n in graph.nodes)
    flops_by_type: Counter[str] = Counter()
    for n, c in zip(graph.nodes, costs):
        flops_by_type[n.op_type] += c.flops
    h = Table(title="Operators by type", title_justify="left")
    for col in ("op_type", "count", "GFLOPs", "share"):
        h.add_column(col, justify="left" if col == "op_type" else "right")
    total_flops = t["flops"] or 1
    for op, count in sorted(hist.items(), key=lambda kv: (-flops_by_type[kv[0]], -kv[1], kv[0])):
        h.add_row(op, str(count), f"{flops_by_type[op] / 1e9:.3f}", f"{100 * flops_by_type[op] / total_flops:.1f}%")
    console.print(h)

    order = sorted(range(len(costs)), key=lambda i: (-costs[i].flops, i))
    limit = len(order) if ops == "all" else int(ops)
    shown = order[:limit]
    tab = Table(title=f"Operators by FLOPs ({len(shown)} of {len(order)})", title_justify="left")
    for col in ("node", "op_type", "output shape", "MFLOPs", "MACs", "bytes", "params", "FLOP/B"):
        tab.add_column(col, justify="left" if col in ("node", "op_type", "output shape") else "right")
    for i in shown:
        n, c = graph.nodes[i], costs[i]
        shape = "x".join(str(d) for d in n.outputs[0].shape) if n.outputs and n.outputs[0].shape else "?"
        flag = "" if c.modeled else " (no compute model)"
        tab.add_row(n.name, n.op_type + flag, shape, f"{c.flops / 1e6:.3f}", _si(c.macs),
                    _si(c.bytes_moved, "B"), _si(c.param_bytes, "B"), f"{c.arithmetic_intensity:.2f}")
    console.print(tab)

"""The placement as a Graphviz graph: operators coloured by target, segments as clusters, transfers bold.

* Each ONNX node is a box labelled with its name and op_type, filled with its target's colour.
* Each segment is a cluster (`subgraph cluster_<id>`) labelled with its target, op count and predicted time.
* Each tensor edge from a producer to a consumer (graph inputs and outputs are ellipses, on the host) is a
  thin grey arrow, or a bold red one labelled with the tensor's size when the plan transfers that tensor to
  the consumer's target (one of `Plan.transfers`).

`write_dot` also renders an SVG beside the DOT file when Graphviz's `dot` is on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dispatch.fileio import write_text
from dispatch.ir import Graph
from dispatch.report import _bytes, _sec

__all__ = ["PALETTE", "dot_source", "write_dot"]

# Fill colours per target, in order of first use (ColorBrewer "Set2", colour-blind safe).
PALETTE = ("#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#ffd92f", "#e5c494", "#b3b3b3")
HOST_COLOUR = "#ffffff"


def _q(text: str) -> str:
    """A DOT quoted ID: backslashes and quotes escaped, newlines as DOT's centred line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot_source(graph: Graph, plan: Any, *, targets: Mapping[str, Any] | None = None) -> str:
    """The DOT text of `graph` placed by `plan`; `targets` (optional) names presets in the legend."""
    order = list(dict.fromkeys(s.target for s in plan.segments))
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(order)}
    moved = {(t.tensor, t.dst) for t in plan.transfers}
    to_host = {t.tensor for t in plan.transfers if t.dst_segment < 0}  # graph outputs leaving a target
    where = plan.assignment
    title = f"{graph.name}: {plan.strategy} plan, predicted {_sec(plan.predicted.latency_s)}"
    lines = [f"digraph {_q(graph.name)} {{",
             "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [color="#888888", arrowsize=0.6, fontname="Helvetica", fontsize=8];',
             f"  label={_q(title)};",
             "  labelloc=t;"]
    # Legend: one swatch per target.
    lines.append('  subgraph cluster_legend { label="targets"; style=dashed;')
    for t in order:
        preset = f" ({targets[t].spec.name})" if targets and t in targets else ""
        lines.append(f"    {_q('legend:' + t)} [label={_q(t + preset)}, fillcolor={_q(colour[t])}];")
    lines.append("  }")
    for seg in plan.segments:
        label = f"segment {seg.id}: {seg.target}, {len(seg.nodes)} ops, {_sec(seg.cost.latency_s)} predicted"
        lines.append(f"  subgraph cluster_{seg.id} {{")
        lines.append(f'    label={_q(label)}; style="rounded"; color={_q(colour[seg.target])}; penwidth=2;')
        for name in seg.nodes:
            text = name + "\n" + graph.node(name).op_type
            lines.append(f"    {_q(name)} [label={_q(text)}, fillcolor={_q(colour[seg.target])}];")
        lines.append("  }")
    for v in graph.inputs:
        if v.consumers:
            lines.append(f"  {_q('input:' + v.name)} [label={_q(v.name)}, shape=ellipse, "
                         f"fillcolor={_q(HOST_COLOUR)}];")
    for v in graph.outputs:
        lines.append(f"  {_q('output:' + v.name)} [label={_q(v.name)}, shape=ellipse, "
                     f"fillcolor={_q(HOST_COLOUR)}];")

    def edge(src: str, dst: str, tensor: Any, dst_target: str | None) -> str:
        if (tensor.name, dst_target) in moved if dst_target is not None else tensor.name in to_host:
            label = f"{tensor.name}\n{_bytes(tensor.nbytes)}"
            return (f"  {_q(src)} -> {_q(dst)} [style=bold, penwidth=3, color=\"#d62728\", "
                    f"label={_q(label)}];")
        return f"  {_q(src)} -> {_q(dst)};"

    for v in graph.inputs:
        for c in dict.fromkeys(v.consumers):
            lines.append(edge("input:" + v.name, c.name, v, where[c.name]))
    for n in graph.nodes:
        for v in n.outputs:
            for c in dict.fromkeys(v.consumers):
                lines.append(edge(n.name, c.name, v, where[c.name]))
            if v.is_graph_output:
                lines.append(edge(n.name, "output:" + v.name, v, None))
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(path: str | Path, graph: Graph, plan: Any, *, targets: Mapping[str, Any] | None = None,
              svg: bool = True) -> list[Path]:
    """Write the DOT file, and PATH with suffix .svg when `svg` and Graphviz's `dot` is on PATH.

    Returns the files written. A failing `dot` leaves the DOT file and raises nothing (the SVG is extra).
    """
    p = Path(path)
    write_text(p, dot_source(graph, plan, targets=targets), "the graph")
    written = [p]
    exe = shutil.which("dot") if svg else None
    if exe:
        out = p.with_suffix(".svg")
        try:
            subprocess.run([exe, "-Tsvg", str(p), "-o", str(out)], check=True, capture_output=True,
                           timeout=300)
            written.append(out)
        except (subprocess.SubprocessError, OSError):
            pass
    return written

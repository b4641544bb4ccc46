"""The planned model as ONNX, each node annotated with its placement, so Netron shows where it runs.

The model written is the one that was planned: the graph after shape inference and constant folding
(`Graph.model`), with node names made unique. Each node gets `metadata_props` (NodeProto field 9, ONNX IR
10; older readers ignore it) and a line in its `doc_string` (Netron shows it as the node's description):

    dispatch.target                 target name, e.g. "gpu"
    dispatch.segment                segment id in the plan
    dispatch.predicted_latency_s    predicted latency on its target (repr of a float, seconds)
    dispatch.predicted_energy_j     predicted energy on its target (joules)
    dispatch.cost.<TARGET>          "<latency_s> s, <energy_j> J" on every target that supports the node

The model itself gets `dispatch.strategy`, `dispatch.objective`, `dispatch.targets` (JSON: name -> preset)
and the plan's predicted `dispatch.predicted_latency_s`, `dispatch.predicted_makespan_s` and
`dispatch.predicted_energy_j` in its `metadata_props`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from dispatch.errors import DispatchError
from dispatch.fileio import write_bytes
from dispatch.ir import Graph

__all__ = ["PREFIX", "annotate_model", "write_annotated", "placement_of"]

PREFIX = "dispatch."
_TWO_GB = 2**31 - 1  # protobuf's message limit: larger models need external data


def _set(props: Any, key: str, value: str) -> None:
    """Set metadata_props[key] = value, replacing an earlier entry of that key."""
    for e in props:
        if e.key == key:
            e.value = value
            return
    e = props.add()
    e.key, e.value = key, value


def annotate_model(graph: Graph, plan: Any, targets: Mapping[str, Any] | None = None, *,
                   node_costs: Sequence[Mapping[str, Mapping[str, float]]] | None = None) -> onnx.ModelProto:
    """A copy of `graph.model` with each node's placement and predicted costs in its metadata.

    node_costs: per node (aligned with graph.nodes), {target: {"latency_s", "energy_j"}}, as in the JSON
    report's nodes[i]["cost"]; computed from `targets` when not given.
    """
    if node_costs is None:
        if targets is None:
            raise DispatchError("annotate_model needs the targets or the per-node costs; pass targets=.")
        from dispatch.analysis import analyze
        from dispatch.report import node_costs as compute

        node_costs = compute(graph, analyze(graph), targets)
    model = graph.full_model()
    seg_of = {n: s.id for s in plan.segments for n in s.nodes}
    by_name = {p.name: p for p in model.graph.node}
    for node, costs in zip(graph.nodes, node_costs, strict=True):
        proto = by_name[node.name]
        target = plan.assignment[node.name]
        own = costs.get(target, {})
        props = proto.metadata_props
        _set(props, PREFIX + "target", target)
        _set(props, PREFIX + "segment", str(seg_of[node.name]))
        if own:
            _set(props, PREFIX + "predicted_latency_s", repr(own["latency_s"]))
            _set(props, PREFIX + "predicted_energy_j", repr(own["energy_j"]))
        for t, c in costs.items():
            _set(props, f"{PREFIX}cost.{t}", f"{c['latency_s']!r} s, {c['energy_j']!r} J")
        line = f"dispatch: on {target} (segment {seg_of[node.name]})"
        if own:
            line += f", predicted {own['latency_s'] * 1e6:.4g} us, {own['energy_j'] * 1e6:.4g} uJ"
        doc = [s for s in proto.doc_string.splitlines() if not s.startswith("dispatch: ")]
        proto.doc_string = "\n".join([*doc, line])
    props = model.metadata_props
    presets = {n: t.spec.name for n, t in targets.items()} if targets else {}
    _set(props, PREFIX + "strategy", plan.strategy)
    _set(props, PREFIX + "objective", plan.objective)
    _set(props, PREFIX + "targets", json.dumps(presets or sorted(set(plan.assignment.values()))))
    _set(props, PREFIX + "predicted_latency_s", repr(plan.predicted.latency_s))
    _set(props, PREFIX + "predicted_makespan_s", repr(plan.makespan_s))
    _set(props, PREFIX + "predicted_energy_j", repr(plan.predicted.energy_j))
    return model


def placement_of(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> target read back from an annotated model's metadata (nodes without one left out)."""
    out = {}
    for p in model.graph.node:
        for e in p.metadata_props:
            if e.key == PREFIX + "target":
                out[p.name] = e.value
    return out


def write_annotated(path: str | Path, graph: Graph, plan: Any, targets: Mapping[str, Any] | None = None, *,
                    node_costs: Sequence[Mapping[str, Mapping[str, float]]] | None = None) -> Path:
    """Write the annotated model to `path` (weights in a side file PATH.data when over 2 GB)."""
    p = Path(path)
    model = annotate_model(graph, plan, targets, node_costs=node_costs)
    if model.ByteSize() <= _TWO_GB:
        write_bytes(p, model.SerializeToString(), "the annotated model")
        return p
    # over protobuf's 2 GB: weights go to PATH.data; both files are written in a scratch folder beside the
    # target and renamed into place (data first), so a failure leaves the earlier pair as it was
    scratch = None
    try:
        scratch = Path(tempfile.mkdtemp(dir=p.parent, prefix=f".{p.name}."))
        onnx.save(model, str(scratch / p.name), save_as_external_data=True, location=p.name + ".data")
        os.replace(scratch / (p.name + ".data"), p.parent / (p.name + ".data"))
        os.replace(scratch / p.name, p)
    except OSError as e:
        raise DispatchError(f"Cannot write the annotated model to {str(path)!r} ({e.strerror}); the "
                            "earlier file, if any, is unchanged: choose a writable path or free some "
                            "space.") from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return p

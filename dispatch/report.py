"""The report: plain data first (the JSON contract, docs/architecture.md), then renderers for the terminal.

`build_report(graph, plan, targets, ...)` is the one place the JSON report is assembled (the CLI and
`Dispatcher.report()` both call it); `render_report(console, report)` draws it on a terminal from that same
data, so what a person reads and what a program parses cannot disagree. Every figure carries its provenance:
*predicted* (a cost model, for the planned hardware), *derived* (arithmetic on predicted figures) or
*measured* (wall time on this machine, with the execution provider that produced it).

Dollars per million inferences (derived), when every target the plan uses has a price in its spec:

    usd_per_million_inferences = 1e6 · latency_s · Σ_{t used by the plan} usd_per_hour_t / 3600

i.e. each inference holds every rented target it uses for its whole predicted (sequential) latency.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dispatch.cost import Cost, OpCost
from dispatch.ir import Graph

__all__ = ["SCHEMA_VERSION", "model_section", "totals_section", "nodes_section", "analysis_report",
           "render_analysis", "cost_dict", "targets_section", "plan_section", "node_costs",
           "strategies_section", "measured_section", "usd_per_million", "build_report", "to_json",
           "write_json", "headline", "render_report"]

SCHEMA_VERSION = 1


def model_section(graph: Graph) -> dict[str, Any]:
    return {"name": graph.name, "path": graph.path, "opset": graph.opset, "num_nodes": len(graph),
            "params": graph.num_params, "param_bytes": graph.param_bytes, "notes": list(graph.notes)}


def totals_section(costs: Sequence[OpCost]) -> dict[str, int]:
    total = sum(costs, OpCost())
    return {"flops": total.flops, "macs": total.macs,
            "int8_macs": sum(c.macs for c in costs if c.mac_dtype == "int8"), "bytes_read": total.bytes_read,
            "bytes_written": total.bytes_written, "param_bytes": total.param_bytes}


def nodes_section(graph: Graph, costs: Sequence[OpCost]) -> list[dict[str, Any]]:
    rows = []
    for n, c in zip(graph.nodes, costs, strict=True):
        rows.append({"name": n.name, "op_type": n.op_type, "op_class": c.op_class, "flops": c.flops,
                     "macs": c.macs, "bytes_read": c.bytes_read, "bytes_written": c.bytes_written,
                     "param_bytes": c.param_bytes, "arithmetic_intensity": round(c.arithmetic_intensity, 6),
                     "modeled": c.modeled, "free": c.free,
                     "output_shapes": [list(v.shape) if v.shape is not None else None for v in n.outputs],
                     **({"mac_dtype": c.mac_dtype} if c.mac_dtype else {})})
    return rows


def analysis_report(graph: Graph, costs: Sequence[OpCost]) -> dict[str, Any]:
    """The analysis part of the JSON report: schema_version, model, totals, nodes."""
    return {"schema_version": SCHEMA_VERSION, "model": model_section(graph),
            "totals": totals_section(costs), "nodes": nodes_section(graph, costs)}


# -- the plan, targets, strategies and measurement sections ------------------------------------------------
def cost_dict(c: Cost) -> dict[str, float]:
    return {"latency_s": c.latency_s, "energy_j": c.energy_j}


def _source(path: str) -> str:
    """A spec's file as a path relative to the project when it is a bundled preset (machine-independent)."""
    p = Path(path)
    root = Path(__file__).resolve().parent.parent
    try:
        return p.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def targets_section(targets: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{target: describe() + preset, power, price and link figures}, in the order the targets were given."""
    out: dict[str, dict[str, Any]] = {}
    for name, t in targets.items():
        d = dict(t.describe())
        s = t.spec
        d["source"] = _source(d.get("source", s.source))
        d.update(preset=s.name, idle_w=s.idle_w, active_w=s.active_w, usd_per_hour=s.usd_per_hour,
                 link={"bandwidth_Bps": s.link.bandwidth_Bps if math.isfinite(s.link.bandwidth_Bps) else None,
                       "latency_s": s.link.latency_s, "pj_per_byte": s.link.pj_per_byte},
                 capacity_bytes=t.capacity_bytes)
        out[name] = d
    return out


def node_costs(graph: Graph, costs: Sequence[OpCost], targets: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per node, {target: {"latency_s", "energy_j"}} for every target that supports it (predicted)."""
    out = []
    for node, op in zip(graph.nodes, costs, strict=True):
        out.append({name: cost_dict(t.cost(node, op)) for name, t in targets.items() if t.supports(node)})
    return out


def usd_per_million(latency_s: float, used: Sequence[str], targets: Mapping[str, Any]) -> float | None:
    """Derived: 1e6 · latency_s · Σ usd_per_hour / 3600 over the targets used; None if one has no price."""
    prices = [targets[t].spec.usd_per_hour for t in used if t in targets]
    if not prices or any(p is None for p in prices):
        return None
    return 1e6 * latency_s * sum(prices) / 3600.0


def plan_section(plan: Any, costs: Sequence[OpCost] | None = None, graph: Graph | None = None,
                 targets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Strategy, optimality, segments (with FLOPs and transfers in/out), transfers and predicted totals."""
    flops = {}
    if costs is not None and graph is not None:
        flops = {n.name: c.flops for n, c in zip(graph.nodes, costs, strict=True)}
    t_in: Counter[int] = Counter()
    t_out: Counter[int] = Counter()
    b_in: Counter[int] = Counter()
    b_out: Counter[int] = Counter()
    for t in plan.transfers:
        if t.dst_segment >= 0:
            t_in[t.dst_segment] += 1
            b_in[t.dst_segment] += t.nbytes
        if t.src_segment >= 0:
            t_out[t.src_segment] += 1
            b_out[t.src_segment] += t.nbytes
    segments = [{"id": s.id, "target": s.target, "nodes": list(s.nodes), "num_nodes": len(s.nodes),
                 "flops": sum(flops.get(n, 0) for n in s.nodes), "inputs": list(s.inputs),
                 "outputs": list(s.outputs), "predicted_latency_s": s.cost.latency_s,
                 "predicted_energy_j": s.cost.energy_j, "transfers_in": t_in[s.id], "bytes_in": b_in[s.id],
                 "transfers_out": t_out[s.id], "bytes_out": b_out[s.id]} for s in plan.segments]
    transfers = [{"tensor": t.tensor, "src": t.src, "dst": t.dst, "bytes": t.nbytes,
                  "latency_s": t.cost.latency_s, "energy_j": t.cost.energy_j, "src_segment": t.src_segment,
                  "dst_segment": t.dst_segment} for t in plan.transfers]
    used = list(dict.fromkeys(s.target for s in plan.segments))
    lat, en = plan.predicted.latency_s, plan.predicted.energy_j
    predicted = {"latency_s": lat, "makespan_s": plan.makespan_s, "energy_j": en,
                 "idle_energy_j": plan.idle_energy_j, "transfer_bytes": plan.transfer_bytes,
                 "average_power_w": en / lat if lat > 0 else None,
                 "usd_per_million_inferences": usd_per_million(lat, used, targets) if targets else None}
    return {"strategy": plan.strategy, "objective": plan.objective, "optimal": plan.optimal, "gap": plan.gap,
            "lower_bound_s": plan.lower_bound_s, "targets_used": used, "notes": list(plan.notes),
            "segments": segments, "transfers": transfers, "predicted": predicted,
            "schedule": [{"kind": s.kind, "ref": s.ref, "resource": s.resource, "start_s": s.start_s,
                          "end_s": s.end_s} for s in plan.schedule]}


_STRATEGY_KEYS = ("latency_s", "makespan_s", "energy_j", "transfer_bytes", "segments", "objective",
                  "optimal", "gap", "fits", "error")


def strategies_section(strategies: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]],
                                                                               str | None]:
    """Each strategy's figures plus its speedup (latency) and energy ratio over the best single target.

    The best single target is the `only:X` entry with the lowest objective value (latency when absent);
    ties go to fewer segments, then fewer transfer bytes, then the order the targets were given (not the
    name: an only:X whose target runs nothing, so every node falls back, must not win a tie by its name).
    Returns (section, best single strategy name or None).
    """
    singles = {k: v for k, v in strategies.items() if k.startswith("only:") and "error" not in v}
    order = {k: i for i, k in enumerate(singles)}

    def rank(k: str) -> tuple[float, float, float, int]:
        v = singles[k]
        return (v.get("objective", v["latency_s"]), v.get("segments", 0), v.get("transfer_bytes", 0),
                order[k])

    best = min(singles, key=rank, default=None)
    out: dict[str, dict[str, Any]] = {}
    for name, v in strategies.items():
        row = {k: v[k] for k in _STRATEGY_KEYS if k in v}
        row.update({k: v[k] for k in v if k not in row})  # anything a newer partitioner adds, after ours
        if best is not None and "error" not in v:
            b = singles[best]
            row["speedup_over_best_single"] = b["latency_s"] / v["latency_s"] if v["latency_s"] > 0 else None
            row["energy_over_best_single"] = v["energy_j"] / b["energy_j"] if b["energy_j"] > 0 else None
        out[name] = row
    return out, best


def measured_section(measurement: Any | None, validation: Any | None,
                     inputs: str | None = None) -> dict[str, Any]:
    """{"provider", "machine", "total_s", "segments": [{"id", "seconds", ...}], "validated", ...}.

    Measured wall times on this machine: `provider` says what executed each target here.
    """
    data: dict[str, Any] = measurement.as_dict() if measurement is not None else {}
    if validation is not None:
        v = validation.as_dict()
        data.update({"validated": v["validated"], "max_abs_err": v["max_abs_err"],
                     "max_rel_err": v["max_rel_err"], "rtol": v["rtol"], "atol": v["atol"],
                     "reference": "onnxruntime CPUExecutionProvider, whole model",
                     "outputs": v["outputs"]})
    if inputs is not None:
        data["inputs"] = inputs
    return data


def build_report(graph: Graph, plan: Any | None = None, targets: Mapping[str, Any] | None = None, *,
                 costs: Sequence[OpCost] | None = None, measurement: Any | None = None,
                 validation: Any | None = None, strategies: Mapping[str, Mapping[str, Any]] | None = None,
                 inputs: str | None = None) -> dict[str, Any]:
    """The JSON report (docs/architecture.md, "The JSON report contract"), keys in a fixed order.

    Sections with nothing to say are left out: no targets, no plan, no strategies, no measurement.
    `strategies` is the output of dispatch.partition.compare_strategies; `inputs` says where feeds came from.
    """
    if costs is None:
        from dispatch.analysis import analyze

        costs = analyze(graph)
    report = analysis_report(graph, costs)
    if targets:
        for row, c in zip(report["nodes"], node_costs(graph, costs, targets), strict=True):
            row["cost"] = c
        report["targets"] = targets_section(targets)
    if plan is not None:
        seg_of = {n: s.id for s in plan.segments for n in s.nodes}
        for row in report["nodes"]:
            row["target"] = plan.assignment.get(row["name"])
            row["segment"] = seg_of.get(row["name"])
        report["plan"] = plan_section(plan, costs, graph, targets)
    if strategies:
        report["strategies"], best = strategies_section(strategies)
        if plan is not None:
            report["plan"]["best_single"] = best
            row = report["strategies"].get(plan.strategy, {})
            report["plan"]["speedup_over_best_single"] = row.get("speedup_over_best_single")
    if measurement is not None or validation is not None:
        report["measured"] = measured_section(measurement, validation, inputs)
    return report


def _finite(x: Any) -> Any:
    """JSON has no Infinity or NaN: such floats become null; tuples become lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if x is None or isinstance(x, (str, int, bool)):
        return x
    if hasattr(x, "item"):  # numpy scalars
        return _finite(x.item())
    return str(x)


def to_json(report: Mapping[str, Any]) -> str:
    """The report as strict JSON text (non-finite numbers as null), indented, keys in their fixed order."""
    return json.dumps(_finite(report), indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, report: Mapping[str, Any]) -> None:
    from dispatch.fileio import write_text

    write_text(path, to_json(report), "the report")


# -- terminal -----------------------------------------------------------------------------------------
# Labels: "predicted" = a cost model for the planned hardware (the preset), "derived" = arithmetic on
# predicted figures, "measured" = wall time on this machine by the provider named beside it.
def _si(x: float, unit: str = "") -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _plain(console: Any) -> bool:
    return bool(console.no_color or not console.is_terminal)


def _scaled(x: float | None, units: Sequence[tuple[float, str]], plain: bool) -> str:
    if x is None:
        return "-"
    if x == 0:
        return f"0 {units[0][1]}"
    scale, unit = next((u for u in units if abs(x) >= u[0]), units[-1])
    return f"{x / scale:.3g} {unit.replace('µ', 'u') if plain else unit}"


def _sec(x: float | None, plain: bool = True) -> str:
    """Seconds to 3 significant digits: '12.3 us' ('µs' on a terminal)."""
    return _scaled(x, ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")), plain)


def _joule(x: float | None, plain: bool = True) -> str:
    return _scaled(x, ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ"), (1e-12, "pJ")), plain)


def _bytes(n: float) -> str:
    return _si(n, "B") if n else "0 B"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _table(console: Any, title: str, columns: Sequence[str], right: Sequence[str] = ()) -> Any:
    """Print `title` as a line, then return an empty rich Table to fill (ASCII boxes when plain); columns
    named in `right` are right-aligned (numbers)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console.print(Text(title, style="bold"), highlight=False)
    t = Table(box=box.ASCII if _plain(console) else box.SIMPLE_HEAD)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left")
    return t


def _add(table: Any, *cells: str) -> None:
    """Add a row whose text is shown as is (no rich markup: names may contain brackets)."""
    from rich.markup import escape

    table.add_row(*(escape(str(c)) for c in cells))


def _say(console: Any, text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _limit(rows: int, ops: str | int) -> int:
    """Rows of a long table shown: all with --ops all, else max(20, N)."""
    return rows if ops == "all" else max(20, int(ops))


def _render_summary(console: Any, r: Mapping[str, Any]) -> None:
    from rich.markup import escape

    m, t = r["model"], r["totals"]
    console.print(f"[bold]{escape(m['name'])}[/bold]  opset {m['opset']}, {m['num_nodes']} nodes, "
                  f"{m['params']:,} parameters ({_bytes(m['param_bytes'])})", highlight=False)
    macs = _si(t["macs"], "MAC") + (f" ({_si(t['int8_macs'], 'MAC')} int8)" if t.get("int8_macs") else "")
    _say(console, f"  {macs}, {_si(t['flops'], 'FLOP')}, read {_bytes(t['bytes_read'])}, "
                  f"written {_bytes(t['bytes_written'])} (derived from shapes; FLOPs = 2*MACs + element-wise "
                  "work)")
    for note in m.get("notes", ()):
        _say(console, f"  note: {note}")


def _render_targets(console: Any, r: Mapping[str, Any]) -> None:
    used = r.get("plan", {}).get("targets_used")
    tab = _table(console, "Targets", ("target", "preset", "kind", "executed here by", "cost model",
                                      "power (spec)", "price (spec)"), right=("power (spec)", "price (spec)"))
    for name, d in r["targets"].items():
        if "calibrated" in d:
            model = "roofline, calibrated profile" if d["calibrated"] else "roofline, spec defaults"
            if d.get("precision"):
                model += f", {d['precision']}"
        else:
            model = d.get("array", "analytic")
        price = f"${d['usd_per_hour']:.3g}/h" if d.get("usd_per_hour") is not None else "-"
        label = name if used is None or name in used else f"{name} (unused)"
        _add(tab, label, d.get("preset", d.get("spec", "")), d["kind"], d.get("provider", ""), model,
             f"{d['idle_w']:g}-{d['active_w']:g} W", price)
    console.print(tab)
    for name, d in r["targets"].items():
        if d.get("description"):
            _say(console, f"  {name}: {d['description']}")
        if d.get("calibrated"):
            _say(console, f"  {name} profile: {d.get('profile')}")


def _render_plan(console: Any, r: Mapping[str, Any], ops: str | int) -> None:
    p, plain = r["plan"], _plain(console)
    gap = p.get("gap")
    proof = "proven optimal" if p["optimal"] else (
        "not proven optimal" if gap is None else f"gap {gap:.2%} to a proven bound" if gap >= 1e-4
        else f"gap {gap:.1e} to a proven bound")
    segs = p["segments"]
    tab = _table(console, f"Plan: {p['strategy']} ({proof}) for {p['objective']}, "
                          f"{_plural(len(segs), 'segment')} - predicted",
                 ("segment", "target", "ops", "GFLOPs", "time", "energy", "transfers in", "transfers out"),
                 right=("ops", "GFLOPs", "time", "energy", "transfers in", "transfers out"))
    shown = _limit(len(segs), ops)
    for s in segs[:shown]:
        _add(tab, str(s["id"]), s["target"], str(s["num_nodes"]), f"{s['flops'] / 1e9:.4f}",
             _sec(s["predicted_latency_s"], plain), _joule(s["predicted_energy_j"], plain),
             f"{s['transfers_in']} / {_bytes(s['bytes_in'])}",
             f"{s['transfers_out']} / {_bytes(s['bytes_out'])}")
    if shown < len(segs):
        _add(tab, f"... {len(segs) - shown} more (--ops all)", "", "", "", "", "", "", "")
    console.print(tab)
    xs = p["transfers"]
    if xs and ops != 0:
        tab = _table(console, f"Transfers: {len(xs)} - predicted over the targets' links",
                     ("tensor", "route", "bytes", "time", "energy"), right=("bytes", "time", "energy"))
        shown = _limit(len(xs), ops)
        for x in xs[:shown]:
            _add(tab, x["tensor"], f"{x['src']} -> {x['dst']}", _bytes(x["bytes"]),
                 _sec(x["latency_s"], plain), _joule(x["energy_j"], plain))
        if shown < len(xs):
            _add(tab, f"... {len(xs) - shown} more (--ops all)", "", "", "", "")
        console.print(tab)
    pr = p["predicted"]
    _say(console, f"Predicted: latency {_sec(pr['latency_s'], plain)} (segments and transfers in "
                  f"sequence), makespan {_sec(pr['makespan_s'], plain)} (targets overlapping), energy "
                  f"{_joule(pr['energy_j'], plain)} per inference (of which "
                  f"{_joule(pr.get('idle_energy_j', 0.0), plain)} static power of targets waiting), "
                  f"{_bytes(pr['transfer_bytes'])} transferred.")
    extra = [f"lower bound {_sec(p['lower_bound_s'], plain)} (each node on its cheapest target, no "
             "transfers)"]
    if pr.get("average_power_w") is not None:
        extra.append(f"average power {pr['average_power_w']:.3g} W")
    usd = pr.get("usd_per_million_inferences")
    extra.append(f"${usd:.3g} per million inferences (rental price x latency)" if usd is not None else
                 "no price per inference (a target's spec has no [price])")
    _say(console, f"Derived: {'; '.join(extra)}.")
    for note in p.get("notes", ()):
        _say(console, f"  note: {note}")


def _render_strategies(console: Any, r: Mapping[str, Any]) -> None:
    plain = _plain(console)
    chosen = r.get("plan", {}).get("strategy")
    best = r.get("plan", {}).get("best_single")
    cols = ("strategy", "latency", "makespan", "energy", "transferred", "segments", "speedup", "energy ratio")
    tab = _table(console, "Strategies - predicted; speedup and energy ratio derived against "
                          f"{best or 'the best single target'}", cols, right=cols[1:])
    for name, s in r["strategies"].items():
        label = f"{name} *" if name == chosen else name
        if "error" in s:
            _add(tab, label, "-", "-", "-", "-", "-", "-", "-")
            continue
        fits = "" if s.get("fits", True) else " (over capacity)"
        _add(tab, label + fits, _sec(s["latency_s"], plain), _sec(s["makespan_s"], plain),
             _joule(s["energy_j"], plain), _bytes(s.get("transfer_bytes", 0)), str(s.get("segments", "")),
             _ratio(s.get("speedup_over_best_single")), _ratio(s.get("energy_over_best_single")))
    console.print(tab)
    for name, s in r["strategies"].items():
        if "error" in s:
            _say(console, f"  {name}: {s['error']}")
    if chosen in r["strategies"]:
        _say(console, "  * this report's plan. speedup = latency of the best single target / latency; energy "
                      "ratio = energy / the best single target's energy.")


def _render_measured(console: Any, r: Mapping[str, Any], ops: str | int) -> None:
    m, plain = r["measured"], _plain(console)
    if "segments" in m:
        segs = m["segments"]
        tab = _table(console, f"Measured on this machine ({m['machine']}), median of "
                              f"{_plural(m['repeat'], 'run')} after {_plural(m['warmup'], 'warm-up')}, "
                              "beside the prediction for the planned hardware",
                     ("segment", "target", "ops", "predicted", "measured", "measured on"),
                     right=("ops", "predicted", "measured"))
        shown = _limit(len(segs), ops)
        for s in segs[:shown]:
            _add(tab, str(s["id"]), s["target"], str(s["nodes"]), _sec(s["predicted_s"], plain),
                 _sec(s["seconds"], plain), s["provider"])
        if shown < len(segs):
            _add(tab, f"... {len(segs) - shown} more (--ops all)", "", "", "", "", "")
        xs = m.get("transfers", ())
        if xs:
            _add(tab, _plural(len(xs), "transfer"), "", "", _sec(sum(x["predicted_s"] for x in xs), plain),
                 _sec(sum(x["seconds"] for x in xs), plain), "host memory copy")
        _add(tab, "whole run", "", "", _sec(m["predicted_s"], plain), _sec(m["total_s"], plain),
             "all of the above + dispatch")
        console.print(tab)
    if "validated" in m:
        verdict = "PASS" if m["validated"] else "FAIL"
        abs_err, rel_err = ("inf" if e is None else f"{e:.3g}" for e in (m["max_abs_err"], m["max_rel_err"]))
        src = m.get("inputs")
        on = f" on {src} inputs" if src else ""
        raised = sorted({(o.get("raised_for") or "16-bit float", o["rtol"], o["atol"])
                         for o in m.get("outputs", ()) if "rtol" in o})
        low = "".join(f"; {why} outputs at rtol {r:g}, atol {a:g}" for why, r, a in raised)
        _say(console, f"Validated against {m.get('reference', 'onnxruntime')}{on}: {verdict}, max abs err "
                      f"{abs_err}, max rel err {rel_err} (measured; rtol {m['rtol']:g}, "
                      f"atol {m['atol']:g}{low}).")
        for o in m.get("outputs", ()):
            if "ASIC numerics" in o.get("raised_for", ""):  # what emulation costs, beside fp32's reference
                _say(console, f"  output '{o['name']}' vs fp32 reference: max abs err "
                              f"{o['max_abs_err']:.3g}, "
                              f"max rel err {o['max_rel_err']:.3g}, scale {o['scale']:.3g}; tolerance rtol "
                              f"{o['rtol']:.3g} from {o['raised_for']} (docs/numerics.md)")
            if not o["ok"]:
                _say(console, f"  output '{o['name']}' differs: max abs err {o['max_abs_err']}")


def _render_ops(console: Any, r: Mapping[str, Any], ops: str | int) -> None:
    nodes = r["nodes"]
    order = sorted(range(len(nodes)), key=lambda i: (-nodes[i]["flops"], i))
    shown = order if ops == "all" else order[:int(ops)]
    if not shown:
        return
    plain = _plain(console)
    names = list(r.get("targets", {}))
    cost_cols = [f"{t} (pred.)" for t in names]
    tab = _table(console, f"Operators by FLOPs, {len(shown)} of {len(nodes)} - predicted time on each target "
                          "(- where it cannot run)",
                 ("node", "op_type", "output shape", "MFLOPs", "placed on", *cost_cols),
                 right=("MFLOPs", *cost_cols))
    for i in shown:
        n = nodes[i]
        shape = n["output_shapes"][0] if n["output_shapes"] else None
        shape_s = "x".join(str(d) for d in shape) if shape else "?"
        cost = n.get("cost", {})
        _add(tab, n["name"], n["op_type"] + ("" if n["modeled"] else " (no compute model)"), shape_s,
             f"{n['flops'] / 1e6:.3f}", n.get("target") or "-",
             *[_sec(cost[t]["latency_s"], plain) if t in cost else "-" for t in names])
    console.print(tab)


def headline(r: Mapping[str, Any], plain: bool = True) -> str:
    """One line: the plan's predicted figures, the gain over the best single target, measured time, check."""
    parts = [r["model"]["name"]]
    p = r.get("plan")
    if p:
        pr = p["predicted"]
        parts.append(f"{p['strategy']} on {'+'.join(p['targets_used'])}: predicted "
                     f"{_sec(pr['latency_s'], plain)} (makespan {_sec(pr['makespan_s'], plain)}), "
                     f"{_joule(pr['energy_j'], plain)}/inference")
        row = r.get("strategies", {}).get(p["strategy"], {})
        best = p.get("best_single")
        if best and row.get("speedup_over_best_single") is not None:
            gain = f"{row['speedup_over_best_single']:.2f}x speedup"
            if p["objective"] != "latency" and row.get("energy_over_best_single") is not None:
                gain += f", {row['energy_over_best_single']:.2f}x energy"
            parts.append(f"vs {best}: {gain} (derived)")
    meas = r.get("measured", {})
    if "total_s" in meas:
        parts.append(f"measured {_sec(meas['total_s'], plain)} here ({meas['provider']})")
    if "validated" in meas:
        parts.append("validated" if meas["validated"] else "VALIDATION FAILED")
    return " | ".join(parts)


def render_report(console: Any, r: Mapping[str, Any], *, ops: str | int = 10, quiet: bool = False) -> None:
    """The terminal report: summary, targets, plan, strategy comparison, measured run, top operators.

    quiet: the headline only. ops: rows of the per-operator table (0 none, 'all' every node); other long
    tables show max(20, ops) rows.
    """
    if not quiet:
        _render_summary(console, r)
        if "targets" in r:
            _render_targets(console, r)
        if "plan" in r:
            _render_plan(console, r, ops)
        if "strategies" in r:
            _render_strategies(console, r)
        if "measured" in r:
            _render_measured(console, r, ops)
        _render_ops(console, r, ops)
    console.print(headline(r, _plain(console)), highlight=False, markup=False, soft_wrap=True)


def render_analysis(console: Any, graph: Graph, costs: Sequence[OpCost], *, ops: str = "25") -> None:
    """Model summary, op-type histogram and the per-operator table sorted by FLOPs (measured: none)."""
    from rich.table import Table

    t = totals_section(costs)
    console.print(f"[bold]{graph.name}[/bold]  opset {graph.opset}, {len(graph)} nodes, "
                  f"{graph.num_params:,} parameters ({_si(graph.param_bytes, 'B')})")
    macs = _si(t["macs"], "MAC") + (f" ({_si(t['int8_macs'], 'MAC')} int8)" if t["int8_macs"] else "")
    console.print(f"  {macs}, {_si(t['flops'], 'FLOP')}, "
                  f"read {_si(t['bytes_read'], 'B')}, written {_si(t['bytes_written'], 'B')}  "
                  "(derived from shapes; FLOPs = 2·MACs + element-wise work)")
    for note in graph.notes:
        console.print(f"  note: {note}")

    hist = Counter(n.op_type for n in graph.nodes)
    flops_by_type: Counter[str] = Counter()
    for n, c in zip(graph.nodes, costs, strict=True):
        flops_by_type[n.op_type] += c.flops
    h = Table(title="Operators by type", title_justify="left")
    for col in ("op_type", "count", "GFLOPs", "share"):
        h.add_column(col, justify="left" if col == "op_type" else "right")
    total_flops = t["flops"] or 1
    for op, count in sorted(hist.items(), key=lambda kv: (-flops_by_type[kv[0]], -kv[1], kv[0])):
        h.add_row(op, str(count), f"{flops_by_type[op] / 1e9:.3f}",
                  f"{100 * flops_by_type[op] / total_flops:.1f}%")
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
        _add(tab, n.name, n.op_type + flag, shape, f"{c.flops / 1e6:.3f}", _si(c.macs),
                    _si(c.bytes_moved, "B"), _si(c.param_bytes, "B"), f"{c.arithmetic_intensity:.2f}")
    console.print(tab)

"""The report: golden JSON for a hand-built 4-node model, the terminal renderer, trace, DOT and annotation.

The model (`tiny_model`): x[16,1024] -> MatMul(w1 1024x1024) -> Softmax -> MatMul(w2 1024x1024) -> Relu -> y.
The simulated ASIC has no Softmax kernel, so planned with only:asic (objective energy) the MatMuls go to the
ASIC and the Softmax to the GPU: three segments (asic, gpu, asic) and four transfers (x in, h1 out, s back,
y out). (`optimal` keeps it all on the GPU: with both chips' idle power counted that costs less energy.)

Regenerate the golden file after an intended change of a cost model:
    DISPATCH_REGEN_GOLDEN=1 python -m pytest tests/test_report.py -k golden
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pydot
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispatch.annotate import PREFIX, annotate_model, placement_of, write_annotated
from dispatch.api import Dispatcher
from dispatch.dot import dot_source, write_dot
from dispatch.partition import build_problem, compare_strategies
from dispatch.report import (
    SCHEMA_VERSION,
    build_report,
    headline,
    render_report,
    strategies_section,
    to_json,
    usd_per_million,
)
from dispatch.trace import MEASURED_PID, PREDICTED_PID, trace_events, write_trace
from targets.base import make_target

pytestmark = pytest.mark.filterwarnings("ignore:'setParseAction' deprecated")  # pydot's pyparsing use

GOLDEN = Path(__file__).parent / "data" / "golden_report_tiny4.json"
M, K = 16, 1024


def tiny_model(m: int = M, k: int = K) -> onnx.ModelProto:
    """The 4-node model of the module docstring (weights seeded, scaled so Softmax sees moderate logits)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((k, k)) * 0.03).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((k, k)) * 0.03).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
             helper.make_node("Softmax", ["h1"], ["s"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["s", "w2"], ["h2"], name="mm2"),
             helper.make_node("Relu", ["h2"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "tiny4", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, k])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def pinned_targets() -> dict[str, Any]:
    """Predictions independent of the machine: the GPU on the CPU provider with the spec's own figures."""
    return {"gpu": make_target("gpu", "h100-sxm", profile=False, providers=["CPUExecutionProvider"]),
            "asic": make_target("asic", "tpu-v4-like")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("tiny4") / "tiny4.onnx"
    onnx.save(tiny_model(), str(path))
    targets = pinned_targets()
    with Dispatcher(str(path), targets, strategy="only:asic", objective="energy") as d:
        strategies = compare_strategies(build_problem(d.graph, d.targets, "energy"))
        validation = d.validate()
        measurement = d.measure(repeat=2, warmup=1)
        report = build_report(d.graph, d.plan, d.targets, measurement=measurement, validation=validation,
                              strategies=strategies, inputs="generated (seed 0)")
        yield SimpleNamespace(path=path, graph=d.graph, plan=d.plan, targets=d.targets, report=report,
                              measurement=measurement, feeds=d.example_feeds())
    for t in targets.values():
        t.close()


# -- JSON ------------------------------------------------------------------------------------------------
def _compare(got: Any, want: Any, where: str = "") -> None:
    """Same structure and key order; strings, ints and bools equal; floats within 1e-9 relative."""
    if where in ("/model/path",):
        assert isinstance(got, str), where
        return
    if where == "/measured" or where.startswith("/measured/"):
        _same_types(got, want, where)
        return
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            _compare(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _compare(g, w, f"{where}/{i}")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-18), \
            f"{where}: {got} != {want}"
    else:
        assert got == want and type(got) is type(want), f"{where}: {got!r} != {want!r}"


def _same_types(got: Any, want: Any, where: str) -> None:
    """Measured figures vary run to run: check that they are there, with the golden file's types."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            _same_types(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same_types(g, w, f"{where}/{i}")
    elif isinstance(want, float):
        assert isinstance(got, (int, float)) and not isinstance(got, bool) and got >= 0, f"{where}: {got!r}"
    else:
        assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"


def test_golden_json(tiny: Any) -> None:
    data = json.loads(to_json(tiny.report))
    if os.environ.get("DISPATCH_REGEN_GOLDEN"):
        stored = {**data, "model": {**data["model"], "path": "tiny4.onnx"}}  # the path is a temporary one
        GOLDEN.write_text(json.dumps(stored, indent=1) + "\n")
    _compare(data, json.loads(GOLDEN.read_text()))


def test_golden_comparison_catches_changes() -> None:
    want = json.loads(GOLDEN.read_text())
    def reorder(d: dict) -> None:  # the same keys in another order
        d["model"] = {"path": "x", **{k: v for k, v in d["model"].items() if k != "path"}}

    def more_energy(d: dict) -> None:  # a predicted figure 1% off
        d["plan"]["predicted"]["energy_j"] *= 1.01

    for mutate in (more_energy, lambda d: d["nodes"][0].update(target="gpu"), reorder,
                   lambda d: d["measured"].update(validated="yes")):
        got = json.loads(GOLDEN.read_text())
        mutate(got)
        with pytest.raises(AssertionError):
            _compare(got, want)
    got = json.loads(GOLDEN.read_text())
    got["model"]["path"] = "/elsewhere/tiny4.onnx"
    got["measured"]["total_s"] *= 10  # measured values may vary; only their presence and type are checked
    _compare(got, want)


def test_report_numbers(tiny: Any) -> None:
    r = tiny.report
    assert r["schema_version"] == SCHEMA_VERSION == 1
    assert list(r) == ["schema_version", "model", "totals", "nodes", "targets", "plan", "strategies",
                       "measured"]
    nodes = {n["name"]: n for n in r["nodes"]}
    assert nodes["mm1"]["flops"] == 2 * M * K * K  # 2·M·K·N = 33,554,432
    assert nodes["mm1"]["macs"] == M * K * K
    assert set(nodes["softmax"]["cost"]) == {"gpu"}  # the ASIC has no Softmax kernel
    assert [n["target"] for n in r["nodes"]] == ["asic", "gpu", "asic", "asic"]
    assert [n["segment"] for n in r["nodes"]] == [0, 1, 2, 2]
    p = r["plan"]
    assert [(s["target"], s["nodes"]) for s in p["segments"]] == [("asic", ["mm1"]), ("gpu", ["softmax"]),
                                                                  ("asic", ["mm2", "relu"])]
    assert [(t["tensor"], t["src"], t["dst"], t["bytes"]) for t in p["transfers"]] == [
        ("x", "host", "asic", M * K * 4), ("h1", "asic", "gpu", M * K * 4),  # 16·1024 fp32 = 65,536 B
        ("s", "gpu", "asic", M * K * 4), ("y", "asic", "host", M * K * 4)]
    seg_in = [(s["transfers_in"], s["bytes_in"]) for s in p["segments"]]
    assert seg_in == [(1, 65536), (1, 65536), (1, 65536)]
    pr = p["predicted"]
    # sequential latency = segments + transfers; energy likewise plus the idle power of the waiting chips,
    # which is at least both chips' idle power over the latency less each one's own busy time
    assert math.isclose(pr["latency_s"], sum(s["predicted_latency_s"] for s in p["segments"])
                        + sum(t["latency_s"] for t in p["transfers"]), rel_tol=1e-12)
    assert math.isclose(pr["energy_j"], sum(s["predicted_energy_j"] for s in p["segments"])
                        + sum(t["energy_j"] for t in p["transfers"]) + pr["idle_energy_j"], rel_tol=1e-12)
    assert pr["energy_j"] >= (70.0 + 90.0) * pr["latency_s"]  # idle_w of h100-sxm and tpu-v4-like
    assert pr["transfer_bytes"] == 4 * 65536
    assert math.isclose(pr["average_power_w"], pr["energy_j"] / pr["latency_s"])
    assert pr["usd_per_million_inferences"] is None  # the ASIC preset has no price
    assert pr["makespan_s"] <= pr["latency_s"] * (1 + 1e-12)  # overlap can only shorten the sequence
    # strategies: every registered one and only:TARGET for each target; speedup = best single / latency
    s = r["strategies"]
    assert list(s) == ["optimal", "priority", "greedy", "heft", "only:gpu", "only:asic"]
    best = p["best_single"]
    assert best == min(("only:gpu", "only:asic"), key=lambda k: s[k]["energy_j"])
    for row in s.values():
        assert math.isclose(row["speedup_over_best_single"], s[best]["latency_s"] / row["latency_s"])
        assert math.isclose(row["energy_over_best_single"], row["energy_j"] / s[best]["energy_j"])
    assert s["optimal"]["energy_j"] <= min(row["energy_j"] for row in s.values()) * (1 + 1e-12)
    # targets: the preset, the provider that executes it here, whether calibrated
    assert r["targets"]["gpu"]["preset"] == "h100-sxm" and r["targets"]["gpu"]["calibrated"] is False
    assert r["targets"]["gpu"]["provider"] == "CPUExecutionProvider"
    assert r["targets"]["gpu"]["source"] == "targets/specs/h100-sxm.toml"
    assert r["targets"]["gpu"]["usd_per_hour"] > 0 and r["targets"]["asic"]["usd_per_hour"] is None
    # measured: one entry per segment, with the provider, next to the prediction
    m = r["measured"]
    assert [x["id"] for x in m["segments"]] == [0, 1, 2] and m["validated"] is True
    assert [x["provider"] for x in m["segments"]][1] == "CPUExecutionProvider"
    assert all(x["seconds"] > 0 for x in m["segments"]) and m["inputs"] == "generated (seed 0)"


def test_json_is_strict_and_deterministic(tiny: Any) -> None:
    text = to_json(tiny.report)
    assert "Infinity" not in text and "NaN" not in text
    again = build_report(tiny.graph, tiny.plan, tiny.targets, measurement=tiny.measurement,
                         strategies=compare_strategies(build_problem(tiny.graph, tiny.targets, "energy")))
    again.pop("measured")
    first = json.loads(text)
    first.pop("measured")
    assert json.loads(to_json(again)) == first
    assert json.loads(to_json({"x": float("inf"), "y": (1, float("nan"))})) == {"x": None, "y": [1, None]}


def test_usd_per_million_inferences() -> None:
    def priced(usd: float | None) -> Any:
        return SimpleNamespace(spec=SimpleNamespace(usd_per_hour=usd))

    # 1e6 inferences · 1 ms · ($3.60 + $7.20)/h / 3600 s/h = $3.00
    assert math.isclose(usd_per_million(1e-3, ["a", "b"], {"a": priced(3.6), "b": priced(7.2)}), 3.0)
    assert usd_per_million(1e-3, ["a", "b"], {"a": priced(3.6), "b": priced(None)}) is None


def test_strategies_section_marks_errors_and_best_single() -> None:
    rows = {"optimal": {"latency_s": 1.0, "makespan_s": 1.0, "energy_j": 2.0, "objective": 1.0},
            "only:a": {"latency_s": 2.0, "makespan_s": 2.0, "energy_j": 1.0, "objective": 2.0},
            "only:b": {"error": "does not fit"}}
    section, best = strategies_section(rows)
    assert best == "only:a"
    assert section["optimal"]["speedup_over_best_single"] == 2.0  # 2 s / 1 s
    assert section["optimal"]["energy_over_best_single"] == 2.0  # 2 J / 1 J
    assert "speedup_over_best_single" not in section["only:b"]


def test_best_single_ties_break_by_segments_bytes_then_given_order() -> None:
    # regression: a tie on the objective went to the alphabetically first name, so an Identity-only model
    # (the ASIC runs nothing, every node falls back to the GPU) was reported "vs only:asic"
    def row(segments: int, nbytes: int) -> dict[str, float]:
        return {"latency_s": 1.0, "makespan_s": 1.0, "energy_j": 1.0, "objective": 1.0,
                "segments": segments, "transfer_bytes": nbytes}

    assert strategies_section({"only:gpu": row(1, 0), "only:asic": row(1, 0)})[1] == "only:gpu"  # given order
    assert strategies_section({"only:asic": row(1, 0), "only:gpu": row(1, 0)})[1] == "only:asic"
    assert strategies_section({"only:asic": row(3, 0), "only:gpu": row(1, 0)})[1] == "only:gpu"  # segments
    assert strategies_section({"only:asic": row(2, 64), "only:gpu": row(2, 8)})[1] == "only:gpu"  # bytes
    lower = {**row(3, 64), "objective": 0.5}
    assert strategies_section({"only:gpu": row(1, 0), "only:asic": lower})[1] == "only:asic"  # objective


# -- terminal ----------------------------------------------------------------------------------------------
def _render(report: dict, **kwargs: Any) -> str:
    from rich.console import Console

    buf = io.StringIO()
    render_report(Console(file=buf, width=160), report, **kwargs)
    return buf.getvalue()


def test_terminal_report_plain_labels_every_figure(tiny: Any) -> None:
    out = _render(tiny.report)
    assert out.isascii()  # not a terminal: ASCII boxes, 'us' for microseconds, no colour codes
    assert "\x1b[" not in out and "+---" in out
    for needle in ("Targets", "h100-sxm", "tpu-v4-like", "CPUExecutionProvider", "spec defaults",
                   "Plan: only:asic (not proven optimal) for energy, 3 segments - predicted",
                   "Transfers: 4 - predicted",
                   "Predicted: latency", "Derived: lower bound", "Strategies - predicted", "only:asic",
                   "Measured on this machine", "measured on", "Validated against onnxruntime", "PASS",
                   "Operators by FLOPs, 4 of 4"):
        assert needle in out, needle
    # the measured table names the provider on every segment row, beside the prediction
    rows = [line for line in out.splitlines() if line.startswith("| 1 ") and "gpu" in line]
    assert any("CPUExecutionProvider" in line and "us" in line for line in rows)


def test_measured_title_counts_runs_in_words(tiny: Any) -> None:
    # regression: '--repeat 1' printed "median of 1 runs"; the fixture measures repeat=2, warmup=1
    assert "median of 2 runs after 1 warm-up," in _render(tiny.report)
    one = {**tiny.report, "measured": {**tiny.report["measured"], "repeat": 1, "warmup": 2}}
    assert "median of 1 run after 2 warm-ups," in _render(one)


def test_terminal_report_levels(tiny: Any) -> None:
    quiet = _render(tiny.report, quiet=True).strip().splitlines()
    assert quiet == [headline(tiny.report)]
    assert "predicted" in quiet[0] and "measured" in quiet[0] and "validated" in quiet[0]
    assert "Operators by FLOPs" not in _render(tiny.report, ops=0)
    assert "Operators by FLOPs, 2 of 4" in _render(tiny.report, ops=2)


def test_terminal_report_rich_on_a_terminal(tiny: Any) -> None:
    from rich.console import Console

    buf = io.StringIO()
    render_report(Console(file=buf, width=160, force_terminal=True, color_system="truecolor"), tiny.report)
    out = buf.getvalue()
    assert "\x1b[" in out and "µs" in out and "+---" not in out


def test_report_without_run_or_plan(tiny: Any) -> None:
    r = build_report(tiny.graph)
    assert list(r) == ["schema_version", "model", "totals", "nodes"]
    out = _render(r)
    assert "tiny4" in out and "Measured" not in out


# -- trace ------------------------------------------------------------------------------------------------
def test_trace_events_are_well_formed(tiny: Any, tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.json", tiny.plan, tiny.measurement, model="tiny4", targets=tiny.targets)
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    named_threads, named_procs = set(), set()
    for e in events:
        assert e["ph"] in ("X", "M") and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index")
            if e["name"] == "thread_name":
                named_threads.add((e["pid"], e["tid"]))
            if e["name"] == "process_name":
                named_procs.add(e["pid"])
            continue
        assert isinstance(e["name"], str) and e["ts"] >= 0 and e["dur"] >= 0
        assert (e["pid"], e["tid"]) in named_threads  # each process's metadata comes before its slices
    assert named_procs == {PREDICTED_PID, MEASURED_PID}
    seg_ids = [s.id for s in tiny.plan.segments]
    for pid in (PREDICTED_PID, MEASURED_PID):
        segs = sorted(e["args"]["segment"] for e in events if e["ph"] == "X" and e["pid"] == pid
                      and e["cat"] == "segment")
        assert segs == seg_ids  # each segment exactly once per process
        xfers = sorted(e["args"]["transfer"] for e in events if e["ph"] == "X" and e["pid"] == pid
                       and e["cat"] == "transfer")
        assert xfers == list(range(len(tiny.plan.transfers)))
    # one track per target and one per link, the same in both processes
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    for t in ("gpu", "asic", "link:host->asic", "link:asic->gpu", "link:gpu->asic", "link:asic->host"):
        assert any(n.startswith(t + " [") for n in names), t


def test_trace_times_follow_schedule_and_measurement(tiny: Any) -> None:
    events = trace_events(tiny.plan, tiny.measurement)["traceEvents"]
    pred = [e for e in events if e["ph"] == "X" and e["pid"] == PREDICTED_PID]
    assert len(pred) == len(tiny.plan.schedule)
    for e, slot in zip(sorted(pred, key=lambda e: (e["ts"], e["ts"] + e["dur"])), tiny.plan.schedule,
                       strict=True):
        assert math.isclose(e["ts"], slot.start_s * 1e6)
        assert math.isclose(e["dur"], (slot.end_s - slot.start_s) * 1e6)
    meas = sorted((e for e in events if e["ph"] == "X" and e["pid"] == MEASURED_PID and e["cat"] != "run"),
                  key=lambda e: e["ts"])
    for a, b in zip(meas, meas[1:], strict=False):  # medians laid end to end, in runtime order
        assert math.isclose(a["ts"] + a["dur"], b["ts"], abs_tol=1e-9)
    m = tiny.measurement
    total = sum(s.seconds for s in m.segments) + sum(t.seconds for t in m.transfers)
    assert math.isclose(meas[-1]["ts"] + meas[-1]["dur"], total * 1e6, rel_tol=1e-9)
    assert [e["args"]["segment"] for e in meas if e["cat"] == "segment"] == [0, 1, 2]
    assert trace_events(tiny.plan)["traceEvents"][0]["pid"] == PREDICTED_PID
    assert {e["pid"] for e in trace_events(tiny.plan)["traceEvents"]} == {PREDICTED_PID}


# -- DOT --------------------------------------------------------------------------------------------------
def _unq(s: str) -> str:
    return s[1:-1] if s.startswith('"') and s.endswith('"') else s


def test_dot_parses_with_clusters_colours_and_bold_transfers(tiny: Any, tmp_path: Path) -> None:
    written = write_dot(tmp_path / "g.dot", tiny.graph, tiny.plan, targets=tiny.targets)
    assert written[0].exists()
    (g,) = pydot.graph_from_dot_data(written[0].read_text())
    clusters = {_unq(sg.get_name()): sg for sg in g.get_subgraphs()}
    assert set(clusters) == {"cluster_legend", "cluster_0", "cluster_1", "cluster_2"}
    fill = {}
    for seg in tiny.plan.segments:
        members = [_unq(n.get_name()) for n in clusters[f"cluster_{seg.id}"].get_nodes()]
        assert members == list(seg.nodes)
        for n in clusters[f"cluster_{seg.id}"].get_nodes():
            fill.setdefault(seg.target, set()).add(_unq(n.get("fillcolor")))
    assert all(len(c) == 1 for c in fill.values()) and fill["gpu"] != fill["asic"]  # one colour per target
    edges = g.get_edges()
    bold = {(_unq(e.get_source()), _unq(e.get_destination())) for e in edges if e.get("style") == "bold"}
    assert bold == {("input:x", "mm1"), ("mm1", "softmax"), ("softmax", "mm2"), ("relu", "output:y")}
    assert len(edges) == 5  # x->mm1, mm1->softmax, softmax->mm2, mm2->relu, relu->y


def test_dot_quotes_awkward_names() -> None:
    from dispatch.dot import _q

    text = 'a"b\\c\nd'
    assert _q(text) == '"a\\"b\\\\c\\nd"'
    (g,) = pydot.graph_from_dot_data(f"digraph G {{ {_q(text)} -> {_q('x')}; }}")
    assert len(g.get_edges()) == 1
    assert dot_source  # imported for the public surface


# -- annotated ONNX ---------------------------------------------------------------------------------------
def test_annotated_model_round_trips(tiny: Any, tmp_path: Path) -> None:
    node_costs = [n["cost"] for n in tiny.report["nodes"]]
    path = write_annotated(tmp_path / "a.onnx", tiny.graph, tiny.plan, tiny.targets, node_costs=node_costs)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert placement_of(model) == dict(tiny.plan.assignment)
    props = {p.name: {e.key: e.value for e in p.metadata_props} for p in model.graph.node}
    assert props["softmax"][PREFIX + "segment"] == "1"
    assert float(props["mm1"][PREFIX + "predicted_latency_s"]) == node_costs[0]["asic"]["latency_s"]
    assert set(k for k in props["mm1"] if k.startswith(PREFIX + "cost.")) == {PREFIX + "cost.gpu",
                                                                             PREFIX + "cost.asic"}
    assert set(k for k in props["softmax"] if k.startswith(PREFIX + "cost.")) == {PREFIX + "cost.gpu"}
    softmax = next(p for p in model.graph.node if p.name == "softmax")
    assert "dispatch: on gpu (segment 1)" in softmax.doc_string
    meta = {e.key: e.value for e in model.metadata_props}
    assert meta[PREFIX + "strategy"] == "only:asic" and json.loads(meta[PREFIX + "targets"]) == {
        "gpu": "h100-sxm", "asic": "tpu-v4-like"}
    # Still the same model: onnxruntime gives the original's outputs.
    x = tiny.feeds["x"]
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(  # noqa: E731
        None, {"x": x})[0]
    np.testing.assert_array_equal(run(model), run(tiny.graph.full_model()))
    # Annotating twice replaces, never duplicates, the entries.
    again = annotate_model(tiny.graph, tiny.plan, tiny.targets)
    assert [e.key for e in again.graph.node[0].metadata_props].count(PREFIX + "target") == 1


def test_dot_renders_svg_when_graphviz_is_present(tiny: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for Graphviz's `dot`: records its arguments and writes the file named after -o.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\nwhile [ "$1" != "-o" ]; do shift; done\n'
                    'echo "<svg/>" > "$2"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    written = write_dot(tmp_path / "g.dot", tiny.graph, tiny.plan)
    assert written == [tmp_path / "g.dot", tmp_path / "g.svg"]
    assert (tmp_path / "g.svg").read_text() == "<svg/>\n"
    assert (bin_dir / "args").read_text().split() == ["-Tsvg", str(tmp_path / "g.dot"), "-o",
                                                     str(tmp_path / "g.svg")]
    assert write_dot(tmp_path / "h.dot", tiny.graph, tiny.plan, svg=False) == [tmp_path / "h.dot"]

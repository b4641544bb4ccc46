"""Design-space sweeps (dispatch/sweep/): config checks, points, rows against plan(), resume, failures,
local workers against Ray, plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dispatch.errors import DispatchError
from dispatch.frontend import load
from dispatch.partition import plan
from dispatch.sweep import count, expand, load_config, run
from dispatch.sweep.plot import asic_wins, crossovers, pareto_front
from dispatch.sweep.results import read_rows
from dispatch.sweep.targets import SPEC_DIR, to_toml
from targets.base import list_presets, make_target

ROOT = Path(__file__).resolve().parents[1]


def _mlp(path: Path, batch: str | int = "N") -> Path:
    """X[batch, 64] -> MatMul W1[64, 32] -> Add b -> MatMul W2[32, 8]: every op runs on the ASIC."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "W1")
    b = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "W2")
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b"], ["a"], name="add"),
             helper.make_node("MatMul", ["a", "W2"], ["Y"], name="mm2")]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, 64])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, 8])], [w1, b, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, path)
    return path


def _config(tmp_path: Path, axes: dict, *, models: list[str] | None = None, targets: dict | None = None,
            **sweep: object) -> dict:
    mlp = str(_mlp(tmp_path / "mlp.onnx"))
    return {"sweep": {"name": "t", "models": models or [mlp],
                      "strategies": ["optimal", "only:gpu", "only:asic"], "objectives": ["latency", "energy"],
                      **sweep},
            "targets": targets or {"gpu": "h100-sxm", "asic": "tpu-v4-like"}, "axes": axes}


# -- config checks ------------------------------------------------------------------------------------------
BAD = [
    ({"axes": {"asic.rows": []}}, "Axis 'asic.rows' has no values"),
    ({"axes": {"asic.nonsense": [1]}}, "Axis 'asic.nonsense' names no key of target 'asic'"),
    ({"axes": {"tpu.rows": [1]}}, "Axis 'tpu.rows' names no key of any target"),
    ({"axes": {"asic.rows": [0]}}, "Target 'asic' at asic.rows = 0"),
    ({"axes": {"asic.cols": "same as asic.rowz"}}, "Axis 'asic.cols' is tied to 'asic.rowz'"),
    ({"axes": {"precision": ["fp7"]}}, "Axis 'precision' has the value 'fp7'"),
    ({"axes": {"batch": [0]}}, "Axis 'batch' has the value 0"),
    ({"axes": {"shape.seq": [4]}}, "Axis 'shape.seq' names symbol 'seq'"),
    ({"axes": {"asic.rows": [32, 32]}}, "Axis 'asic.rows' lists a value twice"),
    ({"sweep": {"strategies": ["fastest"]}}, "Unknown strategy 'fastest'"),
    ({"sweep": {"strategies": ["only:tpu"]}}, "'only:tpu', but there is no target 'tpu'"),
    ({"sweep": {"objectives": ["speed"]}}, "objectives names 'speed'"),
    ({"sweep": {"models": ["no_such_model"]}}, "[sweep] models: 'no_such_model' does not load"),
    ({"sweep": {"models": ["missing.onnx"]}}, "[sweep] models: 'missing.onnx' does not load"),
    ({"sweep": {"colour": "red"}}, "[sweep] has an unknown key 'colour'"),
    ({"targets": {"asic": "tpu-v9"}}, "Unknown target preset 'tpu-v9'"),
    ({"extra": {}}, "unknown table [extra]"),
]


@pytest.mark.parametrize(("change", "expected"), BAD, ids=[b[1][:40] for b in BAD])
def test_bad_config_is_one_sentence_naming_the_key(tmp_path: Path, change: dict, expected: str) -> None:
    cfg = _config(tmp_path, {"asic.rows": [32, 64]})
    for table, kv in change.items():
        if table == "axes":
            cfg["axes"] = kv
        else:
            cfg.setdefault(table, {}).update(kv)
    with pytest.raises(DispatchError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert expected in msg
    assert "\n" not in msg and msg.endswith(".")


def test_batch_on_a_fixed_batch_file_is_refused(tmp_path: Path) -> None:
    fixed = str(_mlp(tmp_path / "fixed.onnx", batch=1))
    with pytest.raises(DispatchError, match="fixes its batch dimension"):
        load_config(_config(tmp_path, {"batch": [1, 2]}, models=[fixed]))


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[sweep]\nmodels = ["tiny_cnn"]\n[targets]\ngpu = "h100-sxm"\n[axes]\n"gpu.warp" = [1]\n')
    p = subprocess.run([sys.executable, "-m", "dispatch", "sweep", str(cfg), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Axis 'gpu.warp' names no key of target 'gpu'" in p.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


# -- points -------------------------------------------------------------------------------------------------
def test_cross_product_with_tied_axes(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, {"asic.rows": [32, 64, 128], "asic.cols": "same as asic.rows",
                                         "link.bandwidth_GBps": [16, 64], "batch": [1, 4]},
                              models=[str(_mlp(tmp_path / "a.onnx")), "tiny_cnn"]))
    pts = expand(cfg)
    assert count(cfg) == len(pts) == 2 * 3 * 2 * 2  # models x rows (cols tied) x bandwidth x batch
    assert all(p.as_dict["asic.cols"] == p.as_dict["asic.rows"] for p in pts)
    assert len({p.id for p in pts}) == len(pts)
    # link.bandwidth_GBps names no target: it sets both targets' link
    ax = cfg.axis("link.bandwidth_GBps")
    assert {(k.target, k.path) for k in ax.spec_keys} == {("gpu", ("link", "bandwidth_GBps")),
                                                         ("asic", ("link", "bandwidth_GBps"))}
    assert cfg.axis("asic.rows").spec_keys[0].path == ("asic", "rows")  # found in the kind's table


@pytest.mark.parametrize("preset", list_presets())
def test_spec_toml_writer_round_trips(preset: str) -> None:
    data = tomllib.loads((SPEC_DIR / f"{preset}.toml").read_text())
    assert tomllib.loads(to_toml(data)) == data


# -- rows ---------------------------------------------------------------------------------------------------
def _spec_with(tmp_path: Path, preset: str, old: str, new: str) -> str:
    text = (SPEC_DIR / f"{preset}.toml").read_text()
    assert old in text
    p = tmp_path / f"{preset}-{abs(hash(new))}.toml"
    p.write_text(text.replace(old, new))
    return str(p)


def test_rows_match_plan_and_golden_relations(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"asic.rows": [16, 128], "asic.cols": "same as asic.rows",
                             "asic.link.bandwidth_GBps": [4, 64], "batch": [1, 64]})
    res = run(cfg, tmp_path / "out", workers=1, plots=False)
    rows = res.rows
    assert res.ran == 8 and len(rows) == 8 * 3 * 2 and not any(r["error"] for r in rows)
    # every row equals a plain plan() call for its point (targets built from spec files written by hand)
    graphs = {b: load(str(tmp_path / "mlp.onnx"), {"N": b}) for b in (1, 64)}
    for r in rows:
        asic_spec = _spec_with(tmp_path, "tpu-v4-like", "bandwidth_GBps = 15.75",
                               f"bandwidth_GBps = {r['asic.link.bandwidth_GBps']}")
        targets = {"gpu": make_target("gpu", "h100-sxm"),
                   "asic": make_target("asic", asic_spec, rows=r["asic.rows"], cols=r["asic.rows"])}
        p = plan(graphs[r["batch"]], targets, r["strategy"], r["objective"])
        assert r["latency_s"] == pytest.approx(p.predicted.latency_s, rel=1e-12)
        assert r["energy_j"] == pytest.approx(p.predicted.energy_j, rel=1e-12)
        assert r["segments"] == len(p.segments) and r["transfer_bytes"] == p.transfer_bytes
        assert r["flops_share.gpu"] + r["flops_share.asic"] == pytest.approx(1.0)
    key = ("asic.link.bandwidth_GBps", "batch", "objective")
    gpu_only = {}
    for r in rows:
        if r["strategy"] == "only:gpu":  # the GPU's plan does not see the ASIC's array size
            gpu_only.setdefault(tuple(r[k] for k in key), set()).add(r["latency_s"])
            assert r["flops_share.gpu"] == 1.0
    assert all(len(v) == 1 for v in gpu_only.values())
    by_point: dict = {}
    for r in rows:
        by_point.setdefault((r["point"], r["objective"]), {})[r["strategy"]] = r
    for (_, obj), s in by_point.items():  # optimal is no worse than any single target, for its objective
        m = "latency_s" if obj == "latency" else "energy_j"
        assert s["optimal"]["optimal"] is True
        assert s["optimal"][m] <= min(s["only:gpu"][m], s["only:asic"][m]) * (1 + 1e-12)
    # the results folder: config, description, one file per point, both tables with the same rows
    out = tmp_path / "out"
    assert json.loads((out / "sweep.json").read_text())["points"] == 8
    assert len(list((out / "points").glob("*.json"))) == 8
    assert read_rows(out) == rows
    assert (out / "results.csv").read_text().count("\n") == len(rows) + 1


def test_failing_point_records_its_error_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # 100 bytes of on-chip capacity cannot hold W1 (64x32 in bf16 = 4096 bytes): no target can run mm1
    cfg = _config(tmp_path, {"asic.weight_capacity_bytes": [100, 0]}, targets={"asic": "tpu-v4-like"})
    cfg["sweep"]["strategies"] = ["optimal", "only:asic"]
    res = run(cfg, tmp_path / "out", workers=1, plots=False)
    bad = [r for r in res.rows if r["asic.weight_capacity_bytes"] == 100]
    good = [r for r in res.rows if r["asic.weight_capacity_bytes"] == 0]
    assert len(bad) == len(good) == 4
    assert all("can run on none of the targets" in r["error"] and r["latency_s"] is None for r in bad)
    assert all(r["error"] is None and r["latency_s"] > 0 for r in good)


def test_run_true_measures_and_validates_every_plan(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"asic.rows": [16, 128]}, run=True, repeat=1, warmup=0)
    cfg["sweep"]["objectives"] = ["latency"]
    rows = run(cfg, tmp_path / "out", workers=1, plots=False).rows
    assert len(rows) == 2 * 3
    for r in rows:
        assert r["error"] is None and r["measured_s"] > 0 and r["validated"] is True
        # the ASIC emulates its bf16 multipliers, so `validated` used the bf16-derived rtol (docs/numerics.md)
        assert np.isfinite(r["max_abs_err"])
        assert "numpy (simulated" in r["measured_provider"] or "ExecutionProvider" in r["measured_provider"]


def test_worker_keeps_node_costs_between_points(tmp_path: Path) -> None:
    from dispatch.sweep.evaluate import Worker

    cfg = load_config(_config(tmp_path, {"asic.rows": [16, 32, 64]}))
    w = Worker(cfg)
    for p in expand(cfg):
        w.rows(p)
    hits, misses = w.targets.stats()
    # 3 nodes, 4 questions each (support, weight bytes, cost, fusion), asked once of the GPU and once of
    # each of the 3 ASIC sizes: 4 * 3 * (1 + 3) = 48; the GPU at the 2nd and 3rd size answers from the cache
    # (4 * 3 * 2 = 24 hits); the second objective reuses the point's problem and asks nothing
    assert w.graphs.loads == 1
    assert (misses, hits) == (48, 24)
    w.close()


# -- resume -------------------------------------------------------------------------------------------------
def test_killed_sweep_reruns_only_the_missing_points(tmp_path: Path) -> None:
    cfg_path = tmp_path / "s.toml"
    mlp = _mlp(tmp_path / "mlp.onnx")
    cfg_path.write_text(f'[sweep]\nname = "r"\nmodels = ["{mlp}"]\nstrategies = ["optimal", "only:gpu"]\n'
                        '[targets]\ngpu = "h100-sxm"\nasic = "tpu-v4-like"\n'
                        '[axes]\n"asic.rows" = [8, 16, 32, 64, 128]\nbatch = [1, 2]\n')
    out = tmp_path / "out"
    env = {**os.environ, "DISPATCH_SWEEP_STOP_AFTER": "4"}  # the process dies after 4 points, as if killed
    p = subprocess.run([sys.executable, "-m", "dispatch", "sweep", str(cfg_path), "--out", str(out),
                        "--workers", "1", "--no-plots"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=120)
    assert p.returncode == 3, p.stderr
    assert len(list((out / "points").glob("*.json"))) == 4 and not (out / "results.csv").exists()
    res = run(cfg_path, out, workers=1, plots=False)
    assert (res.ran, res.skipped) == (10 - 4, 4)
    assert sorted({r["point"] for r in res.rows}) == list(range(10))
    again = run(cfg_path, out, workers=1, plots=False)
    assert (again.ran, again.skipped) == (0, 10)
    # the same --out with another config is refused
    cfg_path.write_text(cfg_path.read_text().replace("[1, 2]", "[1, 4]"))
    with pytest.raises(DispatchError, match="holds the results of a different sweep config"):
        run(cfg_path, out, workers=1, plots=False)


# -- plots --------------------------------------------------------------------------------------------------
def test_pareto_front() -> None:
    pts = [(1.0, 9.0), (2.0, 5.0), (3.0, 6.0), (4.0, 1.0), (2.0, 4.0), (5.0, 1.0)]
    # (3, 6) loses to (2, 4); (2, 5) to (2, 4); (5, 1) to (4, 1)
    assert pareto_front(pts) == [0, 4, 3]


def test_asic_wins_and_crossover() -> None:
    meta = {"target_kinds": {"gpu": "gpu", "asic": "asic"}, "objectives": ["latency"],
            "strategies": ["only:gpu", "only:asic"], "axes": ["asic.rows"], "tied": {}}
    lat = {16: (5.0, 9.0), 32: (5.0, 6.0), 64: (5.0, 4.0), 128: (5.0, 3.0)}  # rows -> (gpu, asic) latency
    rows = [{"point": i, "model": "m", "asic.rows": n, "objective": "latency", "strategy": s,
             "latency_s": v, "error": None}
            for i, (n, (g, a)) in enumerate(lat.items()) for s, v in (("only:gpu", g), ("only:asic", a))]
    assert asic_wins(rows, meta) == {0: False, 1: False, 2: True, 3: True}
    assert crossovers(rows, meta, "asic.rows") == {("m",): 64}


def test_plots_are_written_and_redrawn_from_the_results_alone(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"asic.rows": [16, 128], "link.bandwidth_GBps": [4, 64]})
    res = run(cfg, tmp_path / "out", workers=1)
    names = {f.name for f in res.files}
    for stem in ("axis-asic.rows", "axis-link.bandwidth_GBps", "pareto", "flops-share"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    out = tmp_path / "out"
    for f in (out / "plots").iterdir():
        f.unlink()
    for f in (out / "points").iterdir():  # the rows and sweep.json are enough
        f.unlink()
    p = subprocess.run([sys.executable, "-m", "dispatch", "plot", str(out)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    drawn = {f.name for f in res.files if f.parent.name == "plots"}
    assert {f.name for f in (out / "plots").iterdir()} == drawn
    assert all(f.stat().st_size > 1000 for f in (out / "plots").iterdir())


# -- local workers and Ray ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_local_workers_and_ray_give_the_same_rows(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"asic.rows": [16, 64, 128], "asic.cols": "same as asic.rows",
                             "link.bandwidth_GBps": [8, 64], "batch": [1, 8]},
                  models=[str(_mlp(tmp_path / "a.onnx")), "tiny_cnn"])
    single = run(cfg, tmp_path / "one", workers=1, plots=False).rows
    local = run(cfg, tmp_path / "local", workers=2, plots=False).rows
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    try:
        remote = run(cfg, tmp_path / "ray", workers=2, ray="local", plots=False).rows
    except DispatchError as e:
        if "Could not start or reach" in str(e):
            pytest.skip(f"a local Ray cluster cannot start here: {e}")
        raise

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "planning_s"} for r in rows]

    assert len(single) == 2 * 3 * 2 * 2 * 3 * 2
    assert strip(single) == strip(local) == strip(remote)

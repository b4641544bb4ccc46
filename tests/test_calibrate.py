"""Calibration: the fit recovers known parameters, profiles round-trip and are found, a quick run works."""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest

import models
from dispatch.analysis import analyze_node
from dispatch.calibration import calibrate, calibration_cases, measure_case
from dispatch.calibration.cases import _unary
from dispatch.calibration.cli import main_calibrate
from dispatch.calibration.fit import Point, fit_class
from dispatch.errors import DispatchError
from dispatch.frontend import load
from targets.base import make_target
from targets.profile import Profile, find_profile, profile_dir, profile_filename


def test_fit_recovers_known_efficiencies():
    # Synthetic cases from compute 0.6, memory 0.8, fixed 2 µs on a 100 GFLOP/s, 10 GB/s device:
    # a GEMM-like case is compute-bound, a stream-like case memory-bound, a tiny one overhead-bound.
    truth = (0.6, 0.8, 2e-6)
    pts = []
    for i, (flops, nbytes) in enumerate(
        [(1e9, 1e6), (1e8, 1e5), (1e6, 1e8), (1e5, 1e7), (10, 100), (1e7, 2e6)]
    ):
        t = max(flops / (100e9 * truth[0]), nbytes / (10e9 * truth[1])) + truth[2]
        pts.append(Point(f"c{i}", "gemm", "MatMul", flops, nbytes, 0.0, 10e9, 10e9, 100e9, t))
    c, m, o, fitted = fit_class(pts, (0.3, 0.3, 1e-6))
    assert fitted == ("compute", "memory", "overhead")
    assert c == pytest.approx(0.6, rel=1e-3) and m == pytest.approx(0.8, rel=1e-3)
    assert o == pytest.approx(2e-6, rel=1e-2)


def test_case_table_matches_the_cost_model():
    # Every case's primary node has the class the table says (calibrate() checks it too).
    from targets.gpu import op_class

    for case in calibration_cases():
        g = load(case.model)
        node = next(n for n in g.nodes if n.op_type == (case.primary or g.nodes[0].op_type))
        assert op_class(node, analyze_node(node)) == case.op_class, case.name
    classes = {c.op_class for c in calibration_cases()}
    assert classes == {"gemm", "conv", "elementwise", "reduction", "normalization", "movement", "view"}


def test_measure_case_uses_the_profiler():
    t = measure_case(_unary("Relu", (1, 64, 56, 56)), "CPUExecutionProvider", repeats=5, threads=1)
    assert t.count == 1 and t.count_all == 1
    assert 0 < t.timed_s <= t.all_s and t.wall_s > 0
    # the case's share of a run less a 1 µs session call
    assert t.op_seconds(1e-6) == pytest.approx(max(t.wall_s - 1e-6, 0.0))


def test_profile_errors(tmp_path):
    with pytest.raises(DispatchError, match="does not exist"):
        Profile.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DispatchError, match="not valid JSON"):
        Profile.load(bad)
    bad.write_text(json.dumps({"spec": "host-cpu"}))
    with pytest.raises(DispatchError, match="not a calibration profile"):
        Profile.load(bad)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="a GPU provider is here")
def test_gpu_calibration_refused_without_a_gpu(capsys):
    with pytest.raises(DispatchError, match="calibrate the cpu target instead"):
        calibrate("gpu")
    assert main_calibrate(["--target", "h100-sxm"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(DispatchError, match="only the onnxruntime targets"):
        calibrate("tpu-v4-like")


@pytest.mark.slow
def test_quick_calibration_writes_a_profile_that_changes_predictions(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPATCH_CACHE", str(tmp_path))
    assert main_calibrate(["--quick"]) == 0
    path = profile_dir() / profile_filename("host-cpu", "CPUExecutionProvider")
    assert path.parent == tmp_path / "profiles" and path.is_file()
    data = json.loads(path.read_text())
    for key in ("provider", "ort_version", "machine", "date", "classes", "residuals", "session_us"):
        assert key in data
    assert data["provider"] == "CPUExecutionProvider" and data["ort_version"] == ort.__version__
    assert data["machine"]["cpu_count"] >= 1 and data["residuals"]["cases"]
    prof = find_profile("host-cpu", "CPUExecutionProvider")
    assert prof is not None and prof.path == str(path)
    for f in prof.classes.values():
        assert (
            0 < f.compute <= 1
            and 0 < f.memory <= 20
            and f.overhead_us >= 0
            and math.isfinite(f.rms_log_error)
        )

    # Picked up automatically from the default location, and it changes the predictions.
    calibrated = make_target("cpu", "host-cpu")
    default = make_target("cpu", "host-cpu", profile=False)
    assert calibrated.profile is not None and calibrated.describe()["calibrated"] is True
    assert str(path) in calibrated.describe()["profile"]
    g = load(models.build("tiny_cnn"))
    pred = [sum(t.cost(n, analyze_node(n)).latency_s for n in g.nodes) for t in (calibrated, default)]
    assert pred[0] != pred[1]
    assert calibrated.segment_overhead().latency_s == pytest.approx(prof.session_us * 1e-6)

    # A profile fitted for one spec is refused for another.
    with pytest.raises(DispatchError, match="fitted for spec 'host-cpu'"):
        make_target("gpu", "h100-sxm", profile=path)
    # Round trip.
    again = Profile.load(path)
    assert again.classes == prof.classes and again.kernel_scale == prof.kernel_scale
    assert np.isclose(again.session_us, prof.session_us)

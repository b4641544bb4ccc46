"""Calibration judged out of sample (benchmarks/bench_calibration.py): the cases share no layer shape with
the judged models, and the report's arithmetic (per-model error, median absolute error) is right."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

import models
from benchmarks import bench_calibration as bc
from dispatch.frontend import load


def _conv_graph(c: int, hw: int, co: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [co, c, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, hw, hw])
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)], "g", [x, w], [y])
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_overlap_finds_a_shared_layer_shape_and_only_that():
    cases = {"conv 8@16": _conv_graph(8, 16, 8), "conv 12@18": _conv_graph(12, 18, 12)}
    judged = {"net": _conv_graph(8, 16, 8), "other": _conv_graph(8, 16, 16)}  # same input, other weight
    hits = bc.overlap(cases, judged)
    assert hits == [("conv 8@16", "net", ("Conv", ((1, 8, 16, 16), (8, 8, 3, 3))))]
    assert bc.overlap({"conv 12@18": cases["conv 12@18"]}, judged) == []


def test_no_calibration_case_has_a_layer_shape_of_the_small_zoo_models():
    # The case set once used these very shapes ([1, 16, 32] transformer layers, 16-channel convs at 16x16);
    # the benchmark asserts the same over every judged model, the corpus included.
    judged = {n: load(str(models.build(n))) for n in ("mlp", "tiny_cnn", "tiny_transformer")}
    assert bc.overlap(bc.case_graphs(), judged) == []


def _row(model: str, measured: float, before: float, after: float, **kw) -> bc.Judged:
    return bc.Judged(model, 10, 2, measured, before, after, **kw)


def test_report_arithmetic_on_a_tiny_fake_set():
    rows = [
        _row("a", 10e-3, 11e-3, 9e-3),  # before +10%, after -10%
        _row("b", 2e-3, 1e-3, 2.5e-3),  # before -50%, after +25%
        _row("c", 4e-3, 5e-3, 4.2e-3),  # before +25%, after +5%
    ]
    assert [r.error_before for r in rows] == pytest.approx([0.10, -0.50, 0.25])
    assert [r.error_after for r in rows] == pytest.approx([-0.10, 0.25, 0.05])
    # median of |before| {0.10, 0.50, 0.25} = 0.25; of |after| {0.10, 0.25, 0.05} = 0.10
    assert bc.median_abs(r.error_before for r in rows) == pytest.approx(0.25)
    assert bc.median_abs(r.error_after for r in rows) == pytest.approx(0.10)
    assert bc.median_abs([0.1, -0.3, 0.2, -0.4]) == pytest.approx(0.25)  # even count: mean of 0.2 and 0.3
    text = "\n".join(bc.summary_lines(rows))
    assert "| a | 10 | 2 | 10.000 | 11.000 | +10.0% | 9.000 | -10.0% |" in text
    assert "**25.0% before**" in text and "**10.0% after**" in text
    assert "Worst after: b (+25.0%)" in text and "met for 2 of 3" in text


def test_why_names_the_class_with_the_largest_gap_and_uncalibrated_kernels():
    row = _row("m", 10e-3, 0, 8e-3,
               pred_by_class={"conv": 6e-3, "elementwise": 2e-3},
               meas_by_class={"conv": 5e-3, "elementwise": 1e-3, "other": 4e-3},
               uncalibrated={"LSTM": 3e-3, "ReorderInput": 1e-3})
    # gaps: conv +1 ms, elementwise +1 ms, other -4 ms -> other, 40% of the 10 ms model
    # uncalibrated 4 ms of 10 = 40% (over the 5% threshold), largest first
    assert bc.why(row) == ("other: predicted 0 ms, measured 4 ms (-40% of the model); 40% of measured time "
                           "in kernels no case times (LSTM, ReorderInput)")

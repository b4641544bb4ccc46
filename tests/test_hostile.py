"""Unusual but valid models run; invalid attributes and unfeedable inputs are one sentence; NumPy's
floating-point warnings become notes (issue 14, items 2 to 4)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from dispatch import Dispatcher, DispatchError
from dispatch.cli import main
from dispatch.frontend import load
from dispatch.validate import compare, generate_feeds
from targets.asic.timing import ArrayConfig, simulate_gemm

ASIC = {"asic": "tpu-v4-like"}


def _model(nodes, inputs, outputs, inits=(), sparse=(), opset=17) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits), sparse_initializer=list(sparse))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def _vi(name, dims, t=T.FLOAT):
    return h.make_tensor_value_info(name, t, dims)


def _ort(model: onnx.ModelProto, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


# -- zero-size dimensions --------------------------------------------------------------------------------
def test_zero_k_matmul_runs_on_the_asic_with_zero_work():
    m = _model([h.make_node("MatMul", ["a", "b"], ["y"])], [_vi("a", [4, 0]), _vi("b", [0, 5])],
               [_vi("y", [4, 5])])
    with Dispatcher(m, ASIC, strategy="only:asic") as d:
        feeds = d.example_feeds()
        assert feeds["a"].shape == (4, 0) and feeds["b"].shape == (0, 5)  # the declared 0, not 1
        np.testing.assert_array_equal(d.run(feeds)["y"], np.zeros((4, 5), np.float32))  # a sum of nothing
        assert d.validate(feeds).ok
        assert d.plan.assignment["MatMul_0"] == "asic"


def test_empty_gemm_timing_is_the_output_write_only():
    cfg = ArrayConfig(rows=8, cols=8, clock_hz=1e9, dataflow="ws", num_arrays=1, ifmap_sram_bytes=1 << 20,
                      filter_sram_bytes=1 << 20, ofmap_sram_bytes=1 << 20, offchip_bandwidth_Bps=16e9,
                      word_bytes=2)
    t = simulate_gemm(4, 0, 5, cfg)
    # no MACs, no compute; the 4 x 5 output (zeros) is written: 20 * 2 B = 40 B at 16 B/cycle = 3 cycles
    assert (t.macs, t.compute_cycles, t.dram_write_bytes, t.dram_read_bytes) == (0, 0, 40, 0)
    assert t.total_cycles == 3 and t.utilization == 0.0
    assert simulate_gemm(0, 8, 5, cfg).total_cycles == 0  # no output at all: nothing to do


def test_zero_rows_generated_and_run():
    m = _model([h.make_node("Relu", ["x"], ["y"])], [_vi("x", [0, 3])], [_vi("y", [0, 3])])
    g = load(m)
    assert generate_feeds(g)["x"].shape == (0, 3)
    with Dispatcher(m, ASIC) as d:
        assert d.run(d.example_feeds())["y"].shape == (0, 3)


@pytest.mark.parametrize(("x_shape", "w_shape"), [((0, 3, 8, 8), (4, 3, 3, 3)),   # no images
                                                  ((1, 0, 8, 8), (4, 0, 3, 3)),   # K = 0: the bias only
                                                  ((1, 3, 8, 8), (0, 3, 3, 3))])  # no filters
def test_zero_size_conv_on_the_asic(x_shape, w_shape):
    w = nh.from_array(np.ones(w_shape, np.float32), "w")
    b = nh.from_array(np.arange(w_shape[0], dtype=np.float32), "b")
    m = _model([h.make_node("Conv", ["x", "w", "b"], ["y"])], [_vi("x", list(x_shape))],
               [_vi("y", list("abcd"))], [w, b])
    with Dispatcher(m, ASIC, strategy="only:asic") as d:
        feeds = d.example_feeds()
        y = d.run(feeds)["y"]
        assert d.plan.assignment["Conv_0"] == "asic"
    ref = _ort(m, feeds)["y"]
    assert y.shape == ref.shape == (x_shape[0], w_shape[0], 6, 6)
    np.testing.assert_array_equal(y, ref)  # K = 0: y[:, c] == c, the bias


# -- sparse initializers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("coordinates", [False, True])
def test_sparse_initializer_is_densified(coordinates):
    dense = np.zeros((2, 3), np.float32)
    dense[0, 1], dense[1, 2] = 1.5, -2.0  # linear indices 1 and 5; coordinates (0, 1) and (1, 2)
    idx = np.array([[0, 1], [1, 2]] if coordinates else [1, 5], np.int64)
    sp = h.make_sparse_tensor(nh.from_array(np.array([1.5, -2.0], np.float32), "w"), nh.from_array(idx, "i"),
                              [2, 3])
    m = _model([h.make_node("MatMul", ["a", "w"], ["y"])], [_vi("a", [4, 2])], [_vi("y", [4, 3])],
               sparse=[sp])
    g = load(m)
    np.testing.assert_array_equal(g.values["w"].const, dense)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    with Dispatcher(m, ASIC, strategy="only:asic") as d:
        got = d.run({"a": x})["y"]
    np.testing.assert_array_equal(got, x @ dense)
    np.testing.assert_allclose(got, _ort(m, {"a": x})["y"], rtol=1e-6)  # onnxruntime on the sparse model


def test_sparse_initializer_with_an_index_outside_its_shape():
    sp = h.make_sparse_tensor(nh.from_array(np.array([1.0], np.float32), "w"),
                              nh.from_array(np.array([6], np.int64), "i"), [2, 3])
    m = _model([h.make_node("MatMul", ["a", "w"], ["y"])], [_vi("a", [4, 2])], [_vi("y", [4, 3])],
               sparse=[sp])
    with pytest.raises(DispatchError, match="Sparse initializer 'w' has 1 values but indices"):
        load(m)


# -- invalid attributes ----------------------------------------------------------------------------------
def _conv(channels=3, weight=(4, 3, 3, 3), **attrs) -> onnx.ModelProto:
    w = nh.from_array(np.ones(weight, np.float32), "w")
    return _model([h.make_node("Conv", ["x", "w"], ["y"], **attrs)], [_vi("x", [1, channels, 8, 8])],
                  [_vi("y", list("abcd"))], [w])


@pytest.mark.parametrize(("model", "fragment"), [
    (_conv(strides=[0, 0]), "strides [0, 0]: every stride must be at least 1"),
    (_conv(dilations=[1, 0]), "dilations [1, 0]: every dilation must be at least 1"),
    (_conv(pads=[-1, -1, 0, 0]), "pads [-1, -1, 0, 0]: pads must not be negative"),
    (_conv(pads=[1, 1]), "pads [1, 1]: a 2-D input needs 4 values"),
    (_conv(weight=(4, 1, 3, 3), group=2), "group 2 with 3 input channels and weights of shape [4, 1, 3, 3]"),
    (_conv(channels=4, weight=(3, 2, 3, 3), group=2), "group must divide the 3 output channels"),
    (_conv(group=0), "group 0: it must be at least 1"),
])
def test_invalid_conv_attributes_are_one_sentence_at_load(model, fragment):
    with pytest.raises(DispatchError) as e:
        load(model)
    msg = str(e.value)
    assert msg.startswith("Conv node 'Conv_0' has ") and fragment in msg and "\n" not in msg, msg
    assert "place those nodes elsewhere" not in msg


def test_valid_grouped_conv_still_runs():
    m = _conv(channels=4, weight=(6, 2, 3, 3), group=2, pads=[1, 1, 1, 1])  # 4 = 2 x 2; 6 % 2 == 0
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8), dtype=np.float32)
    with Dispatcher(m, ASIC, asic_numerics="exact") as d:  # exact: compared with fp32 below
        np.testing.assert_allclose(d.run({"x": x})["y"], _ort(m, {"x": x})["y"], rtol=1e-5, atol=1e-5)


def test_invalid_conv_from_the_cli(tmp_path, capsys):
    path = tmp_path / "stride0.onnx"
    onnx.save(_conv(strides=[0, 0]), str(path))
    assert main([str(path), "--no-run", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "strides [0, 0]" in err and "onnxruntime could not" not in err


# -- inputs the command line cannot give ------------------------------------------------------------
def _sequence_model() -> onnx.ModelProto:
    return _model([h.make_node("SequenceAt", ["s", "i"], ["y"])],
                  [h.make_tensor_sequence_value_info("s", T.FLOAT, None)], [_vi("y", ["n"])],
                  [nh.from_array(np.array(0, np.int64), "i")])


def _optional_model() -> onnx.ModelProto:
    opt = h.make_value_info("o", h.make_optional_type_proto(h.make_tensor_type_proto(T.FLOAT, [2])))
    return _model([h.make_node("OptionalHasElement", ["o"], ["y"])], [opt], [_vi("y", [], T.BOOL)], opset=18)


@pytest.mark.parametrize(("make", "what"), [(_sequence_model, "a sequence of float32 arrays"),
                                            (_optional_model, "an optional float32 tensor")])
@pytest.mark.parametrize("with_inputs", [False, True])
def test_sequence_and_optional_inputs_point_to_the_python_api(tmp_path, capsys, make, what, with_inputs):
    path = tmp_path / "m.onnx"
    onnx.save(make(), str(path))
    extra = []
    if with_inputs:
        np.savez(tmp_path / "in.npz", x=np.zeros(2, np.float32))
        extra = ["--inputs", str(tmp_path / "in.npz")]
    assert main([str(path), "--targets", "cpu=host-cpu", "--quiet", "--repeat", "0", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and what in err, err
    assert "can neither generate nor read from an .npz" in err and "Dispatcher(model).run(" in err


def test_sequence_input_runs_from_python():
    with Dispatcher(_sequence_model(), {"cpu": "host-cpu"}) as d:
        x = np.arange(3, dtype=np.float32)
        np.testing.assert_array_equal(d.run({"s": [x, x + 1]})["y"], x)
        with pytest.raises(DispatchError, match="run the model from Python"):
            d.example_feeds()


# -- NaN / Inf feeds ---------------------------------------------------------------------------------
def test_numpy_warnings_on_nan_inf_feeds_become_notes():
    w = nh.from_array(np.ones((4, 4), np.float32), "w")
    m = _model([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Relu", ["m"], ["y"])],
               [_vi("x", [2, 4])], [_vi("y", [2, 4])], [w])
    # row 0: NaN and +-Inf (inf + -inf = NaN: invalid); row 1: 4 x 3e38 > float32's max 3.4e38: overflow
    x = np.array([[np.nan, np.inf, -np.inf, 1], [3e38, 3e38, 3e38, 3e38]], np.float32)
    with Dispatcher(m, ASIC, strategy="only:asic") as d, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = d.run({"x": x})["y"]
        result = d.validate({"x": x})
        notes = list(d.graph.notes)
    assert not [c for c in caught if issubclass(c.category, RuntimeWarning)], [str(c.message) for c in caught]
    assert np.isnan(y[0]).all() and np.isposinf(y[1]).all()
    assert result.ok  # +inf where onnxruntime has +inf is no error
    assert any("NumPy reported overflow in the ASIC kernel of node 'MatMul_0'" in n for n in notes), notes
    assert len(notes) == len(set(notes))  # each event noted once, however many runs


def test_compare_treats_equal_infinities_as_equal_without_warnings():
    inf = np.float32(np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = compare({"y": np.array([inf, -inf, np.nan, 1], np.float32)},
                       {"y": np.array([inf, -inf, np.nan, 1], np.float32)})
        differ = compare({"y": np.array([inf, 1], np.float32)}, {"y": np.array([1, 1], np.float32)})
    assert same.ok and same.max_abs_err == 0.0
    assert not differ.ok and math.isinf(differ.max_abs_err)


def test_constant_folding_warnings_become_a_note():
    c = nh.from_array(np.array([0.0, 1.0], np.float32), "c")
    m = _model([h.make_node("Log", ["c"], ["l"]), h.make_node("Add", ["x", "l"], ["y"])], [_vi("x", [2])],
               [_vi("y", [2])], [c])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load(m)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert [n.op_type for n in g.nodes] == ["Add"]  # Log folded: log([0, 1]) = [-inf, 0]
    np.testing.assert_array_equal(g.values["l"].const, [-np.inf, 0.0])
    assert any("constant folding met NumPy's divide by zero" in n for n in g.notes), g.notes

"""The frontend: every bad input is one DispatchError sentence naming the culprit; the good paths load right.

Bad inputs: missing file, directory, empty file, non-ONNX bytes, truncated protobuf, cycle, dangling input,
external data missing or outside the model's folder, unknown domain, unresolvable shape bindings. Good
paths: external data, legacy IR < 4, opsets 7 to newest, constant folding, symbolic dimensions, static shapes
everywhere after loading, and numerical agreement of the loaded (folded) model with the original.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import models
from dispatch import Dispatcher, fold
from dispatch.analysis import analyze
from dispatch.errors import DispatchError
from dispatch.frontend import MAX_OPSET, load, parse_shapes
from dispatch.ir import Graph
from models.synthetic import synthetic_model

F = TensorProto.FLOAT
vi = helper.make_tensor_value_info


def one_sentence(e: pytest.ExceptionInfo[DispatchError]) -> str:
    """The message, checked to be one sentence: no line breaks, ends with a period."""
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith("."), msg
    assert "Traceback" not in msg
    return msg


def matmul_model(n: int = 64, *, opset: int = 17, ir_version: int | None = None) -> onnx.ModelProto:
    """x (1, n) @ W (n, n) + b -> Relu -> y, with a fixed-seed weight."""
    rng = np.random.default_rng(0)
    wt = rng.standard_normal((n, n)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    inits = [numpy_helper.from_array(wt, "W"), numpy_helper.from_array(np.ones(n, np.float32), "b")]
    graph = helper.make_graph(nodes, "mm", [vi("x", F, [1, n])], [vi("y", F, [1, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version or min(model.ir_version, 10)
    return model


def symbolic_conv_model() -> onnx.ModelProto:
    """input (batch, 3, 8, 8) -> Conv 3x3 pad 1 -> output (batch, 4, 8, 8)."""
    nodes = [helper.make_node("Conv", ["input", "W"], ["output"], pads=[1, 1, 1, 1], name="conv")]
    graph = helper.make_graph(nodes, "sym", [vi("input", F,
                                                                           ["batch", 3, 8, 8])],
                              [vi("output", F, ["batch", 4, 8, 8])],
                              [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


# -- bad files -------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path):
    with pytest.raises(DispatchError) as e:
        load(tmp_path / "nope.onnx")
    msg = one_sentence(e)
    assert "nope.onnx" in msg and "does not exist" in msg


def test_directory(tmp_path: Path):
    with pytest.raises(DispatchError) as e:
        load(tmp_path)
    msg = one_sentence(e)
    assert str(tmp_path) in msg and "directory" in msg


@pytest.mark.parametrize("source", [123, None, b"model.onnx"])
def test_source_of_a_wrong_type(source: object):
    # regression: an int or None reached pathlib and raised TypeError instead of DispatchError
    with pytest.raises(DispatchError) as e:
        load(source)  # type: ignore[arg-type]
    assert f"not {type(source).__name__}" in one_sentence(e)


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(DispatchError) as e:
        load(path)
    msg = one_sentence(e)
    assert "empty.onnx" in msg and "empty" in msg


@pytest.mark.parametrize("data", [b"this is not an onnx model at all", bytes(range(256)) * 4, b"\x08\x07"])
def test_non_onnx_bytes(tmp_path: Path, data: bytes):
    path = tmp_path / "junk.onnx"
    path.write_bytes(data)
    with pytest.raises(DispatchError) as e:
        load(path)
    msg = one_sentence(e)
    assert "junk.onnx" in msg and "ONNX model" in msg


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_protobuf(tmp_path: Path, fraction: float):
    data = matmul_model(256).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(DispatchError) as e:
        load(path)
    msg = one_sentence(e)
    assert "cut.onnx" in msg and "truncated" in msg


# -- bad graphs ------------------------------------------------------------------------------------------
def test_cycle():
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second")]
    graph = helper.make_graph(nodes, "cyc", [vi("x", F, [2])],
                              [vi("b", F, [2])])
    with pytest.raises(DispatchError) as e:
        load(helper.make_model(graph))
    msg = one_sentence(e)
    assert "cycle" in msg and re.search(r"'(first|second)'", msg)


def test_input_nothing_produces():
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")]
    graph = helper.make_graph(nodes, "dangling", [vi("x", F, [2])],
                              [vi("y", F, [2])])
    with pytest.raises(DispatchError) as e:
        load(helper.make_model(graph))
    msg = one_sentence(e)
    assert "'ghost'" in msg and "'adder'" in msg


def test_unknown_domain():
    nodes = [helper.make_node("Frobnicate", ["x"], ["y"], name="frob", domain="com.example")]
    graph = helper.make_graph(nodes, "custom", [vi("x", F, [2])],
                              [vi("y", F, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    with pytest.raises(DispatchError) as e:
        load(model)
    msg = one_sentence(e)
    assert "com.example" in msg and "'frob'" in msg and "Frobnicate" in msg


def test_opset_newer_than_onnx_knows():
    model = matmul_model(4)
    model.opset_import[0].version = MAX_OPSET + 1
    with pytest.raises(DispatchError) as e:
        load(model)
    msg = one_sentence(e)
    assert f"opset {MAX_OPSET + 1}" in msg and "upgrade onnx" in msg


def test_opset_6_is_upgraded_with_a_note():
    graph = load(matmul_model(4, opset=6, ir_version=3))
    assert graph.opset == 7
    assert "opset 6 upgraded to opset 7 with onnx.version_converter" in graph.notes


@pytest.mark.parametrize("case", ["test_Conv2d", "test_Linear", "test_BatchNorm2d_eval"])
def test_pytorch_converted_opset_6_cases_run_as_shipped(case: str):
    """Regression: every opset-6 model (the pytorch-converted cases that ship with onnx) was refused."""
    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted" / case
    model = onnx.load(str(folder / "model.onnx"))
    assert model.opset_import[0].version == 6
    x = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0" / "input_0.pb")))
    want = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0" / "output_0.pb")))
    graph = load(model)
    assert graph.opset == 7 and any("upgraded" in n for n in graph.notes)
    for strategy in ("optimal", "only:asic"):
        with Dispatcher(model, strategy=strategy, asic_numerics="exact") as d:  # fp32, as `want`
            (got,) = d.run({graph.inputs[0].name: x}).values()
            if strategy == "only:asic" and "BatchNorm" not in case:  # a lone BatchNorm is no ASIC kernel
                assert [s.target for s in d.plan.segments] == ["asic"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_every_shipped_model_older_than_opset_7_loads_upgraded():
    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    old = []
    for path in sorted(data.glob("*/*/model.onnx")):
        model = onnx.load(str(path))
        opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
        if opset < 7:
            graph = load(model)
            assert graph.opset == 7 and f"opset {opset} upgraded to opset 7 with onnx.version_converter" in \
                graph.notes, path.parent.name
            old.append(path.parent.name)
    assert len(old) >= 35  # onnx 1.23: 79 pytorch-converted cases at opset 6


def test_opset_that_cannot_be_upgraded_is_one_sentence():
    # onnx.version_converter has no adapter for Tile from opset 5 (Tile-1 took tiles and axis inputs).
    graph = helper.make_graph([helper.make_node("Tile", ["x", "r"], ["y"])], "tile",
                              [vi("x", F, [2, 3]), vi("r", TensorProto.INT64, [2])], [vi("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 5)])
    model.ir_version = 3
    with pytest.raises(DispatchError) as e:
        load(model)
    msg = one_sentence(e)
    assert "opset 5" in msg and "cannot upgrade it (No Adapter From Version $5 for Tile)" in msg


def test_corrupt_initializer_data():
    model = matmul_model(64)  # W has 4096 elements: it goes to the checker without its data
    w = next(t for t in model.graph.initializer if t.name == "W")
    w.raw_data = w.raw_data[:-4]
    with pytest.raises(DispatchError) as e:
        load(model)
    assert "'W'" in one_sentence(e)


# -- external data ---------------------------------------------------------------------------------------
def save_external(tmp_path: Path) -> tuple[np.ndarray, Path]:
    """The model saved with every initializer in model.data; returns W and the model's path."""
    model = matmul_model(64)
    weight = numpy_helper.to_array(model.graph.initializer[0]).copy()
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.data", size_threshold=0)
    return weight, path


def test_external_data_loads(tmp_path: Path):
    weight, path = save_external(tmp_path)
    assert (path.parent / "model.data").is_file()
    graph = load(path)
    assert np.array_equal(graph.values["W"].const, weight)
    assert sum(c.macs for c in analyze(graph)) == 64 * 64  # 1·64 outputs · K = 64


def test_external_data_missing(tmp_path: Path):
    _, path = save_external(tmp_path)
    (path.parent / "model.data").unlink()
    with pytest.raises(DispatchError) as e:
        load(path)
    msg = one_sentence(e)
    assert "model.data" in msg and "missing" in msg


@pytest.mark.parametrize("location", ["../outside.data", "/etc/passwd", "sub/../../outside.data"])
def test_external_data_outside_folder(tmp_path: Path, location: str):
    _, path = save_external(tmp_path)
    (tmp_path / "outside.data").write_bytes((path.parent / "model.data").read_bytes())  # it exists: no excuse
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(DispatchError) as e:
        load(path)
    msg = one_sentence(e)
    assert location in msg and "outside" in msg


# -- shape bindings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shapes", "names"), [
    ({"nope": (1, 3, 8, 8)}, ["'nope'", "input"]),  # unknown input
    ({"input": (1, 3, 8)}, ["'input'", "3 dimensions", "4"]),  # rank mismatch
    ({"input": (1, 4, 8, 8)}, ["'input'", "fixes it at 3"]),  # contradicts a fixed dimension
    ({"input": (2, 3, 8, 8), "batch": 3}, ["'batch'", "2", "3"]),  # one symbol, two sizes
    ({"batch": 2.5}, ["'batch'", "2.5", "positive integers"]),  # not an integer
    ({"batch": "2"}, ["'batch'", "positive integers"]),
    ({"batch": True}, ["'batch'", "positive integers"]),
    ({"batch": 0}, ["'batch'", "positive integers"]),
    ({"input": (1, 3.0, 8, 8)}, ["'input'", "positive integers"]),
    ({"batch": (2, 2)}, ["'batch'", "batch=N"]),
])
def test_bad_shape_bindings(shapes: dict[str, object], names: list[str]):
    with pytest.raises(DispatchError) as e:
        load(symbolic_conv_model(), shapes=shapes)  # type: ignore[arg-type]
    msg = one_sentence(e)
    for name in names:
        assert name in msg
    assert "--shape" not in msg  # regression: load(shapes=...) named the CLI flag the caller never used


@pytest.mark.parametrize("item", ["input=1xax8x8", "input", "=2", "batch=0", "batch=-1", "batch=", "x=1.5"])
def test_bad_cli_shape_strings(item: str):
    with pytest.raises(DispatchError) as e:
        parse_shapes([item])
    assert item in one_sentence(e)


def test_a_name_bound_twice_to_different_sizes():
    # regression: '--shape batch=2 --shape batch=3' silently kept the last binding
    with pytest.raises(DispatchError) as e:
        parse_shapes(["batch=2", "batch=3"])
    assert "'batch' is bound twice, to 2 and 3" in one_sentence(e)
    assert parse_shapes(["batch=2", "batch=2"]) == {"batch": (2,)}  # repeating the same binding is fine


def test_bindings_by_input_and_by_symbol():
    assert parse_shapes(["input=2x3x8x8", "batch=2"]) == {"input": (2, 3, 8, 8), "batch": (2,)}
    per_image = 4 * 8 * 8 * 3 * 3 * 3  # C_out·H·W · C_in·kH·kW
    for shapes in ({"input": (2, 3, 8, 8)}, {"batch": 2}, parse_shapes(["batch=2"])):
        graph = load(symbolic_conv_model(), shapes=shapes)
        assert graph.values["input"].shape == (2, 3, 8, 8)
        assert graph.values["output"].shape == (2, 4, 8, 8)
        assert sum(c.macs for c in analyze(graph)) == 2 * per_image
        assert graph.notes == []


def test_leftover_symbols_default_to_one_with_a_note():
    graph = load(symbolic_conv_model())
    assert graph.values["input"].shape == (1, 3, 8, 8)
    assert len(graph.notes) == 1 and "batch" in graph.notes[0] and "1" in graph.notes[0]


# -- good paths ------------------------------------------------------------------------------------------
def test_legacy_ir3_initializers_listed_as_inputs():
    model = matmul_model(8, opset=8, ir_version=3)
    model.graph.input.extend([vi("W", F, [8, 8]),
                              vi("b", F, [8])])
    graph = load(model)
    assert [v.name for v in graph.inputs] == ["x"]  # W and b are constants, not feeds
    assert graph.values["W"].is_const and not graph.values["W"].is_graph_input
    assert graph.num_params == 8 * 8 + 8
    assert sum(c.macs for c in analyze(graph)) == 8 * 8


def small_cnn(opset: int) -> onnx.ModelProto:
    """Conv (4×3×3×3, pad 1) → BatchNorm → Relu → MaxPool 2 → Flatten → Gemm (64 → 10), with ops that exist in
    opset 7 and keep their meaning in the newest opset."""
    rng = np.random.default_rng(1)
    inits = {"W": rng.standard_normal((4, 3, 3, 3)), "scale": np.ones(4), "bias": np.zeros(4),
             "mean": np.zeros(4), "var": np.ones(4), "W2": rng.standard_normal((64, 10)), "b2": np.zeros(10)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [vi("x", F, [1, 3, 8, 8])],
                              [vi("y", F, [1, 10])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3 if opset < 9 else min(model.ir_version, 10)
    return model


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 17, MAX_OPSET])
def test_opsets_7_to_newest(opset: int):
    graph = load(small_cnn(opset))
    assert graph.opset == opset
    costs = analyze(graph)
    assert all(c.modeled for c in costs)
    assert sum(c.macs for c in costs) == 4 * 8 * 8 * 3 * 3 * 3 + 10 * 64  # conv + gemm


def fold_model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], out_shape: list[int],
               x_shape: Sequence[int | str] = (2, 3, 4)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "fold", [vi("x", F, list(x_shape))],
                              [vi("y", F, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_constant_into_reshape_shape():
    shape = numpy_helper.from_array(np.array([6, -1], np.int64))
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("Reshape", ["x", "s"], ["y"])]
    graph = load(fold_model(nodes, {}, [6, 4]))
    assert [n.op_type for n in graph.nodes] == ["Reshape"]
    assert graph.nodes[0].inputs[1].const.tolist() == [6, -1]
    assert graph.values["y"].shape == (6, 4)


def test_fold_shape_gather_concat_chain():
    nodes = [helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["s"], axis=0),
             helper.make_node("Reshape", ["x", "s"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    graph = load(fold_model(nodes, inits, ["a", "b"], x_shape=["batch", 3, 4]), shapes={"batch": 5})
    assert [n.op_type for n in graph.nodes] == ["Reshape"]
    assert graph.nodes[0].inputs[1].const.tolist() == [5, -1]
    assert graph.values["y"].shape == (5, 12)


def test_fold_constant_of_shape():
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"],
                              value=numpy_helper.from_array(np.array([2.0], np.float32))),
             helper.make_node("Add", ["x", "c"], ["y"])]
    graph = load(fold_model(nodes, {"shape": np.array([3, 4], np.int64)}, [2, 3, 4]))
    assert [n.op_type for n in graph.nodes] == ["Add"]
    assert np.array_equal(graph.nodes[0].inputs[1].const, np.full((3, 4), 2.0, np.float32))


def test_fold_weight_from_constant_subgraph_counts_as_parameter():
    wt = np.arange(20, dtype=np.float32).reshape(5, 4)  # stored transposed, as some exporters do
    nodes = [helper.make_node("Transpose", ["Wt"], ["W"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "W"], ["y"])]
    graph = load(fold_model(nodes, {"Wt": wt}, [2, 3, 5]))
    assert [n.op_type for n in graph.nodes] == ["MatMul"]
    weight = graph.nodes[0].inputs[1]
    assert weight.is_const and weight.producer is None and np.array_equal(weight.const, wt.T)
    assert graph.num_params == 20 and "Wt" not in graph.values  # the stored form is gone: counted once
    (c,) = analyze(graph)
    assert c.param_bytes == 20 * 4 and c.macs == 2 * 3 * 5 * 4


def test_quantized_weights_stay_quantized():
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "scale", "zp"], ["W"]),
             helper.make_node("MatMul", ["x", "W"], ["y"])]
    inits = {"Wq": np.ones((4, 5), np.int8), "scale": np.array(0.5, np.float32), "zp": np.array(0, np.int8)}
    graph = load(fold_model(nodes, inits, [2, 3, 5]))
    assert [n.op_type for n in graph.nodes] == ["DequantizeLinear", "MatMul"]  # not folded to float
    assert graph.values["Wq"].dtype == np.int8 and graph.param_bytes == 4 * 5 + 4 + 1


def test_huge_expanding_constant_is_not_materialised(monkeypatch: pytest.MonkeyPatch):
    evaluated: list[str] = []
    real = fold._evaluate

    def spy(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], opset: int) -> dict[str, np.ndarray]:
        evaluated.extend(n.op_type for n in nodes)
        return real(nodes, feeds, opset)

    monkeypatch.setattr(fold, "_evaluate", spy)
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"]),
             helper.make_node("Add", ["x", "c"], ["y"])]
    graph = load(fold_model(nodes, {"shape": np.array([4096, 8192], np.int64)}, [4096, 8192],
                            x_shape=[4096, 8192]))  # 2^25 elements: beyond the folding limit
    assert [n.op_type for n in graph.nodes] == ["ConstantOfShape", "Add"]
    assert "ConstantOfShape" not in evaluated  # not even computed: its inferred size ruled it out


def test_shapes_known_after_ops_onnx_cannot_infer():
    # onnx's shape inference leaves GroupNormalization and MeanVarianceNormalization outputs unknown.
    nodes = [helper.make_node("GroupNormalization", ["x", "s", "b"], ["g"], num_groups=2),
             helper.make_node("Relu", ["g"], ["r"]),
             helper.make_node("MeanVarianceNormalization", ["r"], ["m"]),
             helper.make_node("Conv", ["m", "W"], ["y"])]
    inits = {"s": np.ones(4, np.float32), "b": np.zeros(4, np.float32),
             "W": np.ones((8, 4, 1, 1), np.float32)}
    graph = helper.make_graph(nodes, "gn", [vi("x", F, [2, 4, 3, 3])], [vi("y", F, [2, 8, 3, 3])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    loaded = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    check_graph_invariants(loaded)
    costs = analyze(loaded)
    assert all(c.modeled for c in costs)
    assert costs[-1].macs == 2 * 8 * 3 * 3 * 4  # the Conv after them: N·C_out·H·W · C_in


def test_nodes_are_sorted_and_subgraph_reads_count():
    then_g = helper.make_graph([helper.make_node("Identity", ["r"], ["t"])], "then", [],
                               [vi("t", F, [2])])
    else_g = helper.make_graph([helper.make_node("Neg", ["r"], ["e"])], "else", [],
                               [vi("e", F, [2])])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="if"),
             helper.make_node("Relu", ["x"], ["r"], name="relu")]  # listed after the If that reads it
    graph = helper.make_graph(nodes, "unsorted", [vi("x", F, [2]),
                                                  vi("cond", TensorProto.BOOL, [])],
                              [vi("y", F, [2])])
    loaded = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.name for n in loaded.nodes] == ["relu", "if"]


def test_model_proto_is_not_modified():
    model = symbolic_conv_model()
    before = model.SerializeToString()
    load(model, shapes={"batch": 3})
    assert model.SerializeToString() == before


def test_timings_per_stage():
    timings: dict[str, float] = {}
    load(matmul_model(8), timings=timings)
    assert set(timings) == {"read", "sort", "check", "infer", "fold", "graph"}
    assert all(t >= 0 for t in timings.values())


def check_graph_invariants(graph: Graph) -> None:
    names = [n.name for n in graph.nodes]
    assert len(set(names)) == len(names)
    assert [n.proto.name for n in graph.nodes] == names  # written into the protos
    seen: set[str] = set()
    for i, node in enumerate(graph.nodes):
        assert node.index == i
        for v in node.present_inputs:
            assert v.producer is None or v.producer.name in seen  # topological order
            assert node in v.consumers
        for v in node.outputs:
            assert v.producer is node
            assert v.static, (node.name, v.name, v.shape)  # every shape known after loading
        seen.add(node.name)


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_transformer", "mlp"])
def test_zoo_tiny_models_static_after_loading(name: str):
    graph = load(name)  # a zoo name is accepted wherever a path is
    check_graph_invariants(graph)
    assert all(c.modeled for c in analyze(graph))


def test_synthetic_model_loads_folds_and_matches_onnxruntime():
    model = synthetic_model(400, seed=3, batch="batch")
    assert len(model.graph.node) == 400
    graph = load(model, shapes={"batch": 2})
    check_graph_invariants(graph)
    assert not any(n.op_type == "Shape" for n in graph.nodes)  # the Shape chains folded away
    assert all(c.modeled for c in analyze(graph))
    x = np.random.default_rng(0).standard_normal((2, 16, 32)).astype(np.float32)
    (want,) = run_ort(model, {"input": x})
    (got,) = run_ort(graph.full_model(), {"input": x})  # the loaded, folded model computes the same thing
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_loaded_zoo_model_matches_onnxruntime():
    path = models.build("tiny_transformer")
    feeds = models.example_inputs("tiny_transformer")
    want = run_ort(onnx.load(str(path)), feeds)
    got = run_ort(load(path).full_model(), feeds)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 17, 250])
def test_synthetic_model_has_exactly_n_nodes_and_is_deterministic(n: int):
    model = synthetic_model(n, seed=1)
    assert len(model.graph.node) == n
    onnx.checker.check_model(model)
    assert model.SerializeToString() == synthetic_model(n, seed=1).SerializeToString()
    if n > 2:
        assert model.SerializeToString() != synthetic_model(n, seed=2).SerializeToString()
    consumed = {i for node in model.graph.node for i in node.input}
    dead = [o for node in model.graph.node for o in node.output if o not in consumed and o != "output"]
    assert dead == []  # every branch joins back: no dead ends


# -- scalars stay scalars -----------------------------------------------------------------------------------
def scalar_gather_gemm_model() -> onnx.ModelProto:
    """x (2, 5, 16) -> Gather(axis 1, index: a rank-0 Constant) -> (2, 16) -> Gemm (16 -> 8): `x[:, 0]` then
    nn.Linear, wired as torch.onnx.export writes it (BERT's and ViT's pooling)."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Constant", [], ["idx"], value=numpy_helper.from_array(np.array(0, np.int64))),
             helper.make_node("Gather", ["x", "idx"], ["cls"], axis=1, name="gather"),
             helper.make_node("Gemm", ["cls", "W", "b"], ["y"], transB=1, name="gemm")]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "pool", [vi("x", F, [2, 5, 16])], [vi("y", F, [2, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_scalar_index_stays_rank_0_through_folding_and_extraction():
    """Regression: BERT-base and ViT-B/16 stopped with 'Gemm: Input 0 expected to have rank 2 but has rank 3':
    extraction copied the folded rank-0 index with numpy.ascontiguousarray, which returns at least 1-D."""
    from targets.subgraph import extract, extract_shared

    graph = load(scalar_gather_gemm_model())
    assert graph.values["idx"].const.shape == ()
    assert graph.values["cls"].shape == (2, 16)
    shared, _ = extract_shared(graph, graph.nodes, ["x"], ["y"])
    for model in (extract(graph, graph.nodes, ["x"], ["y"]), shared):
        (idx,) = [t for t in model.graph.initializer if t.name == "idx"]
        assert list(idx.dims) == []
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    for strategy in ("optimal", "only:gpu", "only:asic"):
        with Dispatcher(scalar_gather_gemm_model(), strategy=strategy) as d:
            assert d.validate({"x": x}).ok


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, as BERT/ViT users use
def test_scalar_index_from_torch_export(tmp_path: Path):
    torch = pytest.importorskip("torch")

    class Pool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x[:, 0])

    torch.manual_seed(0)
    path = tmp_path / "pool.onnx"
    torch.onnx.export(Pool().eval(), (torch.randn(2, 5, 16),), str(path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["Constant", "Gather", "Gemm"]
    with Dispatcher(path, strategy="only:gpu") as d:
        assert d.validate().ok


def test_folded_value_whose_shape_disagrees_with_inference_is_kept(monkeypatch: pytest.MonkeyPatch):
    """A scalar the evaluator hands back as 1-D would change a rank downstream: the node stays unfolded."""
    real = fold._evaluate

    def one_d(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], opset: int) -> dict[str, np.ndarray]:
        return {k: np.atleast_1d(v) for k, v in real(nodes, feeds, opset).items()}

    monkeypatch.setattr(fold, "_evaluate", one_d)
    nodes = [helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Mul", ["x", "s"], ["y"], name="mul")]
    model = fold_model(nodes, {"c": np.ones(3, np.float32)}, [2, 3, 4])
    graph = load(model)
    assert [n.name for n in graph.nodes] == ["sum", "mul"]
    assert graph.values["s"].shape == ()
    monkeypatch.setattr(fold, "_evaluate", real)
    graph = load(model)
    assert [n.name for n in graph.nodes] == ["mul"] and graph.values["s"].const.shape == ()


def _padded_chain(blocks: int) -> onnx.ModelProto:
    """Each block pads the last axis by (size + 1) % 3 + 1, computed from Shape -> Gather -> Mod, as Swin pads
    to its window: every block's pads are known only once the previous block's output shape is."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, y = [], "x"
    inits = [numpy_helper.from_array(np.array(3, np.int64), "three"),
             numpy_helper.from_array(np.array([0, 0, 0], np.int64), "zeros"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "ax0")]
    for i in range(blocks):
        nodes += [helper.make_node("Shape", [y], [f"s{i}"]),
                  helper.make_node("Gather", [f"s{i}", "one"], [f"d{i}"]),
                  helper.make_node("Add", [f"d{i}", "one"], [f"e{i}"]),
                  helper.make_node("Mod", [f"e{i}", "three"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", "one"], [f"p{i}"]),
                  helper.make_node("Unsqueeze", [f"p{i}", "ax0"], [f"u{i}"]),
                  helper.make_node("Concat", ["zeros", f"u{i}"], [f"pads{i}"], axis=0),
                  helper.make_node("Pad", [y, f"pads{i}"], [f"y{i}"])]
        y = f"y{i}"
    nodes.append(helper.make_node("Identity", [y], ["out"]))
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, None])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("blocks", [3, 8])
def test_folding_runs_until_every_computed_shape_is_static(blocks: int) -> None:
    # regression: folding stopped after 4 rounds, so Swin kept 49 of 77 MatMul shapes unknown (0 MACs).
    # width 4 -> +((4+1)%3+1)=3 -> 7 -> +3 -> 10 -> +3 -> 13 ...: each block adds 3, so 4 + 3 * blocks
    g = load(_padded_chain(blocks))
    assert g.outputs[0].shape == (1, 4 + 3 * blocks)
    assert [n.op_type for n in g.nodes] == ["Pad"] * blocks + ["Identity"]

"""The command line: bad input exits 2 with one sentence and no traceback; good runs write valid files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pydot
import pytest
from test_report import tiny_model

from dispatch.annotate import placement_of
from dispatch.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:'setParseAction' deprecated")  # pydot's pyparsing use


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "tiny4.onnx"
    onnx.save(tiny_model(), str(path))
    return path


def _x(seed: int = 1, shape: tuple[int, ...] = (16, 1024), dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _reference(model: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _bad(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run argv, expect exit 2 and exactly one line 'error: ...' on stderr without a traceback."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "Traceback" not in out
    return lines[0]


# -- bad input ------------------------------------------------------------------------------------------
def test_missing_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _bad(capsys, [str(tmp_path / "nope.onnx")])
    assert "does not exist" in line and "nope.onnx" in line


@pytest.mark.parametrize("targets, message", [
    ("gpu=no-such-preset", "Unknown target preset 'no-such-preset'"),
    ("gpu=../specs/h100-sxm", "Unknown target preset '../specs/h100-sxm'"),  # a preset is a name, not a path
    ("gpu=../../README", "Unknown target preset '../../README'"),
    ("gpu", "Cannot read target 'gpu'"),
    ("gpu=h100-sxm,gpu=tpu-v4-like", "given twice"),
    ("asic=missing/spec.toml", "does not exist"),
    ("", "No targets given"),  # regression: an empty --targets silently meant the default targets
])
def test_bad_targets(capsys: pytest.CaptureFixture[str], model: Path, targets: str, message: str) -> None:
    assert message in _bad(capsys, [str(model), "--targets", targets])


@pytest.mark.parametrize("strategy, message", [
    ("fastest", "Unknown strategy 'fastest'"),
    ("only:", "Unknown strategy 'only:'"),
    ("only:tpu", "tpu"),
])
def test_bad_strategy(capsys: pytest.CaptureFixture[str], model: Path, strategy: str, message: str) -> None:
    assert message in _bad(capsys, [str(model), "--strategy", strategy, "--no-run"])


@pytest.mark.parametrize("flag, value, message", [
    ("--strategy", "bogus", "Unknown strategy 'bogus'"),
    ("--objective", "bogus", "invalid choice: 'bogus'"),
])
def test_bad_strategy_or_objective_with_load_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  flag: str, value: str, message: str) -> None:
    # regression: --strategy bogus with --load-plan was silently accepted; it must fail before any work,
    # so before the missing model and plan files are noticed
    argv = [str(tmp_path / "none.onnx"), "--load-plan", str(tmp_path / "none.json"), flag, value, "--no-run"]
    assert message in _bad(capsys, argv)


@pytest.mark.parametrize("shape, message", [
    ("x=16xabc", "Cannot read the shape binding 'x=16xabc'"),
    ("x=0x4", "Cannot read the shape binding"),
    ("nothere=4", "neither a model input nor a symbolic dimension"),
    ("x=8x1024", "fixes it at 16"),
])
def test_bad_shape(capsys: pytest.CaptureFixture[str], model: Path, shape: str, message: str) -> None:
    assert message in _bad(capsys, [str(model), "--shape", shape, "--no-run"])


def test_bad_inputs(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    assert "does not exist" in _bad(capsys, [str(model), "--inputs", str(tmp_path / "none.npz")])
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    assert "not a readable .npz" in _bad(capsys, [str(model), "--inputs", str(text)])
    cases = {"names.npz": ({"y": _x()}, "Input 'x' is missing"),
             "extra.npz": ({"x": _x(), "z": _x()}, "Feed 'z' is not an input"),
             "shape.npz": ({"x": _x(shape=(16, 512))}, "dimension 1 must be 1024"),
             "dtype.npz": ({"x": _x(dtype=np.float64)}, "dtype float64"),
             "rank.npz": ({"x": _x(shape=(16, 1024, 1))}, "has 3 dimensions")}
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        line = _bad(capsys, [str(model), "--inputs", str(tmp_path / name)])
        assert line.startswith("error: --inputs: ") and message in line, line


@pytest.mark.parametrize("argv, message", [
    (["--ops", "many"], "--ops takes a number or 'all'"),
    (["--ops", "\u00b2"], "--ops takes a number or 'all'"),  # regression: '²'.isdigit() is True, int() fails
    (["--repeat", "-1"], "--repeat takes a count of 0 or more"),
    (["--repeat", "three"], "invalid int value"),
    (["--objective", "speed"], "invalid choice: 'speed'"),
    (["--precision", "fp4"], "invalid choice: 'fp4'"),
    (["--frobnicate"], "Unrecognized arguments: --frobnicate"),
    (["--no-run", "--outputs", "o.npz"], "--no-run executes nothing"),
    (["--precision", "fp16", "--targets", "asic=tpu-v4-like"], "--precision applies to gpu and cpu targets"),
    (["--explain", "no_such_node", "--no-run"], "no_such_node"),
    (["--load-plan", "/nonexistent/plan.json", "--no-run"], "does not exist"),
])
def test_bad_options(capsys: pytest.CaptureFixture[str], model: Path, argv: list[str], message: str) -> None:
    assert message in _bad(capsys, [str(model), *argv])


def test_npy_file_as_inputs_is_bad_input(capsys: pytest.CaptureFixture[str], model: Path,
                                         tmp_path: Path) -> None:
    # regression: np.load of an .npy returns an ndarray, which used to crash `with` (internal error, exit 1)
    np.save(tmp_path / "x.npy", _x())
    line = _bad(capsys, [str(model), "--inputs", str(tmp_path / "x.npy")])
    assert "holds a single array, not an .npz archive" in line


def test_out_of_range_token_ids_are_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # regression: onnxruntime's InvalidArgument from Gather (ids >= the vocabulary) was an internal error
    np.savez(tmp_path / "ids.npz", input_ids=np.full((1, 16), 10**6, np.int64))
    line = _bad(capsys, ["tiny_transformer", "--inputs", str(tmp_path / "ids.npz"), "--repeat", "0"])
    assert "onnxruntime rejected the input values" in line and "idx=1000000" in line


def test_shape_contradicting_inputs_is_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # regression: the --inputs shape silently replaced a different --shape for the same input
    np.savez(tmp_path / "in4.npz", input=_x(shape=(4, 3, 32, 32)))
    argv = ["tiny_cnn", "--inputs", str(tmp_path / "in4.npz"), "--repeat", "0", "--quiet"]
    line = _bad(capsys, [*argv, "--shape", "input=2x3x32x32"])
    assert "binds input 'input' to 2x3x32x32, but --inputs gives it shape 4x3x32x32" in line
    assert main([*argv, "--shape", "input=4x3x32x32"]) == 0  # agreeing bindings are fine


def test_folder_as_output_or_plan_fails_before_any_work(capsys: pytest.CaptureFixture[str], model: Path,
                                                         tmp_path: Path) -> None:
    # regression: --json DIR failed only after planning and running; --load-plan DIR said "does not exist"
    assert "it is a folder" in _bad(capsys, [str(model), "--no-run", "--json", str(tmp_path)])
    assert "is a folder" in _bad(capsys, [str(model), "--no-run", "--load-plan", str(tmp_path)])


def test_load_plan_for_another_model(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"format": "dispatch-plan", "version": 1, "assignment": {"conv1": "gpu"}}))
    assert "conv1" in _bad(capsys, [str(model), "--load-plan", str(plan), "--no-run"])


def test_unwritable_output(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    assert "Cannot write" in _bad(capsys, [str(model), "--no-run", "--json", str(tmp_path / "no" / "r.json")])


# -- good runs ------------------------------------------------------------------------------------------
def test_full_run_writes_every_file(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    x = _x(3)
    np.savez(tmp_path / "in.npz", x=x)
    names = (("json", "r.json"), ("trace", "t.json"), ("dot", "g.dot"), ("annotate", "a.onnx"),
             ("save-plan", "p.json"), ("outputs", "o.npz"))
    files = {k: tmp_path / n for k, n in names}
    # only:asic splits the model in three segments (optimal keeps it on the GPU once idle power counts)
    # exact ASIC numerics: the saved outputs are compared with onnxruntime's float32 below
    argv = [str(model), "--strategy", "only:asic", "--objective", "energy", "--repeat", "2", "--inputs",
            str(tmp_path / "in.npz"), "--asic-numerics", "exact",
            *[a for k, p in files.items() for a in (f"--{k}", str(p))]]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no progress lines when stderr is not a terminal
    assert out.isascii() and "Measured on this machine" in out and "PASS" in out

    report = json.loads(files["json"].read_text())
    assert report["schema_version"] == 1 and report["plan"]["strategy"] == "only:asic"
    assert report["plan"]["objective"] == "energy" and len(report["plan"]["segments"]) == 3
    assert report["measured"]["repeat"] == 2 and report["measured"]["validated"] is True
    assert report["measured"]["inputs"] == str(tmp_path / "in.npz")
    assert set(report["strategies"]) == {"optimal", "priority", "greedy", "heft", "only:gpu", "only:asic"}

    trace = json.loads(files["trace"].read_text())
    assert {e["pid"] for e in trace["traceEvents"]} == {1, 2}
    (g,) = pydot.graph_from_dot_data(files["dot"].read_text())
    assert len(g.get_subgraphs()) == 1 + 3  # the legend and one cluster per segment
    annotated = onnx.load(str(files["annotate"]))
    assert placement_of(annotated) == {n["name"]: n["target"] for n in report["nodes"]}
    saved = json.loads(files["save-plan"].read_text())
    assert saved["assignment"] == {n["name"]: n["target"] for n in report["nodes"]}
    with np.load(files["outputs"]) as z:
        assert list(z.files) == ["y"]
        np.testing.assert_allclose(z["y"], _reference(model, x), rtol=1e-4, atol=1e-5)


def test_load_plan_reapplies_a_saved_placement(capsys: pytest.CaptureFixture[str], model: Path,
                                               tmp_path: Path) -> None:
    saved = tmp_path / "p.json"
    assert main([str(model), "--objective", "energy", "--no-run", "--save-plan", str(saved)]) == 0
    data = json.loads(saved.read_text())
    data["assignment"]["relu"] = "gpu"  # a hand edit
    saved.write_text(json.dumps(data))
    argv = [str(model), "--load-plan", str(saved), "--repeat", "0", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["plan"]["strategy"] == "loaded"
    assert {n["name"]: n["target"] for n in report["nodes"]} == data["assignment"]
    assert report["measured"]["validated"] is True and "segments" not in report["measured"]  # --repeat 0
    capsys.readouterr()


def test_quiet_prints_one_line(capsys: pytest.CaptureFixture[str], model: Path) -> None:
    assert main([str(model), "--quiet", "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tiny4 | optimal on ")
    assert "predicted" in lines[0] and "measured" in lines[0] and "validated" in lines[0]


def test_no_run_plans_only(capsys: pytest.CaptureFixture[str], model: Path, tmp_path: Path) -> None:
    assert main([str(model), "--no-run", "--ops", "all", "--json", str(tmp_path / "r.json"),
                 "--trace", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "Measured" not in out and "Operators by FLOPs, 4 of 4" in out
    assert "measured" not in json.loads((tmp_path / "r.json").read_text())
    assert {e["pid"] for e in json.loads((tmp_path / "t.json").read_text())["traceEvents"]} == {1}


def test_explain_and_options(capsys: pytest.CaptureFixture[str], model: Path) -> None:
    argv = [str(model), "--no-run", "--explain", "softmax", "--strategy", "only:asic", "--precision", "fp16",
            "--targets", "gpu=h100-sxm,asic=tpu-v4-like"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "softmax (Softmax) is on gpu" in out and "cannot run it" in out  # the ASIC has no Softmax
    assert "roofline, spec defaults, fp16" in out or "calibrated profile, fp16" in out
    assert "only:asic *" in out


def test_zoo_model_with_a_bound_batch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    assert main(["tiny_cnn", "--shape", "batch=2", "--repeat", "1", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model"]["name"] == "tiny_cnn" and report["measured"]["validated"] is True
    first = report["nodes"][0]["output_shapes"][0]
    assert first[0] == 2  # the symbolic batch bound to 2
    capsys.readouterr()


def test_plain_and_colour_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatch.cli import _console

    class Tty:
        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            return len(s)

        def flush(self) -> None:
            pass

    monkeypatch.setattr("sys.stdout", Tty())
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not _console().no_color
    monkeypatch.setenv("NO_COLOR", "1")
    assert _console().no_color


def test_calibrate_is_routed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--help"]) == 0
    assert "calibrate" in capsys.readouterr().out


def test_failed_validation_writes_files_then_exits_1(capsys: pytest.CaptureFixture[str], model: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dispatch.api
    from dispatch.validate import compare

    def off_by_one(outputs: dict, reference: dict, rtol: float, atol: float, **kw: Any) -> Any:
        return compare({k: v + 1 for k, v in outputs.items()}, reference, rtol, atol, **kw)

    monkeypatch.setattr(dispatch.api, "compare", off_by_one)
    assert main([str(model), "--repeat", "0", "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the plan's outputs differ from onnxruntime's")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["measured"]["validated"] is False and report["measured"]["max_abs_err"] >= 1 - 1e-6


def test_internal_error_is_one_line_exit_1(capsys: pytest.CaptureFixture[str], model: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import dispatch.report

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(dispatch.report, "render_report", broken)
    monkeypatch.delenv("DISPATCH_DEBUG", raising=False)
    assert main([str(model), "--no-run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["internal error: RuntimeError: renderer exploded (set DISPATCH_DEBUG=1 for the traceback; "
                   "please report it)"]


def test_deeply_nested_plan_file_is_bad_input(capsys: pytest.CaptureFixture[str], model: Path,
                                              tmp_path: Path) -> None:
    # regression: a 100,000-deep JSON plan raised RecursionError (exit 1)
    plan = tmp_path / "deep.json"
    plan.write_text("[" * 100_000 + "]" * 100_000)
    assert "nests too deeply" in _bad(capsys, [str(model), "--no-run", "--load-plan", str(plan)])


def test_newline_in_a_path_keeps_the_error_on_one_line(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    line = _bad(capsys, [str(tmp_path / "two\nlines.onnx")])  # _bad asserts exactly one stderr line
    assert "two\\nlines.onnx" in line


def test_bfloat16_inputs_from_npz_are_read_as_bfloat16(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    # regression: numpy.savez stores ml_dtypes.bfloat16 as raw 'V2' items, which the feed check refused
    import ml_dtypes
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
                           helper.make_node("Relu", ["c"], ["y"])], "bf16",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = tmp_path / "bf16.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    x = np.array([[-1.5, 0.5, 2.0], [3.0, -4.0, 0.25]], dtype=ml_dtypes.bfloat16)
    np.savez(tmp_path / "in.npz", x=x)
    assert main([str(model), "--repeat", "0", "--quiet", "--inputs", str(tmp_path / "in.npz"),
                 "--outputs", str(tmp_path / "out.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["y"], np.maximum(x.astype(np.float32), 0))

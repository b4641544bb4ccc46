"""The memory budget (dispatch/budget.py): memory bombs refused in one sentence before anything is allocated.

The bombs run through the CLI in one child process whose address space is capped at 4 GiB (a regression
then fails with MemoryError instead of taking the shared machine's memory); the child reports its peak RSS,
which must stay under 500 MB over all the cases. The peak is VmHWM from /proc/self/status: getrusage's
ru_maxrss (RUSAGE_SELF or the parent's RUSAGE_CHILDREN) carries the pre-exec peak over exec on Linux, so it
reports the forking pytest process's size (measured: 509 MiB in the quick suite) rather than the child's.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from dispatch import DispatchError
from dispatch.budget import format_bytes, parse_size, resolve_budget
from dispatch.frontend import load

ROOT = Path(__file__).resolve().parents[1]


def _model(nodes, inputs, outputs, inits=(), path=None) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    if path is not None:
        onnx.save(m, str(path))
    return m


def _vi(name, dims, t=T.FLOAT):
    return h.make_tensor_value_info(name, t, dims)


def _i64(name, values):
    return nh.from_array(np.array(values, np.int64), name)


def _bombs(d: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (CLI arguments, fragments the error line must hold)."""
    _model([h.make_node("Relu", ["x"], ["y"])], [_vi("x", [1, 2**40])], [_vi("y", [1, 2**40])],
           path=d / "big_input.onnx")
    _model([h.make_node("Relu", ["x"], ["y"])], [_vi("x", ["batch", 3, 32, 32])],
           [_vi("y", ["batch", 3, 32, 32])], path=d / "sym.onnx")
    _model([h.make_node("Conv", ["x", "w"], ["y"], pads=[100000] * 4)], [_vi("x", [1, 3, 8, 8])],
           [_vi("y", list("abcd"))], [nh.from_array(np.ones((4, 3, 3, 3), np.float32), "w")],
           path=d / "pads.onnx")
    # a ConstantOfShape of [2^38] feeding an Add: onnx's data propagation allocates it (bad_alloc at 2.3 GB)
    _model([h.make_node("ConstantOfShape", ["s"], ["c"]), h.make_node("Add", ["x", "c"], ["y"])],
           [_vi("x", [1])], [_vi("y", ["n"])], [_i64("s", [2**38])], path=d / "const_of_shape.onnx")
    # the same size computed from a shape: Shape(x) * 2^38
    _model([h.make_node("Shape", ["x"], ["sh"]), h.make_node("Mul", ["sh", "k"], ["s"]),
            h.make_node("ConstantOfShape", ["s"], ["c"]), h.make_node("Add", ["x", "c"], ["y"])],
           [_vi("x", [1])], [_vi("y", ["n"])], [_i64("k", [2**38])], path=d / "computed_shape.onnx")
    _model([h.make_node("Expand", ["x", "s"], ["y"])], [_vi("x", [1])], [_vi("y", ["n"])],
           [_i64("s", [2**20, 2**20])], path=d / "expand.onnx")
    _model([h.make_node("Range", ["a", "b", "c"], ["y"])], [], [_vi("y", ["n"], T.INT64)],
           [_i64("a", 0), _i64("b", 2**40), _i64("c", 1)], path=d / "range.onnx")
    header = io.BytesIO()  # an .npz whose member declares 2 GiB (its data: 1 MiB of zeros, deflated)
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**29,)})
    for npz, member in (("bomb.npz", "x.npy"), ("bomb_misnamed.npz", "z.npy")):
        with zipfile.ZipFile(d / npz, "w", zipfile.ZIP_DEFLATED) as z, \
                z.open(member, "w", force_zip64=True) as f:
            f.write(header.getvalue())
            f.write(b"\0" * (1 << 20))
    sym, no_run = str(d / "sym.onnx"), "--no-run"
    return {
        "input of [1, 2^40]": ([str(d / "big_input.onnx"), no_run], ["Input 'x'", "4.0 TiB", "--max-memory"]),
        "--shape batch=10^11": ([sym, "--shape", "batch=100000000000", no_run], ["Input 'x'", "1.1 PiB"]),
        "--shape batch=1e11": ([sym, "--shape", "batch=1e11", no_run], ["Cannot read the shape binding"]),
        "--shape batch=10^23": ([sym, "--shape", "batch=" + "9" * 23, no_run], ["Cannot read the shape"]),
        "Conv pads 1e5": ([str(d / "pads.onnx"), no_run], ["Tensor 'y' (output of Conv node", "GiB"]),
        "ConstantOfShape [2^38]": ([str(d / "const_of_shape.onnx"), no_run],
                                   ["'c' of ConstantOfShape", "TiB"]),
        "computed ConstantOfShape": ([str(d / "computed_shape.onnx"), no_run], ["ConstantOfShape", "TiB"]),
        "Expand to 2^40": ([str(d / "expand.onnx"), no_run], ["Expand", "TiB"]),
        "Range to 2^40": ([str(d / "range.onnx"), no_run], ["Range", "TiB"]),
        "npz member of 2 GiB": ([sym, "--inputs", str(d / "bomb.npz"), "--max-memory", "1G"],
                                ["--inputs member 'x'", "2.0 GiB", "1.0 GiB"]),
        "npz misnamed member": ([sym, "--inputs", str(d / "bomb_misnamed.npz")],
                                ["Input 'x' is missing from the feeds"]),
        "--max-memory 12Q": ([sym, "--max-memory", "12Q", no_run], ["Cannot read the memory size '12Q'"]),
    }


_CHILD = """
import contextlib, io, json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from dispatch.cli import main
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    out[name] = [rc, err.getvalue(), time.perf_counter() - t]
with open("/proc/self/status") as f:
    out["maxrss_kib"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps(out))
"""


def test_memory_bombs_are_refused_in_one_sentence_with_low_peak_rss(tmp_path):
    cases = _bombs(tmp_path)
    p = subprocess.run([sys.executable, "-c", _CHILD, json.dumps({k: v[0] for k, v in cases.items()})],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    for name, (_, fragments) in cases.items():
        rc, err, _seconds = res[name]
        assert rc == 2, (name, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
        assert "Traceback" not in err and "MemoryError" not in err, (name, err)
        for f in fragments:
            assert f in err, (name, f, err)
    assert res["maxrss_kib"] < 500 * 1024, res["maxrss_kib"]
    print({k: round(v[2], 3) for k, v in res.items() if k != "maxrss_kib"}, res["maxrss_kib"] // 1024, "MiB")


def test_sizes_and_budget_arguments():
    # 512M = 512 * 2^20; 2GiB = 2 * 2^30; 1.5k = 1536; 2e9 plain bytes; 3GB decimal = 3 * 10^9
    assert [parse_size(s) for s in ("512M", "2GiB", "1.5k", "2e9", "3GB")] == \
        [536870912, 2147483648, 1536, 2000000000, 3000000000]
    for bad in ("", "-1G", "0", "12Q", "G", "1e400"):
        with pytest.raises(DispatchError, match="Cannot read the memory size"):
            parse_size(bad)
    for bad in (0, -5, 1.5, True, [1]):
        with pytest.raises(DispatchError, match="max_memory must be"):
            resolve_budget(bad)
    assert resolve_budget(None) > 0 and resolve_budget(4096) == 4096 and resolve_budget("4K") == 4096
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(100) == "100 B"


def test_load_and_dispatcher_take_max_memory(tmp_path):
    m = _model([h.make_node("Relu", ["x"], ["y"])], [_vi("x", ["n", 4])], [_vi("y", ["n", 4])])
    assert load(m, {"n": 256}, max_memory="4K").inputs[0].shape == (256, 4)  # 256 * 4 * 4 B = 4 KiB: fits
    with pytest.raises(DispatchError, match=r"Input 'x' would need 4.0 KiB \(float32, shape \[257, 4\]\)"):
        load(m, {"n": 257}, max_memory="4K")  # 4112 B: does not (the message rounds)
    from dispatch import Dispatcher

    with pytest.raises(DispatchError, match="max_memory must be"):
        Dispatcher(m, {"asic": "tpu-v4-like"}, max_memory=-1)
    with Dispatcher(m, {"asic": "tpu-v4-like"}, shapes={"n": 2}, max_memory="1M") as d:
        # a new shape at run time is loaded under the same budget: 2^17 x 4 x 4 B = 2 MiB > 1 MiB
        with pytest.raises(DispatchError, match=r"Input 'x' would need 2.0 MiB"):
            d.run({"x": np.zeros((2**17, 4), np.float32)})
        assert d.run({"x": np.ones((3, 4), np.float32)})["y"].shape == (3, 4)


@pytest.mark.parametrize("size", [1e11, 2.5, "8", 2**70, -3, 0, True])
def test_absurd_or_non_integer_bindings_are_one_sentence(size):
    m = _model([h.make_node("Relu", ["x"], ["y"])], [_vi("x", ["n", 4])], [_vi("y", ["n", 4])])
    with pytest.raises(DispatchError, match="sizes must be positive integers"):
        load(m, {"n": size})


def test_generated_feeds_are_checked(tmp_path):
    from dispatch.validate import generate_feeds

    g = load(_model([h.make_node("Relu", ["x"], ["y"])], [_vi("x", [64, 64])], [_vi("y", [64, 64])]))
    assert generate_feeds(g, max_memory=64 * 64 * 4)["x"].shape == (64, 64)
    with pytest.raises(DispatchError, match="The generated feed for input 'x' would need 16.0 KiB"):
        generate_feeds(g, max_memory=16383)

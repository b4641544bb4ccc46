"""The hostile-input corpus of issue 14 (item 7) as data: one table per family.

A case is (family, id, build, expect, fragment). `build(d)` writes what the case needs under the folder `d`
(the model in d/"model", files the case must never read in d/"outside", outputs in d/"out") and returns
either the CLI argv, or a zero-argument callable for the Python API. `expect` is the CLI exit code (2: bad
input) or the exception type the API raises; `fragment` is a substring of the one-sentence error.
tests/test_hostile_corpus.py runs every case; `family_counts()` adds the hostile cases that live in other
test files (test_hostile, test_budget, test_fileio, test_cli), counted from their parametrisations.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import pickle
import struct
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from dispatch import Dispatcher, DispatchError


class Case(NamedTuple):
    family: str
    id: str
    build: Callable[[Path], Any]
    expect: Any  # 2 for the CLI, an exception type for the API
    fragment: str


# -- builders ----------------------------------------------------------------------------------------------
def _vi(name, dims, t=T.FLOAT):
    return h.make_tensor_value_info(name, t, dims)


def _graph(nodes, inputs, outputs, inits=()):
    return h.make_graph(nodes, "g", inputs, outputs, list(inits))


def _mk(nodes, inputs, outputs, inits=(), opset=17, **kw) -> onnx.ModelProto:
    return h.make_model(
        _graph(nodes, inputs, outputs, inits), opset_imports=[h.make_opsetid("", opset)], **kw
    )


def tiny() -> onnx.ModelProto:
    """x[2, 4] @ w[4, 4] -> Relu -> y; nodes 'mm' and 'relu'."""
    return _mk(
        [h.make_node("MatMul", ["x", "w"], ["m"], name="mm"), h.make_node("Relu", ["m"], ["y"], name="relu")],
        [_vi("x", [2, 4])],
        [_vi("y", [2, 4])],
        [nh.from_array(np.ones((4, 4), np.float32), "w")],
    )


def _dirs(d: Path) -> tuple[Path, Path, Path]:
    out = [d / "model", d / "outside", d / "out"]
    for p in out:
        p.mkdir(exist_ok=True)
    (d / "outside" / "secret.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    (d / "model" / "w.bin").write_bytes(np.ones(16, np.float32).tobytes())  # 64 B: tiny()'s weight
    if not (d / "model" / "link.bin").is_symlink():
        (d / "model" / "link.bin").symlink_to(d / "outside" / "secret.bin")
    return out[0], out[1], out[2]


def _save(d: Path, model: onnx.ModelProto | bytes, name: str = "m.onnx") -> str:
    path = _dirs(d)[0] / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return str(path)


def _cli(model: Callable[[], onnx.ModelProto | bytes], *extra: str, run: bool = False):
    """A builder: save the model, then argv = [model, *extra] (plan only unless run)."""

    def build(d: Path) -> list[str]:
        made = model(d) if getattr(model, "wants_dir", False) else model()
        return [_save(d, made), *extra, *([] if run else ["--no-run"]), "--quiet"]

    return build


def _ext(location: str, offset: int | None = 0, length: int | None = 64) -> Callable[[], onnx.ModelProto]:
    """tiny() with its weight stored as external data at `location` (relative to the model's folder)."""

    def make(d: Path) -> onnx.ModelProto:
        m = tiny()
        w = m.graph.initializer[0]
        w.ClearField("raw_data")
        w.ClearField("float_data")
        w.data_location = T.EXTERNAL
        entries = {"location": location.format(d=d), "offset": offset, "length": length}
        for k, v in entries.items():
            if v is not None:
                w.external_data.add(key=k, value=str(v))
        return m

    make.wants_dir = True
    return make


def _edit(fn: Callable[[onnx.ModelProto], Any]) -> Callable[[], onnx.ModelProto]:
    def make() -> onnx.ModelProto:
        m = tiny()
        fn(m)
        return m

    return make


# -- models ------------------------------------------------------------------------------------------------
def _cyclic():
    return _mk(
        [h.make_node("Relu", ["x2"], ["a"], name="r1"), h.make_node("Add", ["a", "x"], ["x2"], name="r2")],
        [_vi("x", [2])],
        [_vi("a", [2])],
    )


def _dup_outputs():
    return _mk(
        [h.make_node("Relu", ["x"], ["y"], name="a"), h.make_node("Neg", ["x"], ["y"], name="b")],
        [_vi("x", [2])],
        [_vi("y", [2])],
    )


def _missing_value():
    return _mk([h.make_node("Add", ["x", "ghost"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])


def _unknown_domain():
    m = _mk(
        [h.make_node("Frob", ["x"], ["y"], domain="com.example.nowhere")], [_vi("x", [2])], [_vi("y", [2])]
    )
    m.opset_import.append(h.make_opsetid("com.example.nowhere", 1))
    return m


def _string_conv():
    return _mk(
        [h.make_node("Conv", ["x", "w"], ["y"])],
        [_vi("x", [1, 1, 4, 4], T.STRING)],
        [_vi("y", list("abcd"))],
        [nh.from_array(np.ones((1, 1, 3, 3), np.float32), "w")],
    )


def _raw_too_short(m):
    m.graph.initializer[0].raw_data = b"\0" * 8
    m.graph.initializer[0].ClearField("float_data")


def _set_dims(dims):
    def fn(m):
        m.graph.input[0].type.tensor_type.shape.ClearField("dim")
        for v in dims:
            m.graph.input[0].type.tensor_type.shape.dim.add(dim_value=v)

    return fn


MODEL = [
    ("empty file", lambda: b""),
    ("truncated protobuf", lambda: tiny().SerializeToString()[:40]),
    ("wrong magic", lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
    ("text file", lambda: b"this is not a model\n"),
    (
        "no graph",
        lambda: onnx.ModelProto(ir_version=8, opset_import=[h.make_opsetid("", 17)]).SerializeToString(),
    ),
    ("cyclic graph", _cyclic),
    ("duplicate node outputs", _dup_outputs),
    ("node reads a missing value", _missing_value),
    ("unknown domain", _unknown_domain),
    (
        "unknown op type",
        lambda: _mk([h.make_node("Frobnicate", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])]),
    ),
    (
        "opset 99",
        lambda: _mk([h.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])], opset=99),
    ),
    ("ir version 0", _edit(lambda m: setattr(m, "ir_version", 0))),
    ("huge dims declared", _edit(_set_dims([2**62, 4]))),
    ("negative dims declared", _edit(_set_dims([-2, 4]))),  # regression: planned with --no-run, exit 0
    ("string tensor into Conv", _string_conv),
    ("graph output produced by nothing", _edit(lambda m: m.graph.output.append(_vi("nowhere", [2])))),
    ("initializer raw data too short", _edit(_raw_too_short)),
    (
        "Conv stride 0 via attribute type float",
        lambda: _mk(
            [h.make_node("Conv", ["x", "w"], ["y"], strides=[0.5, 0.5])],
            [_vi("x", [1, 1, 4, 4])],
            [_vi("y", list("abcd"))],
            [nh.from_array(np.ones((1, 1, 3, 3), np.float32), "w")],
        ),
    ),
    ("external data outside the folder", _ext("../outside/secret.bin")),
    ("external data absolute path", _ext("{d}/outside/secret.bin")),
    ("external data missing file", _ext("nope.bin")),
    ("external data is a folder", _ext(".")),
    ("external data offset beyond EOF", _ext("w.bin", offset=4096)),
    ("external data length beyond EOF", _ext("w.bin", length=4096)),
    ("external data negative offset", _ext("w.bin", offset=-64)),
    ("external data offset not a number", _ext("w.bin", offset="x")),
    ("external data symlink out of the folder", _ext("link.bin")),
]

# -- flags: every option with empty, negative, huge, non-ASCII, NaN values ---------------------------------
_FLAG_VALUES = {
    "--repeat": ["", "-1", "1e3", "nan", "10" * 20, "three", "²"],
    "--ops": ["", "-1", "nan", "²", "1e3", "allx"],
    "--max-memory": ["", "-1", "0", "nan", "inf", "1e400", "12Q", "é", "-4G"],
    "--shape": ["", "x", "x=", "=4", "x=-1", "x=nan", "x=2x", "x=²", "nosuch=4", "x=2x4x", "x=2×4", "x=inf"],
    "--strategy": ["", "only:", "only:nosuch-target", "nan", "é", "optimal;rm"],
    "--objective": ["", "speed", "NaN"],
    "--precision": ["", "fp64", "é"],
    "--targets": [
        "",
        "=",
        "gpu=",
        "gpu",
        "gpu=h100-sxm,gpu=a100-sxm",
        "gpu=/etc/passwd",
        "gpu=nan",
        "gpu=~/x.toml",
    ],
    "--explain": ["", "nosuchnode", "é"],
    "--inputs": ["{d}/model/nope.npz", "{d}/model"],
    "--load-plan": ["{d}/model/nope.json", "{d}/model"],
}
_FLAG_FRAGMENT = {
    "--repeat": "--repeat",
    "--ops": "--ops",
    "--max-memory": "memory",
    "--shape": "shape",
    "--strategy": "",
    "--objective": "--objective",
    "--precision": "--precision",
    "--targets": "",
    "--explain": "",
    "--inputs": "",
    "--load-plan": "",
}


def _flag(flag: str, value: str):
    def build(d: Path) -> list[str]:
        return [
            _save(d, tiny()),
            f"{flag}={value.format(d=d)}",
            "--quiet",
            "--repeat=0" if flag != "--repeat" else "--quiet",
        ]

    return build


FLAGS = [
    Case("flags", f"{flag}={v!r}", _flag(flag, v), 2, _FLAG_FRAGMENT[flag])
    for flag, values in _FLAG_VALUES.items()
    for v in values
]
FLAGS += [
    Case("flags", "unknown option", lambda d: [_save(d, tiny()), "--nope"], 2, "--nope"),
    Case("flags", "no model", lambda d: ["--quiet"], 2, ""),
    Case("flags", "model path with a newline", lambda d: [str(d / "a\nb.onnx")], 2, "does not exist"),
    Case("flags", "model path empty", lambda d: [""], 2, ""),
    Case("flags", "model is a folder", lambda d: [str(_dirs(d)[0])], 2, ""),
]


# -- spec files: --targets NAME=path.toml ------------------------------------------------------------------
_HOST = Path(__file__).resolve().parents[1] / "targets" / "specs" / "host-cpu.toml"


def _spec(text: Callable[[str], str | bytes]):
    def build(d: Path) -> list[str]:
        model = _save(d, tiny())
        path = _dirs(d)[0] / "spec.toml"
        body = text(_HOST.read_text())
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
        return [model, "--targets", f"cpu={path}", "--no-run", "--quiet"]

    return build


def _sub(old: str, new: str) -> Callable[[str], str]:
    def fn(s: str) -> str:
        assert old in s, old
        return s.replace(old, new, 1)

    return fn


SPECS = [
    Case("specs", i, _spec(fn), 2, frag)
    for i, fn, frag in [
        ("empty file", lambda s: "", ""),
        ("TOML syntax error", lambda s: s + "\n[[[broken\n", ""),
        ("binary file", lambda s: bytes(range(256)) * 4, ""),
        ("not UTF-8", lambda s: s.encode() + b'\nx = "\xff\xfe"\n', ""),
        ("missing kind", _sub('kind = "cpu"', ""), ""),
        ("unknown kind", _sub('kind = "cpu"', 'kind = "quantum"'), "quantum"),
        ("kind is a number", _sub('kind = "cpu"', "kind = 3"), ""),
        ("missing [cpu] table", lambda s: s.split("[cpu]")[0], ""),
        ("missing memory bandwidth", _sub("memory_bandwidth_GBps = 21.0", ""), "memory_bandwidth_GBps"),
        (
            "bandwidth zero",
            _sub("memory_bandwidth_GBps = 21.0", "memory_bandwidth_GBps = 0.0"),
            "memory_bandwidth_GBps",
        ),
        (
            "bandwidth negative",
            _sub("memory_bandwidth_GBps = 21.0", "memory_bandwidth_GBps = -21.0"),
            "memory_bandwidth_GBps",
        ),
        (
            "bandwidth nan",
            _sub("memory_bandwidth_GBps = 21.0", "memory_bandwidth_GBps = nan"),
            "memory_bandwidth_GBps",
        ),
        (  # regression: inf passed the "positive" check and planned with free memory traffic
            "bandwidth inf",
            _sub("memory_bandwidth_GBps = 21.0", "memory_bandwidth_GBps = inf"),
            "must be a finite number",
        ),
        (
            "bandwidth a string",
            _sub("memory_bandwidth_GBps = 21.0", 'memory_bandwidth_GBps = "fast"'),
            "memory_bandwidth_GBps",
        ),
        (
            "bandwidth a table",
            _sub("memory_bandwidth_GBps = 21.0", "memory_bandwidth_GBps = {a = 1}"),
            "memory_bandwidth_GBps",
        ),
        ("peak fp32 negative", _sub("fp32 = 0.2368", "fp32 = -0.2368"), "fp32"),
        ("peak fp32 nan", _sub("fp32 = 0.2368", "fp32 = nan"), "fp32"),
        ("efficiency above 1", _sub("gemm = 0.50", "gemm = 7.0"), "gemm"),
        ("efficiency zero", _sub("gemm = 0.50", "gemm = 0.0"), "gemm"),
        ("threads negative", _sub("threads = 1 ", "threads = -4 "), "threads"),
        ("power negative", _sub("active_w = 7.5", "active_w = -7.5"), "active_w"),
        ("power inf", _sub("active_w = 7.5", "active_w = inf"), "'active_w' must be a finite number"),
        ("link latency a bool", _sub("latency_us = 0.0", "latency_us = true"), "latency_us"),
        ("memory bytes zero", _sub("memory_bytes = 25276514304", "memory_bytes = 0"), "memory_bytes"),
    ]
]
SPECS += [
    Case(
        "specs",
        "spec path is a folder",
        lambda d: [_save(d, tiny()), "--targets", f"cpu={_dirs(d)[0]}", "--no-run"],
        2,
        "",
    ),
    Case(
        "specs",
        "spec path missing",
        lambda d: [_save(d, tiny()), "--targets", f"cpu={d}/model/no.toml", "--no-run"],
        2,
        "no.toml",
    ),
]


# -- plan files: --load-plan -------------------------------------------------------------------------------
def _good_plan() -> dict:
    return {
        "format": "dispatch-plan",
        "version": 1,
        "strategy": "optimal",
        "objective": "latency",
        "assignment": {"mm": "asic", "relu": "asic"},
    }


def _plan(content: Callable[[], Any]):
    def build(d: Path) -> list[str]:
        model = _save(d, tiny())
        path = _dirs(d)[0] / "plan.json"
        body = content()
        path.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
        return [model, "--load-plan", str(path), "--no-run", "--quiet"]

    return build


def _with(**changes) -> Callable[[], dict]:
    return lambda: {**_good_plan(), **changes}


PLANS = [
    Case("plans", i, _plan(fn), 2, frag)
    for i, fn, frag in [
        ("empty file", lambda: b"", ""),
        ("not JSON", lambda: b"{assignment: mm}", ""),
        ("binary", lambda: bytes(range(256)), ""),
        ("a list", lambda: [1, 2, 3], ""),
        ("null", lambda: None, ""),
        ("a number", lambda: 42, ""),
        ("assignment a string", _with(assignment="asic"), ""),
        ("assignment a list", _with(assignment=["mm", "asic"]), ""),
        ("assignment empty", _with(assignment={}), ""),
        ("unknown node", _with(assignment={"mm": "asic", "relu": "asic", "ghost": "asic"}), "ghost"),
        ("node missing", _with(assignment={"mm": "asic"}), "relu"),
        ("unknown target", _with(assignment={"mm": "tpu9", "relu": "asic"}), "tpu9"),
        ("target a number", _with(assignment={"mm": 3, "relu": "asic"}), ""),
        ("target null", _with(assignment={"mm": None, "relu": "asic"}), ""),
        ("wrong format", _with(format="other"), ""),
        ("version 99", _with(version=99), ""),
        ("version a string", _with(version="1"), ""),
        ("100,000-deep nesting", lambda: b"[" * 100_000 + b"]" * 100_000, ""),
        ("huge: 200,000 nodes", _with(assignment={f"n{i}": "asic" for i in range(200_000)}), ""),
        ("NaN literal", lambda: b'{"format": "dispatch-plan", "version": NaN, "assignment": {}}', ""),
        ("not UTF-8", lambda: b'{"format": "\xff\xfe"}', ""),
    ]
]


def _cpu_only_plan(d: Path) -> list[str]:  # a target that cannot run the node: Frob-free, so use String ops
    model = _mk(
        [h.make_node("Cast", ["x"], ["y"], name="cast", to=T.STRING)],
        [_vi("x", [2])],
        [_vi("y", [2], T.STRING)],
    )
    path = _dirs(d)[0] / "plan.json"
    path.write_text(json.dumps({**_good_plan(), "assignment": {"cast": "asic"}}))
    return [_save(d, model), "--load-plan", str(path), "--no-run", "--quiet"]


PLANS.append(Case("plans", "target cannot run the node", _cpu_only_plan, 2, "cast"))


# -- feeds: --inputs npz -----------------------------------------------------------------------------------
def _npz_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _header_only(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


def _feed(content: Callable[[], bytes], suffix: str = ".npz"):
    def build(d: Path) -> list[str]:
        model = _save(d, tiny())
        path = _dirs(d)[0] / f"in{suffix}"
        path.write_bytes(content())
        return [model, "--inputs", str(path), "--repeat=0", "--quiet"]

    return build


X = np.ones((2, 4), np.float32)
FEEDS = [
    Case("feeds", i, _feed(fn), 2, frag)
    for i, fn, frag in [
        ("wrong name", lambda: _npz_bytes({"z.npy": _npy(X)}), "'x'"),
        ("extra name", lambda: _npz_bytes({"x.npy": _npy(X), "extra.npy": _npy(X)}), "extra"),
        ("dtype int64", lambda: _npz_bytes({"x.npy": _npy(X.astype(np.int64))}), "int64"),
        ("dtype complex", lambda: _npz_bytes({"x.npy": _npy(X.astype(np.complex64))}), "complex"),
        ("dtype string", lambda: _npz_bytes({"x.npy": _npy(np.array([["a"] * 4] * 2))}), "'x'"),
        ("rank 1", lambda: _npz_bytes({"x.npy": _npy(np.ones(8, np.float32))}), "'x'"),
        ("rank 3", lambda: _npz_bytes({"x.npy": _npy(np.ones((1, 2, 4), np.float32))}), "'x'"),
        ("wrong dim", lambda: _npz_bytes({"x.npy": _npy(np.ones((2, 5), np.float32))}), "'x'"),
        (
            "object array (pickle refused)",
            lambda: _npz_bytes({"x.npy": _npy(np.array([{}, []], dtype=object))}),
            "",
        ),
        ("a pickle named .npz", lambda: pickle.dumps({"x": X}), ""),
        ("empty file", lambda: b"", ""),
        ("empty zip", lambda: _npz_bytes({}), "'x'"),
        ("directory member", lambda: _npz_bytes({"x.npy/": b"", "x.npy": _npy(X)}), ""),
        ("member not .npy", lambda: _npz_bytes({"x.npy": b"hello"}), ""),
        ("truncated member", lambda: _npz_bytes({"x.npy": _npy(X)[:-8]}), ""),
        ("zip bomb header 2^40 floats", lambda: _npz_bytes({"x.npy": _header_only((2**40,))}), "x"),
        ("header negative shape", lambda: _npz_bytes({"x.npy": _header_only((-1, 4))}), ""),
        ("header bad descr", lambda: _npz_bytes({"x.npy": _header_only((2, 4), descr="<q99")}), ""),
        ("truncated zip", lambda: _npz_bytes({"x.npy": _npy(X)})[:30], ""),
        (
            "fake zip64 sizes",
            lambda: (
                b"PK\x03\x04"
                + struct.pack("<HHHHHIIIHH", 45, 0, 8, 0, 0, 0, 2**32 - 1, 2**32 - 1, 5, 0)
                + b"x.npy"
            ),
            "",
        ),
    ]
]


# -- API arguments: Dispatcher(...), run(...) ---------------------------------------------------------------
def _api(make: Callable[[Path], Any]):
    def build(d: Path) -> Callable[[], Any]:
        _dirs(d)
        return lambda: make(d)

    return build


def _run(feeds: Any, **kw) -> Callable[[Path], Any]:
    def make(d: Path) -> Any:
        with Dispatcher(tiny(), {"cpu": "host-cpu"}, **kw) as disp:
            return disp.run(feeds)

    return make


def _disp(*args, **kw) -> Callable[[Path], Any]:
    def make(d: Path) -> Any:
        with Dispatcher(*args, **kw):
            pass

    return make


API = [
    Case("api", i, _api(fn), DispatchError, frag)
    for i, fn, frag in [
        ("model 42", _disp(42), ""),
        ("model None", _disp(None), ""),
        ("model bytes garbage", _disp(b"\0\1\2"), ""),
        ("targets value 42", _disp(tiny(), {"gpu": 42}), "gpu"),
        ("targets a list", _disp(tiny(), ["host-cpu"]), ""),
        ("targets empty", _disp(tiny(), {}), ""),
        ("targets name a path", _disp(tiny(), {"cpu": "../../README"}), ""),
        ("targets key not a string", _disp(tiny(), {3: "host-cpu"}), ""),
        ("rtol a string", _disp(tiny(), {"cpu": "host-cpu"}, rtol="0.1"), "rtol"),
        ("rtol nan", _disp(tiny(), {"cpu": "host-cpu"}, rtol=math.nan), "rtol"),
        ("rtol negative", _disp(tiny(), {"cpu": "host-cpu"}, rtol=-1.0), "rtol"),
        ("atol inf", _disp(tiny(), {"cpu": "host-cpu"}, atol=math.inf), "atol"),
        ("atol None", _disp(tiny(), {"cpu": "host-cpu"}, atol=None), "atol"),
        ("strategy 3", _disp(tiny(), {"cpu": "host-cpu"}, strategy=3), "strateg"),
        ("strategy unknown", _disp(tiny(), {"cpu": "host-cpu"}, strategy="fastest"), "fastest"),
        ("objective unknown", _disp(tiny(), {"cpu": "host-cpu"}, objective="speed"), "speed"),
        ("shapes a list", _disp(tiny(), {"cpu": "host-cpu"}, shapes=[2, 4]), ""),
        ("shapes negative", _disp(tiny(), {"cpu": "host-cpu"}, shapes={"x": (-2, 4)}), ""),
        ("plan_cache_size -1", _disp(tiny(), {"cpu": "host-cpu"}, plan_cache_size=-1), "plan_cache_size"),
        (
            "plan_cache_size a float",
            _disp(tiny(), {"cpu": "host-cpu"}, plan_cache_size=2.5),
            "plan_cache_size",
        ),
        ("on_new_shape unknown", _disp(tiny(), {"cpu": "host-cpu"}, on_new_shape="explode"), "on_new_shape"),
        ("plan_options a list", _disp(tiny(), {"cpu": "host-cpu"}, plan_options=[1]), ""),
        ("run feeds a list", _run([X]), ""),
        ("run feeds None", _run(None), ""),
        ("run feed a list", _run({"x": [[1.0] * 4] * 2}), ""),
        ("run missing input", _run({}), "'x'"),
        ("run extra input", _run({"x": X, "q": X}), "'q'"),
        ("run wrong dtype", _run({"x": X.astype(np.float64)}), "float64"),
        ("run wrong rank", _run({"x": X.ravel()}), "'x'"),
        ("run object array", _run({"x": np.array([[None] * 4] * 2, dtype=object)}), "'x'"),
        ("run name not a string", _run({3: X}), ""),
    ]
]


# -- output paths ------------------------------------------------------------------------------------------
def _out(*flags: str, run: bool = False):
    def build(d: Path) -> list[str]:
        model = _save(d, tiny())
        out = _dirs(d)[2]
        argv = [model, "--quiet", "--repeat=0" if run else "--no-run"]
        for f in flags:
            argv.append(f.format(d=d, out=out, model=model))
        return argv

    return build


def _ext_out(flag: str):
    def build(d: Path) -> list[str]:
        model = _save(d, _ext("w.bin")(d))
        return [model, flag, str(d / "model" / "w.bin"), "--no-run", "--quiet"]

    return build


OUTPUTS = [
    Case("outputs", i, b, 2, frag)
    for i, b, frag in [
        ("--json into a missing folder", _out("--json", "{out}/no/such/r.json"), ""),
        ("--json a folder", _out("--json", "{out}"), ""),
        ("--json under a file", _out("--json", "{model}/r.json"), ""),
        ("--trace over the model", _out("--trace", "{model}"), "would overwrite"),
        ("--dot over the model", _out("--dot", "{model}"), "would overwrite"),
        ("--annotate over the model", _out("--annotate", "{model}"), "would overwrite"),
        ("--save-plan over the model", _out("--save-plan", "{model}"), "would overwrite"),
        ("--annotate a folder", _out("--annotate", "{out}"), ""),
        ("--save-plan into a missing folder", _out("--save-plan", "{out}/x/p.json"), ""),
        ("--trace and --dot on one path", _out("--trace", "{out}/a", "--dot", "{out}/a"), "both write"),
        ("--outputs a folder", _out("--outputs", "{out}", run=True), ""),
        ("--json over the external data", _ext_out("--json"), "would overwrite"),
        ("--annotate over the external data", _ext_out("--annotate"), "would overwrite"),
        ("--outputs over the inputs", None, "would overwrite"),
        ("--json via a symlink to the model", None, "would overwrite"),
    ]
]


def _outputs_over_inputs(d: Path) -> list[str]:
    model = _save(d, tiny())
    path = _dirs(d)[0] / "in.npz"
    np.savez(path, x=X)
    return [model, "--inputs", str(path), "--outputs", str(path), "--repeat=0", "--quiet"]


def _symlink_to_model(d: Path) -> list[str]:
    model = _save(d, tiny())
    link = _dirs(d)[2] / "r.json"
    link.unlink(missing_ok=True)
    link.symlink_to(model)
    return [model, "--json", str(link), "--no-run", "--quiet"]


OUTPUTS[-2] = OUTPUTS[-2]._replace(build=_outputs_over_inputs)
OUTPUTS[-1] = OUTPUTS[-1]._replace(build=_symlink_to_model)


# -- memory bombs ------------------------------------------------------------------------------------------
def _i64(name, values):
    return nh.from_array(np.array(values, np.int64), name)


MEMORY = [
    Case("memory", i, _cli(fn, *extra), 2, frag)
    for i, fn, extra, frag in [
        (
            "input [2^31, 2^31]",
            lambda: _mk(
                [h.make_node("Relu", ["x"], ["y"])], [_vi("x", [2**31, 2**31])], [_vi("y", [2**31, 2**31])]
            ),
            (),
            "'x'",
        ),
        (
            "Tile by 2^40",
            lambda: _mk(
                [h.make_node("Tile", ["x", "r"], ["y"])],
                [_vi("x", [2])],
                [_vi("y", ["n"])],
                [_i64("r", [2**40])],
            ),
            (),
            "Tile",
        ),
        (
            "Pad by 2^40",
            lambda: _mk(
                [h.make_node("Pad", ["x", "p"], ["y"])],
                [_vi("x", [2])],
                [_vi("y", ["n"])],
                [_i64("p", [0, 2**40])],
            ),
            (),
            "Pad",
        ),
        (
            "ConstantOfShape [2^20, 2^20]",
            lambda: _mk(
                [h.make_node("ConstantOfShape", ["s"], ["y"])],
                [],
                [_vi("y", ["a", "b"])],
                [_i64("s", [2**20, 2**20])],
            ),
            (),
            "ConstantOfShape",
        ),
        (
            "Resize by 1e6",
            lambda: _mk(
                [h.make_node("Resize", ["x", "", "sc"], ["y"])],
                [_vi("x", [1, 1, 8, 8])],
                [_vi("y", list("abcd"))],
                [nh.from_array(np.array([1, 1, 1e6, 1e6], np.float32), "sc")],
            ),
            (),
            "Resize",
        ),
        (
            "MatMul of two 2^20 squares",
            lambda: _mk(
                [h.make_node("MatMul", ["a", "b"], ["y"])],
                [_vi("a", [2**20, 2**20]), _vi("b", [2**20, 2**20])],
                [_vi("y", [2**20, 2**20])],
            ),
            (),
            "'a'",
        ),
        ("--max-memory 1 on a tiny model", tiny, ("--max-memory", "1"), "--max-memory"),
        (
            "--shape x=2^31x2^31",
            lambda: _mk([h.make_node("Relu", ["x"], ["y"])], [_vi("x", ["a", "b"])], [_vi("y", ["a", "b"])]),
            ("--shape", f"x={2**31}x{2**31}"),
            "'x'",
        ),
        (
            "--shape symbol 2^62",
            lambda: _mk([h.make_node("Relu", ["x"], ["y"])], [_vi("x", ["a", 4])], [_vi("y", ["a", 4])]),
            ("--shape", f"a={2**62}"),
            "",
        ),
        (
            "Concat of 2^39 twice",
            lambda: _mk(
                [h.make_node("Expand", ["x", "s"], ["e"]), h.make_node("Concat", ["e", "e"], ["y"], axis=0)],
                [_vi("x", [1])],
                [_vi("y", ["n"])],
                [_i64("s", [2**39])],
            ),
            (),
            "",
        ),
    ]
]


# -- shapes: declared shapes that contradict each other (dispatch/consistency.py, attributes.py) -----------
def _w(*dims, name="w"):
    return nh.from_array(np.ones(dims, np.float32), name)


def _i(name, values):
    return nh.from_array(np.array(values, np.int64), name)


def _one(op, ins, inits=(), declared_out=("d0", "d1"), name="n", **attrs):
    """One node `name` reading the declared inputs [(name, dims)] and initializers, output 'y'."""
    return lambda: _mk(
        [h.make_node(op, [n for n, _ in ins] + [t.name for t in inits], ["y"], name=name, **attrs)],
        [_vi(n, d) for n, d in ins],
        [_vi("y", list(declared_out))],
        inits,
    )


def _relu_declared(out_dims, value_info=None):
    def make():
        m = _mk(
            [h.make_node("Relu", ["x"], ["m"], name="relu"), h.make_node("Neg", ["m"], ["y"], name="neg")],
            [_vi("x", [2, 4])],
            [_vi("y", out_dims)],
        )
        if value_info is not None:
            m.graph.value_info.append(_vi("m", value_info))
        return m

    return make


_MM = "Node 'n' (MatMul) cannot take inputs 'x' [2, 3] and 'w' [4, 4]"
_SHAPES = [
    ("MatMul inner dimension, weight", _one("MatMul", [("x", [2, 3])], [_w(4, 4)]), (), _MM),
    ("MatMul inner dimension, both inputs", _one("MatMul", [("x", [2, 3]), ("w", [4, 4])]), (), _MM),
    ("MatMul inner dimension, planned and run", _one("MatMul", [("x", [2, 3])], [_w(4, 4)]), ("run",), _MM),
    (
        "MatMul batch dimensions do not broadcast",
        _one("MatMul", [("x", [2, 2, 3])], [_w(3, 3, 4)], ("a", "b", "c")),
        (),
        "'x' [2, 2, 3] and 'w' [3, 3, 4]",
    ),
    ("MatMul vector of the wrong length", _one("MatMul", [("x", [5])], [_w(4, 4)], ("d0",)), (), "[5]"),
    (
        "Gemm transA makes K disagree",
        _one("Gemm", [("x", [2, 3])], [_w(3, 4)], transA=1),
        (),
        "Node 'n' (Gemm, transA=1) cannot take inputs 'x' [2, 3] and 'w' [3, 4]",
    ),
    (
        "Gemm transB makes K disagree",
        _one("Gemm", [("x", [2, 3])], [_w(3, 4)], transB=1),
        (),
        "Node 'n' (Gemm, transB=1) cannot take inputs 'x' [2, 3] and 'w' [3, 4]",
    ),
    (
        "Gemm transA and transB make K disagree",
        _one("Gemm", [("x", [3, 2])], [_w(3, 4)], transA=1, transB=1),
        (),
        "(Gemm, transA=1, transB=1)",
    ),
    (
        "Gemm bias does not broadcast",
        _one("Gemm", [("x", [2, 3])], [_w(3, 4), _w(3, name="c")]),
        (),
        "bias 'c' of shape [3], which does not broadcast to its output [2, 4]",
    ),
    (
        "Conv input channels vs weight",
        _one("Conv", [("x", [1, 3, 8, 8])], [_w(4, 2, 3, 3)], ("a", "b", "c", "d")),
        (),
        "Conv node 'n' has group 1 with 3 input channels and weights of shape [4, 2, 3, 3]",
    ),
    (
        "Conv group does not divide the weight's channels",
        _one("Conv", [("x", [1, 4, 8, 8])], [_w(4, 1, 3, 3)], ("a", "b", "c", "d"), group=2),
        (),
        "Conv node 'n' has group 2 with 4 input channels",
    ),
    (
        "Add of [3] and [4]",
        _one("Add", [("a", [3]), ("b", [4])], declared_out=("d0",)),
        (),
        "'a' [3] and 'b' [4]",
    ),
    ("Mul of [2, 3] and [3, 2]", _one("Mul", [("a", [2, 3]), ("b", [3, 2])]), (), "(Mul) cannot take inputs"),
    (
        "Where condition does not broadcast",
        _one("Where", [("c", [5]), ("a", [4]), ("b", [4])], declared_out=("d0",)),
        (),
        "(Where) cannot take inputs",
    ),
    (
        "Add of a bound symbolic dimension and [4]",
        _one("Add", [("a", ["N"]), ("b", [4])], declared_out=("d0",)),
        ("--shape", "a=3"),
        "'a' [3] and 'b' [4]",
    ),
    (
        "Concat rank mismatch",
        _one("Concat", [("a", [2, 3]), ("b", [2, 3, 1])], axis=0),
        (),
        "Node 'n' (Concat, axis=0) cannot take inputs 'a' [2, 3] and 'b' [2, 3, 1]",
    ),
    (
        "Concat other dimension mismatch",
        _one("Concat", [("a", [2, 3]), ("b", [2, 4])], axis=0),
        (),
        "Node 'n' (Concat, axis=0) cannot take inputs 'a' [2, 3] and 'b' [2, 4]",
    ),
    (
        "Reshape to another element count",
        _one("Reshape", [("x", [2, 3])], [_i("s", [4, 2])]),
        (),
        "cannot reshape 'x' of shape [2, 3] (6 elements) to [4, 2] (8 elements)",
    ),
    (
        "Reshape with -1 that cannot divide",
        _one("Reshape", [("x", [2, 3])], [_i("s", [-1, 4])]),
        (),
        "cannot reshape 'x' of shape [2, 3] (6 elements) to [-1, 4]",
    ),
    (
        "Reshape with 0 copying a dimension",
        _one("Reshape", [("x", [2, 3])], [_i("s", [0, 4])]),
        (),
        "to [2, 4] (8 elements)",
    ),
    (
        "graph output declared another size",
        _relu_declared([3, 3]),
        (),
        "Node 'neg' (Neg) cannot take inputs 'm' [2, 4] and produce 'y' as [3, 3]",
    ),
    ("graph output declared another rank", _relu_declared([2, 4, 1]), (), "produce 'y' as [2, 4, 1]"),
    (
        "graph output declared another size, planned and run",
        _relu_declared([3, 3]),
        ("run",),
        "produce 'y' as [3, 3]",
    ),
    (
        "graph output contradicts a shape computed by Shape/Gather (found after folding)",
        lambda: _mk(
            [
                h.make_node("Shape", ["x"], ["s"], name="shape"),
                h.make_node("Gather", ["s", "idx"], ["r"], name="swap", axis=0),
                h.make_node("Reshape", ["x", "r"], ["y"], name="rs"),
            ],
            [_vi("x", [2, 3])],
            [_vi("y", [2, 3])],
            [_i("idx", [1, 0])],
        ),
        (),
        "Node 'rs' (Reshape) cannot take inputs 'x' [2, 3]",
    ),
    (
        "value_info declared another size",
        _relu_declared([2, 4], value_info=[5, 5]),
        (),
        "Node 'relu' (Relu) cannot take inputs 'x' [2, 4] and produce 'm' as [5, 5]",
    ),
]


def _shapes_cli(model, extra: tuple[str, ...]):
    run = "run" in extra
    return _cli(model, *(e for e in extra if e != "run"), run=run)


def _shapes_api(model):
    def make(d: Path) -> Any:
        with Dispatcher(model(), {"cpu": "host-cpu"}):
            pass

    return make


_API_SHAPES = [c for c in _SHAPES if not c[2]][:4]  # the first four again through Dispatcher(...)
SHAPES = [Case("shapes", i, _shapes_cli(fn, extra), 2, frag) for i, fn, extra, frag in _SHAPES] + [
    Case("shapes", f"API: {i}", _api(_shapes_api(fn)), DispatchError, frag) for i, fn, _, frag in _API_SHAPES
]

ALL: list[Case] = (
    [Case("models", i, _cli(fn), 2, "") for i, fn in MODEL]
    + FLAGS
    + SPECS
    + PLANS
    + FEEDS
    + API
    + OUTPUTS
    + MEMORY
    + SHAPES
)

# The hostile cases that already live in other test files, by family: (module, test function).
EXISTING = {
    "models": [
        ("test_hostile", "test_invalid_conv_attributes_are_one_sentence_at_load"),
        ("test_hostile", "test_sparse_initializer_with_an_index_outside_its_shape"),
        ("test_hostile", "test_invalid_conv_from_the_cli"),
    ],
    "flags": [
        ("test_cli", "test_missing_model_file"),
        ("test_cli", "test_bad_targets"),
        ("test_cli", "test_bad_strategy"),
        ("test_cli", "test_bad_strategy_or_objective_with_load_plan"),
        ("test_cli", "test_bad_shape"),
        ("test_cli", "test_bad_options"),
    ],
    "feeds": [
        ("test_cli", "test_bad_inputs"),
        ("test_cli", "test_npy_file_as_inputs_is_bad_input"),
        ("test_cli", "test_out_of_range_token_ids_are_bad_input"),
        ("test_cli", "test_shape_contradicting_inputs_is_bad_input"),
        ("test_hostile", "test_sequence_and_optional_inputs_point_to_the_python_api"),
    ],
    "plans": [("test_cli", "test_load_plan_for_another_model")],
    "api": [("test_budget", "test_absurd_or_non_integer_bindings_are_one_sentence")],
    "outputs": [
        ("test_cli", "test_folder_as_output_or_plan_fails_before_any_work"),
        ("test_cli", "test_unwritable_output"),
        ("test_fileio", "test_disk_full_keeps_the_earlier_file"),
        ("test_fileio", "test_output_over_the_model_is_refused"),
        ("test_fileio", "test_output_over_the_inputs_or_plan_is_refused"),
        ("test_fileio", "test_two_outputs_on_one_path_are_refused"),
    ],
    "memory": [("test_budget", "test_memory_bombs_are_refused_in_one_sentence_with_low_peak_rss")],
}


def _cases_of(module: str, function: str) -> int:
    """How many cases a test function runs: the product of its parametrisations (memory bombs: its table)."""
    fn = getattr(importlib.import_module(module), function)
    if function.startswith("test_memory_bombs"):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            return len(importlib.import_module(module)._bombs(Path(d)))
    n = 1
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            n *= len(mark.args[1])
    return n


def family_counts() -> dict[str, tuple[int, int]]:
    """family -> (all cases, of which in other test files); run with tests/ on sys.path."""
    new = Counter(c.family for c in ALL)
    old = {f: sum(_cases_of(m, fn) for m, fn in tests) for f, tests in EXISTING.items()}
    return {f: (new[f] + old.get(f, 0), old.get(f, 0)) for f in sorted(set(new) | set(old))}


if __name__ == "__main__":  # the README table: PYTHONPATH=tests python tests/hostile_cases.py
    rows = family_counts()
    print("| family | cases | of which in other test files |\n|---|---:|---:|")
    for f, (n, old) in rows.items():
        print(f"| {f} | {n} | {old} |")
    print(f"| **all** | **{sum(n for n, _ in rows.values())}** | {sum(o for _, o in rows.values())} |")

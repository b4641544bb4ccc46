"""`python -m dispatch serve`: the Open Inference Protocol server, in a subprocess on a free 127.0.0.1 port,
talked to with Triton's own client (tritonclient[http]) and with raw HTTP (urllib) for the error cases.
Every request loop is bounded (counts and timeouts)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpclient = pytest.importorskip("tritonclient.http")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from dispatch import Dispatcher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CNN_ARGS = ["tiny_cnn", "--strategy", "only:asic", "--threads", "gpu=1,asic=1"]  # 5 segments: asic/gpu


class Server:
    def __init__(self, args: list[str], timeout_s: float = 90.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "dispatch", "serve", *args, "--port", "0"],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                break
        if not line.startswith("serving "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.url = line.split(" on ")[1].split()[0]  # http://127.0.0.1:PORT
        self.hostport = self.url.removeprefix("http://")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode, self.proc.stderr.read()


def _http(method: str, url: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _infer_body(name: str = "input", datatype: str = "FP32", shape: list[int] | None = None,
                data: list | None = None) -> bytes:
    shape = [1, 3, 32, 32] if shape is None else shape
    data = [0.25] * int(np.prod(shape)) if data is None else data
    doc = {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    return json.dumps(doc).encode()


def _triton_infer(client, model: str, feeds: dict[str, np.ndarray], binary: bool) -> dict[str, np.ndarray]:
    inputs = []
    for name, x in feeds.items():
        i = httpclient.InferInput(name, list(x.shape), {np.float32: "FP32", np.int64: "INT64"}[x.dtype.type])
        i.set_data_from_numpy(x, binary_data=binary)
        inputs.append(i)
    result = client.infer(model, inputs)
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


@pytest.fixture(scope="module")
def cnn_server() -> Iterator[Server]:
    s = Server([*CNN_ARGS, "--max-body-mb", "1"])
    yield s
    s.stop()


@pytest.mark.parametrize("binary", (True, False), ids=("binary", "json"))
def test_tritonclient_outputs_equal_dispatcher_run_cnn(cnn_server: Server, binary: bool) -> None:
    client = httpclient.InferenceServerClient(cnn_server.hostport)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny_cnn")
    meta = client.get_model_metadata("tiny_cnn")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    rng = np.random.default_rng(3)
    with Dispatcher("tiny_cnn", strategy="only:asic", threads={"gpu": 1, "asic": 1}) as d:
        for batch in (1, 3):  # batch 3: planned on the request path (on_new_shape="build")
            x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
            got = _triton_infer(client, "tiny_cnn", {"input": x}, binary)
            want = d.run({"input": x})
            assert got.keys() == want.keys() and np.array_equal(got["output"], want["output"])


def test_tritonclient_outputs_equal_dispatcher_run_transformer() -> None:
    s = Server(["tiny_transformer", "--strategy", "optimal", "--threads", "2"])
    try:
        client = httpclient.InferenceServerClient(s.hostport)
        ids = np.random.default_rng(5).integers(0, 128, (1, 16), dtype=np.int64)
        got = _triton_infer(client, "tiny_transformer", {"input_ids": ids}, binary=True)
        with Dispatcher("tiny_transformer", strategy="optimal", threads=2) as d:
            want = d.run({"input_ids": ids})
        assert np.array_equal(got["last_hidden_state"], want["last_hidden_state"])
    finally:
        assert s.stop()[0] == 0


_BINARY_HEAD = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3,32,32],' \
               b'"parameters":{"binary_data_size":8}}]}'
ERRORS = [  # (what, method, path, body, headers, status, words in the message)
    ("wrong tensor name", "POST", "/v2/models/tiny_cnn/infer", _infer_body(name="x"), {}, 400,
     "The model has no input 'x'; its inputs are 'input'."),
    ("wrong dtype", "POST", "/v2/models/tiny_cnn/infer", _infer_body(datatype="INT64", data=[1] * 3072), {},
     400, "Input 'input' has datatype 'INT64', but the model takes FP32; send it as FP32."),
    ("wrong shape", "POST", "/v2/models/tiny_cnn/infer", _infer_body(shape=[1, 3, 16, 64]), {}, 400,
     "Input 'input' has shape [1, 3, 16, 64], but the model takes ?x3x32x32"),
    ("too few elements", "POST", "/v2/models/tiny_cnn/infer", _infer_body(data=[0.5] * 10), {}, 400,
     "has 10 elements in \"data\", but shape [1, 3, 32, 32] holds 3072"),
    ("malformed JSON", "POST", "/v2/models/tiny_cnn/infer", b'{"inputs": [', {}, 400,
     "The request body is not valid JSON"),
    ("no inputs", "POST", "/v2/models/tiny_cnn/infer", b'{"outputs": []}', {}, 400,
     'The request needs "inputs"'),
    ("binary size mismatch", "POST", "/v2/models/tiny_cnn/infer", _BINARY_HEAD + b"\0" * 8,
     {"Inference-Header-Content-Length": str(len(_BINARY_HEAD))}, 400, "declares binary_data_size 8"),
    ("oversized body", "POST", "/v2/models/tiny_cnn/infer", b" " * (2 << 20), {}, 413,
     "over the server's limit of 1048576 bytes"),
    ("unknown model", "POST", "/v2/models/nope/infer", _infer_body(), {}, 404,
     "Unknown model 'nope'; this server serves 'tiny_cnn'."),
    ("unknown model metadata", "GET", "/v2/models/nope", None, {}, 404, "Unknown model 'nope'"),
    ("unknown version", "GET", "/v2/models/tiny_cnn/versions/7/ready", None, {}, 404, "has no version '7'"),
    ("unknown route", "GET", "/v1/models", None, {}, 404, "No route /v1/models"),
]


@pytest.mark.parametrize(("what", "method", "path", "body", "headers", "status", "words"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_bad_requests_get_one_sentence_and_server_stays_healthy(cnn_server: Server, what: str, method: str,
                                                                path: str, body: bytes | None, headers: dict,
                                                                status: int, words: str) -> None:
    code, raw = _http(method, cnn_server.url + path, body, headers)
    assert code == status
    doc = json.loads(raw)
    assert list(doc) == ["error"] and words in doc["error"]
    assert doc["error"].endswith(".") and "\n" not in doc["error"] and "Traceback" not in doc["error"]
    assert _http("GET", cnn_server.url + "/v2/health/ready")[0] == 200
    code, raw = _http("POST", cnn_server.url + "/v2/models/tiny_cnn/infer", _infer_body())
    assert code == 200 and json.loads(raw)["outputs"][0]["shape"] == [1, 10]


def test_metrics_parse(cnn_server: Server) -> None:
    for _ in range(3):
        assert _http("POST", cnn_server.url + "/v2/models/tiny_cnn/infer", _infer_body())[0] == 200
    assert _http("POST", cnn_server.url + "/v2/models/tiny_cnn/infer", b"{")[0] == 400
    code, raw = _http("GET", cnn_server.url + "/metrics")
    assert code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(raw.decode()) for s in fam.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("dispatch_requests_total", model="tiny_cnn") >= 4
    assert value("dispatch_request_errors_total", model="tiny_cnn", code="400") >= 1
    assert value("dispatch_request_latency_seconds_count", model="tiny_cnn") >= 4
    for target in ("gpu", "asic"):  # only:asic alternates: both workers ran segments
        assert value("dispatch_target_busy_seconds_total", model="tiny_cnn", target=target) > 0
        assert value("dispatch_target_steps_total", model="tiny_cnn", target=target) >= 3
        assert value("dispatch_queue_depth", model="tiny_cnn", target=target) == 0
    assert value("dispatch_plan_cache_hits_total", model="tiny_cnn") >= 3
    assert value("dispatch_plan_builds_total", model="tiny_cnn") >= 1
    assert value("dispatch_requests_in_flight", model="tiny_cnn") == 0


def test_dynamic_batching_gathers_rows() -> None:
    s = Server([*CNN_ARGS, "--max-batch", "4", "--batch-timeout-ms", "50", "--on-new-shape", "refuse"])
    rounds, clients = 3, 4
    rng = np.random.default_rng(11)
    xs = rng.standard_normal((rounds, clients, 1, 3, 32, 32), dtype=np.float32)
    got: dict[tuple[int, int], np.ndarray] = {}
    barrier = threading.Barrier(clients, timeout=30)

    def client(k: int) -> None:
        c = httpclient.InferenceServerClient(s.hostport)
        for r in range(rounds):
            barrier.wait()
            got[(r, k)] = _triton_infer(c, "tiny_cnn", {"input": xs[r, k]}, binary=True)["output"]

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # batch sizes 1..4 were planned at startup; 5 rows run alone, unplanned, and are refused
        code, err = _http("POST", s.url + "/v2/models/tiny_cnn/infer", _infer_body(shape=[5, 3, 32, 32]))
        assert code == 400 and "No plan for input shapes [5x3x32x32]" in json.loads(err)["error"]
        raw = _http("GET", s.url + "/metrics")[1].decode()
    finally:
        assert s.stop()[0] == 0
    assert len(got) == rounds * clients
    with Dispatcher("tiny_cnn", strategy="only:asic", threads={"gpu": 1, "asic": 1}) as d:
        for (r, k), y in got.items():  # a row's result in a batch: the same up to the kernels' rounding
            np.testing.assert_allclose(y, d.run({"input": xs[r, k]})["output"], rtol=1e-5, atol=1e-5)
    fam = {f.name: f for f in text_string_to_metric_families(raw)}["dispatch_batch_size"]
    total = {smp.name: smp.value for smp in fam.samples}
    assert total["dispatch_batch_size_sum"] == rounds * clients + 5  # every row ran once (5: the refused run)
    assert total["dispatch_batch_size_count"] < rounds * clients  # and some ran together


def test_bad_arguments_exit_2_with_one_line() -> None:
    for args, words in ((["tiny_cnn", "--port", "70000"], "Cannot listen on 127.0.0.1:70000"),
                        (["tiny_cnn", "--max-batch", "1"], "--max-batch 1 batches nothing"),
                        (["tiny_cnn", "--threads", "gpu=x"], "Cannot read --threads item 'gpu=x'")):
        r = subprocess.run([sys.executable, "-m", "dispatch", "serve", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr, r.stderr


def test_sigterm_under_load_loses_nothing_and_exits_0() -> None:
    s = Server(CNN_ARGS)
    x = np.random.default_rng(2).standard_normal((8, 3, 32, 32), dtype=np.float32)
    body = _infer_body(shape=[8, 3, 32, 32], data=x.ravel().tolist())
    with Dispatcher("tiny_cnn", strategy="only:asic", threads={"gpu": 1, "asic": 1}) as d:
        want = d.run({"input": x})["output"]
    results: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        for _ in range(500):  # bounded; stops at the first refusal after SIGTERM
            try:
                code, raw = _http("POST", s.url + "/v2/models/tiny_cnn/infer", body)
            except (urllib.error.URLError, ConnectionError):
                with lock:
                    results.append("refused")  # no connection: the server stopped listening
                return
            if code == 200:
                out = np.array(json.loads(raw)["outputs"][0]["data"], np.float32).reshape(8, 10)
                outcome = "ok" if np.array_equal(out, want) else "wrong"
            else:
                outcome = f"{code}:{json.loads(raw)['error']}"
            with lock:
                results.append(outcome)
            if code != 200:
                return

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)  # under load
    assert sum(r == "ok" for r in results) > 0
    stop.set()
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    code, err = s.stop()
    assert code == 0, err
    answered = int(err.split("answered ")[1].split()[0])
    bad = [r for r in results if r not in ("ok", "refused") and not r.startswith("503:")]
    assert not bad  # no wrong output, no 5xx but the drain's 503
    # every request the server answered reached its client: none in flight was lost
    assert answered == sum(r != "refused" for r in results)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "objective"), (("resnet18", "energy"), ("bert", "latency")))
def test_tritonclient_outputs_equal_dispatcher_run_zoo(model: str, objective: str) -> None:
    # resnet18 for energy: gpu, asic, gpu segments (the convs after the stem on the ASIC); bert: one segment
    s = Server([model, "--threads", "2", "--objective", objective], timeout_s=300)
    try:
        client = httpclient.InferenceServerClient(s.hostport, network_timeout=300, connection_timeout=300)
        with Dispatcher(model, threads=2, objective=objective) as d:
            if model == "resnet18":
                assert {seg.target for seg in d.plan.segments} == {"gpu", "asic"}
            feeds = d.example_feeds(seed=4)
            got = _triton_infer(client, model, feeds, binary=True)
            want = d.run(feeds)
        assert got.keys() == want.keys()
        for name in want:
            assert np.array_equal(got[name], want[name])
    finally:
        assert s.stop()[0] == 0

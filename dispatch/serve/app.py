"""The Open Inference Protocol's REST routes (KServe v2) on Starlette, over models that run in threads.

    GET  /v2/health/live, /v2/health/ready           liveness; readiness (503 while draining)
    GET  /v2, /v2/models/{name}[/versions/1]          server and model metadata
    GET  /v2/models/{name}[/versions/1]/ready         model readiness
    POST /v2/models/{name}[/versions/1]/infer         JSON tensors, or the binary tensor data extension
    GET  /metrics                                     Prometheus text format (dispatch/serve/metrics.py)

A model is `DispatcherModel` (a `Dispatcher`, its runs pipelined across targets) or `OrtModel` (one plain
onnxruntime session on one worker thread: the load benchmark's baseline behind the same code). The event
loop never blocks on a run: each model admits at most `max_in_flight` runs (an asyncio semaphore, so waiting
requests cost no thread), and a run with input shapes the model has not planned yet is submitted from a
worker thread, since it may plan and compile first. Errors are `{"error": "one sentence"}`: 400 for a bad
request, 404 for an unknown model or route, 413 for a body over the limit, 503 while shutting down, 500 for
an internal error. `state.draining` (set on SIGTERM by dispatch/serve/cli.py) refuses new requests with 503
while those in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dispatch.api import Dispatcher
from dispatch.errors import DispatchError
from dispatch.serve.batching import Batcher
from dispatch.serve.metrics import Metrics
from dispatch.serve.protocol import (
    DATATYPES,
    ProtocolError,
    TensorMeta,
    datatype_of,
    decode_request,
    encode_response,
)

__all__ = ["DispatcherModel", "OrtModel", "create_app", "AppState"]

VERSION = "1"  # each model is served in one version
DRAIN_BYTES = 64 << 20  # a refused body up to this size is read to its end before the 413 goes out


def _meta(name: str, dtype: np.dtype | None, dims: Any, what: str) -> TensorMeta:
    if dtype is None or datatype_of(dtype) == "BYTES":
        raise DispatchError(f"{what} '{name}' is not a numeric tensor ({dtype}); the server serves numeric "
                            "tensors only.")
    shape = (-1,) if dims is None else tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)
    return TensorMeta(name, datatype_of(dtype), shape)


class DispatcherModel:
    """A Dispatcher behind the protocol: runs go through its pipeline (`Dispatcher.submit`)."""

    platform = "dispatch"

    def __init__(self, dispatcher: Dispatcher, name: str | None = None) -> None:
        self.dispatcher = dispatcher
        self.name = name or dispatcher.name
        for s in dispatcher.input_specs:
            if s.kind != "tensor":
                raise DispatchError(f"Input '{s.name}' is a {s.kind}; the server serves tensor inputs only.")
        self.inputs = tuple(_meta(s.name, s.dtype, s.dims, "Input") for s in dispatcher.input_specs)
        self.outputs = tuple(_meta(s.name, s.dtype, s.dims, "Output") for s in dispatcher.output_specs)
        self.max_in_flight = dispatcher.max_in_flight
        self._planned = {tuple(tuple(m.shape) for m in self.inputs)} if all(
            -1 not in m.shape for m in self.inputs) else set()
        self._planned.update(dispatcher.build_times)
        self.pipeline = dispatcher.pipeline  # start the workers now, not on the first request

    def planned(self, feeds: Mapping[str, np.ndarray]) -> bool:
        """Whether feeds of these shapes have a plan already (so submitting them cannot plan on the loop)."""
        return tuple(feeds[m.name].shape for m in self.inputs) in self._planned

    def submit(self, feeds: Mapping[str, np.ndarray]) -> Future:
        fut = self.dispatcher.submit(feeds)
        self._planned.add(tuple(feeds[m.name].shape for m in self.inputs))
        return fut

    def stats(self) -> dict[str, Any]:
        p = self.pipeline
        return {"busy_s": p.busy_seconds(), "steps": p.steps_run(), "queues": p.queue_depths(),
                "cache": self.dispatcher.cache_stats}

    def close(self) -> None:
        self.dispatcher.close()


class OrtModel:
    """One plain onnxruntime session (CPU provider) on one worker thread: the baseline."""

    platform = "onnxruntime"

    def __init__(self, path: str, name: str, threads: int | None = None, max_in_flight: int = 8) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.name, self.max_in_flight = name, max_in_flight
        types = {f"tensor({k})": v for k, v in _ORT_TYPES.items()}
        self.inputs = tuple(_meta(i.name, types.get(i.type), i.shape, "Input")
                            for i in self.session.get_inputs())
        self.outputs = tuple(_meta(o.name, types.get(o.type), o.shape, "Output")
                             for o in self.session.get_outputs())
        self._names = [o.name for o in self.session.get_outputs()]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ort-baseline")
        self._busy, self._runs, self._submitted = 0.0, 0, 0

    def planned(self, feeds: Mapping[str, np.ndarray]) -> bool:
        return True

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        try:
            return dict(zip(self._names, self.session.run(self._names, dict(feeds)), strict=True))
        finally:
            self._busy += time.perf_counter() - t0
            self._runs += 1

    def submit(self, feeds: Mapping[str, np.ndarray]) -> Future:
        self._submitted += 1  # on the event loop only
        return self._pool.submit(self._run, feeds)

    def stats(self) -> dict[str, Any]:
        waiting = max(0, self._submitted - self._runs - 1)  # less the one running (roughly, between runs)
        return {"busy_s": {"cpu": self._busy}, "steps": {"cpu": self._runs}, "queues": {"cpu": waiting},
                "cache": None}

    def close(self) -> None:
        self._pool.shutdown(wait=True)


_ORT_TYPES = {"float": np.float32, "double": np.float64, "float16": np.float16, "bfloat16": DATATYPES["BF16"],
              "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8,
              "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_}


class AppState:
    """What the routes share: models, metrics, limits, batchers, and the shutdown flag."""

    def __init__(self, models: Mapping[str, Any], max_body_bytes: int, max_batch: int = 0,
                 batch_timeout_s: float = 0.002) -> None:
        self.models = dict(models)
        self.max_body_bytes = max_body_bytes
        self.metrics = Metrics(self.models)
        self.draining = False
        self.answered = 0  # inference responses sent (any status), for the shutdown line
        self.refused = 0  # inference requests refused while draining
        self._count_lock = threading.Lock()
        self.slots = {n: asyncio.Semaphore(m.max_in_flight) for n, m in self.models.items()}
        self.batchers: dict[str, Batcher] = {}
        if max_batch:
            for n, m in self.models.items():
                self.batchers[n] = Batcher(lambda feeds, n=n: self._run(n, feeds), m.inputs, m.outputs,
                                           max_batch, batch_timeout_s,
                                           self.metrics.batch.labels(model=n).observe)

    async def _run(self, name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = self.models[name]
        async with self.slots[name]:
            if model.planned(feeds):
                fut = model.submit(feeds)
            else:  # it may plan and compile first: not on the event loop
                fut = await asyncio.to_thread(model.submit, feeds)
            return await asyncio.wrap_future(fut)

    async def run(self, name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batcher = self.batchers.get(name)
        if batcher is not None:
            return await batcher.infer(feeds)
        first = next(iter(feeds.values()), None)
        rows = first.shape[0] if first is not None and first.ndim else 1
        self.metrics.batch.labels(model=name).observe(rows)
        return await self._run(name, feeds)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _model(state: AppState, request: Request) -> Any:
    name = request.path_params["name"]
    version = request.path_params.get("version", VERSION)
    model = state.models.get(name)
    if model is None:
        raise ProtocolError(f"Unknown model '{name}'; this server serves "
                            f"{', '.join(map(repr, state.models))}.", 404)
    if version != VERSION:
        raise ProtocolError(f"Model '{name}' has no version '{version}'; it is served as version {VERSION}.",
                            404)
    return model


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = ProtocolError(f"The request body is over the server's limit of {limit} bytes; send smaller "
                            "tensors or raise --max-body-mb.", 413)
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= DRAIN_BYTES:
            await _drain(request)
        raise too_big
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            if n <= DRAIN_BYTES:
                await _drain(request, DRAIN_BYTES - n)
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(request: Request, budget: int = DRAIN_BYTES) -> None:
    """Read and drop the rest of a refused body (at most `budget` bytes): a client still sending when the
    server answers and closes gets its connection reset instead of the 413 sentence (measured: urllib's
    ECONNRESET on a 2 MiB body against a 1 MiB limit)."""
    async for chunk in request.stream():
        budget -= len(chunk)
        if budget < 0:
            return


def create_app(state: AppState) -> Starlette:
    """The Starlette app over `state` (models are closed when the app shuts down)."""

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        if state.draining:
            return _error("The server is shutting down.", 503)
        return JSONResponse({"ready": True})

    async def server_meta(request: Request) -> Response:
        from importlib.metadata import version

        return JSONResponse({"name": "dispatch", "version": version("dispatch"),
                             "extensions": ["binary_tensor_data"]})

    async def model_meta(request: Request) -> Response:
        try:
            m = _model(state, request)
        except ProtocolError as e:
            return _error(str(e), e.status)
        return JSONResponse({"name": m.name, "versions": [VERSION], "platform": m.platform,
                             "inputs": [t.as_dict() for t in m.inputs],
                             "outputs": [t.as_dict() for t in m.outputs]})

    async def model_ready(request: Request) -> Response:
        try:
            m = _model(state, request)
        except ProtocolError as e:
            return _error(str(e), e.status)
        if state.draining:
            return _error("The server is shutting down.", 503)
        return JSONResponse({"name": m.name, "ready": True})

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        label = name if name in state.models else "_unknown"
        metrics = state.metrics
        t0 = time.perf_counter()
        metrics.requests.labels(model=label).inc()
        metrics.in_flight.labels(model=label).inc()
        try:
            response = await _infer(request)
        finally:
            metrics.in_flight.labels(model=label).dec()
        if response.status_code != 200:
            metrics.errors.labels(model=label, code=str(response.status_code)).inc()
        metrics.latency.labels(model=label).observe(time.perf_counter() - t0)
        with state._count_lock:
            state.answered += 1
        return response

    async def _infer(request: Request) -> Response:
        if state.draining:
            with state._count_lock:
                state.refused += 1
            return _error("The server is shutting down and takes no new requests; retry on another "
                          "instance.", 503)
        try:
            model = _model(state, request)
            body = await _body(request, state.max_body_bytes)
            feeds, doc = decode_request(body, request.headers, model.inputs)
            outputs = await state.run(model.name, feeds)
            content, headers = encode_response(doc, outputs, model.name, VERSION)
        except ProtocolError as e:
            return _error(str(e), e.status)
        except DispatchError as e:
            return _error(str(e).splitlines()[0], 400)
        except Exception as e:  # an internal error: one line, and the server carries on
            return _error(f"Internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                          500)
        return Response(content, headers=headers)

    async def metrics(request: Request) -> Response:
        body, content_type = state.metrics.render()
        return Response(body, headers={"content-type": content_type})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        what = {404: f"No route {request.url.path}; see the Open Inference Protocol's /v2 routes.",
                405: f"{request.method} is not allowed on {request.url.path}."}
        return _error(what.get(exc.status_code, str(exc.detail)), exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for m in state.models.values():  # after uvicorn's graceful wait: runs in flight have finished
            await asyncio.to_thread(m.close)

    model_routes = [("", model_meta, "GET"), ("/ready", model_ready, "GET"), ("/infer", infer, "POST")]
    routes = [Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_meta),
              Route("/metrics", metrics)]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(prefix + suffix, fn, methods=[method]) for suffix, fn, method in model_routes]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})

"""`python -m dispatch serve MODEL [options]`: the Open Inference Protocol server on uvicorn.

Startup loads, plans and compiles the model (and, with --max-batch N, every batch size 1..N) before the port
opens, then prints one line `serving NAME on http://HOST:PORT` (PORT 0: a free port, which the line names).
SIGTERM drains: readiness turns 503, new inference requests get 503 and new connections are refused, requests
in flight finish (up to --drain-timeout-s), the model is closed, one line says how many requests were
answered, and the process exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

from dispatch.errors import DispatchError

__all__ = ["main_serve"]


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise DispatchError(f"{message[0].upper()}{message[1:]}; see 'python -m dispatch serve --help'.")


def _parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="python -m dispatch serve",
                        description="Serve a model on the Open Inference Protocol (KServe v2 REST), its runs "
                                    "pipelined across the plan's targets.")
    p.add_argument("model", help="a .onnx path or a model-zoo name (python -m models list)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--name", help="the model's name in the URLs (default: the file stem or zoo name)")
    p.add_argument("--targets", metavar="NAME=PRESET,...", help="as for 'python -m dispatch'")
    p.add_argument("--strategy", default="optimal", help="optimal|priority|greedy|heft|only:TARGET")
    p.add_argument("--objective", default="latency", choices=("latency", "energy", "edp", "makespan"))
    p.add_argument("--shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="bind an input's shape or a symbolic dimension for the default plan; repeatable")
    p.add_argument("--on-new-shape", default="build", choices=("build", "refuse"),
                   help="a request with unplanned shapes: plan it then (default) or refuse it (400)")
    p.add_argument("--threads", default=str(os.cpu_count() or 1), metavar="N|NAME=N,...",
                   help="thread budget: a total split over the targets, or per target (default: the cores)")
    p.add_argument("--max-in-flight", type=int, default=8, metavar="N",
                   help="runs in flight at once; more requests wait (default 8)")
    p.add_argument("--max-batch", type=int, default=0, metavar="N",
                   help="dynamic batching along the symbolic leading dimension, up to N rows (default off)")
    p.add_argument("--batch-timeout-ms", type=float, default=2.0, metavar="T",
                   help="how long a batch waits to fill (default 2 ms)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (default 64 MiB)")
    p.add_argument("--drain-timeout-s", type=float, default=30.0,
                   help="on SIGTERM, how long requests in flight may take to finish (default 30 s)")
    p.add_argument("--backend", default="dispatch", choices=("dispatch", "onnxruntime"),
                   help="dispatch (default), or one plain onnxruntime session (the benchmark's baseline)")
    return p


def _threads(text: str) -> int | dict[str, int]:
    if text.isdigit():
        return int(text)
    out: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, n = item.partition("=")
        if not sep or not n.isdigit():
            raise DispatchError(f"Cannot read --threads item '{item}'; write a total (2) or NAME=N,... "
                                "(gpu=1,asic=1).")
        out[name] = int(n)
    return out


def _model(args: argparse.Namespace):  # noqa: ANN202
    from dispatch.serve.app import DispatcherModel, OrtModel

    if args.backend == "onnxruntime":
        from dispatch.frontend import load_model_proto

        _, path = load_model_proto(args.model)
        if path is None:
            raise DispatchError(f"The onnxruntime backend needs a model file; '{args.model}' has none.")
        total = _threads(args.threads)
        return OrtModel(str(path), args.name or os.path.splitext(os.path.basename(path))[0],
                        total if isinstance(total, int) else sum(total.values()), args.max_in_flight)
    from dispatch.api import Dispatcher
    from dispatch.frontend import parse_shapes
    from targets.base import parse_targets

    targets = parse_targets(args.targets) if args.targets is not None else None  # built (and owned) there
    d = Dispatcher(args.model, targets, strategy=args.strategy, objective=args.objective,
                   shapes=parse_shapes(args.shape) or None, on_new_shape=args.on_new_shape,
                   threads=_threads(args.threads), max_in_flight=args.max_in_flight)
    try:
        if args.max_batch:
            lead = [s.dims[0] for s in d.input_specs if s.dims]
            if not lead or not isinstance(lead[0], str):
                raise DispatchError(f"--max-batch needs a symbolic leading dimension on the inputs of "
                                    f"'{args.model}', which has none; serve without --max-batch.")
            d.warmup([{lead[0]: b} for b in range(1, args.max_batch + 1)])
        return DispatcherModel(d, args.name)
    except BaseException:
        d.close()
        raise


def main_serve(argv: Sequence[str]) -> int:
    """Exit 0 after a clean shutdown (SIGTERM or SIGINT); DispatchError for bad arguments (exit 2)."""
    args = _parser().parse_args(list(argv))
    import uvicorn

    from dispatch.serve.app import AppState, create_app

    if args.max_body_mb <= 0 or args.max_in_flight < 1 or args.max_batch < 0 or args.drain_timeout_s < 0:
        raise DispatchError("--max-body-mb, --max-in-flight and --drain-timeout-s must be positive and "
                            "--max-batch >= 0; fix them.")
    if args.max_batch == 1:
        raise DispatchError("--max-batch 1 batches nothing; give 2 or more, or leave it out.")
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit it: a response's head and body, written separately, leave at once
        # instead of the body waiting for the client's delayed ACK (40 ms per request without it)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((args.host, args.port))
        sock.listen(2048)  # connections queue from now on, before uvicorn takes the socket
    except (OSError, OverflowError) as e:
        sock.close()
        why = getattr(e, "strerror", None) or str(e).rstrip(".")
        raise DispatchError(f"Cannot listen on {args.host}:{args.port} ({why}); choose another --host or "
                            "--port.") from None
    model = _model(args)
    state = AppState({model.name: model}, int(args.max_body_mb * 2**20), args.max_batch,
                     args.batch_timeout_ms / 1e3)
    config = uvicorn.Config(create_app(state), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=args.drain_timeout_s)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            state.draining = True  # before uvicorn stops: requests on open connections get 503
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:  # drained as asked: exit 0 rather than re-raising it at the end
                self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    host, port = sock.getsockname()[:2]
    print(f"serving {model.name} on http://{host}:{port} ({model.platform})", flush=True)
    Server(config).run(sockets=[sock])
    print(f"stopped: answered {state.answered} inference requests ({state.refused} refused while draining)",
          file=sys.stderr, flush=True)
    return 0

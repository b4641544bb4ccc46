"""Load on `python -m dispatch serve`: closed-loop clients on 127.0.0.1, against a plain onnxruntime session
behind the same server code (`--backend onnxruntime`) as the baseline.

    python benchmarks/bench_serve.py [--model tiny_cnn] [--strategy only:gpu] [--clients 1,4,16]
                                     [--requests 10000] [--duration 120] [--write]

Both servers run at once (each `--threads 1`), idle while the other is measured; for each client count the
two are measured back to back, so drifts in background load hit both alike. Each client is a thread with one
persistent HTTP/1.1 connection (http.client) sending the next request as soon as the last is answered, with
the binary tensor data extension both ways; a run stops after `--requests` requests or `--duration` seconds,
whichever comes first. Latency is the client's wall time per request. The server's RSS is read from
/proc/PID/status every 0.5 s. `--write` writes benchmarks/results/serve.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dispatch.runtime import host_description  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "serve.md"


class Server:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "dispatch", "serve", *args, "--port", "0"],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 300)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("serving "):
            self.proc.kill()
            raise SystemExit(f"server did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        host, port = line.split("http://")[1].split()[0].split(":")
        self.host, self.port, self.name = host, int(port), line.split()[1]

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            kb = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
        return kb / 1024

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def request_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                "Content-Type": "application/octet-stream"}


def load(server: Server, clients: int, requests: int, duration: float, body: bytes,
         headers: dict[str, str]) -> dict[str, object]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    issued = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + duration
    path = f"/v2/models/{server.name}/infer"

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        clock = time.perf_counter
        while time.monotonic() < deadline:
            with lock:
                if issued[0] >= requests:
                    break
                issued[0] += 1
            t0 = clock()
            try:
                conn.request("POST", path, body, headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
            latencies[k].append(clock() - t0)
            errors[k] += not ok
        conn.close()

    rss: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            rss.append((time.monotonic() - t0, server.rss_mib()))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 120)
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return {"latencies": [x for per in latencies for x in per], "seconds": seconds, "errors": sum(errors),
            "rss": rss}


def summarise(backend: str, clients: int, slices: list[dict]) -> dict[str, object]:
    lat = sorted(x for sl in slices for x in sl["latencies"])
    seconds = sum(sl["seconds"] for sl in slices)
    rss = [r for sl in slices for _, r in sl["rss"]]
    return {"backend": backend, "clients": clients, "requests": len(lat), "seconds": seconds,
            "throughput": len(lat) / seconds, "p50_ms": 1e3 * lat[len(lat) // 2],
            "p99_ms": 1e3 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "errors": sum(sl["errors"] for sl in slices), "rss_start": rss[0], "rss_end": rss[-1],
            "rss_max": max(rss), "slice_rates": [len(sl["latencies"]) / sl["seconds"] for sl in slices]}


def in_process(model: str, strategy: str, rounds: int = 10, n: int = 300) -> dict[str, float]:
    """Median microseconds per call, without HTTP, of what each server does per request: the baseline's
    session.run through its one-thread pool, and Dispatcher.submit(...).result() (feed check, pipeline hop),
    beside the plain calls; rounds interleave the four."""
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort

    from dispatch.api import Dispatcher
    from models import build

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(build(model)), so, providers=["CPUExecutionProvider"])
    x = {"input": np.zeros((1, 3, 32, 32), np.float32)}
    with Dispatcher(model, strategy=strategy, threads=1) as d, ThreadPoolExecutor(1) as pool:
        fns = {"session.run": lambda: sess.run(None, x), "Dispatcher.run": lambda: d.run(x),
               "pool.submit(session.run)": lambda: pool.submit(sess.run, None, x).result(),
               "Dispatcher.submit": lambda: d.submit(x).result()}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for f in fns.values():
            for _ in range(n):
                f()
        for _ in range(rounds):
            for k, f in fns.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    f()
                times[k].append((time.perf_counter() - t0) / n * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny_cnn")
    p.add_argument("--strategy", default="only:gpu", help="default only:gpu: the one-segment plan")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--requests", type=int, default=10000, help="per run (default 10,000)")
    p.add_argument("--duration", type=float, default=120.0, help="longest run in seconds (default 120)")
    p.add_argument("--slices", type=int, default=20, help="alternations of the two servers per client count")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    common = [args.model, "--threads", "1", "--max-in-flight", "8"]
    servers = {"onnxruntime session": Server([*common, "--backend", "onnxruntime"]),
               "dispatch": Server([*common, "--strategy", args.strategy])}
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    body, headers = request_body(x)
    load_before = os.getloadavg()[0]
    rows: list[dict[str, object]] = []
    paired: dict[int, list[float]] = {}
    try:
        for c in counts:
            slices: dict[str, list[dict]] = {name: [] for name in servers}
            for server in servers.values():
                load(server, c, min(200, args.requests), 30, body, headers)  # warm-up
            per_slice = -(-args.requests // args.slices)
            for _ in range(args.slices):  # A B A B ...: both under the same background load
                for name, server in servers.items():
                    slices[name].append(load(server, c, per_slice, args.duration / args.slices, body,
                                             headers))
            for name in servers:
                r = summarise(name, c, slices[name])
                rows.append(r)
                print(f"{name:20s} clients {c:2d}: {r['requests']} requests, {r['throughput']:.0f}/s, "
                      f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, errors {r['errors']}, RSS "
                      f"{r['rss_start']:.0f} -> {r['rss_end']:.0f} MiB (max {r['rss_max']:.0f})", flush=True)
            a, b = (slices[n] for n in servers)
            paired[c] = [len(y["latencies"]) / y["seconds"] / (len(x["latencies"]) / x["seconds"])
                         for x, y in zip(a, b, strict=True)]
    finally:
        codes = {name: s.stop() for name, s in servers.items()}
    micro = in_process(args.model, args.strategy)
    load_after = os.getloadavg()[0]
    lines = [
        "# Serving under load: dispatch serve against a plain onnxruntime session behind the same server",
        "",
        f"`python benchmarks/bench_serve.py --model {args.model} --strategy {args.strategy} --clients "
        f"{args.clients} --requests {args.requests} --duration {args.duration:g} --write`, measured on "
        f"{host_description()}, 1-minute load average {load_before:.1f} before and {load_after:.1f} after "
        "(the machine is shared with other work, and the clients run on the same 2 cores as the server).",
        "",
        "Closed-loop clients on 127.0.0.1, one persistent connection each, batch-1 requests with binary "
        "tensors; every server `--threads 1 --max-in-flight 8`. RSS of the server process at the run's "
        "start and end, and its maximum. Servers exited with "
        + ", ".join(f"{k}: {v}" for k, v in codes.items()) + " on SIGTERM.",
        "",
        f"Each client count runs {args.slices} slices per server, alternating the servers (A B A B ...); "
        "`vs baseline` is the median over slices of dispatch's throughput over the baseline's in the slice "
        "beside it.",
        "",
        "| backend | clients | requests | throughput (req/s) | vs baseline | p50 (ms) | p99 (ms) | errors | "
        "RSS start -> end (max), MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "1.00x" if r["backend"] != "dispatch" else f"{statistics.median(paired[r['clients']]):.2f}x"
        lines.append(f"| {r['backend']} | {r['clients']} | {r['requests']} | {r['throughput']:.0f} | "
                     f"{ratio} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['errors']} | {r['rss_start']:.0f} -> {r['rss_end']:.0f} ({r['rss_max']:.0f}) |")
    total, errs = sum(r["requests"] for r in rows), sum(r["errors"] for r in rows)
    lines += ["", "dispatch / baseline throughput per slice: " + "; ".join(
        f"{c} clients " + ", ".join(f"{x:.2f}" for x in v) for c, v in paired.items())
        + f". Errors: {errs} in {total} requests.",
        "", "Without HTTP, in one process (median microseconds per call, batch 1, 1 thread): "
        + ", ".join(f"{k} {v:.1f}" for k, v in micro.items())
        + ". So dispatch's own cost per request is "
        f"{micro['Dispatcher.submit'] - micro['pool.submit(session.run)']:.0f} us over the baseline's path."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pipelined execution (dispatch/pipeline.py) against one-at-a-time runs, on a two-target plan.

    python benchmarks/bench_pipeline.py [--model tiny_cnn] [--batch 32] [--strategy only:asic]
                                        [--requests 200] [--rounds 5] [--write]

Three ways to run the same `requests` feeds through the same plan, each in a fresh Dispatcher:
  serial, 2+2 threads   Dispatcher.run one request at a time; every segment gets both cores (gpu sessions 2
                        onnxruntime threads, the ASIC's BLAS 2 threads)
  serial, 1+1 threads   the same with one thread per target
  pipelined, 1+1        Dispatcher.submit with up to 8 runs in flight: one worker per target, 1 thread each
Rounds alternate the three (ABC ABC ...) so that drifts in background load hit all alike; the figures are
medians over rounds. The bound a two-stage pipeline can reach over its own serial run is
(busy time of all targets) / (busy time of the busiest target), from the per-target busy seconds the
pipeline measured. Outputs of the pipelined runs are checked bit for bit against the serial ones.
`--write` writes benchmarks/results/pipeline.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dispatch.api import Dispatcher  # noqa: E402
from dispatch.runtime import host_description  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline.md"
CONFIGS = {"serial, 2+2 threads": ({"gpu": 2, "asic": 2}, False),
           "serial, 1+1 threads": ({"gpu": 1, "asic": 1}, False),
           "pipelined, 1+1 threads": ({"gpu": 1, "asic": 1}, True)}


Feeds = list[dict[str, np.ndarray]]


def one_round(args: argparse.Namespace, threads: dict[str, int], pipelined: bool,
              feeds: Feeds) -> tuple[float, Feeds, dict[str, float]]:
    with Dispatcher(args.model, strategy=args.strategy, shapes={"batch": args.batch}, threads=threads,
                    max_in_flight=8) as d:
        for f in feeds[:3]:  # warm-up
            d.run(f)
        t0 = time.perf_counter()
        if pipelined:
            futures = [d.submit(f) for f in feeds]  # submit waits while 8 are in flight
            outs = [f.result() for f in futures]
            busy = d.pipeline.busy_seconds()
        else:  # Dispatcher.run's steps one by one (the same calls Runtime.run makes), timed per target
            rt, clock = d._default.runtime, time.perf_counter
            busy = dict.fromkeys(rt.step_targets, 0.0)
            outs = []
            for f in feeds:
                d._checker.check(f)  # as Dispatcher.run does
                env = rt.begin(f)
                for i, target in enumerate(rt.step_targets):
                    t1 = clock()
                    rt.run_step(i, env)
                    busy[target] += clock() - t1
                outs.append(rt.finish(env))
        return time.perf_counter() - t0, outs, busy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny_cnn")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--strategy", default="only:asic")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((args.batch, 3, 32, 32), dtype=np.float32)}
             for _ in range(args.requests)]
    with Dispatcher(args.model, strategy=args.strategy, shapes={"batch": args.batch}) as d:
        segments = [s.target for s in d.plan.segments]
    load_before = os.getloadavg()[0]
    rates: dict[str, list[float]] = {k: [] for k in CONFIGS}
    bounds: list[float] = []
    busy_per_request: dict[str, dict[str, list[float]]] = {k: {} for k in CONFIGS}
    identical = True
    for r in range(args.rounds):
        reference = None
        for name, (threads, pipelined) in CONFIGS.items():
            seconds, outs, busy = one_round(args, threads, pipelined, feeds)
            rates[name].append(args.requests / seconds)
            for t, v in busy.items():
                busy_per_request[name].setdefault(t, []).append(v / args.requests)
            if name == "serial, 1+1 threads":
                reference = outs
            if pipelined:
                bounds.append(sum(busy.values()) / max(busy.values()))
                identical &= all(np.array_equal(a["output"], b["output"]) for a, b in zip(outs, reference,
                                                                                            strict=True))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()), flush=True)
    load_after = os.getloadavg()[0]
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med["serial, 1+1 threads"]
    lines = [
        "# Pipelined execution against one-at-a-time runs",
        "",
        f"`python benchmarks/bench_pipeline.py --model {args.model} --batch {args.batch} --strategy "
        f"{args.strategy} --requests {args.requests} --rounds {args.rounds} --write`, measured on "
        f"{host_description()}, 1-minute load average {load_before:.1f} before and {load_after:.1f} after "
        "(the machine is shared).",
        "",
        f"Plan: {len(segments)} segments on {' -> '.join(segments)}; {args.requests} requests of batch "
        f"{args.batch} per round; medians over {args.rounds} rounds.",
        "",
        "| how | requests/s (median) | rounds | vs serial 1+1 |",
        "|---|---|---|---|",
    ]
    for k, v in rates.items():
        lines.append(f"| {k} | {med[k]:.0f} | {', '.join(f'{x:.0f}' for x in v)} | {med[k] / base:.2f}x |")
    lines += [
        "",
        f"Pipeline bound from the measured busy time per target (all targets / the busiest): "
        f"{statistics.median(bounds):.2f}x. Pipelined outputs bit-identical to serial: "
        f"{'yes' if identical else 'NO'}.",
    ]
    used = sorted(set(segments))
    lines += ["", "Busy time per request and target (median over rounds; a step is the transfers before a "
              "segment and the segment):", "", "| how | " + " | ".join(used) + " |",
              "|---|" + "---|" * len(used)]
    for k, per in busy_per_request.items():
        cells = [f"{statistics.median(per[t]) * 1e3:.2f} ms" for t in used]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

"""Soak and fault injection (issue 14, item 6); writes benchmarks/results/soak.md.

    python benchmarks/bench_soak.py --runs 10000

8 threads share Dispatchers over tiny_cnn (symbolic batch: batches 1 to 4, each its own plan) and
tiny_transformer, under optimal (GPU and ASIC segments) and only:asic. Fault injection:
  * builds that fail: tiny_cnn's Dispatchers plan through a wrapper that raises DispatchError for batch 3,
    so every run with batch 3 is an expected refusal (and must leave no build lock behind);
  * close() during runs: a further Dispatcher is closed while the threads run on it; its runs after close
    must raise DispatchError ("was closed").
Every output is compared (exactly) with a serial run of the same feeds before the threads start. Measured:
RSS (VmRSS), open file descriptors (/proc/self/fd), threads (threading.active_count) before and after, and
whether any Dispatcher still holds a build lock (Dispatcher._building).
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dispatch import Dispatcher, DispatchError

ROOT = Path(__file__).resolve().parents[1]
THREADS = 8
FAILING_BATCH = 3


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def failing_planner(graph, targets, **kwargs):
    """dispatch.partition.plan, except for batch FAILING_BATCH: an injected build failure."""
    from dispatch.partition import plan

    shape = graph.inputs[0].shape
    if shape and shape[0] == FAILING_BATCH:
        raise DispatchError(f"Injected build failure for batch {FAILING_BATCH}.")
    return plan(graph, targets, **kwargs)


def _cases(seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(model, feeds): tiny_cnn at batches 1 to 4, tiny_transformer's one shape, two feeds each."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(2):
        for batch in (1, 2, 3, 4):
            cases.append(("tiny_cnn", {"input": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}))
        cases.append(("tiny_transformer", {"input_ids": rng.integers(0, 100, (1, 16)).astype(np.int64)}))
    return cases


def soak(runs: int, threads: int = THREADS) -> dict:
    cases = _cases()
    for m in ("tiny_cnn", "tiny_transformer"):  # warm-up: imports, onnxruntime's and BLAS's pools, caches
        for s in ("optimal", "only:asic"):
            with Dispatcher(m, strategy=s) as d:
                d.run(next(f for cm, f in cases if cm == m))
    gc.collect()
    before = {"rss": rss_bytes(), "fds": fds(), "threads": threading.active_count()}
    t0 = time.perf_counter()
    dispatchers = {(m, s): Dispatcher(m, strategy=s, planner=failing_planner if m == "tiny_cnn" else None)
                   for m in ("tiny_cnn", "tiny_transformer") for s in ("optimal", "only:asic")}
    expected = {}  # serial runs: (model, strategy, case index) -> outputs, or None for a refused build
    for (m, s), d in dispatchers.items():
        for i, (cm, feeds) in enumerate(cases):
            if cm == m:
                try:
                    expected[m, s, i] = d.run(feeds)
                except DispatchError:
                    expected[m, s, i] = None
    keys = sorted(expected)
    doomed = Dispatcher("tiny_cnn", strategy="optimal")  # closed while the threads run on it
    doomed_feeds = cases[0][1]
    tally: Counter = Counter()
    lock = threading.Lock()
    closed_at = runs // 2
    marks = {runs // 10, runs // 4, runs // 2, 3 * runs // 4, runs}  # RSS sampled after this many runs
    rss_during: dict[int, int] = {}

    def one(n: int) -> None:
        outcome = "ok"
        try:
            if n % 10 == 0:  # every tenth run goes to the Dispatcher that gets closed half way
                if n == closed_at:
                    doomed.close()
                    outcome = "close() called"
                else:
                    try:
                        doomed.run(doomed_feeds)
                        outcome = "ok (doomed Dispatcher, before close)"
                    except DispatchError as e:
                        if "closed" not in str(e):
                            raise
                        outcome = "expected refusal: run after close()"
            else:
                m, s, i = keys[(n - n // 10 - 1) % len(keys)]  # the j-th run not sent to doomed
                want = expected[m, s, i]
                try:
                    got = dispatchers[m, s].run(cases[i][1])
                except DispatchError as e:
                    if want is not None or "Injected" not in str(e):
                        raise
                    outcome = "expected refusal: injected build failure"
                else:
                    if want is None or any(not np.array_equal(got[k], want[k], equal_nan=True) for k in want):
                        outcome = "unexpected: result differs from the serial run"
        except Exception as e:  # noqa: BLE001 - counted: any exception here is an unexpected error
            outcome = f"unexpected: {type(e).__name__}: {e}"
        with lock:
            tally[outcome] += 1
            done = sum(tally.values())
            if done in marks:
                rss_during[done] = rss_bytes()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(runs)))
    seconds = time.perf_counter() - t0
    leaked_locks = sum(len(d._building) for d in (*dispatchers.values(), doomed))
    for d in dispatchers.values():
        d.close()
    doomed.close()
    dispatchers.clear()
    expected.clear()
    gc.collect()
    after = {"rss": rss_bytes(), "fds": fds(), "threads": threading.active_count()}
    unexpected = sum(v for k, v in tally.items() if k.startswith("unexpected"))
    refusals = sum(v for k, v in tally.items() if k.startswith("expected refusal"))
    return {"runs": runs, "threads": threads, "seconds": seconds, "tally": tally, "unexpected": unexpected,
            "refusals": refusals, "before": before, "after": after, "leaked_locks": leaked_locks,
            "rss_during": rss_during}


def write(result: dict, out: Path) -> str:
    b, a = result["before"], result["after"]
    mib = 1 << 20
    lines = [
        "# Soak and fault injection (issue 14, item 6)",
        "",
        f"`python benchmarks/bench_soak.py --runs {result['runs']}`: {result['threads']} threads, "
        f"{result['seconds']:.1f} s wall on this machine (measured). Models tiny_cnn (batches 1-4, batch "
        f"{FAILING_BATCH} builds fail by injection) and tiny_transformer, strategies optimal and only:asic; "
        "every tenth run goes to a Dispatcher closed half way. Outputs compared exactly with serial runs. "
        "RSS from /proc/self/status VmRSS, descriptors from /proc/self/fd, threads from "
        "threading.active_count(); 'before' is after a warm-up (one Dispatcher per model and strategy "
        "built, run and closed: imports, onnxruntime's and the BLAS's pools) and before the soak's "
        "Dispatchers are built, 'after' after all are closed.",
        "",
        "| runs | expected refusals | unexpected errors | RSS before (MiB) | RSS after (MiB) | fds before | "
        "fds after | threads before | threads after | build locks left |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {result['runs']} | {result['refusals']} | {result['unexpected']} | {b['rss'] / mib:.0f} | "
        f"{a['rss'] / mib:.0f} | {b['fds']} | {a['fds']} | {b['threads']} | {a['threads']} | "
        f"{result['leaked_locks']} |",
        "",
        "RSS during the soak (MiB, after N runs): "
        + ", ".join(f"{n}: {v / mib:.0f}" for n, v in sorted(result["rss_during"].items())) + ".",
        "",
        "| outcome | runs |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(result["tally"].items())),
        "",
    ]
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.md")
    args = ap.parse_args()
    print(write(soak(args.runs), args.out))


if __name__ == "__main__":
    main()

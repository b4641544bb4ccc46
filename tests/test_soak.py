"""The soak harness of benchmarks/bench_soak.py, short (issue 14, item 6): 8 threads, mixed shapes, ASIC and
GPU segments, injected build failures, close() during runs; nothing unexpected, nothing leaked."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_soak  # noqa: E402


def test_soak_200_runs_from_8_threads():
    r = bench_soak.soak(200)
    t = r["tally"]
    assert r["unexpected"] == 0, t  # covers results that differ from the serial runs
    # runs 0..199: every tenth (20) goes to the Dispatcher closed at run 100; the other 180 cycle 9 times
    # over 20 (model, strategy, feed) keys: tiny_cnn 2 strategies x 8 feeds, 4 of them batch 3 (injected
    # failure), tiny_transformer 2 x 2: 9 * 4 = 36 refused, 180 - 36 = 144 equal to the serial run
    assert t["close() called"] == 1
    assert t["expected refusal: injected build failure"] == 36
    assert t["ok"] == 144
    assert t["ok (doomed Dispatcher, before close)"] + t["expected refusal: run after close()"] == 19
    assert r["leaked_locks"] == 0  # failed builds leave no lock behind
    assert r["after"]["fds"] <= r["before"]["fds"], (r["before"], r["after"])
    assert r["after"]["threads"] <= r["before"]["threads"], (r["before"], r["after"])

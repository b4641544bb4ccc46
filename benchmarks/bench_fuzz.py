"""The fuzz properties of tests/test_fuzz.py with a long budget; writes benchmarks/results/fuzz.md.

    python benchmarks/bench_fuzz.py --examples 2000

Counts every case: random valid graphs (each planned with 6 strategies: one outcome per strategy) passed or
refused (by the refusal sentence's first words), and byte-level mutations loaded, ran, or refused, with the
CLI's exit codes. A failure (an output off onnxruntime's, or any exception but DispatchError) stops the run
with hypothesis's minimal reproducer. Derandomized: the same --examples give the same cases.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_fuzz as tf  # noqa: E402  (the generators and checks live with the tests)


def run(examples: int) -> tuple[Counter, Counter, float, float]:
    graphs, mutations = Counter(), Counter()
    common = dict(derandomize=True, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

    @settings(max_examples=examples, **common)
    @given(tf.graphs())
    def fuzz_graphs(case):
        graphs["graphs"] += 1
        tf.check_graph(*case, tally=graphs)

    @settings(max_examples=examples, **common)
    @given(tf.mutated())
    def fuzz_mutations(data):
        mutations["mutations"] += 1
        tf.check_mutation(data, tally=mutations)

    t0 = time.perf_counter()
    fuzz_graphs()
    t1 = time.perf_counter()
    fuzz_mutations()
    return graphs, mutations, t1 - t0, time.perf_counter() - t1


def table(counter: Counter, total_key: str) -> list[str]:
    rows = [f"| {total_key} (cases) | {counter.pop(total_key, 0)} |"]
    rows += [f"| {k} | {v} |" for k, v in sorted(counter.items())]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=500, help="hypothesis examples per property")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.md")
    args = ap.parse_args()
    graphs, mutations, tg, tm = run(args.examples)
    lines = [
        "# Fuzzing (issue 14, item 5)",
        "",
        f"`python benchmarks/bench_fuzz.py --examples {args.examples}` (hypothesis, derandomized; measured "
        f"on this machine: graphs {tg:.0f} s, mutations {tm:.0f} s). Failures: 0 (a failure stops the run).",
        "",
        "Random valid graphs (1 to 4 ops from tests/test_fuzz.py's OPS; float32, float16, int64), each run "
        "under optimal, priority, greedy, heft, only:gpu and only:asic on the default targets and compared "
        "with onnxruntime (dispatch.validate.compare):",
        "",
        "| outcome | count |",
        "|---|---|",
        *table(graphs, "graphs"),
        "",
        "Byte-level mutations (flip, insert, delete, set; 1 to 4 per case) of two small valid models, "
        "through dispatch.frontend.load, Dispatcher(...).run and the CLI's main():",
        "",
        "| outcome | count |",
        "|---|---|",
        *table(mutations, "mutations"),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

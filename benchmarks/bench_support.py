"""Per-node support check: `unsupported_reason` over every node of synthetic graphs of 10k and 50k nodes.

    python benchmarks/bench_support.py [--sizes 10000,50000] [--write]

For each size (models/synthetic.py, seed 0) and each onnxruntime-backed target (gpu=h100-sxm, whose
planned provider is CUDA's coverage plus, on a machine without it, what runs here; cpu=host-cpu, the local
CPU provider), the check is timed twice: cold (every cache of targets/support.py emptied first: each
distinct signature is decided once, by a kernel-table lookup, a one-node onnxruntime session or an ONNX
function expansion) and warm (every answer cached). Reported: wall seconds, microseconds per node, the
distinct signatures, sessions built (probes) and expansions. Wall times on this machine, measured.
`--write` writes benchmarks/results/support.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime  # noqa: E402

from dispatch.frontend import load  # noqa: E402
from models.synthetic import synthetic_model  # noqa: E402
from targets import support  # noqa: E402
from targets.base import make_target  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "support.md"


def _clear() -> None:
    support.local_support.cache_clear()
    support.gpu_support.cache_clear()


def run(sizes: list[int]) -> list[str]:
    rows = []
    for n in sizes:
        g = load(synthetic_model(n))
        for name, preset in (("gpu", "h100-sxm"), ("cpu", "host-cpu")):
            _clear()
            t = make_target(name, preset, profile=False)
            times = []
            for _ in ("cold", "warm"):
                t0 = time.perf_counter()
                refused = sum(t.unsupported_reason(node) is not None for node in g.nodes)
                times.append(time.perf_counter() - t0)
            sups = [t.local] + ([t.planned] if name == "gpu" else [])
            sigs = "+".join(str(len(s._kernel)) for s in sups)
            probes = sum(s.probes for s in sups)
            expansions = sum(s.expansions for s in sups)
            rows.append(f"| {len(g.nodes):,} | {name} ({t.provider}) | {times[0]:.3f} s | "
                        f"{times[0] / len(g.nodes) * 1e6:.1f} | {times[1]:.3f} s | "
                        f"{times[1] / len(g.nodes) * 1e6:.1f} | {sigs} | {probes} | {expansions} | "
                        f"{refused} |")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    head = ["| nodes | target | cold | µs/node | warm | µs/node | signatures | probes | expansions "
            "| refused |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(head))
    rows = run([int(s) for s in args.sizes.split(",")])
    if args.write:
        load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        RESULTS.write_text(
            "# Per-node support check (benchmarks/bench_support.py)\n\n"
            f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"onnxruntime {onnxruntime.__version__}, load average {load_avg:.1f} at the start (shared "
            "machine). Wall times of `unsupported_reason` over every node; cold: caches emptied first; "
            "signatures: distinct kernel-lookup keys per Support (gpu: here + planned CUDA).\n\n"
            + "\n".join(head + rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

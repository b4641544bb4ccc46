"""What the ASIC's numerics cost: whole zoo models run with every op the ASIC takes on it, emulated
(bf16 operands, fp32 accumulation on tpu-v4-like) against exact (float32), both against onnxruntime's
float32 run of the whole model on the same generated feeds (seed 0). Per output: max abs error, max
relative error (elementwise, floored at atol), the error as a fraction of the output's scale max|r|, and
the precision-derived tolerance rtol = u·max(20, 8·sqrt(L)) (dispatch/validate.py, docs/numerics.md).

    python benchmarks/bench_asic_numerics.py [--models resnet50,bert,resnet50-int8] [--out PATH]

Every number is measured here (NumPy kernels on this machine's CPU); the tolerance is derived.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dispatch.api import Dispatcher  # noqa: E402
from models.zoo import build  # noqa: E402

TARGETS = {"asic": "tpu-v4-like", "gpu": "h100-sxm"}


def _row(model: str, mode: str) -> list[str]:
    with Dispatcher(str(build(model)), TARGETS, strategy="only:asic", asic_numerics=mode) as d:
        on_asic = sum(1 for t in d.plan.assignment.values() if t == "asic")
        t0 = time.perf_counter()
        v = d.validate()
        secs = time.perf_counter() - t0
    rows = []
    for o in v.outputs:
        rtol = o.tolerances[0] if o.tolerances else v.rtol
        why = o.raised_for or "float32 default"
        rows.append([model, mode, o.name, f"{on_asic}", f"{o.max_abs_err:.3g}", f"{o.max_rel_err:.3g}",
                     f"{o.scale:.3g}", f"{o.max_abs_err / o.scale if o.scale else 0:.3g}", f"{rtol:.3g}", why,
                     "PASS" if o.ok else "FAIL", f"{secs:.1f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50,bert,resnet50-int8")
    p.add_argument("--out", default="benchmarks/results/asic_numerics.md")
    args = p.parse_args(argv)
    head = ["model", "numerics", "output", "nodes on asic", "max abs err", "max rel err", "max abs ref",
            "abs err / scale", "rtol", "tolerance from", "verdict", "run+validate s"]
    lines = [f"# ASIC numerics: emulated bf16 against float32 (measured {time.strftime('%Y-%m-%d')}, "
             f"{platform.machine()}, numpy {np.__version__})", "",
             "`python benchmarks/bench_asic_numerics.py`. Plan `only:asic` on tpu-v4-like (h100-sxm takes "
             "what the ASIC cannot run); reference: onnxruntime CPU, whole model, float32, generated feeds "
             "(seed 0). "
             "Tolerance rtol = u·max(20, 8·sqrt(L)), u = 2^-8 for bf16, L = emulated layers on the output's "
             "longest path (docs/numerics.md); exact runs keep rtol 1e-4.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in args.models.split(","):
        for mode in ("emulate", "exact"):
            for r in _row(model, mode):
                lines.append("| " + " | ".join(r) + " |")
                print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

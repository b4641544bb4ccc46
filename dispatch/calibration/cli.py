"""`python -m dispatch calibrate [--target cpu] [--out PATH] [--quick] [--verbose]`: fit and print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dispatch.calibration.run import calibrate
from dispatch.errors import DispatchError
from targets.profile import profile_dir

__all__ = ["main_calibrate"]

def main_calibrate(argv: Sequence[str] | None = None) -> int:
    """`python -m dispatch calibrate [--target cpu] [--out PATH] [--quick]`; prints what it fitted."""
    ap = argparse.ArgumentParser(
        prog="python -m dispatch calibrate",
        description="Fit the cost model of an onnxruntime target to this machine.",
    )
    ap.add_argument(
        "--target",
        default="cpu",
        help="cpu (the host-cpu preset), a gpu preset (needs a GPU provider) or a spec .toml",
    )
    ap.add_argument("--out", default=None, help=f"profile .json or directory (default {profile_dir()})")
    ap.add_argument("--quick", action="store_true", help="one pass instead of three, fewer repeats (~10 s)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print each case's measured time")
    args = ap.parse_args(list(argv) if argv is not None else None)
    try:
        prof = calibrate(args.target, args.out, args.quick, log=print if args.verbose else None)
    except DispatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"calibrated {prof.spec} on {prof.provider} (onnxruntime {prof.ort_version}) in "
        f"{prof.residuals['seconds']} s; saved {prof.path}"
    )
    print(f"  session call {prof.session_us:.1f} µs, dispatch per op {prof.dispatch_us:.2f} µs")
    print(f"  {'class':<14}{'compute':>9}{'memory':>9}{'fixed µs':>10}{'cases':>7}{'rms log err':>13}")
    for cls, f in prof.classes.items():
        print(
            f"  {cls:<14}{f.compute:>9.3f}{f.memory:>9.3f}{f.overhead_us:>10.2f}{f.cases:>7}"
            f"{f.rms_log_error:>13.3f}"
        )
    print("  kernel busy-time factors: " + ", ".join(f"{k} {v:.2f}" for k, v in prof.kernel_scale.items()))
    r = prof.residuals
    print(
        f"  all cases: rms log error {r['rms_log_error']:.3f}, "
        f"worst |rel err| {r['max_abs_relative_error']:.0%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main_calibrate())

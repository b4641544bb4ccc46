"""`python -m dispatch sweep CONFIG.toml [--out DIR] [--workers N] [--ray [ADDRESS]]` and
`python -m dispatch plot DIR`. dispatch/cli.py hands these subcommands here and turns DispatchError into
one sentence on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dispatch.errors import DispatchError

__all__ = ["main_sweep", "main_plot"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors are bad input: one sentence, exit 2
        sub = self.prog.split()[-1]
        raise DispatchError(f"{message[0].upper()}{message[1:]}; see python -m dispatch {sub} --help.")


def main_sweep(argv: Sequence[str]) -> int:
    ap = _Parser(prog="python -m dispatch sweep",
                 description="Plan (and optionally run) every point of a design-space sweep; "
                             "see docs/sweeps.md.")
    ap.add_argument("config", help="the sweep's TOML config")
    ap.add_argument("--out", help="results folder (default sweep-NAME); reruns run only missing points")
    ap.add_argument("--workers", type=int, help="local worker processes (default: the CPUs); 1: in-process")
    ap.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="run the points as Ray tasks on the cluster at ADDRESS, or on a local one")
    ap.add_argument("--no-plots", action="store_true", help="skip drawing the plots")
    args = ap.parse_args(list(argv))
    from dispatch.sweep.runner import run

    res = run(args.config, args.out, workers=args.workers, ray=args.ray, progress=None,
              plots=not args.no_plots)
    errors = sum(1 for r in res.rows if r.get("error"))
    points = len({r["point"] for r in res.rows})
    print(f"{points} points ({res.ran} run now, {res.skipped} from earlier runs), {len(res.rows)} rows"
          f"{f', {errors} with an error' if errors else ''}, in {res.seconds:.1f} s -> {res.out}")
    for f in res.files:
        if f.suffix in (".parquet", ".csv") or f.suffix == ".png":
            print(f"  {f}")
    return 0


def main_plot(argv: Sequence[str]) -> int:
    ap = _Parser(prog="python -m dispatch plot", description="Redraw a sweep's plots from its results.")
    ap.add_argument("results", help="the sweep's --out folder")
    args = ap.parse_args(list(argv))
    from dispatch.sweep.plot import plot

    for f in plot(args.results):
        print(f, file=sys.stdout)
    return 0

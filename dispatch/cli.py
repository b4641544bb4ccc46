"""Command line: argument parsing and rendering choices only. Exit codes: 0 done, 2 bad input, 1 internal."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dispatch.errors import DispatchError

__all__ = ["main"]


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one sentence, exit 2, no traceback
        raise DispatchError(f"{message[0].upper()}{message[1:]}; see 'python -m dispatch --help'.")


def _parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="python -m dispatch",
                        description="Analyse an ONNX model, place its operators on GPU and ASIC targets, "
                                    "run the plan and report latency and energy. "
                                    "'python -m dispatch calibrate --help' fits the cost model to this machine.")
    p.add_argument("model", help="a .onnx path or a model-zoo name (python -m models list)")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="bind an input's shape or a symbolic dimension (SYMBOL=8); repeatable")
    p.add_argument("--ops", default="25", help="rows of the per-operator table: a number or 'all'")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the headline figures")
    return p


def _console(quiet: bool = False):  # noqa: ANN202
    from rich.console import Console

    plain = not sys.stdout.isatty() or bool(os.environ.get("NO_COLOR"))
    return Console(no_color=plain, highlight=not plain, width=None if not plain else 160,
                   quiet=quiet, soft_wrap=False)


def _write_json(path: str, data: object) -> None:
    try:
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")
    except OSError as e:
        raise DispatchError(f"Cannot write '{path}' ({e.strerror}); choose a writable path.") from None


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.ops != "all" and not args.ops.isdigit():
        raise DispatchError(f"--ops takes a number or 'all', not '{args.ops}'.")
    from dispatch.analysis import analyze
    from dispatch.frontend import load, parse_shapes
    from dispatch.report import analysis_report, render_analysis

    graph = load(args.model, parse_shapes(args.shape))
    costs = analyze(graph)
    console = _console(args.quiet)
    render_analysis(console, graph, costs, ops=args.ops)
    if args.json:
        _write_json(args.json, analysis_report(graph, costs))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["calibrate"]:
            from dispatch.calibrate import main_calibrate

            return main_calibrate(argv[1:])
        return run(argv)
    except DispatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except Exception as e:  # an internal error: one line, exit 1; DISPATCH_DEBUG=1 shows the traceback
        if os.environ.get("DISPATCH_DEBUG"):
            raise
        print(f"internal error: {type(e).__name__}: {e} (set DISPATCH_DEBUG=1 for the traceback; "
              "please report it)", file=sys.stderr)
        return 1

"""Command line: argument parsing and rendering choices only. Exit codes: 0 done, 2 bad input, 1 internal.

    python -m dispatch MODEL [options]        plan, run once on generated inputs, validate, measure, report
    python -m dispatch calibrate [options]    fit the cost model of an onnxruntime target to this machine
    python -m dispatch sweep CONFIG.toml      a design-space sweep (dispatch/sweep/); `plot DIR` redraws it

The work goes through `dispatch.Dispatcher` (load, plan, compile, run, validate, measure), so the CLI and the
API share one path; the report is assembled by `dispatch.report.build_report`. A failed validation still
writes every requested file, then exits 1 (the run gave wrong numbers: an internal error, not bad input).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dispatch.errors import DispatchError

__all__ = ["main", "run", "status", "load_npz", "make_targets"]

STRATEGY_HELP = "optimal|priority|greedy|heft|only:TARGET"


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one sentence, exit 2, no traceback
        raise DispatchError(f"{message[0].upper()}{message[1:]}; see 'python -m dispatch --help'.")


def _parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="python -m dispatch",
                        description="Analyse an ONNX model, place its operators on GPU and ASIC targets, "
                                    "run the plan and report latency and energy. "
                                    "'python -m dispatch calibrate --help' fits the cost model to this "
                                    "machine.")
    p.add_argument("model", help="a .onnx path or a model-zoo name (python -m models list)")
    g = p.add_argument_group("planning")
    g.add_argument("--targets", metavar="NAME=PRESET,...",
                   help="targets as NAME=PRESET or NAME=path/to/spec.toml, comma-separated "
                        "(default gpu=h100-sxm,asic=tpu-v4-like; presets in targets/specs/)")
    g.add_argument("--strategy", default="optimal", metavar="NAME", help=f"{STRATEGY_HELP} (default optimal)")
    g.add_argument("--objective", default="latency", choices=("latency", "energy", "edp", "makespan"),
                   help="what the plan minimises: sequential latency, energy per inference, their product, "
                        "or the makespan with targets overlapping (default latency)")
    g.add_argument("--precision", choices=("fp32", "tf32", "fp16", "bf16", "int8", "fp8"),
                   help="precision gpu/cpu targets predict float32 tensors at (default fp32; fp16, bf16 and "
                        "integer nodes are priced at their own dtype; execution is unchanged)")
    g.add_argument("--asic-numerics", choices=("emulate", "exact"), default="emulate",
                   help="how asic targets compute float MatMul/Gemm/Conv: 'emulate' rounds operands to the "
                        "preset's compute dtype (bf16 on tpu-v4-like) with fp32 accumulation, and validation "
                        "uses precision-derived tolerances (docs/numerics.md); 'exact' computes in float32 "
                        "(default emulate)")
    g.add_argument("--shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="bind an input's shape or a symbolic dimension (SYMBOL=8); repeatable")
    g.add_argument("--load-plan", metavar="PATH", help="use the placement saved in PATH instead of planning")
    g.add_argument("--save-plan", metavar="PATH", help="save the placement as JSON")
    g.add_argument("--explain", action="append", default=[], metavar="NODE",
                   help="print NODE's cost on every target and what moving it would change; repeatable")
    g = p.add_argument_group("running")
    g.add_argument("--inputs", metavar="PATH.npz", help="feeds by input name (default: generated, seed 0)")
    g.add_argument("--outputs", metavar="PATH.npz", help="save the outputs by name")
    g.add_argument("--no-run", action="store_true", help="plan only: execute nothing")
    g.add_argument("--max-memory", metavar="SIZE",
                   help="refuse any tensor (input, weight, intermediate, --inputs member) larger than SIZE, "
                        "e.g. 4G or 512M, before allocating it (default: half of the available memory)")
    g.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="timed runs for the medians, after one warm-up (default 3; 0: run once, no timing)")
    g = p.add_argument_group("output")
    g.add_argument("--json", metavar="PATH", help="write the full report as JSON (schema in the README)")
    g.add_argument("--trace", metavar="PATH", help="write a Chrome trace-event timeline (Perfetto)")
    g.add_argument("--dot", metavar="PATH", help="write the placement graph as DOT (and .svg with Graphviz)")
    g.add_argument("--annotate", metavar="PATH", help="write the ONNX model with each node's placement")
    g.add_argument("--ops", default="25",
                   help="rows of the per-operator table: a number or 'all' (default 25; 0 hides it)")
    g.add_argument("--quiet", action="store_true", help="print only the headline")
    return p


# -- helpers ------------------------------------------------------------------------------------------
def _console():  # noqa: ANN202
    """stdout: colour and Unicode boxes on a terminal; plain (no colour, ASCII) otherwise or with NO_COLOR."""
    from rich.console import Console

    plain = not sys.stdout.isatty() or bool(os.environ.get("NO_COLOR"))
    return Console(no_color=plain, highlight=not plain, width=None if not plain else 160, soft_wrap=False)


@contextmanager
def status(label: str) -> Iterator[None]:
    """A spinner on stderr while a step runs (terminals only), then 'label: N s' there when it took > 1 s."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    err = Console(stderr=True)
    t0 = time.perf_counter()
    with err.status(f"{label} ...", spinner="dots"):
        yield
    dt = time.perf_counter() - t0
    if dt > 1.0:
        err.print(f"{label}: {dt:.1f} s", style="dim", highlight=False, markup=False)


def _check_npz_members(path: Path, budget: int, names: Sequence[str] | None) -> None:
    """Each member's .npy header (name, dtype, shape) read from the zip, its name checked against the model's
    inputs (`names`, when given) and its declared size against the budget, before any member is inflated (a
    2 MB file can declare gigabytes of zeros)."""
    import zipfile

    import numpy as np

    from dispatch.budget import check_bytes

    if not zipfile.is_zipfile(path):
        return  # np.load says what it is
    total = 0
    with zipfile.ZipFile(path) as zf:
        members = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in zf.infolist()}
        if names is not None and set(members) != set(names):
            _names_error(names, members)
        for name, info in members.items():
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            fix = "save smaller arrays"
            check_bytes(f"--inputs member '{name}' of {str(path)!r}", dtype, shape, budget, fix)
            total += math.prod(shape) * dtype.itemsize
            check_bytes(f"--inputs {str(path)!r} up to member '{name}'", np.dtype(np.uint8), (total,), budget,
                        fix)


def load_npz(path: str, max_memory: int | str | None = None,
             names: Sequence[str] | None = None) -> dict[str, Any]:
    """Arrays by name from an .npz file (no pickles); DispatchError on a missing or unreadable file, or one
    whose members declare more than the memory budget (`max_memory`, dispatch.budget) or are named otherwise
    than `names` (the model's inputs, when given): both checked from the headers, before inflating."""
    import zipfile

    import numpy as np

    from dispatch.budget import resolve_budget

    p = Path(path)
    if not p.is_file():
        raise DispatchError(f"Inputs file '{path}' does not exist; give an .npz written by numpy.savez with "
                            "one array per model input.")
    try:
        _check_npz_members(p, resolve_budget(max_memory), names)
        z = np.load(p, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # an .npy: a single array, opened and read already
            raise DispatchError(f"'{path}' holds a single array, not an .npz archive; save the inputs "
                                "with numpy.savez(path, NAME=array, ...).")
        with z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DispatchError(f"'{path}' is not a readable .npz file ({type(e).__name__}: {e}); save the "
                            "inputs with numpy.savez(path, NAME=array, ...).") from None


def _save_npz(path: str, arrays: Mapping[str, Any]) -> None:
    import numpy as np

    from dispatch.fileio import atomic_output

    with atomic_output(path, "the outputs") as f:  # a file object: numpy does not append '.npz' to the name
        np.savez(f, **dict(arrays))


def make_targets(spec: Mapping[str, str], precision: str | None = None,
                 asic_numerics: str = "emulate") -> dict[str, Any]:
    """Targets from NAME -> preset; `precision` goes to gpu and cpu targets (the onnxruntime-backed kinds),
    `asic_numerics` to asic targets."""
    from targets.base import load_spec, make_target

    kinds = {name: load_spec(preset).kind for name, preset in spec.items()}
    if precision is not None and not any(k in ("gpu", "cpu") for k in kinds.values()):
        raise DispatchError(f"--precision applies to gpu and cpu targets, and the targets "
                            f"({', '.join(spec)}) have none; drop --precision or add a gpu target.")
    out: dict[str, Any] = {}
    try:
        for name, preset in spec.items():
            opts = {"precision": precision} if precision and kinds[name] in ("gpu", "cpu") else {}
            if kinds[name] == "asic":
                opts = {"numerics": asic_numerics}
            out[name] = make_target(name, preset, **opts)
    except BaseException:
        for t in out.values():
            t.close()
        raise
    return out


class _Planner:
    """The Dispatcher's planner: builds the Problem once and keeps it for strategies and --explain."""

    def __init__(self, load_path: str | None) -> None:
        self.load_path = load_path
        self.problem: Any = None

    def __call__(self, graph: Any, targets: Mapping[str, Any], *, strategy: str, objective: str,
                 **options: Any) -> Any:
        from dispatch.partition import build_problem, plan_problem
        from dispatch.plan_io import load_plan

        self.problem = build_problem(graph, targets, objective)
        if self.load_path:
            return load_plan(self.load_path, graph, targets, problem=self.problem)
        return plan_problem(self.problem, strategy, **options)


def _check_feeds(model: str, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Names, dtypes and shapes of --inputs against the model's declared inputs (symbolic dims: any size).

    numpy.savez stores ml_dtypes arrays (bfloat16, float8) as raw void items ('V2', 'V1'): such an array is
    read back as the input's declared dtype when the item sizes agree. Returns the feeds to run.
    """
    from dispatch.frontend import load_model_proto
    from dispatch.validate import check_feeds, feed_specs

    proto, _ = load_model_proto(model)
    out = dict(feeds)
    for spec in feed_specs(proto):
        x = out.get(spec.name)
        if (spec.dtype is not None and getattr(x, "dtype", None) is not None and x.dtype.kind == "V"
                and x.dtype.fields is None and x.dtype.itemsize == spec.dtype.itemsize):
            out[spec.name] = x.view(spec.dtype)
    try:
        check_feeds(proto, out)
    except DispatchError as e:
        raise DispatchError(f"--inputs: {e}") from None
    return out


def _input_names(model: str) -> list[str]:
    """The model's fed inputs, by name; DispatchError for an input an .npz cannot hold (a sequence, ...)."""
    from dispatch.frontend import load_model_proto
    from dispatch.validate import container_advice, feed_specs

    specs = feed_specs(load_model_proto(model)[0])
    for spec in specs:
        advice = container_advice(spec)
        if advice is not None:
            raise DispatchError(advice)
    return [s.name for s in specs]


def _names_error(names: Sequence[str], members: Mapping[str, Any]) -> None:
    """The sentence check_feeds gives for a missing or an unexpected input, said before any array is read."""
    missing = [n for n in names if n not in members]
    if missing:
        raise DispatchError(f"--inputs: Input '{missing[0]}' is missing from the feeds; add an array under "
                            f"that name (the model's inputs are {list(names)}).")
    extra = next(k for k in members if k not in names)
    raise DispatchError(f"--inputs: Feed '{extra}' is not an input of the model; remove it (the model's "
                        f"inputs are {list(names)}).")


def _check_writable(outputs: Mapping[str, str | None], inputs: Sequence[str | None] = ()) -> None:
    """Fail before any work when an output file's folder does not exist, or when an output would overwrite
    a file this run reads (the model, --inputs, --load-plan, a spec file) or another output."""
    from dispatch.fileio import same_file

    seen: dict[str, str] = {}
    for flag, p in outputs.items():
        if not p:
            continue
        if Path(p).is_dir():
            raise DispatchError(f"Cannot write {p!r}: it is a folder; give a file path.")
        parent = Path(p).parent
        if not parent.is_dir():
            raise DispatchError(f"Cannot write {p!r}: the folder {str(parent)!r} does not exist; create it "
                                "or choose another path.")
        for src in filter(None, inputs):
            if Path(src).exists() and same_file(p, src):
                raise DispatchError(f"{flag} {p!r} would overwrite {src!r}, which this run reads; choose "
                                    "another output path.")
        for other_flag, other in seen.items():
            if same_file(p, other):
                raise DispatchError(f"{flag} and {other_flag} both write {p!r}; give them different paths.")
        seen[flag] = p


def _spec_paths(targets: str | None) -> list[str]:
    """The spec files named in --targets (NAME=path.toml), as given; presets are not paths."""
    if not targets:
        return []
    return [v for item in targets.split(",") if "=" in item
            for v in [item.split("=", 1)[1].strip()] if v.endswith(".toml")]


def _external_data_paths(model: str, outputs: Mapping[str, str | None]) -> list[str]:
    """The external-data files the model names, read (without its data) only when an output lies in the
    model's folder: writing over one would destroy the model's weights."""
    folder = Path(model).resolve().parent
    if not Path(model).is_file() or not any(p and Path(p).resolve().is_relative_to(folder)
                                            for p in outputs.values()):
        return []
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    try:
        proto = onnx.load(model, load_external_data=False)
    except Exception:  # an unreadable model is refused later, with its own sentence
        return []
    return [str(folder / e.value) for t in _get_all_tensors(proto)
            for e in t.external_data if e.key == "location"]


# -- the command ----------------------------------------------------------------------------------------
def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.ops != "all" and not (args.ops.isascii() and args.ops.isdigit()):  # '²'.isdigit() is True
        raise DispatchError(f"--ops takes a number or 'all', not '{args.ops}'.")
    ops: str | int = args.ops if args.ops == "all" else int(args.ops)
    if not 0 <= args.repeat <= 1_000_000:  # a count beyond a million timed runs is a typo, not a measurement
        raise DispatchError(f"--repeat takes a count of 0 or more (at most 1000000), not {args.repeat}.")
    if args.no_run and (args.inputs or args.outputs):
        raise DispatchError("--no-run executes nothing, so --inputs/--outputs have no effect; drop one of "
                            "them.")
    writes = {"--json": args.json, "--trace": args.trace, "--dot": args.dot, "--annotate": args.annotate,
              "--save-plan": args.save_plan, "--outputs": args.outputs}
    _check_writable(writes, [args.model, args.inputs, args.load_plan, *_spec_paths(args.targets),
                             *_external_data_paths(args.model, writes)])
    from dispatch.api import Dispatcher
    from dispatch.budget import resolve_budget
    from dispatch.frontend import parse_shapes
    from dispatch.partition import resolve_strategy
    from targets.base import DEFAULT_TARGETS, parse_targets

    # a bad name fails before any model is loaded, with --load-plan too (argparse's choices check --objective)
    resolve_strategy(args.strategy)
    shapes: dict[str, Any] = dict(parse_shapes(args.shape))
    budget = resolve_budget(args.max_memory)
    feeds = None
    if args.inputs:
        feeds = load_npz(args.inputs, budget, _input_names(args.model))
        with status(f"checking {args.inputs}"):
            feeds = _check_feeds(args.model, feeds)
        for k, v in feeds.items():
            if v.ndim > 0 and shapes.setdefault(k, tuple(v.shape)) != tuple(v.shape):
                raise DispatchError(f"--shape binds input '{k}' to {'x'.join(map(str, shapes[k]))}, but "
                                    f"--inputs gives it shape {'x'.join(map(str, v.shape))}; drop one of "
                                    "them.")
    targets = make_targets(parse_targets(args.targets) if args.targets is not None else DEFAULT_TARGETS,
                           args.precision, args.asic_numerics)
    planner = _Planner(args.load_plan)
    console = _console()
    try:
        with status(f"loading and planning {args.model}"):
            d = Dispatcher(args.model, targets, strategy=args.strategy, objective=args.objective,
                           shapes=shapes or None, planner=planner, max_memory=budget)
        with d:
            return _finish(args, ops, d, planner.problem, feeds, console)
    finally:
        for t in targets.values():
            t.close()


def _finish(args: argparse.Namespace, ops: str | int, d: Any, problem: Any, feeds: Any, console: Any) -> int:
    """Everything after planning: explain, strategies, save, run, report, files."""
    from dispatch.explain import explain, render_explain
    from dispatch.partition import compare_strategies
    from dispatch.report import build_report, render_report, write_json

    graph, plan = d.graph, d.plan
    for node in args.explain:
        console.print(render_explain(explain(plan, problem, node)), highlight=False, markup=False)
    with status("comparing strategies"):
        strategies = compare_strategies(problem)
    if args.save_plan:
        from dispatch.plan_io import save_plan

        save_plan(plan, args.save_plan)
    measurement = validation = None
    if not args.no_run:
        run_feeds = feeds if feeds is not None else d.example_feeds()
        with status("running the plan and validating against onnxruntime"):
            validation = d.validate(run_feeds)
        if args.outputs:
            _save_npz(args.outputs, d.run(run_feeds))
        if args.repeat:
            with status(f"measuring ({args.repeat} timed run{'s' if args.repeat != 1 else ''} after 1 "
                        "warm-up)"):
                measurement = d.measure(run_feeds, repeat=args.repeat, warmup=1)
    report = build_report(graph, plan, d.targets, measurement=measurement, validation=validation,
                          strategies=strategies,
                          inputs=None if args.no_run else (args.inputs or "generated (seed 0)"))
    render_report(console, report, ops=ops, quiet=args.quiet)
    if args.json:
        write_json(args.json, report)
    if args.trace:
        from dispatch.trace import write_trace

        write_trace(args.trace, plan, measurement, model=graph.name, targets=d.targets)
    if args.dot:
        from dispatch.dot import write_dot

        write_dot(args.dot, graph, plan, targets=d.targets)
    if args.annotate:
        from dispatch.annotate import write_annotated

        with status(f"writing {args.annotate}"):
            write_annotated(args.annotate, graph, plan, d.targets,
                            node_costs=[n.get("cost", {}) for n in report["nodes"]])
    if validation is not None and not validation.ok:
        print(f"error: the plan's outputs differ from onnxruntime's (max abs err "
              f"{validation.max_abs_err:.3g}, rtol {validation.rtol:g}, atol {validation.atol:g}); please "
              "report it.", file=sys.stderr)
        return 1
    return 0


def _one_line(message: str) -> str:
    """Control characters (a newline in a path the user gave) escaped, so an error stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["calibrate"]:
            from dispatch.calibration.cli import main_calibrate

            return main_calibrate(argv[1:])
        if argv[:1] in (["sweep"], ["plot"]):
            from dispatch.sweep.cli import main_plot, main_sweep

            return (main_sweep if argv[0] == "sweep" else main_plot)(argv[1:])
        if argv[:1] == ["serve"]:
            from dispatch.serve.cli import main_serve

            return main_serve(argv[1:])
        return run(argv)
    except DispatchError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except Exception as e:  # an internal error: one line, exit 1; DISPATCH_DEBUG=1 shows the traceback
        if os.environ.get("DISPATCH_DEBUG"):
            raise
        print(f"internal error: {type(e).__name__}: {_one_line(str(e))} (set DISPATCH_DEBUG=1 for the "
              "traceback; please report it)", file=sys.stderr)
        return 1

"""Run every benchmark of the project and collect the results: `python -m benchmarks [--quick] [--only a,b]`.

Each benchmark runs as its own process (its own script, the way its docstring says to run it), one after the
other, with a time limit. For each, benchmarks/results/NAME.json records the command, exit status, seconds,
the 1-minute load average before and after, the markdown it produced and every markdown table in it as rows
(header -> cell); benchmarks/results/summary.md lists them all.

Full runs pass each script's own `--write`/`--out`, so they rewrite benchmarks/results/NAME.md as the script
always has. `--quick` runs a smaller case of each (arguments below, about ten minutes on the 2-core
development machine) and writes everything under benchmarks/results/quick/ instead, so that the curated full
results are never replaced by smoke-test numbers.

The SCALE-Sim goldens are regenerated only when SCALE-Sim's own environment is present (SCALESIM_PYTHON, or
/work/scalesim-venv/bin/python; see benchmarks/scalesim_goldens.py), and the agreement of our cycle counts
with the stored goldens is checked by running their tests.

Then the README's results table (between its `<!-- benchmarks:begin ... -->` and `<!-- benchmarks:end -->`
markers) is regenerated from the results just written (benchmarks/readme_table.py: one extractor per row), for
full and `--quick` runs alike (a quick run's table says so above it and links the quick files), but not after
`--only` unless `--readme` is given; `--no-readme` leaves the README alone; `--readme-only` rebuilds the table
from the results already there without running anything (add `--quick` to use results/quick/).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import readme_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
PY = sys.executable


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    full: tuple[str, ...]  # command after the interpreter
    quick: tuple[str, ...]
    markdown: str | None  # the file a full run writes (None: the markdown is the command's output)
    limit_s: int = 3600
    quick_limit_s: int = 300


def _b(script: str) -> str:
    return f"benchmarks/{script}"


BENCHES = (
    Bench("load", "load + analyse a synthetic graph and the zoo's largest models",
          (_b("bench_load.py"), "--write"),
          (_b("bench_load.py"), "--sizes", "10000", "--repeat", "1", "--zoo", "bert"), "load.md"),
    Bench("partition", "planning time, synthetic graphs and real presets",
          (_b("bench_partition.py"), "--write"),
          (_b("bench_partition.py"), "--sizes", "1000,10000", "--repeat", "1"), "partition.md"),
    Bench("kernels", "ASIC NumPy kernels against onnxruntime's CPU kernels",
          (_b("bench_kernels.py"),), (_b("bench_kernels.py"), "--only", "bert", "--repeats", "3", "--out",
                                      "{quick}/kernels.md"), "kernels.md"),
    Bench("runtime", "Dispatcher overhead, ResNet-50 on the simulated ASIC, BERT memory",
          (_b("bench_runtime.py"), "all", "--write"), (_b("bench_runtime.py"), "overhead", "--quick"),
          "runtime.md"),
    Bench("calibration", "CPU calibration on synthetic shapes, judged on unseen zoo and corpus models",
          (_b("bench_calibration.py"), "--out", "benchmarks/results/calibration.md"),
          (_b("bench_calibration.py"), "--quick", "--repeats", "5", "--rounds", "1", "--out",
           "{quick}/calibration.md"), "calibration.md"),
    Bench("corpus", "third-party architectures through every stage",
          (_b("bench_corpus.py"), "--write"), (_b("bench_corpus.py"), "mobilenet_v3_small", "shufflenet_v2"),
          "corpus.md"),
    Bench("support", "per-node support check over synthetic graphs",
          (_b("bench_support.py"), "--write"), (_b("bench_support.py"), "--sizes", "10000"), "support.md"),
    Bench("fidelity", "predicted against published ResNet-50 and BERT-base latency on A100 and H100",
          (_b("bench_fidelity.py"),), (_b("bench_fidelity.py"), "--out", "{quick}/fidelity.md"),
          "fidelity.md"),
    Bench("pipeline", "pipelined execution against one run at a time, two-target plan",
          (_b("bench_pipeline.py"), "--write"),
          (_b("bench_pipeline.py"), "--requests", "50", "--rounds", "1"),
          "pipeline.md"),
    Bench("serve", "python -m dispatch serve under closed-loop clients against plain onnxruntime",
          (_b("bench_serve.py"), "--write"),
          (_b("bench_serve.py"), "--clients", "1,4", "--requests", "500", "--duration", "15",
           "--slices", "2"),
          "serve.md"),
    Bench("sweep", "design-space sweep: plain plan() loop against the sweep, local workers and Ray",
          (_b("bench_sweep.py"), "--write"), (_b("bench_sweep.py"), "--quick"), "sweep.md"),
    Bench("scalesim", "our systolic cycle counts against the stored SCALE-Sim v3 goldens",
          ("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_asic_timing.py", "-k",
           "scalesim or per_dataflow or goldens"),
          ("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_asic_timing.py", "-k",
           "scalesim or per_dataflow or goldens"), None, 600, 120),
    Bench("wse", "wse2-like utilisation per ResNet-50 layer, before and after the many-array mapping",
          (_b("bench_wse.py"), "--out", "benchmarks/results/wse.md"),
          (_b("bench_wse.py"), "--batch", "8", "--out", "{quick}/wse.md"), "wse.md", 600, 120),
    Bench("asic_numerics", "emulated bf16 ASIC numerics against float32, ResNet-50, BERT, int8 ResNet-50",
          (_b("bench_asic_numerics.py"),),
          (_b("bench_asic_numerics.py"), "--models", "resnet50", "--out", "{quick}/asic_numerics.md"),
          "asic_numerics.md"),
    Bench("backend", "onnxruntime's backend test suite through the dispatcher",
          ("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_backend.py"),
          ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "tests/test_backend.py"), None,
          3600, 300),
)


def tables(markdown: str) -> list[list[dict[str, str]]]:
    """Every pipe table in `markdown` as rows of header -> cell text."""
    out: list[list[dict[str, str]]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines) - 1:
        head, rule = lines[i].strip(), lines[i + 1].strip()
        if head.startswith("|") and re.fullmatch(r"\|?(\s*:?-{2,}:?\s*\|)+\s*:?-*:?\s*\|?", rule):
            cols = [c.strip() for c in head.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(cols, cells, strict=False)))
                i += 1
            out.append(rows)
        else:
            i += 1
    return out


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run_one(b: Bench, quick: bool, folder: Path) -> dict:
    args = [a.replace("{quick}", str(folder.relative_to(ROOT))) for a in (b.quick if quick else b.full)]
    cmd = [PY, *args]
    shown = "python " + " ".join(args)
    print(f"== {b.name}: {shown}", file=sys.stderr, flush=True)
    before, t0 = _load(), time.perf_counter()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env,
                           timeout=b.quick_limit_s if quick else b.limit_s)
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    seconds = time.perf_counter() - t0
    wrote = "--out" in args or (not quick and "--write" in args)  # the script wrote its own markdown
    md_file = (folder / b.markdown) if wrote and b.markdown else folder / f"{b.name}.md"
    if wrote and md_file.is_file():
        text = md_file.read_text()
    else:  # the output is the result: keep it as markdown beside the json
        text = stdout
        md_file = folder / f"{b.name}.md"
        md_file.write_text(f"<!-- {shown} (exit {rc}, {seconds:.0f} s) -->\n\n{text}")
    record = {"name": b.name, "what": b.what, "command": shown, "returncode": rc,
              "seconds": round(seconds, 1),
              "load_average_before": before, "load_average_after": _load(),
              "markdown_file": str(md_file.relative_to(ROOT)), "tables": tables(text),
              "stderr_tail": stderr[-2000:]}
    own = folder / f"{b.name}.json"  # a script may write its own NAME.json (bench_sweep does): keep it inside
    if own.is_file() and own.stat().st_mtime >= time.time() - seconds - 1:
        data = json.loads(own.read_text())
        if not (isinstance(data, dict) and {"command", "tables"} <= data.keys()):
            record["script_json"] = data
    (folder / f"{b.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    status = "ok" if rc == 0 else f"exit {rc}"
    print(f"   {status} in {seconds:.0f} s -> {record['markdown_file']}", file=sys.stderr, flush=True)
    return record


def _scalesim_python() -> str | None:
    for p in (os.environ.get("SCALESIM_PYTHON"), "/work/scalesim-venv/bin/python"):
        if p and Path(p).is_file():
            return p
    return None


def write_readme(folder: Path, quick: bool, readme: Path = README) -> int:
    """Rewrite the table between the README's markers from the results in `folder`."""
    note = ("From `python -m benchmarks --quick` (smaller cases; the full run's table is what "
            "`python -m benchmarks --readme-only` rebuilds):\n\n" if quick else "")
    body = note + readme_table.table(folder, ROOT, tables)
    try:
        new = readme_table.rewrite(readme.read_text(), body)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    readme.write_text(new)
    print(f"   README table rewritten from {folder.relative_to(ROOT)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    names = ", ".join(b.name for b in BENCHES)
    ap.add_argument("--quick", action="store_true", help="smaller cases, written to results/quick/")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {names}")
    ap.add_argument("--readme", action=argparse.BooleanOptionalAction, default=None,
                    help="regenerate README.md's results table from the results (default: on, --quick too, "
                         "but off with --only: a subset would leave the other rows without figures)")
    ap.add_argument("--readme-only", action="store_true",
                    help="only regenerate README.md's table from the results already written; run nothing")
    args = ap.parse_args(argv)
    if args.readme_only:
        return write_readme(RESULTS / "quick" if args.quick else RESULTS, args.quick)
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmarks {sorted(unknown)}; choose from {', '.join(b.name for b in BENCHES)}")
    folder = RESULTS / "quick" if args.quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    records = [run_one(b, args.quick, folder) for b in chosen]
    sim = _scalesim_python()
    if not args.quick and sim and (not args.only or "scalesim" in args.only):
        print("== scalesim goldens: regenerating with SCALE-Sim", file=sys.stderr, flush=True)
        subprocess.run([sim, "benchmarks/scalesim_goldens.py"], cwd=ROOT, timeout=1800, check=False)
    lines = [f"# Benchmarks{' (--quick)' if args.quick else ''}", "",
             f"`python -m benchmarks{' --quick' if args.quick else ''}`; each row is one process, run one "
             "after another on this machine (load averages in each JSON file)."
             + ("" if sim else " Not run: SCALE-Sim itself (its environment is not installed here: the "
                "stored goldens are compared instead)."), "",
             "| benchmark | what | status | seconds | result |", "|---|---|---|---:|---|"]
    for r in records:
        status = "ok" if r["returncode"] == 0 else f"exit {r['returncode']}"
        rel = os.path.relpath(ROOT / r["markdown_file"], folder)
        lines.append(f"| {r['name']} | {r['what']} | {status} | {r['seconds']:.0f} | [{rel}]({rel}) |")
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.readme or (args.readme is None and not args.only):
        write_readme(folder, args.quick)
    return 0 if all(r["returncode"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())

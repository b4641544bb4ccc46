"""The corpus of third-party architectures through every stage, as a table.

    python benchmarks/bench_corpus.py [NAME ...] [--write]

For every model of models/corpus.py (or those named): export with random weights (cached), load, count MACs
against torch.utils.flop_counter.FlopCounterMode, plan with `optimal` and ASIC-first, run both plans, and
compare their outputs with torch's on the same inputs (models/corpus_check.py). `--write` writes
benchmarks/results/corpus.md. Needs `pip install -e '.[corpus]'`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.corpus import CORPUS, library_versions  # noqa: E402
from models.corpus_check import ATOL_SCALE, MAC_TOLERANCE, RTOL, STAGES, CorpusResult, asic_first, check  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "corpus.md"
_ASIC_FIRST = (f"`{asic_first({})[0]}` (each node on the ASIC when the ASIC supports it, else on the GPU); "
               "the stage also fails unless every MatMul, Gemm and Conv the ASIC supports is on the ASIC")

NOTES = f"""## Reading the table

- Each cell is one stage: **pass** or **FAIL**, with its wall time on this machine (measured). A stage that
  needs a failed one is `-` (not reached). Failures are listed in full below the table.
- *torch*: building the module with random weights (BatchNorm statistics measured on random inputs, see
  `models.corpus_export.torch_module`) and its forward pass on the inputs, the reference for every comparison.
- *export*: torch.onnx.export (TorchScript exporter, opset 17) of the module built with random weights from
  seed 0, then onnxruntime on the exported file against torch on the same inputs (time: export, or reading
  the cached file, plus one onnxruntime run). It also fails when torch's outputs are degenerate (not
  finite, or constant along the last axis), since they could then not tell a right plan from a wrong one.
- *MACs* (time: analysis and FlopCounterMode's forward pass): the sum over nodes of `dispatch.analysis`
  against FlopCounterMode on the torch module (FLOPs / 2); the goal is within {MAC_TOLERANCE:.0%}.
  FlopCounterMode has no formula for two CPU kernels, so the counter runs scaled_dot_product_attention on
  its math backend (two bmm) and RNN modules with oneDNN off (one addmm per weight matrix and step);
  without that it counts 0 for attention scores and LSTMs.
- MACs, systematic differences found and their causes: the counter's two blind spots above (ViT-style
  models were +16% against it, the LSTM 0 against 7.3 M); dispatch counted 0 for ONNX LSTM/GRU/RNN nodes
  until `dispatch/analysis/recurrent.py` (now directions · seq · batch · gates·H · (I + H), equal to the
  counter's addmm count); and a model whose shapes dispatch.load leaves unknown gets 0 MACs for those nodes
  (Swin: folding the shifted-window padding needs more fold/infer rounds than the loader runs, so 49 of
  its 77 MatMuls have unknown dimensions). Convolutions (grouped, depthwise), Gemm biases and GELU/
  LayerNorm decompositions cause no difference: both sides count multiply-adds of Conv, MatMul and Gemm
  only, biases excluded.
- *plan*: `dispatch.partition.plan` on gpu=h100-sxm, asic=tpu-v4-like; ASIC-first is {_ASIC_FIRST}. The
  detail gives the segments and the nodes placed on the ASIC.
- *vs torch*: the plan's outputs (Runtime.run) against torch's: |got − want| ≤ {ATOL_SCALE:g}·scale +
  {RTOL:g}·|want| per element, scale = max|want| of that output; integer outputs equal. The figure is the
  worst |got − want| / scale.
"""


def _cell(result: CorpusResult, stage: str) -> str:
    s = result.stages.get(stage)
    if s is None:
        return "-"
    return f"{'pass' if s.ok else '**FAIL**'} {s.seconds:.2f} s"


def _macs(result: CorpusResult) -> str:
    v = result.values
    if "macs" not in v:
        return _cell(result, "macs")
    return (f"{_cell(result, 'macs')}: {v['macs'] / 1e6:,.1f} M vs {v['torch_macs'] / 1e6:,.1f} M "
            f"({v['macs_rel']:+.2%})")


def _err(result: CorpusResult, key: str) -> str:
    return f"{result.values[key]:.1e}" if key in result.values else "-"


def markdown(results: list[CorpusResult], seconds: float, command: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    passed = sum(r.ok for r in results)
    lines = [
        "# Corpus: third-party architectures through every stage",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared (load average {load} at the end); "
        f"{versions}. Produced by `{command}` in {seconds:.0f} s.",
        "",
        f"**{passed} of {len(results)} models pass every stage.** Models and their sizes: "
        "`python -m models corpus`.",
        "",
        "| model | library | torch | export | load | MACs: dispatch vs FlopCounterMode | plan optimal "
        "| plan asic-first | run optimal | run asic-first | vs torch optimal | vs torch asic-first |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        e = CORPUS[r.name]
        torch_s = f"{r.values['torch_s']:.2f} s" if "torch_s" in r.values else "-"
        cells = [r.name, e.library, torch_s, _cell(r, "export"), _cell(r, "load"), _macs(r),
                 _cell(r, "plan optimal"), _cell(r, "plan asic-first"), _cell(r, "run optimal"),
                 _cell(r, "run asic-first"),
                 f"{_cell(r, 'torch optimal')} ({_err(r, 'err optimal')})",
                 f"{_cell(r, 'torch asic-first')} ({_err(r, 'err asic-first')})"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Placement", "", "| model | plan optimal | plan asic-first | onnxruntime vs torch |",
              "|---|---|---|---|"]
    for r in results:
        row = [r.name] + [r.stages[s].detail if s in r.stages and r.stages[s].ok else "-"
                          for s in ("plan optimal", "plan asic-first")]
        row.append(_err(r, "ort_err"))
        lines.append("| " + " | ".join(row) + " |")
    failed = [r for r in results if not r.ok]
    lines += ["", "## Failures", ""]
    if not failed:
        lines.append("None.")
    for r in failed:
        for stage, detail in r.failures().items():
            if detail != "not reached":
                lines.append(f"- **{r.name}**, {stage}: {detail.replace('|', '/')}")
    return "\n".join(lines + ["", NOTES])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"corpus models (default all: {', '.join(CORPUS)})")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in CORPUS]
    if unknown:
        parser.error(f"unknown corpus models {unknown}; choose from {', '.join(CORPUS)}")
    warnings.simplefilter("ignore")
    from targets.base import make_target

    targets = {"gpu": make_target("gpu", "h100-sxm"), "asic": make_target("asic", "tpu-v4-like")}
    start = time.perf_counter()
    results = []
    try:
        for name in args.names or list(CORPUS):
            t = time.perf_counter()
            r = check(name, targets)
            results.append(r)
            bad = [s for s in STAGES if s not in r.stages or not r.stages[s].ok]
            print(f"{name}: {'pass' if r.ok else 'FAIL ' + ', '.join(bad)} ({time.perf_counter() - t:.1f} s)",
                  file=sys.stderr, flush=True)
    finally:
        for t in targets.values():
            t.close()
    command = " ".join(["python benchmarks/bench_corpus.py", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(results, time.perf_counter() - start, command)
    if args.write:
        RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

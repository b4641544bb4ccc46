"""Utilisation of the wafer-scale preset on ResNet-50: every Conv and Gemm, before and after the many-array
mapping (targets/asic/mapping.py, docs/wafer-scale.md).

For each Conv/Gemm of the zoo's resnet50 (im2col GEMM M × K × N, conv groups as a batch of GEMMs), at batch 1
and a larger batch (M grows with the batch), three timings (all predicted by the systolic model, none
measured on hardware):

* before -- the preset as it was (13,281 arrays of 16×16, 20 PB/s, one shared buffer set, commit 3d79639's
  targets/specs/wse2-like.toml), with the folds dealt out in rounds over the arrays;
* 16×16 mapped -- the same 13,281 16×16 groups, private SRAM per group (3 MiB: 64 cores · 48 KiB), the
  fabric's 27.5 PB/s, under the best split (isolates the mapping from the regrouping);
* after -- targets/specs/wse2-like.toml: 850,000 arrays of 1×4 (one per core) under the best split.

Utilisation = MACs / (cycles · rows · cols · arrays). The whole-network figure is Σ MACs / (Σ cycles · lanes):
the layers one after another, each on the whole wafer. `resident` is the largest per-core weight block of a
layer's split (⌈jobs/cores⌉ · k' · n' · 2 B) and its sum over the layers (what a core would hold if every
layer's weights stayed resident at once, against its 48 KiB).

    python benchmarks/bench_wse.py [--batch 32] [--out benchmarks/results/wse.md]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatch.frontend import load  # noqa: E402
from dispatch.ir import Node  # noqa: E402
from targets.asic.mapping import map_gemm  # noqa: E402
from targets.asic.timing import ArrayConfig, GemmTiming, conv_gemm_dims, simulate_gemm, split_dims  # noqa: E402
from targets.base import make_target  # noqa: E402

HERE = Path(__file__).resolve().parent

# The preset before the mapping (commit 3d79639's wse2-like.toml): 850,000 cores / 64 = 13,281 arrays of 16×16
# lanes (8×8 cores · 4 lanes), 512 / 2048 / 512 KiB buffers, 20 PB/s, fp16 words, 1.1 GHz.
BEFORE = ArrayConfig(rows=16, cols=16, clock_hz=1.1e9, dataflow="ws", num_arrays=13281,
                     ifmap_sram_bytes=512 * 1024, filter_sram_bytes=2048 * 1024, ofmap_sram_bytes=512 * 1024,
                     offchip_bandwidth_Bps=20e15, word_bytes=2)
# The same groups as private-SRAM arrays joined by the fabric (220 Pb/s = 27.5 PB/s), weights resident.
GROUPS = replace(BEFORE, offchip_bandwidth_Bps=27.5e15, shared_sram=False, weights_resident=True)


@dataclass(frozen=True)
class Layer:
    name: str
    groups: int
    m: int
    k: int
    n: int


def gemm_dims(node: Node, batch: int) -> Layer:
    """The node's GEMM at `batch` (the zoo model has batch 1: M scales with it)."""
    if node.op_type == "Conv":
        x, w, y = node.inputs[0].shape, node.inputs[1].shape, node.outputs[0].shape
        g, m, k, n = conv_gemm_dims(batch, x[1], w[0], w[2:], y[2:], int(node.attr("group", 1)))
        return Layer(node.name, g, m, k, n)
    a, b = node.inputs[0].shape, node.inputs[1].shape  # Gemm
    m, k = (a[1], a[0]) if node.attr("transA", 0) else a
    n = b[0] if node.attr("transB", 0) else b[1]
    return Layer(node.name, 1, m * batch, k, n)


def resident_bytes(layer: Layer, cfg: ArrayConfig, t: GemmTiming) -> int:
    """Bytes of weights one array holds for this layer's split (0 if they do not stay resident)."""
    (_, sk, sn), (qm, qn, qk) = split_dims(layer.m, layer.k, layer.n, cfg, t.split)
    per_array = math.ceil(layer.groups * qm * qn * qk / cfg.num_arrays) * sk * sn * cfg.word_bytes
    return per_array if per_array <= cfg.filter_sram_bytes else 0


def _util(macs: int, cycles: int, cfg: ArrayConfig) -> float:
    return macs / (cycles * cfg.rows * cfg.cols * cfg.num_arrays)


def run(batches: list[int]) -> str:
    t0 = time.perf_counter()
    graph = load("resnet50")
    nodes = [n for n in graph.nodes if n.op_type in ("Conv", "Gemm")]
    target = make_target("asic", "wse2-like")
    after = target.params.array
    for node in nodes:  # the figures below are the ones the target prices with (AsicTarget.gemm_timing)
        layer = gemm_dims(node, 1)
        if target.gemm_timing(node) != map_gemm(layer.m, layer.k, layer.n, after, layer.groups):
            raise SystemExit(f"{node.name}: the target's timing differs from map_gemm's; fix bench_wse.py.")
    out = [f"<!-- python benchmarks/bench_wse.py --batch {','.join(map(str, batches[1:]))} -->",
           "# wse2-like on ResNet-50: utilisation per layer, before and after the many-array mapping", "",
           "Predicted by the systolic model (targets/asic/timing.py, mapping.py), not measured: the design",
           "and every figure's derivation are in docs/wafer-scale.md. *before*: the old preset, 13,281",
           "arrays of 16×16 with the folds dealt out; *16×16 mapped*: the same groups with private SRAM over",
           "the fabric under the best split; *after*: targets/specs/wse2-like.toml, 850,000 arrays of 1×4",
           "(one per core) under the best split (pm, pn, pk) = blocks of output rows M, of output columns N,",
           "slices of K. Cycles after = compute + stall (fill and streaming) + reduction (the K split's",
           "tree).", ""]
    intro = len(out)
    summary = []
    for batch in batches:
        layers = [gemm_dims(n, batch) for n in nodes]
        out += [f"## batch {batch}", "",
                "| layer | GEMM M×K×N (groups) | before util | 16×16 mapped util | split (pm, pn, pk) | "
                "cycles (compute + stall + reduction) | µs | util | resident B/core |",
                "|---|---|---:|---:|---|---|---:|---:|---:|"]
        tot = {"macs": 0, "before": 0, "groups": 0, "after": 0}
        resident_sum = resident_max = 0
        for layer in layers:
            b = simulate_gemm(layer.m, layer.k, layer.n, BEFORE, batch=layer.groups)
            g = map_gemm(layer.m, layer.k, layer.n, GROUPS, layer.groups)
            a = map_gemm(layer.m, layer.k, layer.n, after, layer.groups)
            res = resident_bytes(layer, after, a)
            resident_sum += res
            resident_max = max(resident_max, res)
            for key, t in (("before", b), ("groups", g), ("after", a)):
                tot[key] += t.total_cycles
            tot["macs"] += a.macs
            stall = a.stall_cycles - a.reduction_cycles
            grp = f" ({layer.groups})" if layer.groups > 1 else ""
            out.append(f"| {layer.name} | {layer.m}×{layer.k}×{layer.n}{grp} | {b.utilization:.2%} | "
                       f"{g.utilization:.1%} | {a.split} | {a.compute_cycles} + {stall} + "
                       f"{a.reduction_cycles} = {a.total_cycles} | {a.latency_s * 1e6:.3f} | "
                       f"{a.utilization:.1%} | {res} |")
        stem = layers[0]
        sb = simulate_gemm(stem.m, stem.k, stem.n, BEFORE, batch=stem.groups)
        sa = map_gemm(stem.m, stem.k, stem.n, after, stem.groups)
        whole = {k: _util(tot["macs"], tot[k], c) for k, c in
                 (("before", BEFORE), ("groups", GROUPS), ("after", after))}
        out += ["", f"Whole network at batch {batch} ({len(layers)} Conv/Gemm layers one after another): "
                f"{tot['macs']:,} MACs; before {tot['before']:,} cycles ({whole['before']:.2%}), 16×16 "
                f"mapped {tot['groups']:,} ({whole['groups']:.1%}), after {tot['after']:,} cycles = "
                f"{tot['after'] / after.clock_hz * 1e6:.1f} µs ({whole['after']:.1%}). Resident weights "
                f"per core: at most {resident_max} B in one layer, {resident_sum:,} B summed over the layers "
                "(of 48 KiB).", ""]
        summary.append(f"| {batch} | {stem.m}×{stem.k}×{stem.n} | {sb.total_cycles:,} | "
                       f"{sb.utilization:.2%} | {sa.split} | {sa.total_cycles:,} | {sa.utilization:.1%} | "
                       f"{whole['before']:.2%} | {whole['after']:.1%} |")
    head = ["## Summary: the stem (conv1, 7×7/2) and the whole network", "",
            "| batch | stem GEMM | stem cycles before | stem util before | stem split after | "
            "stem cycles after | stem util after | network util before | network util after |",
            "|---:|---|---:|---:|---|---:|---:|---:|---:|", *summary, ""]
    out[intro:intro] = head
    out.append(f"Computed in {time.perf_counter() - t0:.1f} s.")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="32", help="larger batches besides 1, comma-separated (default 32)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown here (default: print it)")
    args = ap.parse_args(argv)
    try:
        batches = [1] + [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        print(f"--batch must list positive integers, not {args.batch!r}.", file=sys.stderr)
        return 2
    if any(b < 1 for b in batches):
        print(f"--batch must list positive integers, not {args.batch!r}.", file=sys.stderr)
        return 2
    text = run(batches)
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

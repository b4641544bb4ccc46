"""Regenerate tests/data/scalesim_goldens.json: SCALE-Sim v3 cycle counts for GEMM and conv layers.

SCALE-Sim needs numpy<2.4, so it lives in its own virtual environment, not the project's:

    python -m venv /work/scalesim-venv
    /work/scalesim-venv/bin/pip install scalesim 'numpy<2.4'
    /work/scalesim-venv/bin/python benchmarks/scalesim_goldens.py

The script writes a config, a topology CSV and an (empty) layout CSV per case into a temporary
folder and drives ``scalesim.scale_sim.scalesim`` from Python with ``save_disk_space=True``, which
turns the cycle traces off (its CLI always writes them: gigabytes on large layers). The interface
bandwidth is in CALC mode (SCALE-Sim's estimate-bandwidth mode, whose read buffers never stall:
memory/read_buffer_estimate_bw.py) and the SRAMs are 8 MiB each, so SCALE-Sim reports zero stall
cycles and its total equals the compute cycles; the script checks that. (Much larger SRAMs only
slow it down: its final prefetch pads a Python list to the buffer's capacity.) It uses only the
standard library besides SCALE-Sim, and takes two to three minutes on one core.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "scalesim_goldens.json"
ARRAYS = {"32x32": (32, 32), "128x128": (128, 128), "16x64": (16, 64)}
DATAFLOWS = ("os", "ws", "is")
SRAM_KB = 8192  # 8 MiB per buffer: every operand of every case fits, so no stalls

_CONFIG = """[general]
run_name = golden

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {sram}
FilterSramSzkB = {sram}
OfmapSramSzkB = {sram}
IfmapOffset = 0
FilterOffset = 100000000
OfmapOffset = 200000000
Bandwidth = 10
Dataflow = {dataflow}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False
"""


@dataclass(frozen=True)
class Gemm:
    """A GEMM of (M×K)·(K×N) on one array."""

    name: str
    m: int
    k: int
    n: int
    array: str


@dataclass(frozen=True)
class Conv:
    """A 2-D conv, batch 1, NCHW, with symmetric or asymmetric padding.

    ``groups == channels == filters`` is a depthwise conv; SCALE-Sim runs it as one single-channel
    layer per channel (topology_utils.py, layer names containing 'DP').
    """

    name: str
    height: int
    width: int
    kernel_h: int
    kernel_w: int
    channels: int
    filters: int
    stride: int
    pad_h: int
    pad_w: int
    array: str
    groups: int = 1


GEMMS = [
    Gemm("tiny_1x1x1", 1, 1, 1, "32x32"),
    Gemm("small_8x8x8", 8, 8, 8, "32x32"),
    Gemm("exact_32x32x32", 32, 32, 32, "32x32"),
    Gemm("odd_100x60x37", 100, 60, 37, "32x32"),
    Gemm("tall_1000x17x3", 1000, 17, 3, "32x32"),
    Gemm("wide_7x1000x5", 7, 1000, 5, "32x32"),
    Gemm("mid_64x128x96", 64, 128, 96, "32x32"),
    Gemm("bert_ffn1_128x768x3072", 128, 768, 3072, "128x128"),
    Gemm("bert_qkv_128x768x768", 128, 768, 768, "128x128"),
    Gemm("gemv_1x768x3072", 1, 768, 3072, "128x128"),
    Gemm("odd_200x300x130", 200, 300, 130, "128x128"),
    Gemm("rect_200x300x50", 200, 300, 50, "16x64"),
    Gemm("rect_33x65x129", 33, 65, 129, "16x64"),
    Gemm("rect_256x64x256", 256, 64, 256, "16x64"),
]

# ResNet-50-like layers at reduced resolution (112×112 input) to keep SCALE-Sim's
# cycle-by-cycle run short; shapes follow He et al., CVPR 2016, Table 1 (v1.5: stride on the 3×3).
CONVS = [
    Conv("stem_7x7s2", 112, 112, 7, 7, 3, 64, 2, 3, 3, "32x32"),
    Conv("conv2_3x3", 28, 28, 3, 3, 64, 64, 1, 1, 1, "32x32"),
    Conv("conv2_1x1_expand", 28, 28, 1, 1, 64, 256, 1, 0, 0, "32x32"),
    Conv("conv3_3x3s2", 28, 28, 3, 3, 128, 128, 2, 1, 1, "128x128"),
    Conv("conv3_1x1s2_down", 28, 28, 1, 1, 256, 512, 2, 0, 0, "128x128"),
    Conv("conv4_3x3", 14, 14, 3, 3, 256, 256, 1, 1, 1, "128x128"),
    Conv("conv5_1x1_expand", 7, 7, 1, 1, 512, 2048, 1, 0, 0, "128x128"),
    Conv("nonsquare_3x5", 20, 36, 3, 5, 16, 24, 1, 1, 2, "16x64"),
    Conv("stem_7x7s2_rect", 56, 56, 7, 7, 3, 64, 2, 3, 3, "16x64"),
    Conv("depthwise_3x3", 14, 14, 3, 3, 32, 32, 1, 1, 1, "16x64", groups=32),
]


def _run(workdir: Path, rows: int, cols: int, dataflow: str, topo_lines: list[str], gemm: bool) -> dict:
    """Run SCALE-Sim on one topology; return summed cycles over its layers."""
    from scalesim.scale_sim import scalesim  # imported here: only the SCALE-Sim venv has it

    cfg = workdir / "golden.cfg"
    cfg.write_text(_CONFIG.format(rows=rows, cols=cols, sram=SRAM_KB, dataflow=dataflow))
    topo = workdir / "topo.csv"
    header = "Layer, M, N, K," if gemm else (
        "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,")
    topo.write_text("\n".join([header, *topo_lines]) + "\n")
    layout = workdir / "layout.csv"
    layout.write_text("Layer name,\n")
    with contextlib.redirect_stdout(io.StringIO()):
        sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                       layout=str(layout), input_type_gemm=gemm)
        sim.run_scale(top_path=str(workdir / "out"))
    total = stall = 0
    for layer in sim.runner.single_layer_sim_object_list:
        items = layer.get_compute_report_items()  # [incl. prefetch, total, stall, util, map eff, util]
        total += int(items[1])
        stall += int(items[2])
    if stall:
        raise RuntimeError(f"SCALE-Sim reported {stall} stall cycles; raise SRAM_KB so compute is isolated.")
    return {"total_cycles": total, "stall_cycles": stall, "compute_cycles": total - stall,
            "layers": len(sim.runner.single_layer_sim_object_list)}


def _conv_output(c: Conv) -> tuple[int, int]:
    """ONNX/PyTorch output size: ⌊(H + 2·pad − k)/stride⌋ + 1."""
    return ((c.height + 2 * c.pad_h - c.kernel_h) // c.stride + 1,
            (c.width + 2 * c.pad_w - c.kernel_w) // c.stride + 1)


def _scalesim_input(c: Conv) -> tuple[int, int]:
    """The input extent to give SCALE-Sim: the padded rows and columns some window reads.

    SCALE-Sim has no padding field and sizes the output as ⌈(H − k + s)/s⌉
    (topology_utils.py, topo_calc_hyperparams), one more than ONNX's ⌊(H − k)/s⌋ + 1 when
    (H − k) is not a multiple of s. Cropping the padded input to (OH − 1)·s + k, which drops only
    trailing rows no window reads, makes both formulas give the ONNX output size.
    """
    oh, ow = _conv_output(c)
    return (oh - 1) * c.stride + c.kernel_h, (ow - 1) * c.stride + c.kernel_w


def _conv_topology(c: Conv) -> list[str]:
    """Topology rows for a conv, with the cropped padded input of ``_scalesim_input``."""
    h, w = _scalesim_input(c)
    if c.groups == 1:
        return [f"{c.name}, {h}, {w}, {c.kernel_h}, {c.kernel_w}, {c.channels}, {c.filters}, {c.stride},"]
    if not c.groups == c.channels == c.filters:
        raise ValueError(f"{c.name}: SCALE-Sim models only depthwise grouped convs.")
    # A 'DP' layer expands to one single-channel layer per channel; each keeps 'Num filter' = 1.
    return [f"DP_{c.name}, {h}, {w}, {c.kernel_h}, {c.kernel_w}, {c.channels}, 1, {c.stride},"]


def main() -> None:
    """Run every case for every dataflow and write the JSON goldens."""
    cases = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, items in (("gemm", GEMMS), ("conv", CONVS)):
            for item in items:
                rows, cols = ARRAYS[item.array]
                for dataflow in DATAFLOWS:
                    t0 = time.perf_counter()
                    if kind == "gemm":
                        lines = [f"{item.name}, {item.m}, {item.n}, {item.k},"]  # ordered name, M, N, K
                    else:
                        lines = _conv_topology(item)
                    result = _run(Path(tmp), rows, cols, dataflow, lines, gemm=kind == "gemm")
                    inputs = asdict(item)
                    inputs.pop("name")
                    inputs.pop("array")
                    if kind == "conv":
                        inputs["scalesim_ifmap_hw"] = list(_scalesim_input(item))
                    cases.append({"name": item.name, "kind": kind, "rows": rows, "cols": cols,
                                  "dataflow": dataflow, **inputs, **result})
                    seconds = time.perf_counter() - t0
                    print(f"{kind:4} {item.name:26} {item.array:8} {dataflow} "
                          f"{result['compute_cycles']:>10} cycles  {seconds:6.2f} s", flush=True)
    doc = {
        "note": ("SCALE-Sim v3 compute cycles (total minus stalls; stalls are zero: "
                 f"{SRAM_KB} kB SRAMs, CALC bandwidth mode), traces off. Conv cases are batch 1; "
                 "SCALE-Sim gets the padded input cropped to the rows a window reads "
                 "(scalesim_ifmap_hw); depthwise runs as one layer per channel and the cycles are "
                 "summed. Regenerate with: /work/scalesim-venv/bin/python benchmarks/scalesim_goldens.py "
                 "(venv: pip install scalesim 'numpy<2.4')."),
        "scalesim_version": metadata.version("scalesim"),
        "numpy_version": metadata.version("numpy"),
        "python_version": sys.version.split()[0],
        "generation_seconds": round(time.perf_counter() - start, 1),
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUT)} in {doc['generation_seconds']} s")


if __name__ == "__main__":
    main()

"""Systolic-array timing and energy for the simulated ASIC, with SCALE-Sim v3's compute cycles.

Compute cycles (SCALE-Sim v3.0.0, Samajdar et al., ISPASS 2020; files under ``scalesim/``).
A GEMM (M×K)·(K×N) is mapped onto an R×C array as S_r × S_c spatial and T temporal
(topology_utils.py ``calc_spatio_temporal_params``; compute/systolic_compute_*.py ``set_params``):

    os: S_r = M, S_c = N, T = K      per fold R + C + T − 2
    ws: S_r = K, S_c = N, T = M      per fold 2R + C + T − 2
    is: S_r = K, S_c = M, T = N      per fold 2R + C + T − 2

with ``folds = ⌈S_r/R⌉·⌈S_c/C⌉`` (partial folds cost as much as full ones: the demand matrices
are padded with null requests) and ``cycles = folds · per_fold − 1``. Per fold, in
systolic_compute_os.py ``create_ofmap_demand_mat``: T − 1 prefix rows + R output rows, skewed over
C columns (+ C − 1); in systolic_compute_ws.py / _is.py ``create_ofmap_demand_mat``: 2R − 1 prefix
rows (weights load) + T rows, skewed over C (+ C − 1). The ``− 1`` is because
memory/double_buffered_scratchpad_mem.py ``service_memory_requests`` reports the index of the last
demand line, not a count. Conv maps to GEMM by im2col (compute/operand_matrix.py): M = output
pixels, K = C_in·kH·kW, N = C_out, per group. (SCALE-Sim has no padding and sizes outputs as
⌈(H − k + s)/s⌉, topology_utils.py ``topo_calc_hyperparams``: one more than ONNX's
⌊(H − k)/s⌋ + 1 when s does not divide H − k, so benchmarks/scalesim_goldens.py crops the padded
input to the rows a window reads.)

Memory (this module's own model; SCALE-Sim simulates it cycle by cycle instead). The fold loop is
``for outer in S_c folds: for inner in S_r folds`` as in SCALE-Sim. Off-chip reads per operand:

    os: A (M×K) once if it fits its buffer, else once per N fold: M·K·⌈N/C⌉
        B (K×N) once if one K×C column tile fits (it stays while the M folds run), else once
        per M fold: K·N·⌈M/R⌉
    ws: B once (each weight tile is stationary in exactly one fold)
        A once if it fits, else M·K·⌈N/C⌉
    is: A once (stationary); B once if it fits, else K·N·⌈M/C⌉

Outputs are written once (M·N words). Under ws and is the K folds accumulate partial sums of an
M×C (ws) or C×N (is) tile at ``ACC_BYTES`` each; if that tile does not fit the ofmap buffer the
partial sums of all but the last K fold spill: (⌈K/R⌉ − 1)·M·N·ACC_BYTES written and read back.
"Fits" uses the whole buffer: a resident operand needs no second half for prefetching. SRAM
traffic is the array's operand reads (each fold reads its tiles: os A·⌈N/C⌉ and B·⌈M/R⌉, ws
A·⌈N/C⌉ and B, is A and B·⌈M/C⌉), partial sums written every K fold and read back for the next,
the fills from DRAM (writes) and the drain of outputs to DRAM (reads).

Several arrays (``num_arrays`` = A > 1) run one mapping (targets/asic/mapping.py picks it; the
design is in docs/wafer-scale.md). A split (pm, pn, pk) cuts the output's M rows into pm blocks, its
N columns into pn and the reduction K into pk slices, tile-aligned on the dimensions the array holds
spatially (R or C) and element-wise on the one it streams (T); each (block, slice) is a job of
m'×k'×n', the jobs (times ``batch``) are dealt out whole, ⌈jobs/A⌉ per array, and one job runs
SCALE-Sim's folds of its sub-GEMM: rounds = ⌈jobs/A⌉·folds(m', k', n') and compute =
rounds·per_fold(m', k', n') − 1. ``split=None`` deals the folds themselves (jobs of one tile each:
the dealing this module always did), and (1, 1, 1) on one array is SCALE-Sim's count. Traffic:

* shared SRAM (``shared_sram``, the default: the arrays share the buffers and one off-chip
  interface) -- the whole GEMM's traffic above; partial sums of a K split add in the shared ofmap
  buffer as K folds do, at no extra time (under os, (pk − 1)·m'·n' of them written and read back);
* private SRAM (a fabric between arrays) -- every job's own traffic against one array's buffers,
  so inputs are replicated across the pn column blocks and weights across the pm row blocks,
  except that ``weights_resident`` weights stay in the arrays (loaded with the model) when each
  array's ⌈jobs/A⌉ weight blocks fit its filter buffer. Each array's links carry 1/A of the
  bandwidth, so b below shrinks to b·min(A, jobs)/A. A K split writes each block once and, after
  compute, adds its pk partial blocks in a tree: ⌈log2 pk⌉ levels, each sending ⌈jobs/A⌉·m'·n'
  ``ACC_BYTES`` per array at b/A (hop latency not modelled); (pk − 1)·m'·n'·4 bytes per block in all.

Stalls, with b = bandwidth/clock bytes per cycle, D = the off-array bytes above (reduction apart)
and f₀ = the first job's first-fold input tiles times min(A, jobs) (the arrays share b):

    fill  = f₀ / b                                   (cannot overlap: nothing to compute yet)
    mem   = (D − f₀) / rounds / b                    per round
    stall = fill + rounds · max(0, mem − per_fold) + reduction     double-buffered
    stall = fill + rounds · mem + reduction   (= D / b + reduction) single-buffered

Energy: ``energy_j`` with the figures of targets/asic/energy.py (Horowitz, ISSCC 2014).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dispatch.errors import DispatchError
from targets.asic.energy import (  # re-exported: the energy model's names live in targets/asic/energy.py
    HOROWITZ_45NM_PJ,
    MAC_PJ,
    EnergyConfig,
    _positive_int,
    _positive_number,
    horowitz_energy,
)

__all__ = [
    "ACC_BYTES",
    "DATAFLOWS",
    "HOROWITZ_45NM_PJ",
    "MAC_PJ",
    "ArrayConfig",
    "EnergyConfig",
    "GemmTiming",
    "compute_cycles",
    "conv_gemm_dims",
    "dealt_split",
    "energy_j",
    "fold_cycles",
    "folds",
    "horowitz_energy",
    "simulate_gemm",
    "split_dims",
    "tile_sizes",
]

DATAFLOWS = ("os", "ws", "is")
ACC_BYTES = 4  # partial sums accumulate in fp32 (or int32 for int8), 4 bytes either way


def _size(owner: str, name: str, value: object) -> None:
    """A tensor size: an integer >= 0 (0 for a zero-size tensor)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DispatchError(f"{owner}.{name} must be a non-negative integer, got {value!r}.")


def _check_dataflow(dataflow: object) -> None:
    if dataflow not in DATAFLOWS:
        raise DispatchError(f"Unknown systolic dataflow {dataflow!r}; use one of {', '.join(DATAFLOWS)}.")


@dataclass(frozen=True)
class ArrayConfig:
    """One or more identical R×C systolic arrays sharing one off-chip interface and one set of SRAMs.

    SRAM sizes are per buffer (ifmap, filter, ofmap), shared by the arrays; ``word_bytes`` is the
    size of one operand element (2 for bf16/fp16, 1 for int8, 4 for fp32). ``macs_per_cycle`` is what
    one PE completes per cycle in the operand dtype timed: 1 for the dtype the multipliers are built
    for; a dtype at a fraction of that rate (16-bit operands on 8-bit multipliers take four passes)
    divides the compute cycles by it.
    """

    rows: int
    cols: int
    clock_hz: float
    dataflow: str
    num_arrays: int
    ifmap_sram_bytes: int
    filter_sram_bytes: int
    ofmap_sram_bytes: int
    offchip_bandwidth_Bps: float
    word_bytes: int
    double_buffered: bool = True
    macs_per_cycle: float = 1.0  # per PE for the operand dtype timed: below 1, a multi-pass multiplier
    shared_sram: bool = True  # False: each array owns its buffers; operands and partial sums cross a fabric
    weights_resident: bool = False  # weights stay in the arrays' filter buffers (loaded with the model)

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "num_arrays", "ifmap_sram_bytes", "filter_sram_bytes",
                     "ofmap_sram_bytes", "word_bytes"):
            _positive_int("ArrayConfig", name, getattr(self, name))
        for name in ("clock_hz", "offchip_bandwidth_Bps", "macs_per_cycle"):
            _positive_number("ArrayConfig", name, getattr(self, name))
        _check_dataflow(self.dataflow)
        for name in ("double_buffered", "shared_sram", "weights_resident"):
            if not isinstance(getattr(self, name), bool):
                raise DispatchError(
                    f"ArrayConfig.{name} must be true or false, got {getattr(self, name)!r}.")


@dataclass(frozen=True)
class GemmTiming:
    """Cycles and bytes of one GEMM (or a batch of them) on an ArrayConfig."""

    macs: int
    compute_cycles: int
    stall_cycles: int
    total_cycles: int
    dram_read_bytes: int
    dram_write_bytes: int
    sram_read_bytes: int
    sram_write_bytes: int
    utilization: float  # macs / (total_cycles · rows · cols · num_arrays)
    clock_hz: float
    split: tuple[int, int, int] = (1, 1, 1)  # (pm, pn, pk): blocks of M, of N, slices of K
    reduction_cycles: int = 0  # of stall_cycles: the tree adding a K split's partial sums

    @property
    def latency_s(self) -> float:
        return self.total_cycles / self.clock_hz


def _check_dims(m: int, k: int, n: int) -> None:
    """Sizes are integers >= 0: a zero-size tensor (valid ONNX) is a GEMM with no work."""
    for name, value in (("M", m), ("K", k), ("N", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DispatchError(f"GEMM dimension {name} must be a non-negative integer, got {value!r}.")


def _spatial_temporal(m: int, k: int, n: int, dataflow: str) -> tuple[int, int, int]:
    """(S_r, S_c, T) as SCALE-Sim maps a GEMM (topology_utils.py calc_spatio_temporal_params)."""
    return {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]


def fold_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    """Cycles of one fold: R + C + T − 2 (os) or 2R + C + T − 2 (ws, is)."""
    _check_dataflow(dataflow)
    _check_dims(m, k, n)
    _, _, t = _spatial_temporal(m, k, n, dataflow)
    return (rows if dataflow == "os" else 2 * rows) + cols + t - 2


def folds(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    """Number of array-sized tiles: ⌈S_r/R⌉·⌈S_c/C⌉."""
    _check_dataflow(dataflow)
    _check_dims(m, k, n)
    sr, sc, _ = _spatial_temporal(m, k, n, dataflow)
    return math.ceil(sr / rows) * math.ceil(sc / cols)


def compute_cycles(m: int, k: int, n: int, rows: int, cols: int, dataflow: str) -> int:
    """SCALE-Sim v3's stall-free cycles for an M×K×N GEMM on one R×C array: folds·per_fold − 1."""
    for name, value in (("rows", rows), ("cols", cols)):
        _positive_int("compute_cycles", name, value)
    return folds(m, k, n, rows, cols, dataflow) * fold_cycles(m, k, n, rows, cols, dataflow) - 1


def conv_gemm_dims(batch: int, in_channels: int, out_channels: int, kernel_shape: Sequence[int],
                   output_shape: Sequence[int], groups: int = 1) -> tuple[int, int, int, int]:
    """im2col mapping of an N-D conv: (groups, M, K, N) with the GEMM repeated once per group.

    M = batch·∏output_shape (output pixels), K = in_channels/groups·∏kernel_shape,
    N = out_channels/groups. ``output_shape`` is the spatial output size (after pads, strides and
    dilations; dilation changes which inputs a window reads, not how many).
    """
    # batch, channels and output sizes may be 0 (a zero-size tensor: a GEMM with no work)
    for name, value in (("batch", batch), ("in_channels", in_channels), ("out_channels", out_channels)):
        _size("conv_gemm_dims", name, value)
    _positive_int("conv_gemm_dims", "groups", groups)
    for name, dims in (("kernel_shape", kernel_shape), ("output_shape", output_shape)):
        if len(dims) == 0:
            raise DispatchError(f"conv_gemm_dims.{name} must list at least one spatial size.")
        for d in dims:
            (_size if name == "output_shape" else _positive_int)("conv_gemm_dims", name, d)
    if len(kernel_shape) != len(output_shape):
        raise DispatchError(f"Conv kernel_shape {tuple(kernel_shape)} and output_shape {tuple(output_shape)} "
                            "must have the same number of spatial dimensions.")
    if in_channels % groups or out_channels % groups:
        raise DispatchError(f"Conv groups={groups} must divide in_channels={in_channels} and "
                            f"out_channels={out_channels}.")
    m = batch * math.prod(output_shape)
    k = in_channels // groups * math.prod(kernel_shape)
    return groups, m, k, out_channels // groups


def _offchip_traffic(m: int, k: int, n: int, cfg: ArrayConfig,
                     b_resident: bool = False) -> tuple[int, int, int, int]:
    """(dram_read, dram_write, sram_read, sram_write) bytes for one GEMM, as the module docstring says;
    ``b_resident``: the weights B are already in the filter buffer (no off-array read, no fill)."""
    r, c, w = cfg.rows, cfg.cols, cfg.word_bytes
    a, b, out = m * k, k * n, m * n
    a_fits = a * w <= cfg.ifmap_sram_bytes
    b_fits = b * w <= cfg.filter_sram_bytes
    k_folds = math.ceil(k / r)
    if cfg.dataflow == "os":
        a_dram = a if a_fits else a * math.ceil(n / c)
        b_dram = b if k * min(n, c) * w <= cfg.filter_sram_bytes else b * math.ceil(m / r)
        a_sram, b_sram = a * math.ceil(n / c), b * math.ceil(m / r)
        psum_tile, k_folds = 0, 1  # outputs accumulate inside the PEs
    elif cfg.dataflow == "ws":
        a_dram, b_dram = (a if a_fits else a * math.ceil(n / c)), b
        a_sram, b_sram = a * math.ceil(n / c), b
        psum_tile = m * min(n, c)
    else:  # "is"
        a_dram, b_dram = a, (b if b_fits else b * math.ceil(m / c))
        a_sram, b_sram = a, b * math.ceil(m / c)
        psum_tile = min(m, c) * n
    if b_resident:
        b_dram = 0
    spill = (k_folds - 1) * out * ACC_BYTES if psum_tile * ACC_BYTES > cfg.ofmap_sram_bytes else 0
    dram_read = (a_dram + b_dram) * w + spill
    dram_write = out * w + spill
    # Array side: operand reads; partial sums written each K fold and read back for the next one
    # (os: outputs written once); the ofmap buffer is read to drain to DRAM and written by fills.
    if cfg.dataflow == "os":
        out_writes, psum_reads = out * w, 0
    else:
        out_writes, psum_reads = k_folds * out * ACC_BYTES, (k_folds - 1) * out * ACC_BYTES
    sram_read = (a_sram + b_sram) * w + psum_reads + dram_write
    sram_write = dram_read + out_writes
    return dram_read, dram_write, sram_read, sram_write


def _first_fill_bytes(m: int, k: int, n: int, cfg: ArrayConfig, b_resident: bool = False) -> int:
    """Bytes of the input tiles one array needs before its first fold can start (A's tile, B's unless
    it is resident)."""
    r, c = cfg.rows, cfg.cols
    a_tile, b_tile = {"os": (min(m, r) * k, k * min(n, c)),
                      "ws": (m * min(k, r), min(k, r) * min(n, c)),
                      "is": (min(k, r) * min(m, c), min(k, r) * n)}[cfg.dataflow]
    return (a_tile + (0 if b_resident else b_tile)) * cfg.word_bytes


def tile_sizes(cfg: ArrayConfig) -> tuple[int, int, int]:
    """The granule each of (M, K, N) is split in: R or C where the array holds it spatially, 1 (any
    number of elements) for the dimension it streams."""
    r, c = cfg.rows, cfg.cols
    return {"os": (r, 1, c), "ws": (1, r, c), "is": (c, r, 1)}[cfg.dataflow]


def split_dims(m: int, k: int, n: int, cfg: ArrayConfig,
               split: tuple[int, int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """((m', k', n'), (blocks of M, of N, slices of K)) of split (pm, pn, pk): each dimension of D
    elements in granules of t is cut into p parts of ⌈⌈D/t⌉/p⌉ granules (the last part smaller),
    which makes ⌈D/d'⌉ ≤ p parts."""
    pm, pn, pk = split
    for name, p in (("pm", pm), ("pn", pn), ("pk", pk)):
        _positive_int("split", name, p)
    subs, counts = [], []
    for d, t, p in zip((m, k, n), tile_sizes(cfg), (pm, pk, pn), strict=True):
        sub = min(d, math.ceil(math.ceil(d / t) / p) * t)
        subs.append(sub)
        counts.append(math.ceil(d / sub))
    return (subs[0], subs[1], subs[2]), (counts[0], counts[2], counts[1])


def dealt_split(m: int, k: int, n: int, cfg: ArrayConfig) -> tuple[int, int, int]:
    """The split that deals out folds: every spatial dimension cut into its tiles, the streamed one
    whole (one job per fold)."""
    pm, pk, pn = (1 if t == 1 else math.ceil(d / t) for d, t in zip((m, k, n), tile_sizes(cfg), strict=True))
    return pm, pn, pk


def simulate_gemm(m: int, k: int, n: int, cfg: ArrayConfig, *, batch: int = 1,
                  split: tuple[int, int, int] | None = None) -> GemmTiming:
    """Cycles, stalls and traffic of ``batch`` independent M×K×N GEMMs (e.g. conv groups) under one
    mapping: ``split`` = (pm, pn, pk) (module docstring), or None to deal out folds, or (1, 1, 1) on
    a single array. For batch = num_arrays = 1 the compute is SCALE-Sim's count. Compute cycles are
    divided by ``cfg.macs_per_cycle`` (rounded up) for a dtype that runs at a fraction of the array's
    rate. ``targets.asic.mapping.map_gemm`` chooses the split that minimises the total.
    """
    _check_dims(m, k, n)
    _positive_int("simulate_gemm", "batch", batch)
    if m * k * n == 0:  # an empty operand: no MACs; the M x N output (zeros when K = 0) is still written
        out_bytes = batch * m * n * cfg.word_bytes
        cycles = math.ceil(out_bytes / (cfg.offchip_bandwidth_Bps / cfg.clock_hz))
        return GemmTiming(macs=0, compute_cycles=0, stall_cycles=cycles, total_cycles=cycles,
                          dram_read_bytes=0, dram_write_bytes=out_bytes, sram_read_bytes=out_bytes,
                          sram_write_bytes=out_bytes, utilization=0.0, clock_hz=cfg.clock_hz)
    if split is None:
        split = (1, 1, 1) if cfg.num_arrays == 1 else dealt_split(m, k, n, cfg)
    (sm, sk, sn), (qm, qn, qk) = split_dims(m, k, n, cfg, split)
    jobs = batch * qm * qn * qk
    jobs_per_array = math.ceil(jobs / cfg.num_arrays)
    per_fold = fold_cycles(sm, sk, sn, cfg.rows, cfg.cols, cfg.dataflow)
    rounds = jobs_per_array * folds(sm, sk, sn, cfg.rows, cfg.cols, cfg.dataflow)
    compute = rounds * per_fold - 1
    if cfg.macs_per_cycle != 1.0:
        per_fold = math.ceil(per_fold / cfg.macs_per_cycle)  # the time each fold's operands stream for
        compute = math.ceil(compute / cfg.macs_per_cycle)
    w = cfg.word_bytes
    reduction = 0
    if cfg.shared_sram:
        resident = False
        dram_read, dram_write, sram_read, sram_write = (batch * x for x in _offchip_traffic(m, k, n, cfg))
        if cfg.dataflow == "os":  # os sums K inside the PEs: a K split's partial tiles meet in the buffer
            partial = batch * qm * qn * (qk - 1) * sm * sn * ACC_BYTES  # (ws, is count psums per K fold)
            sram_read, sram_write = sram_read + partial, sram_write + partial
    else:
        resident = cfg.weights_resident and jobs_per_array * sk * sn * w <= cfg.filter_sram_bytes
        dram_read, dram_write, sram_read, sram_write = (jobs * x for x in _offchip_traffic(sm, sk, sn, cfg,
                                                                                            resident))
        partial = batch * qm * qn * (qk - 1) * sm * sn  # a K split: all but one slice's outputs are psums
        reduction = partial * ACC_BYTES  # sent once over the fabric, written and read at the adder
        dram_write += reduction - partial * w
        sram_read += reduction - partial * w
        sram_write += reduction
    offchip = dram_read + dram_write - reduction
    active = min(cfg.num_arrays, jobs)
    fill = min(_first_fill_bytes(sm, sk, sn, cfg, resident) * active, offchip)
    bytes_per_cycle = cfg.offchip_bandwidth_Bps / cfg.clock_hz
    reduction_cycles = 0
    if not cfg.shared_sram:  # each array's links carry 1/A of the fabric: idle arrays' share is lost
        level = math.ceil(jobs_per_array * sm * sn * ACC_BYTES * cfg.num_arrays / bytes_per_cycle)
        reduction_cycles = (qk - 1).bit_length() * level  # a tree of ⌈log2 pk⌉ levels
        bytes_per_cycle *= active / cfg.num_arrays
    mem_per_round = (offchip - fill) / rounds / bytes_per_cycle
    overlap_loss = max(0.0, mem_per_round - per_fold) if cfg.double_buffered else mem_per_round
    stall = math.ceil(fill / bytes_per_cycle + rounds * overlap_loss) + reduction_cycles
    total = compute + stall
    macs = batch * m * k * n
    util = macs / (total * cfg.rows * cfg.cols * cfg.num_arrays)
    return GemmTiming(macs=macs, compute_cycles=compute, stall_cycles=stall, total_cycles=total,
                      dram_read_bytes=dram_read, dram_write_bytes=dram_write, sram_read_bytes=sram_read,
                      sram_write_bytes=sram_write, utilization=util, clock_hz=cfg.clock_hz,
                      split=(qm, qn, qk), reduction_cycles=reduction_cycles)


def energy_j(t: GemmTiming, e: EnergyConfig) -> float:
    """Joules: MACs·pJ/MAC + SRAM bytes·pJ/B + DRAM bytes·pJ/B + static power · latency."""
    dynamic_pj = (t.macs * e.pj_per_mac
                  + (t.sram_read_bytes + t.sram_write_bytes) * e.pj_per_sram_byte
                  + (t.dram_read_bytes + t.dram_write_bytes) * e.pj_per_dram_byte)
    return dynamic_pj * 1e-12 + e.static_w * t.latency_s

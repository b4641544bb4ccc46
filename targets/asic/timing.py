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

With several arrays, folds are dealt out in rounds = ⌈folds/num_arrays⌉ and compute takes
rounds·per_fold − 1 cycles. Stalls, with b = bandwidth/clock bytes per cycle, D = all off-chip
bytes and f₀ = bytes of the first round of folds' input tiles (the arrays share the bandwidth):

    fill  = f₀ / b                                   (cannot overlap: nothing to compute yet)
    mem   = (D − f₀) / rounds / b                    per round
    stall = fill + rounds · max(0, mem − per_fold)   double-buffered
    stall = fill + rounds · mem   (= D / b)          single-buffered

Energy: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm figures (``HOROWITZ_45NM_PJ``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

from dispatch.errors import DispatchError

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
    "energy_j",
    "fold_cycles",
    "folds",
    "horowitz_energy",
    "simulate_gemm",
]

DATAFLOWS = ("os", "ws", "is")
ACC_BYTES = 4  # partial sums accumulate in fp32 (or int32 for int8), 4 bytes either way


def _positive_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DispatchError(f"{owner}.{name} must be a positive integer, got {value!r}; fix the ASIC spec.")


def _size(owner: str, name: str, value: object) -> None:
    """A tensor size: an integer >= 0 (0 for a zero-size tensor)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DispatchError(f"{owner}.{name} must be a non-negative integer, got {value!r}.")


def _positive_number(owner: str, name: str, value: object, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise DispatchError(f"{owner}.{name} must be {kind} finite number, got {value!r}; fix the ASIC spec.")


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

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "num_arrays", "ifmap_sram_bytes", "filter_sram_bytes",
                     "ofmap_sram_bytes", "word_bytes"):
            _positive_int("ArrayConfig", name, getattr(self, name))
        for name in ("clock_hz", "offchip_bandwidth_Bps", "macs_per_cycle"):
            _positive_number("ArrayConfig", name, getattr(self, name))
        _check_dataflow(self.dataflow)
        if not isinstance(self.double_buffered, bool):
            raise DispatchError(
                f"ArrayConfig.double_buffered must be true or false, got {self.double_buffered!r}.")


# Horowitz, "Computing's energy problem", ISSCC 2014: rough energy costs at 45 nm, 0.9 V, in pJ.
HOROWITZ_45NM_PJ = {
    "int8_mult": 0.2, "int8_add": 0.03, "int32_add": 0.1,
    "fp16_mult": 1.1, "fp16_add": 0.4, "fp32_mult": 3.7, "fp32_add": 0.9,
    "sram_64bit_8KiB": 10.0, "sram_64bit_32KiB": 20.0, "sram_64bit_1MiB": 100.0,
    "dram_per_bit_low": 20.0, "dram_per_bit_high": 40.0,  # 1.3–2.6 nJ per 64-bit access
}

# Energy of one multiply-accumulate with a 4-byte accumulator, from the table above: the operand
# dtype's multiply plus a 32-bit add. bf16 uses the fp16 multiplier figure (an upper bound: its
# 8-bit mantissa multiplier is smaller than fp16's 11-bit one).
MAC_PJ = {
    "fp32": HOROWITZ_45NM_PJ["fp32_mult"] + HOROWITZ_45NM_PJ["fp32_add"],  # 4.6
    "fp16": HOROWITZ_45NM_PJ["fp16_mult"] + HOROWITZ_45NM_PJ["fp32_add"],  # 2.0
    "bf16": HOROWITZ_45NM_PJ["fp16_mult"] + HOROWITZ_45NM_PJ["fp32_add"],  # 2.0
    "int8": HOROWITZ_45NM_PJ["int8_mult"] + HOROWITZ_45NM_PJ["int32_add"],  # 0.3
}


@dataclass(frozen=True)
class EnergyConfig:
    """Dynamic energy per MAC and per byte moved, in picojoules, plus static power in watts."""

    pj_per_mac: float
    pj_per_sram_byte: float
    pj_per_dram_byte: float
    static_w: float

    def __post_init__(self) -> None:
        for f in fields(self):
            _positive_number("EnergyConfig", f.name, getattr(self, f.name), allow_zero=True)


def horowitz_energy(dtype: str, static_w: float, *, sram_bank_bytes: int = 8 * 1024,
                    dram_pj_per_bit: float = 20.0, logic_scale: float = 1.0) -> EnergyConfig:
    """EnergyConfig from Horowitz's 45 nm figures, scaled as the caller documents.

    MAC: the dtype's multiply + a 32-bit add (``MAC_PJ``). SRAM: the 64-bit read energy for a bank
    of ``sram_bank_bytes``, interpolated log–log between Horowitz's 8 KiB (10 pJ), 32 KiB (20 pJ)
    and 1 MiB (100 pJ) points and clamped outside them, divided by 8 bytes. ``logic_scale``
    multiplies MAC and SRAM energy (process scaling from 45 nm to the preset's node; the preset
    cites its factor). DRAM: ``dram_pj_per_bit`` × 8, not scaled with the logic node (Horowitz's
    DDR3 range is 20–40 pJ/bit; HBM presets pass their own figure).
    """
    if dtype not in MAC_PJ:
        raise DispatchError(f"No MAC energy for dtype {dtype!r}; use one of {', '.join(MAC_PJ)}.")
    _positive_int("horowitz_energy", "sram_bank_bytes", sram_bank_bytes)
    _positive_number("horowitz_energy", "logic_scale", logic_scale)
    points = [(8 * 1024, HOROWITZ_45NM_PJ["sram_64bit_8KiB"]),
              (32 * 1024, HOROWITZ_45NM_PJ["sram_64bit_32KiB"]),
              (1024 * 1024, HOROWITZ_45NM_PJ["sram_64bit_1MiB"])]
    size = min(max(sram_bank_bytes, points[0][0]), points[-1][0])
    for (s0, e0), (s1, e1) in zip(points[:-1], points[1:], strict=True):
        if size <= s1:
            frac = math.log(size / s0) / math.log(s1 / s0)
            sram_pj_64bit = math.exp(math.log(e0) + frac * math.log(e1 / e0))
            break
    return EnergyConfig(pj_per_mac=MAC_PJ[dtype] * logic_scale,
                        pj_per_sram_byte=sram_pj_64bit / 8 * logic_scale,
                        pj_per_dram_byte=dram_pj_per_bit * 8,
                        static_w=static_w)


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


def _offchip_traffic(m: int, k: int, n: int, cfg: ArrayConfig) -> tuple[int, int, int, int]:
    """(dram_read, dram_write, sram_read, sram_write) bytes for one GEMM, as the module docstring says."""
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


def _first_fill_bytes(m: int, k: int, n: int, cfg: ArrayConfig) -> int:
    """Bytes of the input tiles one array needs before its first fold can start."""
    r, c = cfg.rows, cfg.cols
    elems = {"os": min(m, r) * k + k * min(n, c),
             "ws": min(k, r) * min(n, c) + m * min(k, r),
             "is": min(k, r) * min(m, c) + min(k, r) * n}[cfg.dataflow]
    return elems * cfg.word_bytes


def simulate_gemm(m: int, k: int, n: int, cfg: ArrayConfig, *, batch: int = 1) -> GemmTiming:
    """Cycles, stalls and traffic of ``batch`` independent M×K×N GEMMs (e.g. conv groups).

    Compute: rounds·per_fold − 1 with rounds = ⌈batch·folds/num_arrays⌉, which is SCALE-Sim's
    count for batch = num_arrays = 1, divided by ``cfg.macs_per_cycle`` (rounded up) for a dtype that
    runs at a fraction of the array's rate. Traffic and stalls as in the module docstring, summed over
    the batch.
    """
    _check_dims(m, k, n)
    _positive_int("simulate_gemm", "batch", batch)
    if m * k * n == 0:  # an empty operand: no MACs; the M x N output (zeros when K = 0) is still written
        out_bytes = batch * m * n * cfg.word_bytes
        cycles = math.ceil(out_bytes / (cfg.offchip_bandwidth_Bps / cfg.clock_hz))
        return GemmTiming(macs=0, compute_cycles=0, stall_cycles=cycles, total_cycles=cycles,
                          dram_read_bytes=0, dram_write_bytes=out_bytes, sram_read_bytes=out_bytes,
                          sram_write_bytes=out_bytes, utilization=0.0, clock_hz=cfg.clock_hz)
    per_fold = fold_cycles(m, k, n, cfg.rows, cfg.cols, cfg.dataflow)
    total_folds = batch * folds(m, k, n, cfg.rows, cfg.cols, cfg.dataflow)
    rounds = math.ceil(total_folds / cfg.num_arrays)
    compute = rounds * per_fold - 1
    if cfg.macs_per_cycle != 1.0:
        per_fold = math.ceil(per_fold / cfg.macs_per_cycle)  # the time each fold's operands stream for
        compute = math.ceil(compute / cfg.macs_per_cycle)
    dram_read, dram_write, sram_read, sram_write = (batch * x for x in _offchip_traffic(m, k, n, cfg))
    offchip = dram_read + dram_write
    fill = min(_first_fill_bytes(m, k, n, cfg) * min(cfg.num_arrays, total_folds), offchip)
    bytes_per_cycle = cfg.offchip_bandwidth_Bps / cfg.clock_hz
    mem_per_round = (offchip - fill) / rounds / bytes_per_cycle
    overlap_loss = max(0.0, mem_per_round - per_fold) if cfg.double_buffered else mem_per_round
    stall = math.ceil(fill / bytes_per_cycle + rounds * overlap_loss)
    total = compute + stall
    macs = batch * m * k * n
    util = macs / (total * cfg.rows * cfg.cols * cfg.num_arrays)
    return GemmTiming(macs=macs, compute_cycles=compute, stall_cycles=stall, total_cycles=total,
                      dram_read_bytes=dram_read, dram_write_bytes=dram_write, sram_read_bytes=sram_read,
                      sram_write_bytes=sram_write, utilization=util, clock_hz=cfg.clock_hz)


def energy_j(t: GemmTiming, e: EnergyConfig) -> float:
    """Joules: MACs·pJ/MAC + SRAM bytes·pJ/B + DRAM bytes·pJ/B + static power · latency."""
    dynamic_pj = (t.macs * e.pj_per_mac
                  + (t.sram_read_bytes + t.sram_write_bytes) * e.pj_per_sram_byte
                  + (t.dram_read_bytes + t.dram_write_bytes) * e.pj_per_dram_byte)
    return dynamic_pj * 1e-12 + e.static_w * t.latency_s

"""The [asic] table of a spec file, checked: array geometry, dataflow, SRAMs, dtypes and their MAC rates,
energies and limits (see targets/specs/tpu-v4-like.toml for the schema with sources)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatch.errors import DispatchError
from targets.asic.kernels import FLOAT_DTYPES
from targets.asic.timing import DATAFLOWS, MAC_PJ, ArrayConfig, EnergyConfig
from targets.base import require

__all__ = ["AsicParams", "DTYPE_NAMES", "WORD_BYTES", "parse_asic_params"]

# Spec dtype names -> NumPy dtype names, and bytes per element of each as a compute dtype.
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}
WORD_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}

_REQUIRED = ("rows", "cols", "arrays", "clock_ghz", "dataflow", "ifmap_sram_kib", "filter_sram_kib",
             "ofmap_sram_kib", "offchip_bandwidth_GBps", "dtypes", "compute_dtype", "pj_per_mac",
             "pj_per_sram_byte", "pj_per_dram_byte", "vector_lanes", "pj_per_vector_op")
_OPTIONAL = ("weight_capacity_bytes", "double_buffered", "launch_us", "macs_per_pe_cycle", "shared_sram")


@dataclass(frozen=True)
class AsicParams:
    """The [asic] table, checked: the timing and energy configs plus the target's own limits."""

    array: ArrayConfig
    energy: EnergyConfig
    dtypes: tuple[str, ...]  # spec names, e.g. ("bf16", "fp32", "int8")
    compute_dtype: str
    weight_capacity_bytes: int  # 0: weights streamed from off-chip, no limit
    vector_lanes: int
    pj_per_vector_op: float
    launch_s: float
    macs_per_pe_cycle: Mapping[str, float]  # per spec dtype; 1 where the spec lists none

    def timing_array(self, dtype: str) -> ArrayConfig:
        """The array timed for operands of spec dtype `dtype`: its word size and its MAC rate."""
        return dataclasses.replace(self.array, word_bytes=WORD_BYTES[dtype],
                                   macs_per_cycle=float(self.macs_per_pe_cycle.get(dtype, 1.0)))

    def energy_for(self, dtype: str) -> EnergyConfig:
        """The spec's energies with pj_per_mac scaled from the compute dtype's MAC to `dtype`'s by Horowitz's
        ratios (timing.MAC_PJ: multiply + 32-bit add), e.g. int8 on a bf16 array: 0.3 / 2.0 of its figure."""
        if dtype == self.compute_dtype:
            return self.energy
        ratio = MAC_PJ[dtype] / MAC_PJ[self.compute_dtype]
        return dataclasses.replace(self.energy, pj_per_mac=self.energy.pj_per_mac * ratio)

    def peak_ops(self, dtype: str) -> float:
        """2 · rows · cols · arrays · clock · the dtype's MACs per PE per cycle."""
        return self.peak_flops * float(self.macs_per_pe_cycle.get(dtype, 1.0))

    @property
    def peak_flops(self) -> float:
        """2 · rows · cols · arrays · clock: every PE doing one multiply-add per cycle."""
        a = self.array
        return 2.0 * a.rows * a.cols * a.num_arrays * a.clock_hz

    @property
    def word_bytes(self) -> int:
        return WORD_BYTES[self.compute_dtype]

    @property
    def int8(self) -> bool:
        """True when the arrays take int8 operands (the integer ops run)."""
        return "int8" in self.dtypes

    @property
    def numpy_dtypes(self) -> frozenset[str]:
        """NumPy dtype names accepted: the spec's dtypes the float kernels compute in."""
        return frozenset(DTYPE_NAMES[d] for d in self.dtypes) & frozenset(FLOAT_DTYPES)


def _number(table: Mapping[str, Any], key: str, where: str, *, positive: bool = True) -> float:
    v = require(table, key, where, positive=positive)
    if not math.isfinite(v) or v < 0:
        raise DispatchError(f"{where}: '{key}' must be a finite non-negative number, not {v}; fix the value.")
    return float(v)


def _int(table: Mapping[str, Any], key: str, where: str) -> int:
    return int(require(table, key, where, kind=int))


def parse_asic_params(table: Mapping[str, Any], where: str, idle_w: float) -> AsicParams:
    """Check an [asic] table (see targets/specs/*.toml) and build its timing and energy configs.

    `where` names the file in error messages; `idle_w` (the spec's [power] idle_w) is the static power.
    """
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise DispatchError(f"{where} has unknown key(s) {', '.join(unknown)}; valid keys are "
                            f"{', '.join(_REQUIRED + _OPTIONAL)}.")
    dataflow = require(table, "dataflow", where, kind=str, positive=False)
    if dataflow not in DATAFLOWS:
        raise DispatchError(f"{where}: 'dataflow' must be one of {', '.join(DATAFLOWS)}, not {dataflow!r}.")
    dtypes = table.get("dtypes")
    if not isinstance(dtypes, list) or not dtypes or any(d not in DTYPE_NAMES for d in dtypes):
        raise DispatchError(f"{where}: 'dtypes' must be a non-empty list drawn from "
                            f"{', '.join(DTYPE_NAMES)}, not {dtypes!r}.")
    compute = require(table, "compute_dtype", where, kind=str, positive=False)
    if compute not in dtypes:
        raise DispatchError(f"{where}: 'compute_dtype' must be one of its dtypes ({', '.join(dtypes)}), "
                            f"not {compute!r}.")
    capacity = table.get("weight_capacity_bytes", 0)
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or not 0 <= capacity < math.inf:
        raise DispatchError(f"{where}: 'weight_capacity_bytes' must be 0 (weights streamed) or a positive "
                            f"number of bytes, not {capacity!r}.")
    double = table.get("double_buffered", True)
    if not isinstance(double, bool):
        raise DispatchError(f"{where}: 'double_buffered' must be true or false, not {double!r}.")
    shared = table.get("shared_sram", True)  # false: private buffers per array, joined by a fabric
    if not isinstance(shared, bool):
        raise DispatchError(f"{where}: 'shared_sram' must be true or false, not {shared!r}.")
    launch_us = table.get("launch_us", 0.0)
    if (isinstance(launch_us, bool) or not isinstance(launch_us, (int, float)) or launch_us < 0
            or not math.isfinite(launch_us)):
        raise DispatchError(f"{where}: 'launch_us' must be a non-negative number, not {launch_us!r}.")
    rates = table.get("macs_per_pe_cycle", {})
    if not isinstance(rates, Mapping) or any(
            d not in dtypes or isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < math.inf
            for d, r in rates.items()):
        raise DispatchError(f"{where}: 'macs_per_pe_cycle' must be a table of positive numbers keyed by its "
                            f"dtypes ({', '.join(dtypes)}), not {rates!r}.")
    sram = {}
    for key in ("ifmap_sram_kib", "filter_sram_kib", "ofmap_sram_kib"):
        sram[key] = int(_number(table, key, where) * 1024)
        if sram[key] < 1:
            raise DispatchError(f"{where}: '{key}' must be at least 1/1024 KiB (one byte).")
    array = ArrayConfig(
        rows=_int(table, "rows", where), cols=_int(table, "cols", where),
        clock_hz=_number(table, "clock_ghz", where) * 1e9, dataflow=dataflow,
        num_arrays=_int(table, "arrays", where),
        ifmap_sram_bytes=sram["ifmap_sram_kib"], filter_sram_bytes=sram["filter_sram_kib"],
        ofmap_sram_bytes=sram["ofmap_sram_kib"],
        offchip_bandwidth_Bps=_number(table, "offchip_bandwidth_GBps", where) * 1e9,
        word_bytes=WORD_BYTES[compute], double_buffered=double, shared_sram=shared,
        weights_resident=capacity > 0)
    energy = EnergyConfig(
        pj_per_mac=_number(table, "pj_per_mac", where, positive=False),
        pj_per_sram_byte=_number(table, "pj_per_sram_byte", where, positive=False),
        pj_per_dram_byte=_number(table, "pj_per_dram_byte", where, positive=False),
        static_w=float(idle_w))
    return AsicParams(array=array, energy=energy, dtypes=tuple(dtypes), compute_dtype=compute,
                      weight_capacity_bytes=int(capacity), vector_lanes=_int(table, "vector_lanes", where),
                      pj_per_vector_op=_number(table, "pj_per_vector_op", where, positive=False),
                      launch_s=float(launch_us) * 1e-6,
                      macs_per_pe_cycle={d: float(r) for d, r in rates.items()})

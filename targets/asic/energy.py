"""Energy per MAC and per byte for the simulated ASIC: Horowitz's 45 nm figures and the checked config.

Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm figures (``HOROWITZ_45NM_PJ``); the presets
scale them to their node and cite the factor. ``timing.energy_j`` applies an ``EnergyConfig`` to a
GEMM's timing. The number checks here serve ``timing.ArrayConfig`` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from dispatch.errors import DispatchError

__all__ = ["HOROWITZ_45NM_PJ", "MAC_PJ", "EnergyConfig", "horowitz_energy"]


def _positive_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DispatchError(f"{owner}.{name} must be a positive integer, got {value!r}; fix the ASIC spec.")


def _positive_number(owner: str, name: str, value: object, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise DispatchError(f"{owner}.{name} must be {kind} finite number, got {value!r}; fix the ASIC spec.")


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

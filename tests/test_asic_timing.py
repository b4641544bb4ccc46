"""Systolic timing: SCALE-Sim v3 goldens, hand-computed cycles, memory model, energy, bad configs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from dispatch.errors import DispatchError
from targets.asic.timing import (
    ACC_BYTES,
    ArrayConfig,
    EnergyConfig,
    compute_cycles,
    conv_gemm_dims,
    energy_j,
    horowitz_energy,
    simulate_gemm,
)

GOLDENS = json.loads((Path(__file__).parent / "data" / "scalesim_goldens.json").read_text())
CASES = GOLDENS["cases"]


def _gemm_dims(case: dict) -> tuple[int, int, int, int]:
    """(groups, M, K, N) of a golden case; conv output size from the padded input, as SCALE-Sim."""
    if case["kind"] == "gemm":
        return 1, case["m"], case["k"], case["n"]
    oh = (case["height"] + 2 * case["pad_h"] - case["kernel_h"]) // case["stride"] + 1
    ow = (case["width"] + 2 * case["pad_w"] - case["kernel_w"]) // case["stride"] + 1
    return conv_gemm_dims(1, case["channels"], case["filters"], (case["kernel_h"], case["kernel_w"]),
                          (oh, ow), case["groups"])


def _cfg(**overrides) -> ArrayConfig:
    base = dict(rows=32, cols=32, clock_hz=1e9, dataflow="os", num_arrays=1, ifmap_sram_bytes=1 << 20,
                filter_sram_bytes=1 << 20, ofmap_sram_bytes=1 << 20, offchip_bandwidth_Bps=1e12, word_bytes=2)
    base.update(overrides)
    return ArrayConfig(**base)


# ---- (1) SCALE-Sim v3 goldens ----------------------------------------------------------------

def test_goldens_are_loaded():
    assert len(CASES) >= 20
    assert {c["dataflow"] for c in CASES} >= {"os", "ws"}
    assert {c["kind"] for c in CASES} == {"gemm", "conv"}
    assert all(c["stall_cycles"] == 0 for c in CASES)  # compute isolated from memory
    assert "Regenerate with" in GOLDENS["note"]


@pytest.mark.parametrize("case", CASES, ids=[f"{c['name']}-{c['rows']}x{c['cols']}-{c['dataflow']}"
                                              for c in CASES])
def test_compute_cycles_match_scalesim(case):
    groups, m, k, n = _gemm_dims(case)
    # SCALE-Sim runs each depthwise channel as its own layer and we sum them: groups · cycles.
    predicted = groups * compute_cycles(m, k, n, case["rows"], case["cols"], case["dataflow"])
    assert abs(predicted - case["compute_cycles"]) <= 0.01 * case["compute_cycles"]


def test_max_relative_error_per_dataflow():
    worst: dict[str, float] = {}
    for case in CASES:
        groups, m, k, n = _gemm_dims(case)
        predicted = groups * compute_cycles(m, k, n, case["rows"], case["cols"], case["dataflow"])
        err = abs(predicted - case["compute_cycles"]) / case["compute_cycles"]
        worst[case["dataflow"]] = max(worst.get(case["dataflow"], 0.0), err)
    assert set(worst) >= {"os", "ws"}
    assert max(worst.values()) <= 0.01, worst


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_simulate_gemm_compute_equals_closed_form(dataflow):
    t = simulate_gemm(100, 60, 37, _cfg(dataflow=dataflow))
    assert t.compute_cycles == compute_cycles(100, 60, 37, 32, 32, dataflow)
    assert t.total_cycles == t.compute_cycles + t.stall_cycles


# ---- (2) hand-computed cycles and mappings -----------------------------------------------------

def test_hand_computed_cycles():
    # os: folds ⌈100/32⌉·⌈37/32⌉ = 4·2 = 8; per fold R + C + K − 2 = 32 + 32 + 60 − 2 = 122; 8·122 − 1
    assert compute_cycles(100, 60, 37, 32, 32, "os") == 975
    # ws: folds ⌈60/32⌉·⌈37/32⌉ = 2·2 = 4; per fold 2R + C + M − 2 = 64 + 32 + 100 − 2 = 194; 4·194 − 1
    assert compute_cycles(100, 60, 37, 32, 32, "ws") == 775
    # is: folds ⌈60/32⌉·⌈100/32⌉ = 2·4 = 8; per fold 2R + C + N − 2 = 64 + 32 + 37 − 2 = 131; 8·131 − 1
    assert compute_cycles(100, 60, 37, 32, 32, "is") == 1047
    # 1×1×1 on 128×128 os: 1 fold of 128 + 128 + 1 − 2 = 255 cycles; minus 1
    assert compute_cycles(1, 1, 1, 128, 128, "os") == 254
    # non-square 16×64, os, 200×300×50: folds ⌈200/16⌉·⌈50/64⌉ = 13·1; per fold 16 + 64 + 300 − 2 = 378
    assert compute_cycles(200, 300, 50, 16, 64, "os") == 13 * 378 - 1


def test_arrays_share_folds():
    # 8 os folds of 122 cycles over 4 arrays: ⌈8/4⌉ = 2 rounds; 2·122 − 1 = 243
    t = simulate_gemm(100, 60, 37, _cfg(num_arrays=4))
    assert t.compute_cycles == 243
    # a batch of 3 such GEMMs on 4 arrays: 24 folds → 6 rounds; 6·122 − 1 = 731
    assert simulate_gemm(100, 60, 37, _cfg(num_arrays=4), batch=3).compute_cycles == 731


def test_conv_gemm_dims():
    # ResNet conv3 3×3, 128→128, 28×28 out: M = 28·28 = 784, K = 128·3·3 = 1152, N = 128
    assert conv_gemm_dims(1, 128, 128, (3, 3), (28, 28)) == (1, 784, 1152, 128)
    # batch 8, 7×7/2 stem at 224: M = 8·112·112 = 100352, K = 3·7·7 = 147, N = 64
    assert conv_gemm_dims(8, 3, 64, (7, 7), (112, 112)) == (1, 100352, 147, 64)
    # depthwise 3×3 over 32 channels, 14×14 out: 32 GEMMs of M = 196, K = 1·3·3 = 9, N = 1
    assert conv_gemm_dims(1, 32, 32, (3, 3), (14, 14), groups=32) == (32, 196, 9, 1)
    # grouped 3-D conv, 4 groups: K = 64/4·3·3·3 = 432, N = 128/4 = 32, M = 2·4·8·8 = 512
    assert conv_gemm_dims(2, 64, 128, (3, 3, 3), (4, 8, 8), groups=4) == (4, 512, 432, 32)
    # 1-D conv: M = 100, K = 16·5 = 80, N = 32
    assert conv_gemm_dims(1, 16, 32, (5,), (100,)) == (1, 100, 80, 32)


# ---- (3) memory model ---------------------------------------------------------------------------

@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_resident_operands_are_read_once(dataflow):
    m, k, n, w = 300, 200, 100, 2
    t = simulate_gemm(m, k, n, _cfg(dataflow=dataflow, word_bytes=w))
    assert t.dram_read_bytes == (m * k + k * n) * w  # 2·(60000 + 20000) = 160000
    assert t.dram_write_bytes == m * n * w  # 2·30000 = 60000
    assert t.macs == m * k * n


def test_hand_computed_rereads():
    # os, 256³ on 32×32, 2-byte words, 64 KiB buffers. A = 256·256·2 = 128 KiB doesn't fit: re-read
    # once per N fold, ⌈256/32⌉ = 8 times → 1 MiB. One B column tile K·C·2 = 256·32·2 = 16 KiB fits:
    # B read once, 128 KiB. Output 256·256·2 = 128 KiB written once.
    cfg = _cfg(ifmap_sram_bytes=64 * 1024, filter_sram_bytes=64 * 1024, ofmap_sram_bytes=64 * 1024)
    t = simulate_gemm(256, 256, 256, cfg)
    assert t.dram_read_bytes == 8 * 131072 + 131072
    assert t.dram_write_bytes == 131072


def test_hand_computed_psum_spill():
    # ws, M=64, K=128, N=32 on 32×32: ⌈128/32⌉ = 4 K folds accumulate a 64×32 fp32 tile = 8 KiB.
    # With a 4 KiB ofmap buffer, 3 folds' partial sums spill: 3·64·32·4 = 24576 B each way.
    big = simulate_gemm(64, 128, 32, _cfg(dataflow="ws"))
    small = simulate_gemm(64, 128, 32, _cfg(dataflow="ws", ofmap_sram_bytes=4096))
    assert small.dram_read_bytes - big.dram_read_bytes == 3 * 64 * 32 * ACC_BYTES
    assert small.dram_write_bytes - big.dram_write_bytes == 24576


def test_hand_computed_stalls():
    # os 64³ on 32×32, 1-byte words, 1 byte/cycle (bandwidth = clock). Everything fits:
    # D = 4096 + 4096 read + 4096 written = 12288 B. First fill: A tile 32·64 + B tile 64·32 = 4096 B.
    # 4 folds of 32 + 32 + 64 − 2 = 126 cycles, one array → 4 rounds of (12288 − 4096)/4 = 2048 cycles
    # of traffic. Double-buffered: 4096 + 4·(2048 − 126) = 11784; single: 4096 + 4·2048 = 12288.
    cfg = _cfg(word_bytes=1, offchip_bandwidth_Bps=1e9, clock_hz=1e9)
    t = simulate_gemm(64, 64, 64, cfg)
    assert t.compute_cycles == 4 * 126 - 1
    assert t.stall_cycles == 11784
    assert simulate_gemm(64, 64, 64, replace(cfg, double_buffered=False)).stall_cycles == 12288
    assert t.latency_s == pytest.approx((503 + 11784) / 1e9)
    assert t.utilization == pytest.approx(64**3 / ((503 + 11784) * 32 * 32))


SHAPES = [(1, 1, 1), (100, 60, 37), (128, 768, 3072), (3136, 576, 64), (49, 512, 2048), (7, 1000, 5)]


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("shape", SHAPES)
def test_memory_monotonic(dataflow, shape):
    m, k, n = shape
    cfg = _cfg(dataflow=dataflow, rows=128, cols=128, offchip_bandwidth_Bps=50e9)
    base = simulate_gemm(m, k, n, cfg)
    small = simulate_gemm(m, k, n, replace(cfg, ifmap_sram_bytes=4096, filter_sram_bytes=4096,
                                           ofmap_sram_bytes=4096))
    assert small.dram_read_bytes + small.dram_write_bytes >= base.dram_read_bytes + base.dram_write_bytes
    assert small.stall_cycles >= base.stall_cycles
    for c in (cfg, replace(cfg, ifmap_sram_bytes=4096, filter_sram_bytes=4096, ofmap_sram_bytes=4096)):
        t = simulate_gemm(m, k, n, c)
        half_bw = replace(c, offchip_bandwidth_Bps=c.offchip_bandwidth_Bps / 2)
        assert simulate_gemm(m, k, n, half_bw).latency_s >= t.latency_s
        assert simulate_gemm(m, k, n, replace(c, double_buffered=False)).latency_s >= t.latency_s
        assert simulate_gemm(m, k, n, replace(c, num_arrays=4)).compute_cycles <= t.compute_cycles
        assert 0 < t.utilization <= 1


def test_shrinking_sram_strictly_raises_traffic_and_stalls():
    # BERT FFN on a 128×128 ws array: A = 128·768·2 B = 192 KiB. Fits in 1 MiB; in 64 KiB it is
    # re-read once per N fold, ⌈3072/128⌉ = 24 times, so 23 extra copies of 196608 B.
    cfg = _cfg(dataflow="ws", rows=128, cols=128, offchip_bandwidth_Bps=100e9)
    big = simulate_gemm(128, 768, 3072, cfg)
    small = simulate_gemm(128, 768, 3072, replace(cfg, ifmap_sram_bytes=64 * 1024))
    assert small.dram_read_bytes - big.dram_read_bytes == 23 * 196608
    assert small.stall_cycles > big.stall_cycles


# ---- (4) energy -------------------------------------------------------------------------------

def test_energy_adds_up():
    t = simulate_gemm(100, 60, 37, _cfg(offchip_bandwidth_Bps=10e9))
    e = EnergyConfig(pj_per_mac=2.0, pj_per_sram_byte=1.25, pj_per_dram_byte=160.0, static_w=3.0)
    parts = [
        t.macs * 2.0e-12,
        (t.sram_read_bytes + t.sram_write_bytes) * 1.25e-12,
        (t.dram_read_bytes + t.dram_write_bytes) * 160.0e-12,
        3.0 * t.total_cycles / 1e9,
    ]
    assert energy_j(t, e) == pytest.approx(sum(parts))
    assert energy_j(t, EnergyConfig(2.0, 0.0, 0.0, 0.0)) == pytest.approx(100 * 60 * 37 * 2.0e-12)
    assert energy_j(t, EnergyConfig(0.0, 0.0, 0.0, 3.0)) == pytest.approx(3.0 * t.latency_s)


def test_horowitz_figures():
    e = horowitz_energy("bf16", static_w=1.0)
    assert e.pj_per_mac == pytest.approx(1.1 + 0.9)  # fp16-class multiply + fp32 add
    assert e.pj_per_sram_byte == pytest.approx(10.0 / 8)  # 64-bit read of an 8 KiB SRAM
    assert e.pj_per_dram_byte == pytest.approx(20.0 * 8)  # 20 pJ/bit
    assert horowitz_energy("int8", 0.0).pj_per_mac == pytest.approx(0.2 + 0.1)  # int8 mult + int32 add
    assert horowitz_energy("fp32", 0.0).pj_per_mac == pytest.approx(3.7 + 0.9)
    # 16 KiB sits halfway (log scale) between 8 KiB (10 pJ) and 32 KiB (20 pJ): 10·√2 pJ per 8 B
    assert horowitz_energy("fp16", 0.0, sram_bank_bytes=16 * 1024).pj_per_sram_byte == \
        pytest.approx(10 * math.sqrt(2) / 8)
    assert horowitz_energy("fp16", 0.0, sram_bank_bytes=64 << 20).pj_per_sram_byte == pytest.approx(100 / 8)
    assert horowitz_energy("fp16", 0.0, logic_scale=0.5).pj_per_mac == pytest.approx(1.0)


# ---- (5) bad configs ----------------------------------------------------------------------------

@pytest.mark.parametrize("override", [
    {"rows": 0}, {"cols": -4}, {"num_arrays": 0}, {"word_bytes": 0}, {"ifmap_sram_bytes": -1},
    {"clock_hz": 0.0}, {"offchip_bandwidth_Bps": -1e9}, {"offchip_bandwidth_Bps": float("nan")},
    {"dataflow": "rs"}, {"rows": 2.5}, {"double_buffered": "yes"},
])
def test_bad_array_config(override):
    with pytest.raises(DispatchError) as info:
        _cfg(**override)
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message
    assert next(iter(override)) in message or "dataflow" in message


def test_bad_inputs():
    with pytest.raises(DispatchError, match="pj_per_dram_byte"):
        EnergyConfig(1.0, 1.0, -5.0, 0.0)
    with pytest.raises(DispatchError, match="os, ws, is"):
        compute_cycles(8, 8, 8, 4, 4, "systolic")
    with pytest.raises(DispatchError, match="dimension M"):
        simulate_gemm(-1, 8, 8, _cfg())  # 0 is a zero-size tensor: no work (tests/test_hostile.py)
    with pytest.raises(DispatchError, match="groups=3"):
        conv_gemm_dims(1, 64, 64, (3, 3), (8, 8), groups=3)
    with pytest.raises(DispatchError, match="same number"):
        conv_gemm_dims(1, 64, 64, (3, 3), (8,))
    with pytest.raises(DispatchError, match="fp8"):
        horowitz_energy("fp8", 1.0)

"""Many arrays (targets/asic/mapping.py): output-space and K splits, the reduction, optimality, wse2-like."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from dispatch.errors import DispatchError
from targets.asic.mapping import map_gemm, split_candidates
from targets.asic.timing import ArrayConfig, compute_cycles, conv_gemm_dims, simulate_gemm, split_dims
from targets.base import make_target

GOLDENS = json.loads((Path(__file__).parent / "data" / "scalesim_goldens.json").read_text())["cases"]


def _cfg(**overrides) -> ArrayConfig:
    base = dict(rows=4, cols=4, clock_hz=1e9, dataflow="ws", num_arrays=4, ifmap_sram_bytes=1 << 20,
                filter_sram_bytes=1 << 20, ofmap_sram_bytes=1 << 20, offchip_bandwidth_Bps=1e15, word_bytes=2)
    base.update(overrides)
    return ArrayConfig(**base)


def test_split_candidates():
    # 10 granules: part sizes ⌈10/p⌉ = 10, 5, 4, 3, 2, 1 first reached at p = 1, 2, 3, 4, 5, 10
    assert split_candidates(10, 1) == [1, 2, 3, 4, 5, 10]
    # K = 147 on 16 rows is ⌈147/16⌉ = 10 tiles: the same part counts
    assert split_candidates(147, 16) == [1, 2, 3, 4, 5, 10]
    # N = 64 on 4 columns: 16 tiles, sizes 16, 8, 6, 4, 3, 2, 1
    assert split_candidates(64, 4) == [1, 2, 3, 4, 6, 8, 16]
    # parts are tile-aligned: K = 147 in 3 parts of ⌈10/3⌉ = 4 tiles = 64 rows, ⌈147/64⌉ = 3 slices
    assert split_dims(1, 147, 1, _cfg(rows=16), (1, 1, 3)) == ((1, 64, 1), (1, 1, 3))


def test_output_space_split_on_four_arrays():
    # ws on four 4×4 arrays, M = 64, K = 4, N = 8, bandwidth 1e6 B/cycle (stalls: the 1-cycle fill).
    c = _cfg()
    # Folds dealt out: ⌈4/4⌉·⌈8/4⌉ = 2 folds on 2 arrays, each streams all 64 rows:
    # 2·4 + 4 + 64 − 2 = 74 cycles per fold, compute 73.
    dealt = simulate_gemm(64, 4, 8, c)
    assert (dealt.split, dealt.compute_cycles, dealt.total_cycles) == ((1, 2, 1), 73, 74)
    # 2 row blocks × 2 column blocks: 4 jobs of 32×4×4, one per array: 8 + 4 + 32 − 2 = 42, compute 41.
    # (4 row blocks × 1 column block: each job has 2 folds of 8 + 4 + 16 − 2 = 26: 2·26 − 1 = 51, worse.)
    t = map_gemm(64, 4, 8, c)
    assert (t.split, t.compute_cycles, t.stall_cycles, t.total_cycles) == ((2, 2, 1), 41, 1, 42)
    assert simulate_gemm(64, 4, 8, c, split=(4, 1, 1)).compute_cycles == 51
    # the shared buffers' traffic is the whole GEMM's, whatever the split: (64·4 + 4·8 + 64·8)·2 B
    assert t.dram_read_bytes + t.dram_write_bytes == (64 * 4 + 4 * 8 + 64 * 8) * 2
    assert t.utilization == pytest.approx(64 * 4 * 8 / (42 * 4 * 4 * 4))


def test_k_split_pays_the_reduction():
    # os on four private-SRAM 4×4 arrays (K streams), M = N = 4, K = 400, 64 B/cycle in all (16 per array).
    p = _cfg(dataflow="os", shared_sram=False, offchip_bandwidth_Bps=64e9)
    # K in 4 slices of 100: one fold of 4 + 4 + 100 − 2 = 106 per array, compute 105. Fill: 4 arrays ·
    # (4·100 + 100·4)·2 B = 6400 B at 64 B/cycle = 100 cycles; the 32 B left hide under the fold. The
    # reduction: ⌈log2 4⌉ = 2 tree levels, each sending 4·4 partial sums · 4 B per array at 64/4 B/cycle
    # = 4 cycles: 8. Partial-sum bytes: 3 slices · 16 · 4 B = 192 written over the fabric.
    t = simulate_gemm(4, 400, 4, p, split=(1, 1, 4))
    assert (t.compute_cycles, t.reduction_cycles, t.stall_cycles) == (105, 8, 100 + 8)
    assert t.dram_write_bytes == 4 * 4 * 2 + 3 * 16 * 4  # the final block once, the partial sums
    # Shared buffers: the same split adds partial sums in the shared ofmap buffer, no reduction time.
    shared = simulate_gemm(4, 400, 4, replace(p, shared_sram=True), split=(1, 1, 4))
    assert (shared.reduction_cycles, shared.stall_cycles) == (0, 100)
    # ... but os sums K inside the PEs, so the 3 partial 4×4 tiles of 4 B are written and read back there
    whole = simulate_gemm(4, 400, 4, replace(p, shared_sram=True), split=(1, 1, 1))
    assert shared.sram_write_bytes - whole.sram_write_bytes == 3 * 16 * 4
    assert shared.sram_read_bytes - whole.sram_read_bytes == 3 * 16 * 4
    # The best split: 8 slices of 50, two per array: 2 rounds of 4 + 4 + 50 − 2 = 56, compute 111; fill
    # 4 · (4·50 + 50·4)·2 B = 3200 B = 50 cycles; 3 levels · ⌈2·16·4 B / 16⌉ = 3 · 8 = 24: 111 + 74 = 185,
    # against one array streaming all of K: 405 + the fill of 6400 B at its 16 B/cycle, 400 = 805.
    best = map_gemm(4, 400, 4, p)
    assert (best.split, best.compute_cycles, best.reduction_cycles) == ((1, 1, 8), 111, 24)
    assert best.total_cycles == 185
    assert simulate_gemm(4, 400, 4, p).total_cycles == 805


def test_one_array_is_scalesim_unchanged():
    for case in GOLDENS:
        if case["kind"] == "gemm":
            groups, m, k, n = 1, case["m"], case["k"], case["n"]
        else:
            oh = (case["height"] + 2 * case["pad_h"] - case["kernel_h"]) // case["stride"] + 1
            ow = (case["width"] + 2 * case["pad_w"] - case["kernel_w"]) // case["stride"] + 1
            groups, m, k, n = conv_gemm_dims(1, case["channels"], case["filters"],
                                             (case["kernel_h"], case["kernel_w"]), (oh, ow), case["groups"])
        c = _cfg(rows=case["rows"], cols=case["cols"], dataflow=case["dataflow"], num_arrays=1)
        t = map_gemm(m, k, n, c, groups)
        assert t == simulate_gemm(m, k, n, c, batch=groups) and t.split == (1, 1, 1)
        assert t.compute_cycles == groups * (compute_cycles(m, k, n, case["rows"], case["cols"],
                                                            case["dataflow"]) + 1) - 1


def test_the_search_is_exact():
    # Against every split (pm ≤ M, pn ≤ N, pk ≤ K) and the folds dealt out, on small random cases.
    rng = random.Random(3)
    for _ in range(40):
        c = _cfg(rows=rng.choice([2, 4]), cols=rng.choice([2, 4]), dataflow=rng.choice(["os", "ws", "is"]),
                 num_arrays=rng.choice([2, 3, 4, 8]), ifmap_sram_bytes=rng.choice([256, 1 << 20]),
                 ofmap_sram_bytes=rng.choice([256, 1 << 20]), offchip_bandwidth_Bps=rng.choice([2e9, 1e11]),
                 shared_sram=rng.random() < 0.5, weights_resident=rng.random() < 0.5)
        m, k, n, batch = rng.randint(1, 24), rng.randint(1, 24), rng.randint(1, 24), rng.choice([1, 2])
        every = min(simulate_gemm(m, k, n, c, batch=batch, split=s).total_cycles
                    for s in itertools.product(range(1, m + 1), range(1, n + 1), range(1, k + 1)))
        best = map_gemm(m, k, n, c, batch)
        assert best.total_cycles == min(every, simulate_gemm(m, k, n, c, batch=batch).total_cycles)


def test_tpu_never_worse_than_dealing_folds():
    cfg = make_target("asic", "tpu-v4-like").params.array
    for m, k, n in [(12544, 147, 64), (3136, 576, 64), (49, 4608, 512), (1, 2048, 1000), (128, 768, 3072)]:
        assert map_gemm(m, k, n, cfg).total_cycles <= simulate_gemm(m, k, n, cfg).total_cycles


def test_wse2_stem_utilisation():
    # ResNet-50's stem at batch 1: M = 112·112 = 12544, K = 3·7·7 = 147, N = 64; 118,013,952 MACs.
    w = make_target("asic", "wse2-like").params.array
    # Before (folds dealt out over 13,281 arrays of 16×16, the old preset): ⌈147/16⌉·⌈64/16⌉ = 40 folds,
    # one round of 2·16 + 16 + 12544 − 2 = 12590 cycles: 118,013,952 / (12590 · 256 · 13281) = 0.28%.
    # A hand split bounds the optimum: (12544, 16, 4) = one output row × 4 channels × 37 (or 36) of K per
    # core, 802,816 jobs ≤ 850,000 cores, weights resident (37·4·2 B ≤ 16 KiB): 37 folds of 2 + 4 + 1 − 2 = 5,
    # compute 184; fill 802,816 · 2 B at 25e6 · 802,816/850,000 B/cycle < 1 cycle, the rest hides under the
    # folds: stall 1; reduction ⌈log2 4⌉ = 2 levels · ⌈4·4 B · 850,000 / 25e6⌉ = 2 · 1: total 187 cycles,
    # 118,013,952 / (187 · 4 · 850,000) = 18.56%. The search can only do better.
    hand = simulate_gemm(12544, 147, 64, w, split=(12544, 16, 4))
    assert (hand.compute_cycles, hand.stall_cycles, hand.reduction_cycles) == (184, 3, 2)
    assert hand.total_cycles == 187
    assert hand.utilization == pytest.approx(118_013_952 / (187 * 4 * 850_000))
    t = map_gemm(12544, 147, 64, w)
    assert t.utilization >= hand.utilization > 0.185
    assert t.total_cycles <= 187


def test_bad_split():
    with pytest.raises(DispatchError, match="split.pk"):
        simulate_gemm(8, 8, 8, _cfg(), split=(1, 1, 0))


def test_resident_weights_move_only_when_they_do_not_fit():
    # One private-SRAM array job of 8×4×4 (ws): A = 8·4·2 = 64 B, B = 4·4·2 = 32 B, outputs 8·4·2 = 64 B.
    p = _cfg(shared_sram=False, weights_resident=True)
    t = simulate_gemm(8, 4, 4, p, split=(1, 1, 1))
    assert (t.dram_read_bytes, t.dram_write_bytes) == (64, 64)  # the weights were loaded with the model
    # a 16-byte filter buffer cannot hold the 32 B block: it streams with the inputs
    small = replace(p, filter_sram_bytes=16)
    assert simulate_gemm(8, 4, 4, small, split=(1, 1, 1)).dram_read_bytes == 64 + 32
    # 2 row blocks of 4 rows: each array holds its own copy of the weights, only the 2 · 4·4·2 B of input
    # rows move; streamed instead, each of the 2 jobs also reads the weights: 2 · 32 B more
    assert simulate_gemm(8, 4, 4, p, split=(2, 1, 1)).dram_read_bytes == 2 * 4 * 4 * 2
    streamed = simulate_gemm(8, 4, 4, replace(p, weights_resident=False), split=(2, 1, 1))
    assert streamed.dram_read_bytes == 2 * (4 * 4 * 2 + 4 * 4 * 2)


def test_shared_sram_key():
    assert make_target("asic", "tpu-v4-like").params.array.shared_sram  # the default: one set of buffers
    with pytest.raises(DispatchError, match="'shared_sram' must be true or false") as info:
        make_target("asic", "wse2-like", shared_sram="no")
    assert "\n" not in str(info.value)

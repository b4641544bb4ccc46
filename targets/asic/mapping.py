"""Many arrays: the split of a GEMM over the arrays that minimises its cycles (docs/wafer-scale.md).

``map_gemm`` is ``timing.simulate_gemm`` under the best split (pm, pn, pk) of the output rows M, the
output columns N and the reduction K (timing's module docstring says what a split costs). The search
is exhaustive over the splits that differ: along a dimension of D elements in granules of t (R or C
where the array holds it spatially, 1 where it streams), only ⌈⌈D/t⌉/p⌉ matters, so the candidates
are the smallest p giving each of its O(2·√(D/t)) values (``split_candidates``); their product is the
grid. A vectorised lower bound on every candidate's cycles (its compute, its K-split reduction, and
the traffic no split avoids: each job's inputs read once and each output written once) orders the
grid, and the candidates are simulated in that order until the bound reaches the best total found,
so the result is the exact minimum over the grid. The folds dealt out (``split=None``, what a
multi-array design did before) are the incumbent and win ties, so a preset whose best mapping is
that keeps its figures, and one array is always SCALE-Sim's (1, 1, 1).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from targets.asic.timing import ACC_BYTES, ArrayConfig, GemmTiming, simulate_gemm, tile_sizes

__all__ = ["GRID_LIMIT", "SIMULATION_LIMIT", "map_gemm", "split_candidates"]

# Candidate grids above this many splits are thinned (every other candidate of the longest list, its
# ends kept) until they fit; no preset reaches it on the zoo (ResNet-50 at batch 32 on wse2-like
# makes at most 234,630).
GRID_LIMIT = 2_000_000
# At most this many splits are simulated; the zoo's layers stop far earlier (the bound meets the best
# within a few hundred), only absurd sizes (a GEMM of 10^10 rows, where float rounding of the bound is
# cycles wide) reach it, and take the best of those tried.
SIMULATION_LIMIT = 20_000


def split_candidates(d: int, t: int) -> list[int]:
    """The smallest part count p for each distinct part size ⌈⌈d/t⌉/p⌉ granules, ascending."""
    tiles = math.ceil(d / t)
    out, p = [], 1
    while p <= tiles:
        out.append(p)
        q = math.ceil(tiles / p)
        if q == 1:
            break
        p = math.ceil(tiles / (q - 1))  # the next p whose part holds fewer granules
    return out


def _ceil_div(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    return -(-a // b)


def _thin(lists: list[list[int]]) -> list[list[int]]:
    while math.prod(len(c) for c in lists) > GRID_LIMIT:
        i = max(range(3), key=lambda j: len(lists[j]))
        lists[i] = sorted(set(lists[i][::2]) | {lists[i][-1]})
    return lists


def _lower_bounds(m: int, k: int, n: int, cfg: ArrayConfig, batch: int, shared_offchip: int,
                  grid: np.ndarray) -> np.ndarray:
    """For each split (pm, pn, pk) row of `grid`, cycles no less than simulate_gemm's total."""
    (tm, tk, tn), w = tile_sizes(cfg), cfg.word_bytes
    subs, counts = [], []
    for d, t, p in ((m, tm, grid[:, 0]), (k, tk, grid[:, 2]), (n, tn, grid[:, 1])):
        sub = np.minimum(d, _ceil_div(_ceil_div(np.int64(d), t), p) * t)
        subs.append(sub)
        counts.append(_ceil_div(np.int64(d), sub))
    (sm, sk, sn), (qm, qk, qn) = subs, counts
    r, c = cfg.rows, cfg.cols
    sr, sc, st = {"os": (sm, sn, sk), "ws": (sk, sn, sm), "is": (sk, sm, sn)}[cfg.dataflow]
    per_fold = (r if cfg.dataflow == "os" else 2 * r) + c + st - 2
    jobs = batch * qm * qn * qk
    rounds = _ceil_div(jobs, cfg.num_arrays) * _ceil_div(sr, r) * _ceil_div(sc, c)
    compute = (rounds * per_fold - 1).astype(np.float64)
    per_fold = per_fold.astype(np.float64)
    if cfg.macs_per_cycle != 1.0:
        compute, per_fold = np.ceil(compute / cfg.macs_per_cycle), np.ceil(per_fold / cfg.macs_per_cycle)
    bytes_per_cycle = cfg.offchip_bandwidth_Bps / cfg.clock_hz
    if cfg.shared_sram:
        offchip, reduction = np.float64(shared_offchip), 0.0
    else:
        offchip = (jobs * sm * sk + batch * qm * qn * sm * sn).astype(np.float64) * w
        per_array = _ceil_div(jobs, cfg.num_arrays)
        level = np.ceil(per_array * sm * sn * ACC_BYTES * cfg.num_arrays / bytes_per_cycle)
        reduction = np.ceil(np.log2(qk)) * level
        bytes_per_cycle = bytes_per_cycle * (np.minimum(cfg.num_arrays, jobs) / cfg.num_arrays)
    # stall = ⌈fill/b + rounds·loss⌉ ≥ ⌈D/b − rounds·per_fold⌉ (loss ≥ mem − per_fold); the margin covers
    # rounding differences between this and simulate_gemm's float sums
    streaming = offchip / bytes_per_cycle - rounds * per_fold
    margin = 1e-14 * (offchip / bytes_per_cycle + rounds * per_fold) + 1e-9
    streaming = np.maximum(0.0, np.ceil(streaming - margin))
    return compute + streaming + reduction


@functools.lru_cache(maxsize=16384)
def map_gemm(m: int, k: int, n: int, cfg: ArrayConfig, batch: int = 1) -> GemmTiming:
    """``simulate_gemm`` of ``batch`` M×K×N GEMMs under the split of least total cycles (module doc);
    its ``split`` field says which (blocks of M, of N, slices of K)."""
    incumbent = simulate_gemm(m, k, n, cfg, batch=batch)
    if cfg.num_arrays == 1 or m * k * n == 0:
        return incumbent
    tm, tk, tn = tile_sizes(cfg)
    cm, cn, ck = _thin([split_candidates(m, tm), split_candidates(n, tn), split_candidates(k, tk)])
    grid = np.stack([g.ravel() for g in np.meshgrid(np.array(cm, np.int64), np.array(cn, np.int64),
                                                     np.array(ck, np.int64), indexing="ij")], axis=1)
    shared = incumbent.dram_read_bytes + incumbent.dram_write_bytes  # the same for every split if shared
    bound = _lower_bounds(m, k, n, cfg, batch, shared, grid)
    best = incumbent
    for tried, i in enumerate(np.argsort(bound, kind="stable")):
        if bound[i] >= best.total_cycles or tried == SIMULATION_LIMIT:
            break
        t = simulate_gemm(m, k, n, cfg, batch=batch, split=tuple(int(x) for x in grid[i]))
        if t.total_cycles < best.total_cycles:
            best = t
    return best

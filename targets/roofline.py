"""The device model of the onnxruntime-backed targets: a roofline per kernel with tile and wave quantisation.

One kernel's busy time (`DeviceModel.roofline`):

    t = max(flops / (peak[precision] · eff_compute[class] · q), bytes / (bw · eff_memory[class]))

and its fixed cost is the class' overhead (the kernel launch, spec `launch_us`, or a calibrated fixed cost),
or, for kernels enqueued ahead of the device (a TensorRT engine), the device-side gap between back-to-back
kernels (spec `kernel_gap_us`; targets/gpu.py chooses).

* `peak`: the spec's dense peak for the precision on the matrix units (tensor cores) for the classes gemm and
  conv, the fp32 vector peak (CUDA cores) for every other class and for depthwise/grouped convolutions.
* `q` (GPUs only, spec `sm_count` and `[gpu.tiles]`): the share of the launched thread blocks' work that
  is useful, times the speed of the tile used. A GEMM of M×N output (an implicit-GEMM convolution: M =
  batch · output pixels, N = output channels, K = input channels · kernel area) is cut into output tiles of
  tm×tn, one thread block each; the blocks run in waves of sm_count · ctas_per_sm, and every wave takes as
  long as a full one. So

      tiles = groups · ceil(M / tm) · ceil(N / tn),  waves = ceil(tiles / (sm_count · ctas_per_sm))
      q     = M · N · groups / (waves · sm_count · ctas_per_sm · tm · tn) · speed(tm, tn)

  where speed is the tile's operand reuse tm·tn / (tm + tn) over that of the spec's full-speed tile, at
  most 1 (NVIDIA, "Matrix Multiplication Background User's Guide", sections "Tile Quantization" and "Wave
  Quantization"; "GPU Performance Background User's Guide", "Understanding Performance"). The tile is the
  one of the spec's list, with or without split-K, that gives the shortest time, as cuBLAS's heuristics and
  TensorRT's tactic timing pick the fastest kernel among several tile shapes; at reduced precision a
  CUDA-core kernel at the fp32 peak is the alternative when it is faster.
* Split-K (when the output tiles are too few to fill the SMs, K is cut in s parts, one block each) is not
  free: as CUTLASS's GemmSplitKParallel does it, each part writes its M×N partial sums to a workspace at
  the accumulator width (4 bytes: fp32, or int32 for int8), and a second kernel (ReduceSplitK), enqueued
  right behind the GEMM, reads them back and writes the output ([CS] in the GPU specs). So a split choice
  costs max(compute, memory + s·M·N·4 B written) + kernel_gap + s·M·N·4 B read, the bytes at the class'
  memory efficiency. A kernel that never splits K (a fused attention: `GemmShape.split_k` False) has s = 1.
* Not modelled, for want of a measured source: the ramp-up of a short kernel that does work (its blocks'
  launch, the main loop's pipeline fill before the first MMA, the epilogue and the tail). An empty kernel
  costs no more than the device-side gap already charged: a replayed graph of no-op kernels takes ~0.6 µs
  per node ([CG] in the GPU specs, ahrefs/ocannl issue 488), under the 1 µs `kernel_gap_us`.
* Depthwise and grouped convolutions with few channels per group cannot fill a tensor-core tile: cuDNN and
  TensorRT run them as direct kernels on the CUDA cores, memory-bound (cuDNN developer guide, "Tensor Core
  Operations": channels per group must be a multiple of 8 for tensor-core kernels). They are priced on the
  vector peak without tile quantisation.
* bytes: activations at the cache bandwidth when they fit in the last-level cache, else at DRAM bandwidth;
  weights likewise only when the whole model's weights stay resident (the caller decides).

A calibrated profile may replace the per-class efficiencies and overheads and scale the busy time of one
kernel when compute- or memory-bound (`kernel_scale`). The spec schema is at the top of
targets/specs/h100-sxm.toml; docs/architecture.md says where each part of the cost model lives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dispatch.cost import OP_CLASSES
from dispatch.errors import DispatchError
from targets.base import TargetSpec, require

__all__ = ["PRECISIONS", "REQUIRED_PRECISIONS", "STORE_BYTES", "MATRIX_CLASSES", "ClassParams", "DeviceModel",
           "GemmShape", "wave_quantisation"]

PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
REQUIRED_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")  # int8 and fp8 are optional: not every part has them
STORE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1, "fp8": 1}  # bytes per element stored
MATRIX_CLASSES = ("gemm", "conv")  # the classes that run on tensor cores / matrix units


@dataclass(frozen=True)
class GemmShape:
    """A kernel as a (batched) GEMM: `groups` independent products of M×K by K×N."""

    m: int
    n: int
    k: int
    groups: int = 1
    split_k: bool = True  # False: the kernel never splits K (a fused attention loops over all of it)


@dataclass(frozen=True)
class ClassParams:
    """Per op class: fractions of peak compute and of bandwidth reached, and a fixed cost per op (s)."""

    compute: float
    memory: float
    overhead_s: float


def tile_speed(tile: tuple[int, int], full: tuple[int, int]) -> float:
    """A tile's rate relative to the `full`-speed tile: its operand reuse, tm·tn / (tm + tn) MACs per element
    loaded per K step, over the full tile's, capped at 1 (smaller tiles load more per MAC, so they fall
    behind the matrix units; "Matrix Multiplication Background User's Guide", "Tile Quantization")."""
    reuse = tile[0] * tile[1] / (tile[0] + tile[1])
    return min(1.0, reuse / (full[0] * full[1] / (full[0] + full[1])))


SPLIT_K = (1, 2, 4, 8, 16)  # split-K factors the libraries use to fill the SMs when tiles are few [CU]
MIN_SPLIT_DEPTH = 128  # assumed: each split keeps at least 128 of K (a few main-loop steps of 32)
ACCUMULATOR_BYTES = 4  # fp32 accumulators for fp32/tf32/fp16/bf16/fp8 inputs, int32 for int8 [CS]


def tile_choices(shape: GemmShape, sm_count: int, ctas_per_sm: int, tiles: Sequence[tuple[int, int]],
                 full: tuple[int, int] = (128, 128)) -> list[tuple[float, tuple[int, int], int, int, int]]:
    """Every (q, tile, blocks, waves, split) a library may run `shape` with: each tile of `tiles`, and with
    it split-K by 2, 4, ... while the blocks still fit in one wave and each split keeps MIN_SPLIT_DEPTH of K
    (none when `shape.split_k` is False). q = the useful work over the launched blocks' work, times the
    tile's speed. Empty without SMs or tiles."""
    if sm_count <= 0 or not tiles or min(shape.m, shape.n, shape.k, shape.groups) <= 0:
        return []
    slots = sm_count * ctas_per_sm
    useful = shape.m * shape.n * shape.k * shape.groups
    out = []
    for tm, tn in tiles:
        output_tiles = shape.groups * math.ceil(shape.m / tm) * math.ceil(shape.n / tn)
        for split in SPLIT_K if shape.split_k else (1,):
            if split > 1 and (shape.k / split < MIN_SPLIT_DEPTH or output_tiles * split > slots):
                break  # split only while the blocks still fit in one wave
            count = output_tiles * split
            waves = math.ceil(count / slots)
            cost = waves * slots * tm * tn * math.ceil(shape.k / split) / tile_speed((tm, tn), full)
            out.append((useful / cost, (tm, tn), count, waves, split))
    return out


def wave_quantisation(shape: GemmShape, sm_count: int, ctas_per_sm: int, tiles: Sequence[tuple[int, int]],
                      full: tuple[int, int] = (128, 128)) -> tuple[float, tuple[int, int], int, int]:
    """(q, tile, blocks, waves) of the choice of `tile_choices` with the greatest q (ties: the tile listed
    first, no split), the reduction of split-K's partial sums left out (`DeviceModel.roofline` prices it).
    q = 1 without SMs or tiles."""
    best = None
    for choice in tile_choices(shape, sm_count, ctas_per_sm, tiles, full):
        if best is None or choice[0] > best[0]:
            best = choice
    return (1.0, (0, 0), 0, 0) if best is None else best[:4]


def split_k_bytes(shape: GemmShape, split: int) -> int:
    """Bytes split-K adds: each of the `split` partial products of the M×N output is written to a workspace
    at the accumulator width and read back by the reduction, which then writes the output the GEMM's
    epilogue would have written anyway (CUTLASS GemmSplitKParallel + ReduceSplitK [CS])."""
    return 0 if split <= 1 else 2 * split * shape.m * shape.n * shape.groups * ACCUMULATOR_BYTES


@dataclass(frozen=True)
class DeviceModel:
    """The roofline's inputs in SI units, from a spec and optionally a calibrated profile."""

    peak_flops: Mapping[str, float]  # per precision the part has
    memory_bw: float  # bytes/s, DRAM
    cache_bw: float | None  # bytes/s when the working set fits in cache_bytes; None: same as DRAM
    cache_bytes: int
    memory_bytes: int
    launch_s: float
    session_s: float
    kernel_gap_s: float = 0.0  # device-side cost per kernel on a stream fed ahead (no host launch between)
    classes: Mapping[str, ClassParams] = field(default_factory=dict)
    kernel_scale: Mapping[str, float] = field(default_factory=dict)  # 'Kernel/compute|memory' -> factor
    sm_count: int = 0  # 0: no tile/wave quantisation (CPUs)
    ctas_per_sm: int = 1
    tiles: tuple[tuple[int, int], ...] = ()
    full_tile: tuple[int, int] = (128, 128)  # the smallest tile that reaches the class efficiency

    @classmethod
    def from_spec(cls, spec: TargetSpec) -> DeviceModel:
        """Read the kind's table ([gpu] or [cpu]); errors name the file and key."""
        p = spec.params
        where = f"Spec '{Path(spec.source).name}' [{spec.kind}]"
        peaks = p.get("peak_tflops")
        if not isinstance(peaks, Mapping):
            raise DispatchError(
                f"{where} needs a [{spec.kind}.peak_tflops] table with {', '.join(REQUIRED_PRECISIONS)}."
            )
        peak = {d: require(peaks, d, f"{where}.peak_tflops") * 1e12 for d in REQUIRED_PRECISIONS}
        for d in PRECISIONS:
            if d not in peak and d in peaks:
                peak[d] = require(peaks, d, f"{where}.peak_tflops") * 1e12
        bw = require(p, "memory_bandwidth_GBps", where) * 1e9
        cache_bw = p.get("cache_bandwidth_GBps")
        if cache_bw is not None:
            cache_bw = require(p, "cache_bandwidth_GBps", where) * 1e9
        launch = require(p, "launch_us", where, positive=False)
        session = require(p, "session_us", where, positive=False)
        gap = require(p, "kernel_gap_us", where, positive=False) if "kernel_gap_us" in p else launch
        if launch < 0 or session < 0 or gap < 0:
            raise DispatchError(f"{where}: 'launch_us', 'session_us' and 'kernel_gap_us' must not be "
                                "negative.")
        eff = p.get("efficiency")
        if (
            not isinstance(eff, Mapping)
            or not isinstance(eff.get("compute"), Mapping)
            or not isinstance(eff.get("memory"), Mapping)
        ):
            raise DispatchError(
                f"{where} needs [{spec.kind}.efficiency.compute] and "
                f"[{spec.kind}.efficiency.memory] tables keyed by op class "
                f"({', '.join(OP_CLASSES)})."
            )
        classes = {"view": ClassParams(1.0, 1.0, 0.0)}  # a view launches no kernel and moves nothing
        for c in OP_CLASSES:
            if c == "view":
                continue
            ec = require(eff["compute"], c, f"{where}.efficiency.compute")
            em = require(eff["memory"], c, f"{where}.efficiency.memory")
            if ec > 1 or em > 1:
                raise DispatchError(f"{where}: efficiencies of '{c}' must be at most 1, got {ec} and {em}.")
            classes[c] = ClassParams(ec, em, launch * 1e-6)
        sms, per_sm, tiles, full = _tiles(p, where, spec.kind)
        return cls(
            peak_flops=peak,
            memory_bw=bw,
            cache_bw=cache_bw,
            cache_bytes=int(require(p, "l2_bytes", where)),
            memory_bytes=int(require(p, "memory_bytes", where)),
            launch_s=launch * 1e-6,
            session_s=session * 1e-6,
            kernel_gap_s=gap * 1e-6,
            classes=classes,
            sm_count=sms,
            ctas_per_sm=per_sm,
            tiles=tiles,
            full_tile=full,
        )

    def with_profile(self, profile: Any) -> DeviceModel:
        """The fitted efficiencies, overheads and session cost of a calibration profile replace the spec's."""
        classes = dict(self.classes)
        for c, fit in profile.classes.items():
            if c in classes:
                classes[c] = ClassParams(fit.compute, fit.memory, fit.overhead_us * 1e-6)
        return replace(
            self,
            classes=classes,
            session_s=profile.session_us * 1e-6,
            kernel_scale=dict(profile.kernel_scale),
        )

    def bandwidth(self, nbytes: float, resident: bool | None = None) -> float:
        """Bytes/s for data in the cache (`resident`; when None, whether `nbytes` fit in it), else DRAM's."""
        if resident is None:
            resident = nbytes <= self.cache_bytes
        return self.cache_bw if self.cache_bw and resident else self.memory_bw

    def quantisation(self, shape: GemmShape | None) -> float:
        """The useful share q of a matrix kernel's launched tile work (1 without a shape or tiles)."""
        if shape is None:
            return 1.0
        return wave_quantisation(shape, self.sm_count, self.ctas_per_sm, self.tiles, self.full_tile)[0]

    def roofline(
        self,
        op_cls: str,
        flops: float,
        act_bytes: float,
        weight_bytes: float,
        precision: str,
        weights_resident: bool = False,
        kernel: str = "",
        shape: GemmShape | None = None,
        vector: bool = False,
    ) -> tuple[float, float]:
        """(busy time of the limiting resource, fixed overhead) in seconds.

        `shape`: the kernel as a GEMM, for tile and wave quantisation on the matrix units; `vector`: a matrix
        class kernel that runs on the vector units (depthwise/grouped convolutions), at the fp32 peak."""
        c = self.classes.get(op_cls) or self.classes["other"]
        on_matrix = op_cls in MATRIX_CLASSES and not vector
        peak = self.peak_flops[precision] if on_matrix else self.peak_flops["fp32"]
        t_memory = 0.0
        if act_bytes:
            t_memory += act_bytes / (self.bandwidth(act_bytes) * c.memory)
        if weight_bytes:
            t_memory += weight_bytes / (self.bandwidth(weight_bytes, weights_resident) * c.memory)
        choices = tile_choices(shape, self.sm_count, self.ctas_per_sm, self.tiles, self.full_tile) \
            if on_matrix and shape is not None else []
        best: tuple[float, float, float] | None = None  # (total, compute, memory) of the fastest choice
        for q, _tile, _blocks, _waves, split in choices or [(1.0, (0, 0), 0, 0, 1)]:
            t_compute = flops / (peak * c.compute * q) if flops else 0.0
            if on_matrix and precision not in ("fp32", "tf32") and q < 1:
                # a kernel on the CUDA cores (no tiles to fill) is among the libraries' tactics too
                t_compute = min(t_compute, flops / (self.peak_flops["fp32"] * c.compute))
            t_mem, t_reduce = t_memory, 0.0
            if split > 1 and shape is not None:
                # the GEMM writes its partial sums in place of the output; the reduction kernel, enqueued
                # right behind it (one device-side gap), reads them back and writes the output
                half = split_k_bytes(shape, split) / 2
                t_mem += half / (self.bandwidth(2 * half) * c.memory)
                t_reduce = self.kernel_gap_s + half / (self.bandwidth(2 * half) * c.memory)
            total = max(t_compute, t_mem) + t_reduce
            if best is None or total < best[0]:
                best = (total, t_compute, t_mem)
        total, t_compute, t_mem = best  # type: ignore[misc]
        bound = "compute" if t_compute >= t_mem else "memory"
        return total * self.kernel_scale.get(f"{kernel}/{bound}", 1.0), c.overhead_s


def _tiles(p: Mapping[str, Any], where: str,
           kind: str) -> tuple[int, int, tuple[tuple[int, int], ...], tuple[int, int]]:
    """(sm_count, ctas_per_sm, tiles, full-speed tile) from the optional `sm_count` and [KIND.tiles]."""
    if "sm_count" not in p:
        return 0, 1, (), (128, 128)
    sms = require(p, "sm_count", where)
    t = p.get("tiles")
    if not isinstance(t, Mapping) or not isinstance(t.get("shapes"), list) or not t["shapes"]:
        raise DispatchError(f"{where} has sm_count, so it needs a [{kind}.tiles] table with shapes = "
                            "[[tm, tn], ...] (output tile sizes of its GEMM kernels) and ctas_per_sm.")
    per_sm = require(t, "ctas_per_sm", f"{where}.tiles")
    shapes = []
    for s in (*t["shapes"], t.get("full_speed", [128, 128])):
        if not (isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) and x > 0 for x in s)):
            raise DispatchError(f"{where}.tiles: each of shapes must be [tm, tn], two whole numbers > 0, "
                                f"not {s!r}.")
        shapes.append((s[0], s[1]))
    if int(sms) != sms or int(per_sm) != per_sm:
        raise DispatchError(f"{where}: sm_count and tiles.ctas_per_sm must be whole numbers.")
    return int(sms), int(per_sm), tuple(shapes[:-1]), shapes[-1]

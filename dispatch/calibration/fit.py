"""Fitting the roofline to measured case times: per op class the compute and memory efficiencies and a fixed
cost (scipy.optimize.least_squares on log(predicted / measured) over the class's plain cases), then per
onnxruntime kernel and roofline bound the median ratio of measured to predicted busy time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from targets.profile import ClassFit

__all__ = ["NOISE_FLOOR_S", "Point", "fit_class", "kernel_scales", "log_err"]

@dataclass(frozen=True)
class Point:
    name: str
    op_class: str
    kernel: str
    flops: float
    act_bytes: float
    weight_bytes: float
    bw_act: float  # bandwidth levels for this case as it ran (bytes/s)
    bw_weight: float
    peak: float
    measured_s: float
    plain: bool = True  # the kernel is the op itself, not a fusion of it with its neighbours

    def terms(self, compute: float, memory: float) -> tuple[float, float]:
        """(compute time, memory time) of the roofline."""
        if self.op_class == "view":
            return 0.0, 0.0
        t_mem = self.act_bytes / (self.bw_act * memory) + self.weight_bytes / (self.bw_weight * memory)
        return self.flops / (self.peak * compute), t_mem

    def busy(self, compute: float, memory: float) -> float:
        return max(self.terms(compute, memory))

    def scale_key(self, compute: float, memory: float) -> str:
        """The kernel_scale key: which kernel, and which roofline bound this case sits on."""
        t_c, t_m = self.terms(compute, memory)
        return f"{self.kernel}/{'compute' if t_c >= t_m else 'memory'}"


# A case's time is the difference of two wall-clock percentiles of runs of different models, good to about
# a µs: relative errors are taken with this floor, so that a 0.1 µs op measured at 0.3 µs does not count as
# a factor of three.
NOISE_FLOOR_S = 1e-6


def log_err(predicted_s: float, measured_s: float) -> float:
    return math.log((predicted_s + NOISE_FLOOR_S) / (measured_s + NOISE_FLOOR_S))


def fit_class(
    points: list[Point], start: tuple[float, float, float], min_overhead_s: float = 1e-8
) -> tuple[float, float, float, tuple[str, ...]]:
    """Least squares on log(predicted / measured) over (log compute, log memory, log overhead), bounded."""
    from scipy.optimize import least_squares

    names = ("compute", "memory", "overhead")
    view = points[0].op_class == "view"
    free = [
        not view and any(p.flops for p in points),
        not view and any(p.act_bytes + p.weight_bytes for p in points),
        True,
    ]
    x0 = np.log(np.array(start))
    lo = np.log(np.array([1e-4, 1e-4, max(min_overhead_s, 1e-8)]))
    hi = np.log(np.array([1.0, 20.0, 1e-2]))  # memory may beat the spec's bandwidth figures
    idx = [i for i in range(3) if free[i]]

    def full(z: np.ndarray) -> np.ndarray:
        x = x0.copy()
        x[idx] = z
        return x

    def resid(z: np.ndarray) -> np.ndarray:
        c, m, o = np.exp(full(z))
        return np.array([log_err(p.busy(c, m) + o, p.measured_s) for p in points])

    # Plain squared log errors (the odd kernels are fitted separately, see `kernel_scales`), from a few
    # starting points: where a case switches from memory- to compute-bound its error stops depending on
    # the memory efficiency, which leaves flat valleys a single start can settle in.
    best = None
    for m0 in (start[1], 0.1, 1.0):
        x = x0.copy()
        x[1] = math.log(m0)
        z0 = np.clip(x[idx], lo[idx] + 1e-9, hi[idx] - 1e-9)
        res = least_squares(resid, z0, bounds=(lo[idx], hi[idx]))
        if best is None or res.cost < best.cost:
            best = res
    c, m, o = np.exp(full(best.x))
    return float(c), float(m), float(o), tuple(names[i] for i in idx)


def kernel_scales(points: list[Point], classes: Mapping[str, ClassFit]) -> dict[str, float]:
    """Per kernel and bound ('SkipLayerNormalization/memory'): the median ratio of measured to predicted
    busy time over its cases whose busy time is at least their fixed cost and 4 µs, clipped to [0.1, 30].
    A kernel's compute-bound and memory-bound cases get separate factors, since one kernel may be good at
    one and not the other (a Gemm kernel runs GEMVs near bandwidth and large GEMMs below peak)."""
    ratios: dict[str, list[float]] = {}
    for p in points:
        f = classes[p.op_class]
        busy = p.busy(f.compute, f.memory)
        o = f.overhead_us * 1e-6
        if busy >= max(o, 4 * NOISE_FLOOR_S) and p.measured_s > o:
            ratios.setdefault(p.scale_key(f.compute, f.memory), []).append((p.measured_s - o) / busy)
    return {k: float(np.clip(np.median(v), 0.1, 30.0)) for k, v in sorted(ratios.items())}

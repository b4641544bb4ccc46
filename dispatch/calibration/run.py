"""`calibrate()`: time the calibration cases on a target's provider, fit the roofline, save the Profile.

The flow (docs/architecture.md, "Calibration"): the session call and the cost of one more tiny op come from
a straight line (numpy.linalg.lstsq) through the wall times of chains of 1 to 256 Neg ops; a case's time is
(its wall time - that of a one-op model timed just before, less the op) x its kernels' share, the share
taken after removing the profiler's per-event cost; each case runs in three passes (one when quick) and
keeps its fastest, so a burst of load from other processes loses. Then per op class the efficiencies and
fixed cost are fitted on the class's plain cases (those whose kernel is the op itself) and per kernel and
bound a busy-time factor (fused kernels: SkipLayerNormalization is ten times slower than LayerNormalization
in this build; plain ones that stray from their class: Where).
"""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from dispatch.analysis import analyze_node
from dispatch.calibration.cases import calibration_cases, neg_chain
from dispatch.calibration.fit import NOISE_FLOOR_S, Point, fit_class, kernel_scales, log_err
from dispatch.calibration.timing import QUANTILE, measure_case, wall_time
from dispatch.errors import DispatchError
from dispatch.frontend import load
from targets.base import Target, load_spec, make_target
from targets.fusion import kernel_of
from targets.gpu import OrtTarget, element_flops, op_class
from targets.profile import ClassFit, Profile, machine, profile_dir, profile_filename

__all__ = ["KIND_DEFAULTS", "calibrate"]

KIND_DEFAULTS = {"cpu": "host-cpu", "gpu": "h100-sxm"}  # `--target cpu` means the host-cpu preset

def _resolve(target_or_preset: Any) -> Any:
    if isinstance(target_or_preset, Target):
        if not isinstance(target_or_preset, OrtTarget):
            raise DispatchError(
                f"Target '{target_or_preset.name}' is a {target_or_preset.kind} target; "
                "only the onnxruntime targets (gpu, cpu) can be calibrated."
            )
        target = target_or_preset
        return type(target)(target.name, target.spec, profile=False, threads=target.threads or 0)
    preset = KIND_DEFAULTS.get(str(target_or_preset), target_or_preset)
    spec = load_spec(preset)
    if spec.kind not in ("gpu", "cpu"):
        raise DispatchError(
            f"'{target_or_preset}' is a {spec.kind} preset; only the onnxruntime targets can be "
            f"calibrated: cpu ({KIND_DEFAULTS['cpu']}) or a gpu preset."
        )
    target = make_target(str(target_or_preset), preset, profile=False)
    return target


def calibrate(
    target_or_preset: Any = "cpu",
    out: str | os.PathLike[str] | None = None,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
) -> Profile:
    """Time the calibration cases on the target's provider, fit, save and return the Profile.

    `target_or_preset`: "cpu" (the host-cpu preset), a gpu/cpu preset name or spec file, or an OrtTarget.
    `out`: a .json file or a directory; default `profile_dir()`. `quick`: one pass, fewer repeats (~10 s).
    """
    target = _resolve(target_or_preset)
    if target.kind == "gpu" and target.provider == "CPUExecutionProvider":
        raise DispatchError(
            f"No GPU execution provider is available here (only "
            f"{', '.join(ort.get_available_providers())}); calibrating '{target.spec.name}' "
            "would fit CPU timings to GPU figures, so calibrate the cpu target instead "
            "(--target cpu)."
        )
    say = log or (lambda s: None)
    model = target.base_model
    repeats = 10 if quick else 30
    t_start = time.perf_counter()

    # The session call and the cost of one more tiny op: a straight line through the wall-clock times of
    # chains of 1 to 256 Neg ops on 16 floats (intercept: the session call; slope: dispatch + tiny kernel).
    ks = (1, 16, 64, 256)
    passes = 1 if quick else 3  # each case's time is its fastest pass: a pass that ran under load loses
    chain_repeats = 40 if quick else 100
    # Three interleaved passes even when quick: a burst of load doubles a chain's time and bends the line.
    walls = [math.inf] * len(ks)
    for _ in range(3):
        for i, k in enumerate(ks):
            walls[i] = min(walls[i], wall_time(neg_chain(k), target.provider, chain_repeats, target.threads))
    (session_s, per_op_s), *_ = np.linalg.lstsq(np.array([[1.0, k] for k in ks]), np.array(walls), rcond=None)
    per_op_s = max(float(per_op_s), 0.0)
    session_s = max(walls[0] - per_op_s, 0.0)  # the one-op chain less its op
    chain = measure_case(neg_chain(64), target.provider, repeats, target.threads)
    if chain.count != 64:
        raise DispatchError(
            f"onnxruntime ran {chain.count} kernels for a chain of 64 Neg ops; the chain fit "
            "needs them unfused."
        )
    bias_s = max(chain.timed_s / 64 - per_op_s, 0.0)  # what profiling adds to one kernel_time
    say(
        f"  session call {session_s * 1e6:.2f} µs, one more tiny op {per_op_s * 1e6:.3f} µs, profiler "
        f"adds {bias_s * 1e6:.2f} µs per kernel"
    )

    cases = calibration_cases()
    analysed = []
    for case in cases:
        g = load(case.model)
        node = next(n for n in g.nodes if n.op_type == (case.primary or g.nodes[0].op_type))
        op = analyze_node(node)
        cls = op_class(node, op)
        if cls != case.op_class:
            raise DispatchError(
                f"Calibration case '{case.name}' is class '{cls}' for the cost model but "
                f"'{case.op_class}' in the case table; fix the table."
            )
        analysed.append((node, op, cls))
    # A case's time is its run less a one-op run measured just before (less that op), so that the session
    # call cancels even when the machine's speed drifts; the fastest of the passes is kept.
    one_op = neg_chain(1)
    best = [math.inf] * len(cases)
    for _ in range(passes):
        for i, case in enumerate(cases):
            ref = wall_time(one_op, target.provider, chain_repeats, target.threads, min_seconds=0.01)
            timing = measure_case(case, target.provider, repeats, target.threads)
            best[i] = min(best[i], timing.op_seconds(ref - per_op_s, bias_s) / case.repeat)

    points: list[Point] = []
    for case, (node, op, cls), measured in zip(cases, analysed, best, strict=True):
        weights = float(min(op.param_bytes, op.bytes_read))
        acts = float(op.bytes_moved) - weights
        # repeated runs of one small model keep it in cache, unless the case streams its weights (cases.py)
        warm = not case.streamed and acts + weights <= model.cache_bytes
        points.append(
            Point(
                case.name,
                cls,
                kernel_of(node),
                element_flops(node, op),
                acts,
                weights,
                model.bandwidth(acts),
                model.bandwidth(weights, warm),
                model.peak_flops["fp32"],
                measured,
                kernel_of(node) == node.op_type,
            )
        )
        say(f"  {case.name:<42} {cls:<13} {kernel_of(node):<22} {measured * 1e6:10.2f} µs")

    # Each class is fitted on its plain cases, those whose kernel is the op itself, so that a fused kernel
    # (SkipLayerNormalization is ten times slower than LayerNormalization here) does not drag its class's
    # efficiencies; then every kernel gets its factor against the fitted class.
    classes: dict[str, ClassFit] = {}
    for cls in sorted({p.op_class for p in points}):
        pts = [p for p in points if p.op_class == cls]
        if cls == "view":
            # A view kernel moves nothing, as trivial as one more tiny op: its cost is the Neg chains' slope,
            # which is better determined than the sub-µs difference its own cases give (kept as a check).
            classes[cls] = ClassFit(1.0, 1.0, per_op_s * 1e6, len(pts), 0.0, ())
            continue
        plain = [p for p in pts if p.plain] or pts
        base = model.classes[cls]
        start = (min(base.compute, 0.99), min(base.memory, 0.99), max(base.overhead_s, per_op_s, 1e-7))
        # every kernel costs at least what one more tiny op does
        c, m, o, fitted = fit_class(plain, start, min_overhead_s=per_op_s)
        classes[cls] = ClassFit(c, m, o * 1e6, len(pts), 0.0, fitted)
    scales = kernel_scales(points, classes)

    cases_out = []
    for p in points:
        f = classes[p.op_class]
        pred = (
            p.busy(f.compute, f.memory) * scales.get(p.scale_key(f.compute, f.memory), 1.0)
            + f.overhead_us * 1e-6
        )
        cases_out.append(
            {
                "case": p.name,
                "class": p.op_class,
                "kernel": p.kernel,
                "gflop": round(p.flops / 1e9, 5),
                "mbytes": round((p.act_bytes + p.weight_bytes) / 1e6, 4),
                "measured_us": round(p.measured_s * 1e6, 3),
                "predicted_us": round(pred * 1e6, 3),
            }
        )
    for cls, f in classes.items():
        errs = [
            log_err(d["predicted_us"] * 1e-6, d["measured_us"] * 1e-6)
            for d in cases_out
            if d["class"] == cls
        ]
        classes[cls] = replace(f, rms_log_error=float(np.sqrt(np.mean(np.square(errs)))))
    all_err = [log_err(d["predicted_us"] * 1e-6, d["measured_us"] * 1e-6) for d in cases_out]
    residuals = {
        "rms_log_error": float(np.sqrt(np.mean(np.square(all_err)))),
        "noise_floor_us": NOISE_FLOOR_S * 1e6,
        "max_abs_relative_error": float(max(abs(math.expm1(e)) for e in all_err)),
        "chain_lengths": list(ks),
        "chain_wall_us": [round(w * 1e6, 3) for w in walls],
        "profiler_bias_us": round(bias_s * 1e6, 3),
        "quantile": QUANTILE,
        "repeats": repeats,
        "passes": passes,
        "threads": target.threads or "default",
        "cases": cases_out,
        "seconds": round(time.perf_counter() - t_start, 1),
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    profile = Profile(
        spec=target.spec.name,
        provider=target.provider,
        ort_version=ort.__version__,
        machine=machine(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        session_us=session_s * 1e6,
        dispatch_us=per_op_s * 1e6,
        classes=classes,
        method="case time = (wall-clock run - a one-op run + that op) x the case kernels' share of the "
        "profiled kernel_time, fastest of the passes; per class scipy.optimize.least_squares on "
        "log(predicted/measured) over its plain cases; per kernel and bound the median measured/predicted "
        "busy time; session call and per-op cost: numpy.linalg.lstsq on Neg chains",
        kernel_scale=scales,
        residuals=residuals,
        quick=quick,
    )
    dest = Path(out) if out is not None else profile_dir()
    if dest.suffix != ".json":
        dest = dest / profile_filename(profile.spec, profile.provider)
    return profile.save(dest)

"""Calibration of the onnxruntime targets' cost model on the execution provider present (issue: where the
cost code lives, docs/architecture.md). One module per concern:

* `cases`: the small ONNX models timed (about 85 case builders) and the Neg chains;
* `timing`: timing one case on a provider (profiled kernel shares and unprofiled wall time);
* `fit`: fitting per-class efficiencies and fixed costs, and per-kernel busy-time factors;
* `run`: `calibrate()`, the whole flow, which saves a `targets.profile.Profile`;
* `cli`: `python -m dispatch calibrate` (not imported here: the command line is the layer above).

Profiles themselves (the JSON files, where they are saved and found) belong to `targets.profile`, so that
the targets that read them import nothing from this package.
"""

from __future__ import annotations

from dispatch.calibration.cases import Case, calibration_cases
from dispatch.calibration.run import KIND_DEFAULTS, calibrate
from dispatch.calibration.timing import Timing, measure_case, wall_time
from targets.profile import ClassFit, Profile, find_profile, profile_dir, profile_filename

__all__ = [
    "Case",
    "ClassFit",
    "KIND_DEFAULTS",
    "Profile",
    "Timing",
    "calibrate",
    "calibration_cases",
    "find_profile",
    "measure_case",
    "profile_dir",
    "profile_filename",
    "wall_time",
]

"""Calibration profiles: what `python -m dispatch calibrate` fitted for one spec on one execution provider,
stored as JSON, and where targets find them.

A Profile holds per op class the roofline's compute and memory efficiencies and fixed cost (ClassFit), per
onnxruntime kernel and bound a busy-time factor, the session call's cost, and every calibration case's
measured and predicted time, with the provider, onnxruntime version, machine and date. Profiles are saved
under `profile_dir()` ($DISPATCH_CACHE/profiles, else ~/.cache/dispatch/profiles); `find_profile` looks there
first, then in the ones shipped in targets/profiles/. This module is storage only: the fitting lives in
dispatch/calibration/ (docs/architecture.md, "Where the cost models live").
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dispatch.errors import DispatchError
from dispatch.fileio import write_text

__all__ = ["ClassFit", "Profile", "profile_dir", "SHIPPED_DIR", "profile_filename", "find_profile", "machine"]

SHIPPED_DIR = Path(__file__).resolve().parent / "profiles"

@dataclass(frozen=True)
class ClassFit:
    """Fitted figures for one op class: efficiencies (fractions of the spec's peak and bandwidth) and the
    fixed cost per op in µs (kernel fixed cost + executor dispatch)."""

    compute: float
    memory: float
    overhead_us: float
    cases: int = 0
    rms_log_error: float = 0.0
    fitted: tuple[str, ...] = ()  # which of compute/memory/overhead the data determined


@dataclass(frozen=True)
class Profile:
    """A calibration result for one spec on one execution provider."""

    spec: str
    provider: str
    ort_version: str
    machine: Mapping[str, Any]
    date: str
    session_us: float
    dispatch_us: float
    classes: Mapping[str, ClassFit]
    method: str
    kernel_scale: Mapping[str, float] = field(default_factory=dict)  # 'Kernel/compute|memory' -> factor
    residuals: Mapping[str, Any] = field(default_factory=dict)
    quick: bool = False
    path: str | None = None  # where it was loaded from or saved to (not stored in the file)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        d["schema"] = "dispatch.profile/1"
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], path: str | None = None) -> Profile:
        try:
            classes = {
                k: ClassFit(**{**v, "fitted": tuple(v.get("fitted", ()))}) for k, v in d["classes"].items()
            }
            return cls(
                spec=d["spec"],
                provider=d["provider"],
                ort_version=d["ort_version"],
                machine=d["machine"],
                date=d["date"],
                session_us=float(d["session_us"]),
                dispatch_us=float(d.get("dispatch_us", 0.0)),
                classes=classes,
                method=d["method"],
                kernel_scale={k: float(v) for k, v in d.get("kernel_scale", {}).items()},
                residuals=d.get("residuals", {}),
                quick=bool(d.get("quick", False)),
                path=path,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DispatchError(
                f"Profile '{path}' is not a calibration profile (missing or bad {e}); "
                "recreate it with 'python -m dispatch calibrate'."
            ) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Profile:
        p = Path(path)
        if not p.is_file():
            raise DispatchError(
                f"Profile file '{p}' does not exist; run 'python -m dispatch calibrate' or "
                "give the path of a saved profile."
            )
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DispatchError(
                f"Profile '{p}' is not valid JSON ({e}); recreate it with 'python -m dispatch calibrate'."
            ) from None
        return cls.from_json(data, str(p))

    def save(self, path: str | os.PathLike[str]) -> Profile:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_text(p, json.dumps(self.to_json(), indent=1) + "\n", "the profile")
        return replace(self, path=str(p))

    def describe(self) -> str:
        here = machine()
        same = all(self.machine.get(k) == here.get(k) for k in ("processor", "cpu_count", "system"))
        return (
            f"{self.path or 'in memory'} (fitted {self.date[:10]} on {self.provider}, onnxruntime "
            f"{self.ort_version}, {'this machine' if same else 'another machine: ' + str(self.machine)})"
        )


def profile_dir() -> Path:
    """Where calibration saves profiles: $DISPATCH_CACHE/profiles, else ~/.cache/dispatch/profiles."""
    env = os.environ.get("DISPATCH_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "dispatch") / "profiles"


def profile_filename(spec: str, provider: str) -> str:
    return f"{spec}--{provider}.json"


def find_profile(spec: str, provider: str) -> Profile | None:
    """The saved profile for this spec and provider: the user's first, then the one shipped, else None."""
    name = profile_filename(spec, provider)
    for d in (profile_dir(), SHIPPED_DIR):
        if (d / name).is_file():
            return Profile.load(d / name)
    return None


def machine() -> dict[str, Any]:
    """This machine as a profile records it: system, platform, CPU model, CPU count, Python version."""
    proc = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                proc = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "system": platform.system(),
        "platform": platform.platform(),
        "processor": proc,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }

"""A sweep's TOML config: read it, check every key and value, and say what is wrong in one sentence.

    [sweep]
    name = "asic-size"
    models = ["resnet50", "bert"]                 # zoo names or .onnx paths (relative to the config file)
    strategies = ["optimal", "only:gpu", "only:asic"]
    objectives = ["latency", "energy"]           # dispatch.problem.OBJECTIVES
    run = false                                  # true: also execute and measure every plan here
    repeat = 3                                   # timed runs per plan when run = true (after `warmup`)
    warmup = 1

    [targets]                                    # NAME = preset or spec file, as --targets takes them
    gpu = "h100-sxm"
    asic = "tpu-v4-like"

    [axes]                                       # the cross product of these is swept
    "asic.rows" = [32, 64, 128, 256]             # TARGET.KEY: a key of the target's spec (its kind table)
    "asic.cols" = "same as asic.rows"            # a tied axis takes the value of the axis it names
    "link.bandwidth_GBps" = [16, 64]             # no target: every target whose spec has the key
    batch = [1, 32]                              # the models' batch dimension
    precision = ["fp16", "bf16"]                 # what gpu/cpu targets are predicted at
    "shape.seq" = [64, 128]                      # a symbolic dimension by name

Spec keys resolve as a path into the spec's TOML: `asic.rows` is `[asic] rows` of target `asic` (a key not
at the top level is looked up in the kind's own table), `gpu.gpu.peak_tflops.fp16` is the full path. Every
checked value is built into a spec and a target before any point runs, so a bad value fails here.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch.errors import DispatchError

__all__ = ["Axis", "SweepConfig", "load_config", "BUILTIN_AXES", "SpecKey"]

BUILTIN_AXES = ("batch", "precision")  # and shape.SYMBOL
_SWEEP_KEYS = ("name", "models", "strategies", "objectives", "run", "repeat", "warmup")
_TIE = "same as "


@dataclass(frozen=True)
class SpecKey:
    """Where one spec axis writes: target name, path of keys into its spec TOML."""

    target: str
    path: tuple[str, ...]


@dataclass(frozen=True)
class Axis:
    """One axis: its name as written, its values, the axis it is tied to (None: free) and, for a spec key,
    the (target, path) pairs it sets."""

    name: str
    values: tuple[Any, ...]
    tied_to: str | None = None
    spec_keys: tuple[SpecKey, ...] = ()


@dataclass(frozen=True)
class SweepConfig:
    name: str
    models: tuple[str, ...]
    strategies: tuple[str, ...]
    objectives: tuple[str, ...]
    run: bool
    repeat: int
    warmup: int
    targets: tuple[tuple[str, str], ...]  # (name, preset or absolute spec path), in config order
    target_kinds: tuple[tuple[str, str], ...]  # (name, kind)
    axes: tuple[Axis, ...]  # config order
    text: str = ""  # the TOML as given (written beside the results)
    model_infos: tuple[Any, ...] = ()  # dispatch.sweep.models.ModelInfo per model: its declared inputs

    def info(self, model: str) -> Any:
        return next(i for i in self.model_infos if i.ref == model)

    @property
    def free_axes(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.tied_to is None)

    def axis(self, name: str) -> Axis:
        return next(a for a in self.axes if a.name == name)

    def canonical(self) -> dict[str, Any]:
        """Everything that decides the rows, as plain JSON data (what the fingerprint hashes)."""
        return {"name": self.name, "models": list(self.models), "strategies": list(self.strategies),
                "objectives": list(self.objectives), "run": self.run, "repeat": self.repeat,
                "warmup": self.warmup, "targets": [list(t) for t in self.targets],
                "axes": [{"name": a.name, "values": list(a.values), "tied_to": a.tied_to} for a in self.axes]}

    def fingerprint(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(source: str | Path | Mapping[str, Any]) -> SweepConfig:
    """A checked config from a TOML file path or an already-parsed mapping (paths relative to the cwd)."""
    if isinstance(source, Mapping):
        return _check(source, Path.cwd(), "")
    p = Path(source)
    if not p.is_file():
        raise DispatchError(f"Sweep config '{p}' does not exist; give the path of a TOML file.")
    try:
        text = p.read_text()
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DispatchError(f"Sweep config '{p}' is not valid TOML ({e}); fix its syntax.") from None
    return _check(data, p.resolve().parent, text)


def _list_of_str(table: Mapping[str, Any], key: str, default: list[str] | None = None) -> tuple[str, ...]:
    v = table.get(key, default)
    if v is None:
        raise DispatchError(f"The sweep config needs [sweep] {key}, a list of names; add it.")
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise DispatchError(f"[sweep] {key} must be a non-empty list of names, not {v!r}; fix it.")
    if len(set(v)) != len(v):
        dup = next(x for x in v if v.count(x) > 1)
        raise DispatchError(f"[sweep] {key} lists '{dup}' twice; list each once.")
    return tuple(v)


def _check(data: Mapping[str, Any], base: Path, text: str) -> SweepConfig:
    from dispatch.partition import resolve_strategy
    from dispatch.problem import OBJECTIVES
    from targets.base import load_spec

    unknown = [k for k in data if k not in ("sweep", "targets", "axes")]
    if unknown:
        raise DispatchError(f"The sweep config has an unknown table [{unknown[0]}]; the tables are [sweep], "
                            "[targets] and [axes].")
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        raise DispatchError("The sweep config needs a [sweep] table with name, models and strategies.")
    bad = [k for k in sweep if k not in _SWEEP_KEYS]
    if bad:
        raise DispatchError(f"[sweep] has an unknown key '{bad[0]}'; the keys are {', '.join(_SWEEP_KEYS)}.")
    name = sweep.get("name", "sweep")
    if not isinstance(name, str) or not name.strip():
        raise DispatchError(f"[sweep] name must be a non-empty string, not {name!r}.")
    given = _list_of_str(sweep, "models")
    infos = [_model_ref(m, base) for m in given]
    models = tuple(i.ref for i in infos)
    strategies = _list_of_str(sweep, "strategies", ["optimal"])
    objectives = _list_of_str(sweep, "objectives", ["latency"])
    for o in objectives:
        if o not in OBJECTIVES:
            raise DispatchError(f"[sweep] objectives names '{o}', which is not an objective; choose from "
                                f"{', '.join(OBJECTIVES)}.")
    run = sweep.get("run", False)
    if not isinstance(run, bool):
        raise DispatchError(f"[sweep] run must be true or false, not {run!r}.")
    counts = {}
    for key, default, least in (("repeat", 3, 1), ("warmup", 1, 0)):
        v = sweep.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise DispatchError(f"[sweep] {key} must be a whole number >= {least}, not {v!r}.")
        counts[key] = v

    tt = data.get("targets")
    if not isinstance(tt, dict) or not tt:
        raise DispatchError("The sweep config needs a [targets] table, e.g. gpu = \"h100-sxm\"; add it.")
    targets: list[tuple[str, str]] = []
    kinds: dict[str, str] = {}
    for tname, preset in tt.items():
        if not isinstance(preset, str) or not preset:
            raise DispatchError(f"[targets] {tname} must be a preset name or a spec file, not {preset!r}.")
        if preset.endswith(".toml") or "/" in preset:
            preset = str((base / preset).resolve())
        kinds[tname] = load_spec(preset).kind
        targets.append((tname, preset))
    for s in strategies:
        resolve_strategy(s)
        if s.startswith("only:") and s[5:] not in kinds:
            raise DispatchError(f"[sweep] strategies names '{s}', but there is no target '{s[5:]}'; the "
                                f"targets are {', '.join(kinds)}.")

    axes = _check_axes(data.get("axes", {}), targets, kinds)
    from dispatch.sweep.models import check_binding

    for m, info in zip(given, infos, strict=True):
        check_binding(info, m, [a.name for a in axes])
    cfg = SweepConfig(name=name, models=models, strategies=strategies, objectives=objectives, run=run,
                      repeat=counts["repeat"], warmup=counts["warmup"], targets=tuple(targets),
                      target_kinds=tuple(kinds.items()), axes=axes, text=text, model_infos=tuple(infos))
    from dispatch.sweep.targets import check_target_values

    check_target_values(cfg)
    return cfg


def _model_ref(m: str, base: Path) -> Any:
    """A zoo name stays a name; a path becomes absolute. The file is read (not analysed) to check it loads."""
    from dispatch.sweep.models import inspect_model

    ref = m
    if m.endswith(".onnx") or "/" in m:
        ref = str((base / m).resolve())
    try:
        return inspect_model(ref)
    except DispatchError as e:
        raise DispatchError(f"[sweep] models: '{m}' does not load ({str(e).rstrip('.')}).") from None


def _scalar_ok(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, (bool, int, str))


def _check_axes(table: Any, targets: list[tuple[str, str]], kinds: Mapping[str, str]) -> tuple[Axis, ...]:
    if not isinstance(table, dict):
        raise DispatchError("[axes] must be a table of NAME = [values]; fix it.")
    raw: dict[str, Any] = dict(table)
    axes: list[Axis] = []
    for name, vals in raw.items():
        if isinstance(vals, str):
            if not vals.startswith(_TIE):
                raise DispatchError(f"Axis '{name}' is {vals!r}; give a list of values or \"same as AXIS\".")
            other = vals[len(_TIE):].strip()
            if other not in raw or isinstance(raw[other], str):
                raise DispatchError(f"Axis '{name}' is tied to '{other}', which is not an axis with values; "
                                    "tie it to an axis given as a list.")
            values, tied = tuple(raw[other]) if isinstance(raw[other], list) else (), other
        elif isinstance(vals, list):
            values, tied = tuple(vals), None
        else:
            raise DispatchError(f"Axis '{name}' must be a list of values, not {vals!r}.")
        if not values:
            raise DispatchError(f"Axis '{name}' has no values; give at least one or remove the axis.")
        for v in values:
            if not _scalar_ok(v):
                raise DispatchError(f"Axis '{name}' has the value {v!r}; values are numbers, strings or "
                                    "booleans.")
        if len({json.dumps(v) for v in values}) != len(values):
            raise DispatchError(f"Axis '{name}' lists a value twice ({list(values)}); list each once.")
        axes.append(Axis(name, values, tied, _resolve_key(name, values, targets, kinds)))
    return tuple(axes)


def _resolve_key(name: str, values: tuple[Any, ...], targets: list[tuple[str, str]],
                 kinds: Mapping[str, str]) -> tuple[SpecKey, ...]:
    from targets.gpu import PRECISIONS

    if name == "batch" or name.startswith("shape."):
        if name.startswith("shape.") and not name[6:]:
            raise DispatchError("Axis 'shape.' names no symbol; write shape.SYMBOL, e.g. shape.seq.")
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v <= 0]
        if bad:
            raise DispatchError(f"Axis '{name}' has the value {bad[0]!r}; sizes are positive integers.")
        return ()
    if name == "precision":
        bad = [v for v in values if v not in PRECISIONS]
        if bad:
            raise DispatchError(f"Axis 'precision' has the value {bad[0]!r}; choose from "
                                f"{', '.join(PRECISIONS)}.")
        if not any(k in ("gpu", "cpu") for k in kinds.values()):
            raise DispatchError("Axis 'precision' applies to gpu and cpu targets, and there is none; "
                                "drop the axis or add a gpu target.")
        return ()
    from dispatch.sweep.targets import spec_data

    parts = tuple(name.split("."))
    if any(not p for p in parts):
        raise DispatchError(f"Axis '{name}' has an empty key part; write TARGET.KEY, TARGET.TABLE.KEY or "
                            f"TABLE.KEY, or one of {', '.join(BUILTIN_AXES)}, shape.SYMBOL.")
    chosen = [(parts[0], parts[1:])] if parts[0] in kinds and len(parts) > 1 else [(t, parts) for t, _ in
                                                                                   targets]
    keys: list[SpecKey] = []
    for tname, path in chosen:
        data = spec_data(dict(targets)[tname])
        for cand in (path, (kinds[tname], *path)):
            node: Any = data
            for p in cand:
                node = node.get(p) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, dict):
                keys.append(SpecKey(tname, cand))
                break
    if not keys:
        where = f"target '{parts[0]}'" if parts[0] in kinds else "any target"
        raise DispatchError(f"Axis '{name}' names no key of {where}'s spec; write TARGET.KEY (e.g. "
                            f"asic.rows, a key of the kind's table), TARGET.TABLE.KEY (e.g. "
                            f"gpu.link.bandwidth_GBps), "
                            f"TABLE.KEY for every target, or one of {', '.join(BUILTIN_AXES)}, shape.SYMBOL.")
    return tuple(keys)

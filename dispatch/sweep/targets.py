"""Targets for sweep points: specs with axis values written in, built once per process, costs cached.

A point's target is its base spec (a preset or file) with the point's spec-axis values set at their paths.
The changed TOML is written to a per-process temporary folder and read back with `targets.base.load_spec`,
so every check a spec file gets applies to swept values too. A target is built once per (name, spec text,
precision) in a process and wrapped in `CachedTarget`, which remembers its answers per node for each
(model, shape): a point that changes only the ASIC reuses every GPU cost, and a point that changes only a
link or the strategy reuses every node cost.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import itertools
import json
import math
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dispatch.cost import Cost, OpCost
from dispatch.errors import DispatchError
from dispatch.ir import Graph, Node
from targets.base import SPEC_DIR, Executable, Target, list_presets, make_target

__all__ = ["spec_data", "spec_text", "derived_spec", "CachedTarget", "TargetCache", "check_target_values",
           "to_toml"]

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_MISS = object()


def _spec_path(preset_or_path: str) -> Path:
    if preset_or_path in list_presets():
        return SPEC_DIR / f"{preset_or_path}.toml"
    return Path(preset_or_path)


@functools.cache
def spec_text(preset_or_path: str) -> str:
    return _spec_path(preset_or_path).read_text()


def spec_data(preset_or_path: str) -> dict[str, Any]:
    """The spec's TOML as data (a fresh copy)."""
    return tomllib.loads(spec_text(preset_or_path))


# -- a small TOML writer: the subset specs use (tables, scalars, arrays, inline tables in arrays) ----------
def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise DispatchError(f"Cannot write the spec value {v!r} as TOML; use numbers, strings or lists.")


def to_toml(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """TOML text that tomllib reads back as `data`."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in data.items():
        if isinstance(v, dict):
            path = (*prefix, k)
            out += f"\n[{'.'.join(_key(p) for p in path)}]\n" + to_toml(v, path)
    return out


# -- derived specs ------------------------------------------------------------------------------------------
_tmp: Path | None = None


def _tmp_dir() -> Path:
    global _tmp
    if _tmp is None:
        _tmp = Path(tempfile.mkdtemp(prefix="dispatch-sweep-specs-"))
        atexit.register(shutil.rmtree, _tmp, True)
    return _tmp


def derived_spec(base: str, sets: Sequence[tuple[tuple[str, ...], Any]]) -> tuple[str, str]:
    """(preset or file to build from, content hash): `base` itself when nothing is set, else a file of the
    base spec with each (path, value) written in, named like the base file so that errors name it."""
    if not sets:
        return base, hashlib.sha256(spec_text(base).encode()).hexdigest()[:16]
    data = spec_data(base)
    for path, value in sets:
        node = data
        for p in path[:-1]:
            node = node[p]
        old = node[path[-1]]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # a float key set to 16 stays a float
        node[path[-1]] = value
    text = to_toml(data)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = _tmp_dir() / digest
    path = folder / _spec_path(base).name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.tmp"
        tmp.write_text(text)
        tmp.replace(path)
    return str(path), digest


# -- the caching wrapper ------------------------------------------------------------------------------------
class CachedTarget(Target):
    """A target that answers each per-node question once per node of one graph (the graph it is made for:
    `TargetCache.get` hands out one wrapper per model and shape). Everything else goes to the target."""

    def __init__(self, inner: Target) -> None:
        super().__init__(inner.name, inner.spec)
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]  # the wrapped kind, as Problem reads it
        self.provider = inner.provider
        self.capacity_bytes = inner.capacity_bytes
        self._why: dict[int, str | None] = {}
        self._cost: dict[int, Cost] = {}
        self._fusion: dict[int, Any] = {}
        self._wbytes: dict[int, int] = {}
        self.hits = self.misses = 0

    def __getattr__(self, attr: str) -> Any:  # precision, params, peak_flops ... of the wrapped target
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    # Each question: a dict lookup by node index, else ask the target once (Problem.build asks these four
    # of every node on every target, so a hit is one dict get and one call).
    def _ask(self, table: dict[int, Any], node: Node, question: Callable[..., Any], *args: Any) -> Any:
        v = table.get(node.index, _MISS)
        if v is _MISS:
            self.misses += 1
            v = table[node.index] = question(node, *args)
        else:
            self.hits += 1
        return v

    def unsupported_reason(self, node: Node) -> str | None:
        return self._ask(self._why, node, self.inner.unsupported_reason)

    def cost(self, node: Node, op: OpCost) -> Cost:
        return self._ask(self._cost, node, self.inner.cost, op)

    def fusion(self, node: Node, op: OpCost) -> tuple[str, Cost] | None:
        return self._ask(self._fusion, node, self.inner.fusion, op)

    def weight_bytes(self, node: Node, op: OpCost) -> int:
        return self._ask(self._wbytes, node, self.inner.weight_bytes, op)

    def segment_overhead(self) -> Cost:
        return self.inner.segment_overhead()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def compile(self, graph: Graph, nodes: Sequence[Node], inputs: Sequence[str],
                outputs: Sequence[str]) -> Executable:
        return self.inner.compile(graph, nodes, inputs, outputs)

    def close(self) -> None:
        self.inner.close()


class TargetCache:
    """Targets built once per (model and shape, name, spec content, precision), each in a caching wrapper.

    A target is not shared between models: what it computes for one graph (its own caches included) can
    never depend on which other graphs the process saw before, so a point's rows do not depend on which
    worker ran it or in what order."""

    def __init__(self) -> None:
        self._targets: dict[tuple[Any, ...], Target] = {}
        self._wrappers: dict[tuple[Any, ...], CachedTarget] = {}

    def target(self, name: str, base: str, sets: Sequence[tuple[tuple[str, ...], Any]],
               precision: str | None, graph_key: Any = None) -> tuple[Target, str]:
        spec, digest = derived_spec(base, sets)
        key = (graph_key, name, digest, precision)
        t = self._targets.get(key)
        if t is None:
            t = make_target(name, spec, **({"precision": precision} if precision else {}))
            self._targets[key] = t
        return t, digest

    def get(self, graph_key: Any, name: str, base: str, sets: Sequence[tuple[tuple[str, ...], Any]],
            precision: str | None) -> CachedTarget:
        t, digest = self.target(name, base, sets, precision, graph_key)
        key = (graph_key, name, digest, precision)
        w = self._wrappers.get(key)
        if w is None:
            w = self._wrappers[key] = CachedTarget(t)
        return w

    def forget_graph(self, graph_key: Any) -> None:
        for k in [k for k in self._wrappers if k[0] == graph_key]:
            del self._wrappers[k]
        for k in [k for k in self._targets if k[0] == graph_key]:
            self._targets.pop(k).close()

    def stats(self) -> tuple[int, int]:
        ws = self._wrappers.values()
        return sum(w.hits for w in ws), sum(w.misses for w in ws)

    def close(self) -> None:
        for t in self._targets.values():
            t.close()
        self._targets.clear()
        self._wrappers.clear()


def target_settings(cfg: Any, values: Mapping[str, Any],
                    only: str | None = None) -> dict[str, tuple[str, list, str | None]]:
    """name -> (base spec, [(path, value)], precision) for a point's axis values (or target `only`'s)."""
    kinds = dict(cfg.target_kinds)
    out: dict[str, tuple[str, list, str | None]] = {}
    for name, base in cfg.targets:
        if only is not None and name != only:
            continue
        sets = [(k.path, values[a.name]) for a in cfg.axes for k in a.spec_keys if k.target == name]
        prec = values.get("precision") if kinds[name] in ("gpu", "cpu") else None
        out[name] = (base, sets, prec)
    return out


def _combos(cfg: Any, axes: Iterable[Any]) -> list[dict[str, Any]]:
    free = [a for a in axes if a.tied_to is None]
    tied = [a for a in axes if a.tied_to is not None]
    combos = []
    for vals in itertools.product(*(a.values for a in free)):
        d = dict(zip((a.name for a in free), vals, strict=True))
        for a in tied:
            d[a.name] = d.get(a.tied_to, cfg.axis(a.tied_to).values[0])
        combos.append(d)
    return combos


def check_target_values(cfg: Any) -> None:
    """Build every target every point will need (each distinct spec once), so that a value a spec or a
    target refuses is one sentence naming the axis before any point runs."""
    kinds = dict(cfg.target_kinds)
    cache = TargetCache()
    try:
        for name, _ in cfg.targets:
            axes = [a for a in cfg.axes if any(k.target == name for k in a.spec_keys)
                    or (a.name == "precision" and kinds[name] in ("gpu", "cpu"))]
            tied_roots = {a.tied_to for a in axes if a.tied_to}
            axes += [a for a in cfg.axes if a.name in tied_roots and a not in axes]
            combos = _combos(cfg, axes)
            if len(combos) > 512:  # too many to build: check each axis value alone
                combos = [{**{x.name: x.values[0] for x in axes}, a.name: v} for a in axes for v in a.values]
            for values in combos:
                base, sets, prec = target_settings(cfg, values, name)[name]
                try:
                    cache.target(name, base, sets, prec)
                except DispatchError as e:
                    shown = ", ".join(f"{k} = {v!r}" for k, v in values.items())
                    raise DispatchError(f"Target '{name}' at {shown}: {str(e).rstrip('.')}; fix the axis "
                                        "values.") from None
    finally:
        cache.close()

"""The Target interface, the spec every target is built from, links, and the registry of target kinds.

A target answers three questions about a node: can it run it (`supports`), what would it cost (`cost`),
and, for a whole segment, give me something to run (`compile`). Specs are data: TOML presets in
`targets/specs/`, each figure with its public source beside it.
"""

from __future__ import annotations

import math
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dispatch.cost import Cost, OpCost
from dispatch.errors import DispatchError
from dispatch.ir import Graph, Node

__all__ = ["Link", "TargetSpec", "Target", "Executable", "SPEC_DIR", "TARGET_KINDS", "register_kind",
           "list_presets", "load_spec", "make_target", "parse_targets", "transfer_cost", "DEFAULT_TARGETS",
           "require"]

SPEC_DIR = Path(__file__).parent / "specs"
DEFAULT_TARGETS = {"gpu": "h100-sxm", "asic": "tpu-v4-like"}

# A compiled segment: feeds by tensor name -> outputs by tensor name. Must be safe to call from many threads.
Executable = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Link:
    """A link between a target and the host: a transfer of b bytes costs latency + b / bandwidth."""

    bandwidth_Bps: float
    latency_s: float
    pj_per_byte: float = 0.0

    def cost(self, nbytes: int) -> Cost:
        if nbytes <= 0:
            return Cost()
        return Cost(self.latency_s + nbytes / self.bandwidth_Bps, nbytes * self.pj_per_byte * 1e-12)


HOST_LINK = Link(math.inf, 0.0, 0.0)  # the host itself: no transfer


@dataclass(frozen=True)
class TargetSpec:
    """A hardware preset: the figures common to every kind, plus the kind's own table in `params`."""

    name: str
    kind: str
    description: str
    source: str  # the TOML file it came from
    link: Link  # to the host
    idle_w: float
    active_w: float
    usd_per_hour: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # the kind-specific table, e.g. [gpu]


def require(table: Mapping[str, Any], key: str, where: str, *, positive: bool = True,
            kind: type | tuple[type, ...] = (int, float)) -> Any:
    """Read table[key], checking presence, type and sign; errors are one sentence naming the file and key."""
    if key not in table:
        raise DispatchError(f"{where} is missing the key '{key}'; add it (see targets/specs/ for examples).")
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, kind):
        raise DispatchError(f"{where}: '{key}' must be {getattr(kind, '__name__', 'a number')}, not {v!r}.")
    if isinstance(v, float) and not math.isfinite(v):  # TOML reads inf and nan as floats
        raise DispatchError(f"{where}: '{key}' must be a finite number, not {v}; fix the value.")
    if positive and isinstance(v, (int, float)) and not v > 0:
        raise DispatchError(f"{where}: '{key}' must be positive, not {v}; fix the value.")
    return v


class Target(ABC):
    """A place operators run. Subclasses set `kind` and register with `register_kind`."""

    kind: ClassVar[str]
    provider: str = ""  # what executes it here, e.g. "CPUExecutionProvider" or "numpy (simulated)"
    capacity_bytes: int | None = None  # on-chip memory for weights; None when unlimited

    def __init__(self, name: str, spec: TargetSpec) -> None:
        self.name = name
        self.spec = spec

    @abstractmethod
    def unsupported_reason(self, node: Node) -> str | None:
        """Why this target cannot run `node`, or None when it can."""

    def supports(self, node: Node) -> bool:
        return self.unsupported_reason(node) is None

    @abstractmethod
    def cost(self, node: Node, op: OpCost) -> Cost:
        """Predicted latency and energy of `node` alone on this target (no launch of a segment)."""

    def segment_overhead(self) -> Cost:
        """Fixed cost of running one segment (a session call, a program load)."""
        return Cost()

    def fusion(self, node: Node, op: OpCost) -> tuple[str, Cost] | None:
        """When this target's compiler folds `node` into another node of the graph: (that node's name, the
        cost saved, at most `cost(node, op)`). The saving holds only when both run in one segment on this
        target (the partitioner and the plan apply it so); None when the node is not fused."""
        return None

    def weight_bytes(self, node: Node, op: OpCost) -> int:
        """Bytes of on-chip capacity the node's weights take (counted against capacity_bytes)."""
        return op.param_bytes

    @abstractmethod
    def compile(self, graph: Graph, nodes: Sequence[Node], inputs: Sequence[str],
                outputs: Sequence[str]) -> Executable:
        """Something that runs these nodes (in order) from `inputs` to `outputs`."""

    def describe(self) -> dict[str, Any]:
        """For reports: kind, preset, provider and the headline figures."""
        return {"kind": self.kind, "spec": self.spec.name, "provider": self.provider,
                "description": self.spec.description, "source": self.spec.source}

    def close(self) -> None:  # noqa: B027 - a no-op by default: most targets hold nothing to free
        """Free compiled resources."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.spec.name!r})"


TARGET_KINDS: dict[str, Callable[..., Target]] = {}


def register_kind(kind: str) -> Callable[[type[Target]], type[Target]]:
    """Class decorator: `@register_kind("gpu")` makes specs with kind = "gpu" build that class."""

    def deco(cls: type[Target]) -> type[Target]:
        cls.kind = kind
        TARGET_KINDS[kind] = cls
        return cls

    return deco


def list_presets() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.toml"))


def load_spec(preset_or_path: str | Path) -> TargetSpec:
    """Read a preset by name (targets/specs/NAME.toml) or a TOML file of the same schema."""
    p = Path(preset_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise DispatchError(f"Spec file '{p}' does not exist; give a TOML file or a preset name "
                                f"({', '.join(list_presets())}).")
    else:  # a preset is a name from list_presets(), never a path (no '../' out of targets/specs)
        if str(preset_or_path) not in list_presets():
            raise DispatchError(f"Unknown target preset {str(preset_or_path)!r}; choose one of "
                                f"{', '.join(list_presets())}, or give a .toml spec file.")
        p = SPEC_DIR / f"{preset_or_path}.toml"
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise DispatchError(f"Spec file '{p}' is not valid TOML ({e}); fix its syntax.") from None
    where = f"Spec '{p.name}'"
    kind = require(data, "kind", where, kind=str, positive=False)
    if kind not in TARGET_KINDS:
        raise DispatchError(f"{where} has kind '{kind}'; valid kinds are {', '.join(sorted(TARGET_KINDS))}.")
    link = data.get("link")
    power = data.get("power")
    if not isinstance(link, dict) or not isinstance(power, dict):
        raise DispatchError(f"{where} needs a [link] and a [power] table; see targets/specs/ for examples.")
    lat = require(link, "latency_us", f"{where} [link]", positive=False)
    if lat < 0:
        raise DispatchError(f"{where} [link]: 'latency_us' must not be negative, not {lat}.")
    pj = link.get("pj_per_byte", 0.0)
    if not isinstance(pj, (int, float)) or pj < 0:
        raise DispatchError(f"{where} [link]: 'pj_per_byte' must be a non-negative number, not {pj!r}.")
    host = link.get("host", False) is True
    bw = math.inf if host else require(link, "bandwidth_GBps", f"{where} [link]") * 1e9
    idle = require(power, "idle_w", f"{where} [power]", positive=False)
    active = require(power, "active_w", f"{where} [power]")
    if idle < 0 or idle > active:
        raise DispatchError(f"{where} [power]: need 0 <= idle_w <= active_w, got {idle} and {active}.")
    price = data.get("price", {}).get("usd_per_hour")
    if price is not None and (not isinstance(price, (int, float)) or price < 0):
        raise DispatchError(f"{where} [price]: 'usd_per_hour' must be a non-negative number, not {price!r}.")
    if kind not in data or not isinstance(data[kind], dict):
        raise DispatchError(f"{where} needs a [{kind}] table with the {kind}'s figures; see targets/specs/.")
    return TargetSpec(name=str(data.get("name", p.stem)), kind=kind,
                      description=str(data.get("description", "")), source=str(p),
                      link=Link(bw, lat * 1e-6, float(pj)), idle_w=float(idle), active_w=float(active),
                      usd_per_hour=None if price is None else float(price), params=data[kind])


def make_target(name: str, preset_or_path: str | Path, **options: Any) -> Target:
    """Build the target called `name` from a preset or spec file; options go to the kind's constructor."""
    spec = load_spec(preset_or_path)
    return TARGET_KINDS[spec.kind](name, spec, **options)


def parse_targets(text: str) -> dict[str, str]:
    """'gpu=h100-sxm,asic=tpu-v4-like' -> {'gpu': 'h100-sxm', 'asic': 'tpu-v4-like'} (order kept)."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, preset = item.partition("=")
        if not sep or not name or not preset:
            raise DispatchError(f"Cannot read target '{item}'; write NAME=PRESET or NAME=path/to/spec.toml, "
                                f"with presets {', '.join(list_presets())}.")
        if name in out:
            raise DispatchError(f"Target name '{name}' is given twice; give each target a distinct name.")
        out[name] = preset
    if not out:
        raise DispatchError("No targets given; write e.g. --targets gpu=h100-sxm,asic=tpu-v4-like.")
    return out


def transfer_cost(src: Target, dst: Target, nbytes: int) -> Cost:
    """Moving a tensor between two targets goes through the host: src's link up, then dst's link down."""
    if src is dst or src.name == dst.name:
        return Cost()
    return src.spec.link.cost(nbytes) + dst.spec.link.cost(nbytes)

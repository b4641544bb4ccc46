"""The points of a sweep: the cross product of the free axes, tied axes filled in, models outermost.

A point's id hashes its model and axis values, so a rerun of the same config finds the points it already has
under the same ids. Points are grouped by what must be loaded for them (model, batch, shape.SYMBOL values):
a worker gets the points of one group in a chunk and loads and analyses that model once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatch.sweep.config import SweepConfig

__all__ = ["Point", "expand", "count", "chunks"]


@dataclass(frozen=True)
class Point:
    index: int  # position in the sweep's order
    model: str  # the model reference as the config resolved it
    values: tuple[tuple[str, Any], ...]  # every axis, tied ones included, in config order

    @property
    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    @property
    def id(self) -> str:
        text = json.dumps([self.model, [list(v) for v in self.values]], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def group(self) -> tuple[Any, ...]:
        """What decides the graph: the model and its shape bindings."""
        return (self.model, *((k, v) for k, v in self.values if k == "batch" or k.startswith("shape.")))

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values)


def count(cfg: SweepConfig) -> int:
    return len(cfg.models) * math.prod(len(a.values) for a in cfg.free_axes)


def expand(cfg: SweepConfig) -> list[Point]:
    """Every point: models outermost, then the free axes in config order (the last varies fastest)."""
    free = cfg.free_axes
    points: list[Point] = []
    for model in cfg.models:
        for vals in itertools.product(*(a.values for a in free)):
            chosen: Mapping[str, Any] = dict(zip((a.name for a in free), vals, strict=True))
            full = tuple((a.name, chosen[a.tied_to] if a.tied_to else chosen[a.name]) for a in cfg.axes)
            points.append(Point(len(points), model, full))
    return points


def chunks(points: list[Point], workers: int, most: int = 32) -> list[list[Point]]:
    """Points of one group per chunk, each group cut into about `workers` pieces (so that one large group
    still spreads over the workers) of at most `most` points; larger groups first."""
    groups: dict[tuple[Any, ...], list[Point]] = {}
    for p in points:
        groups.setdefault(p.group, []).append(p)
    out: list[list[Point]] = []
    per_worker = max(1, workers)
    for ps in sorted(groups.values(), key=len, reverse=True):
        size = min(most, max(1, math.ceil(len(ps) / per_worker)))
        if len(groups) >= per_worker:  # enough groups to keep every worker busy: keep a group together
            size = min(most, len(ps))
        out += [ps[i:i + size] for i in range(0, len(ps), size)]
    return out

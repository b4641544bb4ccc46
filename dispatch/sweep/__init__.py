"""Design-space sweeps: one config, the cross product of its axes planned (and optionally run) per point,
rows as Parquet and CSV, plots, local worker processes or a Ray cluster, resumable. See docs/sweeps.md.

    from dispatch.sweep import run
    result = run("sweep.toml", out="sweep-out", workers=2)     # result.rows: one dict per row

`python -m dispatch sweep CONFIG.toml [--out DIR] [--workers N] [--ray [ADDRESS]]` and
`python -m dispatch plot DIR` are the same from the command line (dispatch/sweep/cli.py).
"""

from __future__ import annotations

from dispatch.sweep.config import SweepConfig, load_config
from dispatch.sweep.points import Point, count, expand
from dispatch.sweep.runner import SweepResult, run

__all__ = ["run", "load_config", "SweepConfig", "SweepResult", "Point", "expand", "count", "plot"]


def plot(out: str) -> list:
    """Redraw the plots of a results folder from its rows alone; returns the files written."""
    from dispatch.sweep.plot import plot as _plot

    return _plot(out)

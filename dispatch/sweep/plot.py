"""Plots of a sweep's results, drawn from DIR/results.parquet (or .csv) and DIR/sweep.json alone.

    axis-AXIS.{png,svg}   latency (objective latency) and energy (objective energy) against each free axis,
                          one column per model, one line per strategy and value of the other axes; a
                          dotted line marks, per model, the first axis value where the ASIC wins
    pareto.{png,svg}      predicted latency against energy of every row, the Pareto front (no row both
                          faster and more frugal) drawn and its points labelled
    flops-share.{png,svg} the share of FLOPs each target gets under the first strategy and objective

"The ASIC wins" at a point: the plan of only:ASIC is faster than that of every other only:TARGET (objective
latency); without those strategies, the first strategy puts more than half of the FLOPs on the ASIC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dispatch.errors import DispatchError
from dispatch.sweep.results import read_meta, read_rows

__all__ = ["plot", "asic_wins", "pareto_front", "crossovers"]

_DPI = 90


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DispatchError("Plotting needs matplotlib; install it with pip install -e '.[sweep]'.") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "dispatch", "svg.fonttype": "none"})
    return plt


def _ok(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r.get("error") and r.get("latency_s") is not None]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (latency, energy), sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def asic_wins(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[int, bool]:
    """point -> whether the ASIC wins there (see the module doc); points without a verdict left out."""
    kinds = meta.get("target_kinds", {})
    asic = next((t for t, k in kinds.items() if k == "asic"), None)
    if asic is None:
        return {}
    lat = [r for r in _ok(rows) if r["objective"] == (meta["objectives"][0] if "latency" not in
                                                      meta["objectives"] else "latency")]
    only = {f"only:{t}" for t in kinds}
    by_point: dict[int, dict[str, dict[str, Any]]] = {}
    for r in lat:
        by_point.setdefault(r["point"], {})[r["strategy"]] = r
    out: dict[int, bool] = {}
    for p, strat in by_point.items():
        singles = {s: r["latency_s"] for s, r in strat.items() if s in only}
        if f"only:{asic}" in singles and len(singles) > 1:
            mine = singles.pop(f"only:{asic}")
            out[p] = mine < min(singles.values())
        elif meta["strategies"][0] in strat:
            out[p] = (strat[meta["strategies"][0]].get(f"flops_share.{asic}") or 0.0) > 0.5
    return out


def _free_axes(meta: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Axes that vary (tied ones follow their axis and are shown in its label)."""
    out = []
    for a in meta["axes"]:
        if a in meta.get("tied", {}):
            continue
        if len({repr(r.get(a)) for r in rows}) > 1:
            out.append(a)
    return out


def crossovers(rows: Sequence[dict[str, Any]], meta: dict[str, Any], axis: str) -> dict[tuple, Any]:
    """(model, other axes' values) -> the smallest value of `axis` from which the ASIC wins at every larger
    value (None when it never does); only for numeric axes."""
    wins = asic_wins(rows, meta)
    others = [a for a in _free_axes(meta, rows) if a != axis]
    first: dict[int, dict[str, Any]] = {}
    for r in rows:
        first.setdefault(r["point"], r)
    lines: dict[tuple, list[tuple[Any, bool]]] = {}
    for p, r in first.items():
        if p in wins and _num(r.get(axis)):
            lines.setdefault((r["model"], *(r.get(a) for a in others)), []).append((r[axis], wins[p]))
    out: dict[tuple, Any] = {}
    for key, vals in lines.items():
        vals.sort()
        cross = None
        for i, (x, _) in enumerate(vals):
            if all(w for _, w in vals[i:]):
                cross = x
                break
        out[key] = cross
    return out


def _save(fig: Any, folder: Path, stem: str) -> list[Path]:
    files = []
    for ext in ("png", "svg"):
        p = folder / f"{stem}.{ext}"
        fig.savefig(p, dpi=_DPI, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        files.append(p)
    return files


def _label(meta: dict[str, Any], axis: str) -> str:
    tied = [a for a, t in meta.get("tied", {}).items() if t == axis]
    return " = ".join([axis, *tied])


def _axis_plot(plt: Any, rows: list[dict[str, Any]], meta: dict[str, Any], axis: str,
               folder: Path) -> list[Path]:
    models = list(dict.fromkeys(r["model"] for r in rows))
    others = [a for a in _free_axes(meta, rows) if a != axis]
    objs = meta["objectives"]
    panels = [("latency_s", "latency" if "latency" in objs else objs[0], 1e6, "predicted latency (us)"),
              ("energy_j", "energy" if "energy" in objs else objs[0], 1e3, "predicted energy (mJ)")]
    cross = crossovers(rows, meta, axis)
    numeric = all(_num(r.get(axis)) for r in rows)
    fig, axs = plt.subplots(2, len(models), figsize=(4.2 * len(models), 6.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for col, model in enumerate(models):
        mrows = [r for r in rows if r["model"] == model]
        combos = list(dict.fromkeys(tuple(r.get(a) for a in others) for r in mrows))
        for row_i, (metric, obj, scale, ylabel) in enumerate(panels):
            ax = axs[row_i][col]
            for si, strat in enumerate(meta["strategies"]):
                for ci, combo in enumerate(combos):
                    pts = sorted(((r[axis], r[metric] * scale) for r in mrows if r["strategy"] == strat
                                  and r["objective"] == obj and tuple(r.get(a) for a in others) == combo),
                                 key=lambda t: (str(type(t[0])), t[0]))
                    if not pts:
                        continue
                    name = strat if len(combos) == 1 else \
                        f"{strat}, " + ", ".join(f"{a}={v}" for a, v in zip(others, combo, strict=True))
                    xs = [p[0] if numeric else str(p[0]) for p in pts]
                    ax.plot(xs, [p[1] for p in pts], styles[ci % len(styles)], marker="o", markersize=3,
                            color=colors[si % len(colors)], label=name, linewidth=1)
            if row_i == 0:
                at: dict[Any, list[str]] = {}  # crossover value -> the other axes' values it holds for
                for combo in combos:
                    x = cross.get((model, *combo))
                    if x is not None:
                        at.setdefault(x, []).append(" ".join(f"{a.split('.')[-1]}={v}"
                                                             for a, v in zip(others, combo, strict=True)))
                lines = []
                for x, where in at.items():
                    ax.axvline(x, color="grey", linestyle=":", linewidth=1)
                    lines.append(f"from {x}" + (f": {'; '.join(where)}" if others else ""))
                if lines:
                    ax.text(0.02, 0.02, "ASIC wins (only:ASIC fastest)\n" + "\n".join(lines), fontsize=5.5,
                            transform=ax.transAxes, va="bottom", ha="left", color="dimgrey",
                            bbox={"facecolor": "white", "edgecolor": "lightgrey", "alpha": 0.85})
                ax.set_title(model)
            if numeric and all(r[axis] > 0 for r in mrows) and _spread(mrows, axis) >= 8:
                ax.set_xscale("log", base=2)
            if _spread(mrows, metric) >= 20:
                ax.set_yscale("log")
            ax.set_xlabel(_label(meta, axis))
            ax.set_ylabel(f"{ylabel}, objective {obj}")
            ax.grid(True, linewidth=0.3)
    handles, labels = axs[0][0].get_legend_handles_labels()
    fig.suptitle(f"{meta['name']}: predicted latency and energy against {_label(meta, axis)}")
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", ncol=min(3, max(1, len(labels))), fontsize=6,
               bbox_to_anchor=(0.5, 0.0))
    files = _save(fig, folder, f"axis-{axis.replace('/', '_')}")
    plt.close(fig)
    return files


def _spread(rows: Sequence[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rows if _num(r.get(key)) and r[key] > 0]
    return max(vals) / min(vals) if vals else 1.0


def _short(r: dict[str, Any], axes: Sequence[str]) -> str:
    return " ".join([r["strategy"], *(f"{a.split('.')[-1]}={r.get(a)}" for a in axes)])


def _pareto_plot(plt: Any, rows: list[dict[str, Any]], meta: dict[str, Any], folder: Path) -> list[Path]:
    models = list(dict.fromkeys(r["model"] for r in rows))
    axes = _free_axes(meta, rows)
    fig, axs = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, model in enumerate(models):
        ax = axs[0][col]
        mrows = [r for r in rows if r["model"] == model]
        for si, strat in enumerate(meta["strategies"]):
            pts = [(r["latency_s"] * 1e6, r["energy_j"] * 1e3) for r in mrows if r["strategy"] == strat]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, alpha=0.5,
                       color=colors[si % len(colors)], label=strat)
        pts = [(r["latency_s"] * 1e6, r["energy_j"] * 1e3) for r in mrows]
        front = pareto_front(pts)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k-", linewidth=0.8,
                label="Pareto front")
        step = max(1, math.ceil(len(front) / 12))  # at most about a dozen labels
        for k, i in enumerate(front):
            if k % step == 0 or k == len(front) - 1:
                ax.annotate(_short(mrows[i], axes), pts[i], fontsize=5, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_title(model)
        ax.set_xlabel("predicted latency (us)")
        ax.set_ylabel("predicted energy (mJ)")
        if _spread(mrows, "latency_s") >= 20:
            ax.set_xscale("log")
        if _spread(mrows, "energy_j") >= 20:
            ax.set_yscale("log")
        ax.grid(True, linewidth=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{meta['name']}: latency-energy Pareto front (every strategy, objective and point)")
    fig.tight_layout()
    files = _save(fig, folder, "pareto")
    plt.close(fig)
    return files


def _share_plot(plt: Any, rows: list[dict[str, Any]], meta: dict[str, Any], folder: Path) -> list[Path]:
    strat, obj = meta["strategies"][0], meta["objectives"][0]
    targets = list(meta["target_kinds"])
    models = list(dict.fromkeys(r["model"] for r in rows))
    axes = _free_axes(meta, rows)
    fig, axs = plt.subplots(len(models), 1, figsize=(9, 2.6 * len(models)), squeeze=False)
    for row_i, model in enumerate(models):
        ax = axs[row_i][0]
        mrows = sorted((r for r in rows if r["model"] == model and r["strategy"] == strat
                        and r["objective"] == obj), key=lambda r: r["point"])
        xs = list(range(len(mrows)))
        bottom = [0.0] * len(mrows)
        for t in targets:
            vals = [r.get(f"flops_share.{t}") or 0.0 for r in mrows]
            ax.bar(xs, vals, bottom=bottom, label=t, width=0.85)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        if len(mrows) <= 48:
            ax.set_xticks(xs, [" ".join(str(r.get(a)) for a in axes) for r in mrows], rotation=90, fontsize=5)
        ax.set_ylabel("share of FLOPs")
        ax.set_ylim(0, 1)
        ax.set_title(f"{model}: {strat}, objective {obj}; points labelled {' '.join(axes)}", fontsize=7)
        ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    files = _save(fig, folder, "flops-share")
    plt.close(fig)
    return files


def plot(out: str | Path) -> list[Path]:
    """Draw every plot of the results folder `out` into out/plots/; returns the files written."""
    out = Path(out)
    meta = read_meta(out)
    rows = _ok(read_rows(out))
    if not rows:
        raise DispatchError(f"'{out}' has no row without an error to plot; see the error column of "
                            "results.csv.")
    plt = _plt()
    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    files: list[Path] = []
    for axis in _free_axes(meta, rows):
        files += _axis_plot(plt, rows, meta, axis, folder)
    files += _pareto_plot(plt, rows, meta, folder)
    files += _share_plot(plt, rows, meta, folder)
    return files


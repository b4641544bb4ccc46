"""A sweep's results folder: the config beside its rows, one file per finished point, and the tables.

    DIR/config.toml        the config as given
    DIR/sweep.json         what was swept: name, config fingerprint, canonical config, targets and kinds,
                           axis names, points, versions of everything that priced the rows
    DIR/points/NNNNN-ID.json   the rows of one finished point (written atomically when it finishes)
    DIR/results.parquet    every row, sorted by point, then strategy and objective in config order
    DIR/results.csv        the same rows
    DIR/plots/             see dispatch/sweep/plot.py

A rerun with the same DIR reads DIR/points/ and runs only the points without a file; a DIR holding another
config is refused.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from dispatch.errors import DispatchError
from dispatch.fileio import write_text

__all__ = ["prepare", "write_point", "done_ids", "read_point_rows", "write_tables", "read_rows", "versions",
           "read_meta"]

_PACKAGES = ("onnx", "onnxruntime", "numpy", "scipy", "highspy", "torch", "pyarrow", "matplotlib", "ray")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "dispatch": _version("dispatch")}
    for p in _PACKAGES:
        v = _version(p)
        if v != "not installed":
            out[p] = v
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    if commit:
        out["git_commit"] = commit
    return out


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def prepare(out: Path, cfg: Any, meta: Mapping[str, Any]) -> None:
    """Create DIR (or check that it holds this config) and write the config and sweep.json."""
    old = out / "sweep.json"
    if old.exists():
        try:
            prev = json.loads(old.read_text()).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            prev = None
        if prev != cfg.fingerprint():
            raise DispatchError(f"Folder '{out}' holds the results of a different sweep config; give another "
                                "--out, or delete the folder to start over.")
    try:
        (out / "points").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DispatchError(f"Cannot create the results folder '{out}' ({e.strerror}); choose a writable "
                            "--out.") from None
    if cfg.text:
        write_text(out / "config.toml", cfg.text, "the sweep config")
    write_text(old, json.dumps(dict(meta), indent=1, default=str) + "\n", "the sweep description")


def read_meta(out: Path) -> dict[str, Any]:
    p = Path(out) / "sweep.json"
    if not p.is_file():
        raise DispatchError(f"'{out}' is not a sweep results folder (no sweep.json); give the --out folder "
                            "of a sweep.")
    return json.loads(p.read_text())


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_point(out: Path, index: int, point_id: str, rows: list[dict[str, Any]]) -> None:
    text = json.dumps([{k: _clean(v) for k, v in r.items()} for r in rows], separators=(",", ":"))
    write_text(out / "points" / f"{index:06d}-{point_id}.json", text, "a point's rows")


def done_ids(out: Path) -> set[str]:
    """Ids of points with a complete file (a temporary file left by a kill does not count)."""
    return {p.stem.split("-", 1)[1] for p in (out / "points").glob("*.json") if "-" in p.stem}


def read_point_rows(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted((out / "points").glob("*.json")):
        rows += json.loads(p.read_text())
    return rows


def sort_rows(rows: Iterable[dict[str, Any]], strategies: list[str], objectives: list[str]) -> list[dict]:
    so = {s: i for i, s in enumerate(strategies)}
    oo = {o: i for i, o in enumerate(objectives)}
    return sorted(rows, key=lambda r: (r["point"], oo.get(r["objective"], 99), so.get(r["strategy"], 99)))


def write_tables(out: Path, rows: list[dict[str, Any]], columns: list[str]) -> list[Path]:
    """results.csv always; results.parquet when pyarrow is installed (the `sweep` extra)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    written = [write_text(out / "results.csv", buf.getvalue(), "the results table")]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    data = {c: [r.get(c) for r in rows] for c in columns}
    arrays = {}
    for c, vals in data.items():
        try:
            arrays[c] = pa.array(vals)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one axis: keep them as text
            arrays[c] = pa.array([None if v is None else str(v) for v in vals])
    table = pa.table(arrays)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    from dispatch.fileio import write_bytes

    written.append(write_bytes(out / "results.parquet", sink.getvalue().to_pybytes(), "the results table"))
    return written


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of a finished sweep, from results.parquet (or results.csv without pyarrow)."""
    out = Path(out)
    pq_path = out / "results.parquet"
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None and pq_path.is_file():
        return pq.read_table(pq_path).to_pylist()
    csv_path = out / "results.csv"
    if not csv_path.is_file():
        raise DispatchError(f"'{out}' has no results.parquet or results.csv; run the sweep first.")
    rows = []
    with csv_path.open() as f:
        for r in csv.DictReader(f):
            rows.append({k: _parse(v) for k, v in r.items()})
    return rows


def _parse(v: str) -> Any:
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v

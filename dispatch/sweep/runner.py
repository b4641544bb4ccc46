"""Run a sweep: check the config, skip the points DIR already has, run the rest, write the tables.

Local worker processes by default (concurrent.futures, spawned so that no onnxruntime thread state is
forked): each gets chunks of points of one model and shape (dispatch/sweep/points.py) and keeps its graphs,
targets and node costs for the next chunk (dispatch/sweep/evaluate.py). A worker writes each point's rows the
moment the point is done, so a killed sweep loses at most the points in flight. With `ray`, the same chunks
run as Ray tasks on the cluster at ADDRESS (or a local one) and the driver writes each chunk's points as it
returns. `workers=1` runs in this process.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dispatch.errors import DispatchError
from dispatch.sweep import results
from dispatch.sweep.config import SweepConfig, load_config
from dispatch.sweep.evaluate import Worker, row_columns
from dispatch.sweep.points import Point, chunks, expand

__all__ = ["run", "SweepResult"]

_RAY_NO_ADDRESS = "local"  # run(ray="local"): start a local Ray cluster


class SweepResult:
    """What `run` returns: the rows (sorted), the folder, and how many points ran now and before."""

    def __init__(self, out: Path, rows: list[dict[str, Any]], ran: int, skipped: int, seconds: float,
                 files: list[Path]) -> None:
        self.out, self.rows, self.ran, self.skipped = out, rows, ran, skipped
        self.seconds, self.files = seconds, files

    def __repr__(self) -> str:
        return f"SweepResult({str(self.out)!r}, rows={len(self.rows)}, ran={self.ran}, skip={self.skipped})"


# -- what a worker process runs ------------------------------------------------------------------------------
_worker: Worker | None = None


def _get_worker(cfg: SweepConfig) -> Worker:
    global _worker
    if _worker is None or _worker.cfg.fingerprint() != cfg.fingerprint():
        if _worker is not None:
            _worker.close()
        _worker = Worker(cfg)
    return _worker


_STOP_ENV = "DISPATCH_SWEEP_STOP_AFTER"  # a test hook: the process exits after that many points, as if killed
_finished = 0


def _run_chunk(cfg: SweepConfig, chunk: list[Point],
               out: str | None) -> list[tuple[Point, list[dict[str, Any]]]]:
    """Evaluate a chunk; with `out`, write each point's file as it finishes."""
    global _finished
    w = _get_worker(cfg)
    stop = int(os.environ.get(_STOP_ENV) or 0)
    done = []
    for p in chunk:
        rows = w.rows(p)
        if out is not None:
            results.write_point(Path(out), p.index, p.id, rows)
        done.append((p, rows))
        _finished += 1
        if stop and _finished >= stop:
            os._exit(3)  # no cleanup, no results table: what a kill leaves behind
    return done


def _init_worker(env: Mapping[str, str]) -> None:
    os.environ.update(env)


# -- the driver ----------------------------------------------------------------------------------------------
def _meta(cfg: SweepConfig, points: list[Point]) -> dict[str, Any]:
    return {"name": cfg.name, "fingerprint": cfg.fingerprint(), "config": cfg.canonical(),
            "targets": dict(cfg.targets), "target_kinds": dict(cfg.target_kinds),
            "axes": [a.name for a in cfg.axes], "tied": {a.name: a.tied_to for a in cfg.axes if a.tied_to},
            "strategies": list(cfg.strategies), "objectives": list(cfg.objectives),
            "points": len(points), "columns": row_columns(cfg), "versions": results.versions()}


def run(config: SweepConfig | str | os.PathLike | Mapping[str, Any], out: str | os.PathLike | None = None, *,
        workers: int | None = None, ray: str | None = None, progress: bool | None = None,
        plots: bool = True) -> SweepResult:
    """Run the sweep `config` (a checked SweepConfig, a TOML path or a parsed mapping) into `out`.

    workers: local processes (default: the CPUs, at most the chunks); 1 runs in this process.
    ray: None (local workers), "local" (start a local Ray cluster) or a cluster address for ray.init.
    progress: a progress bar on stderr (default: when stderr is a terminal).
    Returns the rows of every point of the sweep, those of earlier runs into `out` included.
    """
    t0 = time.perf_counter()
    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    outp = Path(out) if out is not None else Path(f"sweep-{cfg.name}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DispatchError(f"workers must be a whole number >= 1, not {workers!r}.")
    points = expand(cfg)
    _prebuild(cfg)
    results.prepare(outp, cfg, _meta(cfg, points))
    have = results.done_ids(outp)
    todo = [p for p in points if p.id not in have]
    if progress is None:
        progress = sys.stderr.isatty()
    if todo:
        if ray is not None:
            _run_ray(cfg, todo, outp, ray, workers, progress)
        else:
            _run_local(cfg, todo, outp, workers, progress)
    rows = results.sort_rows(results.read_point_rows(outp), list(cfg.strategies), list(cfg.objectives))
    files = results.write_tables(outp, rows, row_columns(cfg))
    if plots and any(r.get("error") is None for r in rows):
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:  # the rows are what matters; say so, go on
            print("note: matplotlib is not installed, so no plots were drawn; pip install -e '.[sweep]' "
                  f"and run python -m dispatch plot {outp}", file=sys.stderr)
        else:
            from dispatch.sweep.plot import plot

            files += plot(outp)
    return SweepResult(outp, rows, len(todo), len(points) - len(todo), time.perf_counter() - t0, files)


def _prebuild(cfg: SweepConfig) -> None:
    """Export the batch variants of zoo models once here, not in every worker at the same time."""
    if not any(a.name == "batch" for a in cfg.axes):
        return
    from dispatch.sweep.models import batch_model

    for info in cfg.model_infos:
        if info.zoo and info.batch_symbol() is None:
            batch_model(info.ref)


class _Bar:
    """A rich progress bar on stderr: points done of the total, elapsed and time left."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self.p = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.p = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("points"),
                              TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                              console=Console(stderr=True))
            self.task = self.p.add_task(label, total=total)
            self.p.start()

    def update(self, done: int) -> None:
        if self.p is not None:
            self.p.update(self.task, completed=done)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def _run_local(cfg: SweepConfig, todo: list[Point], out: Path, workers: int | None, progress: bool) -> None:
    work = chunks(todo, workers or os.cpu_count() or 1)
    n = min(workers or os.cpu_count() or 1, len(work))
    bar = _Bar(len(todo), progress, f"sweep {cfg.name}")
    have = results.done_ids(out)
    count = _counter(out, have, len(todo))
    try:
        if n <= 1:
            for c in work:
                _run_chunk(cfg, c, str(out))
                bar.update(count())
            return
        ctx = multiprocessing.get_context("spawn")
        env = {k: os.environ[k] for k in ("DISPATCH_CACHE", _STOP_ENV) if os.environ.get(k)}
        env["OMP_NUM_THREADS"] = "1"
        with cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(env,)) as pool:
            futs = {pool.submit(_run_chunk, cfg, c, str(out)) for c in work}
            pending = set(futs)
            while pending:
                finished, pending = cf.wait(pending, timeout=0.5)
                for f in finished:
                    f.result()  # a worker that died raises here
                bar.update(count())
    except cf.process.BrokenProcessPool:
        raise DispatchError("A sweep worker process died; the finished points are kept in "
                            f"'{out / 'points'}'; rerun with the same --out to run the rest.") from None
    finally:
        bar.close()


def _counter(out: Path, have: set[str], total: int) -> Callable[[], int]:
    def count() -> int:
        return min(total, len(results.done_ids(out)) - len(have))

    return count


def _run_ray(cfg: SweepConfig, todo: list[Point], out: Path, address: str, workers: int | None,
             progress: bool) -> None:
    try:
        import ray
    except ImportError:
        raise DispatchError("--ray needs Ray; install it with pip install -e '.[ray]'.") from None
    started = False
    if not ray.is_initialized():
        env = {k: v for k, v in {"DISPATCH_CACHE": os.environ.get("DISPATCH_CACHE", "")}.items() if v}
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": {**env, "OMP_NUM_THREADS": "1"}},
                                  "include_dashboard": False, "log_to_driver": False}
        try:
            if address == _RAY_NO_ADDRESS:
                ray.init(num_cpus=workers or os.cpu_count() or 1, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError ...
            where = "a local Ray cluster" if address == _RAY_NO_ADDRESS else f"the Ray cluster at {address}"
            raise DispatchError(f"Could not start or reach {where} ({type(e).__name__}: {e}); check the "
                                "address, or run without --ray.") from None
        started = True
    # Small chunks: the driver writes a chunk's points when it returns, so a kill loses at most a chunk each.
    slots = workers or int(ray.cluster_resources().get("CPU", 1))
    task = ray.remote(num_cpus=1)(_run_chunk)
    refs = [task.remote(cfg, c, None) for c in chunks(todo, slots * 4, most=8)]
    bar = _Bar(len(todo), progress, f"sweep {cfg.name} (ray)")
    done = 0
    try:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for r in ready:
                for p, rows in ray.get(r):
                    results.write_point(out, p.index, p.id, rows)
                    done += 1
            bar.update(done)
    finally:
        bar.close()
        if started:
            ray.shutdown()

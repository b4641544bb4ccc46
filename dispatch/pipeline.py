"""Pipelined execution: several runs in flight, each target's segments on that target's own worker thread.

A run of a plan is a chain of steps (`Runtime.run_step`), each on one target. The pipeline keeps one worker
thread and one queue per target: a worker takes the next (run, step) from its queue, runs the step (the
transfers before the segment, then the segment), and hands the run to the queue of its next step's target,
or completes the run's future after the last step. So while request A's segment runs on the `asic` worker,
request B's runs on the `gpu` worker, as in a pipeline. Each run's steps still run in plan order on the run's
own environment with the same compiled executables as `Runtime.run`, so outputs are those of a serial run.

Bounded: at most `max_in_flight` runs are admitted at once (`submit` waits, up to its timeout, for one to
finish). Every queue holds at most that many entries, so handing a run to the next target's queue never
blocks, and two workers can never wait on each other's full queue. One worker per target also means a
target runs one segment at a time, so its sessions share that target's thread budget (see
`Dispatcher(threads=...)`) instead of oversubscribing the cores.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Hashable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dispatch.errors import DispatchError
from dispatch.runtime import Runtime

__all__ = ["Pipeline"]


@dataclass
class _Job:
    """One run in flight: its runtime, environment, the targets of its steps and the next step to run."""

    runtime: Runtime
    env: dict[Hashable, Any]
    targets: tuple[str, ...]
    future: Future = field(default_factory=Future)
    step: int = 0


class Pipeline:
    """Per-target worker threads running the steps of many runs at once; `submit` returns a Future.

    targets: the target names the runtimes submitted here use (one worker thread each).
    max_in_flight: runs admitted at once; `submit` waits for a free slot (the back-pressure).
    """

    def __init__(self, targets: Iterable[str], max_in_flight: int = 8) -> None:
        names = list(dict.fromkeys(targets))
        if not names:
            raise DispatchError("A pipeline needs at least one target name, e.g. Pipeline(['gpu', 'asic']).")
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise DispatchError(f"max_in_flight must be a positive integer, not {max_in_flight!r}.")
        self.max_in_flight = max_in_flight
        self._queues: dict[str, queue.Queue[_Job | None]] = {t: queue.Queue(maxsize=max_in_flight)
                                                              for t in names}
        self._busy = dict.fromkeys(names, 0.0)  # seconds each worker spent running steps (its own writes)
        self._steps = dict.fromkeys(names, 0)  # steps each worker ran
        self._slots = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._workers = [threading.Thread(target=self._work, args=(t,), name=f"dispatch-pipeline-{t}",
                                          daemon=True) for t in names]
        for w in self._workers:
            w.start()

    # -- submitting -----------------------------------------------------------------------------------------
    def submit(self, runtime: Runtime, feeds: Mapping[str, np.ndarray],
               timeout: float | None = None) -> Future:
        """Admit one run of `runtime` on `feeds` (checked by the caller); its Future gives the outputs.

        Waits for a free slot while `max_in_flight` runs are in flight; after `timeout` seconds raises
        DispatchError. Raises DispatchError once the pipeline is closed."""
        with self._slots:
            if not self._slots.wait_for(lambda: self._closed or self._in_flight < self.max_in_flight,
                                        timeout):
                raise DispatchError(f"The pipeline stayed full ({self.max_in_flight} runs in flight) for "
                                    f"{timeout} s; retry later or allow more runs in flight.")
            if self._closed:
                raise DispatchError("This pipeline was closed; build a new one to run again.")
            self._in_flight += 1
        try:
            targets = runtime.step_targets
            unknown = sorted(set(targets) - set(self._queues))
            if unknown:
                raise DispatchError(f"The plan runs on {unknown}, which this pipeline has no worker for (it "
                                    f"has {sorted(self._queues)}); build the pipeline with every target.")
            job = _Job(runtime, runtime.begin(feeds), targets)
        except BaseException:
            self._release()
            raise
        if not targets:
            self._finish(job)
        else:
            self._queues[targets[0]].put_nowait(job)  # never full: at most max_in_flight jobs exist
        return job.future

    def run(self, runtime: Runtime, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`submit`, then wait for the outputs (raising what the run raised)."""
        return self.submit(runtime, feeds).result()

    # -- the workers ----------------------------------------------------------------------------------------
    def _work(self, target: str) -> None:
        q, clock = self._queues[target], time.perf_counter
        while True:
            job = q.get()
            if job is None:
                return
            t0 = clock()
            try:
                job.runtime.run_step(job.step, job.env)
            except BaseException as e:  # the run fails; the worker carries on with the next one
                self._busy[target] += clock() - t0
                self._steps[target] += 1
                self._fail(job, e)
                continue
            self._busy[target] += clock() - t0
            self._steps[target] += 1
            job.step += 1
            if job.step < len(job.targets):
                self._queues[job.targets[job.step]].put_nowait(job)
            else:
                self._finish(job)

    def _finish(self, job: _Job) -> None:
        try:
            out = job.runtime.finish(job.env)
        except BaseException as e:
            self._fail(job, e)
            return
        job.env = {}
        self._release()
        job.future.set_result(out)

    def _fail(self, job: _Job, error: BaseException) -> None:
        job.env = {}
        self._release()
        job.future.set_exception(error)

    def _release(self) -> None:
        with self._slots:
            self._in_flight -= 1
            self._slots.notify_all()

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Runs admitted and not yet finished."""
        return self._in_flight

    def queue_depths(self) -> dict[str, int]:
        """Target -> steps waiting in its queue (not counting the one its worker is running)."""
        return {t: q.qsize() for t, q in self._queues.items()}

    def busy_seconds(self) -> dict[str, float]:
        """Target -> wall seconds its worker has spent running steps (segments, transfers before)."""
        return dict(self._busy)

    def steps_run(self) -> dict[str, int]:
        """Target -> steps its worker has run."""
        return dict(self._steps)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new runs, let those in flight finish (up to `timeout` s), then stop the workers."""
        with self._slots:
            self._closed = True
            self._slots.notify_all()
            self._slots.wait_for(lambda: self._in_flight == 0, timeout)
        for q in self._queues.values():
            q.put(None)
        for w in self._workers:
            if w is not threading.current_thread():
                w.join(timeout)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

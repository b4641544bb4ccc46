"""Dynamic batching along the leading (symbolic) batch dimension, on the server's event loop.

Requests whose inputs agree in everything but the leading dimension (same names, dtypes and trailing
dimensions) are gathered until their rows reach `max_batch` or `timeout_s` has passed since the first,
concatenated along axis 0, run once, and the outputs are split back by rows. A request with `max_batch` rows
or more runs alone. Only for models whose every input and output has a symbolic leading dimension (checked
when the batcher is built); per-row results are then independent of the batch, up to the kernels' own
rounding for a different batch size (the server warms batch sizes 1..max_batch so none is planned on the
request path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dispatch.errors import DispatchError
from dispatch.serve.protocol import ProtocolError, TensorMeta

__all__ = ["Batcher"]

Outputs = dict[str, np.ndarray]


@dataclass
class _Batch:
    items: list[tuple[Mapping[str, np.ndarray], int, asyncio.Future]] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class Batcher:
    """Gathers requests into batches; `await infer(feeds)` gives this request's outputs."""

    def __init__(self, run: Callable[[Mapping[str, np.ndarray]], Awaitable[Outputs]],
                 inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta], max_batch: int,
                 timeout_s: float, observe: Callable[[int], None] | None = None) -> None:
        if max_batch < 2:
            raise DispatchError(f"--max-batch must be at least 2 to batch, not {max_batch}.")
        if timeout_s < 0:
            raise DispatchError(f"--batch-timeout-ms must be >= 0, not {timeout_s * 1e3:g}.")
        fixed = [m.name for m in (*inputs, *outputs) if not m.shape or m.shape[0] != -1]
        if fixed:
            raise DispatchError(f"Dynamic batching needs a symbolic leading dimension on every input and "
                                f"output, and {', '.join(fixed)} has none; serve without --max-batch.")
        self._run, self.max_batch, self.timeout_s = run, max_batch, timeout_s
        self._observe = observe or (lambda rows: None)
        self._pending: dict[tuple, _Batch] = {}
        self._tasks: set[asyncio.Task] = set()

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> Outputs:
        rows = {a.shape[0] for a in feeds.values()}
        if len(rows) != 1:
            raise ProtocolError(f"The inputs' leading (batch) dimensions differ ({sorted(rows)}); give every "
                                "input the same batch size.")
        n = rows.pop()
        if n >= self.max_batch:
            self._observe(n)
            return await self._run(feeds)
        key = tuple((k, a.shape[1:], a.dtype.str) for k, a in sorted(feeds.items()))
        loop = asyncio.get_running_loop()
        batch = self._pending.get(key)
        if batch is not None and batch.rows + n > self.max_batch:
            self._flush(key, batch)
            batch = None
        if batch is None:
            batch = self._pending[key] = _Batch()
            batch.timer = loop.call_later(self.timeout_s, self._flush, key, batch)
        fut: asyncio.Future = loop.create_future()
        batch.items.append((feeds, n, fut))
        batch.rows += n
        if batch.rows >= self.max_batch:
            self._flush(key, batch)
        return await fut

    def _flush(self, key: tuple, batch: _Batch) -> None:
        if self._pending.get(key) is batch:
            del self._pending[key]
        if batch.timer is not None:  # not flushed yet (a batch flushes once: full, or at its timer)
            batch.timer.cancel()
            batch.timer = None
            task = asyncio.ensure_future(self._run_batch(batch))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: _Batch) -> None:
        items = batch.items
        self._observe(batch.rows)
        feeds = items[0][0] if len(items) == 1 else \
            {k: np.concatenate([f[k] for f, _, _ in items]) for k in items[0][0]}
        try:
            out = await self._run(feeds)
            bad = [k for k, a in out.items() if a.ndim == 0 or a.shape[0] != batch.rows]
            if bad:
                raise DispatchError(f"Output(s) {', '.join(bad)} do not keep the batch's {batch.rows} rows, "
                                    "so the batch cannot be split; serve without --max-batch.")
        except BaseException as e:
            for _, _, fut in items:
                if not fut.done():
                    fut.set_exception(e)
            return
        start = 0
        for _, n, fut in items:
            if not fut.done():
                fut.set_result({k: a[start:start + n] for k, a in out.items()})
            start += n

    def pending(self) -> int:
        """Requests waiting for their batch to fill."""
        return sum(len(b.items) for b in self._pending.values())

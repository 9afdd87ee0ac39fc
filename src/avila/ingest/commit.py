"""Group commit: many concurrent requests share one store transaction.

Requests hand validated rows (column batches) to :meth:`GroupCommitter.submit` and await a future. The store has
a single writer, so one commit is in flight at a time (two, pipelined, measured no faster and
added ~3 ms to single-event latency: benchmarks/RESULTS.md). When the writer is idle, a submission
starts a commit at once with whatever is pending; while a commit runs, new rows gather and go
together in the next one (no timer: under load batches grow by themselves, at low load nothing
waits). Every future resolves only after the store's commit returned, so an acknowledgement
means the rows are durable.

Why start at once rather than after a short timer: clients answered by the same commit send
their next requests together, and the event loop parses all of them before a timer can fire,
so a timer keeps HTTP work and commits in lockstep instead of overlapping them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from avila.errors import ShuttingDown, StorageUnavailable
from avila.storage.base import Store
from avila.storage.schema import ColumnBatch

log = logging.getLogger("avila.ingest")


@dataclass(frozen=True)
class FlushStats:
    events: int
    requests: int
    seconds: float


class GroupCommitter:
    def __init__(
        self,
        store: Store,
        *,
        max_events: int = 20_000,
        on_flush: Callable[[FlushStats], None] | None = None,
    ) -> None:
        self.store = store
        self.max_events = max_events
        self.on_flush = on_flush
        self._pending: list[tuple[ColumnBatch, int, asyncio.Future[None]]] = []
        self._pending_events = 0
        self._flushing = False
        self._closing = False
        self._idle: asyncio.Event | None = None

    def start(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending_events(self) -> int:
        return self._pending_events

    def submit(self, columns: ColumnBatch, rows: int) -> asyncio.Future[None]:
        """Queue rows for the next commit; the future resolves once they are durable."""
        if self._closing or self._idle is None:
            raise ShuttingDown("the server is shutting down; retry shortly")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((columns, rows, future))
        self._pending_events += rows
        if not self._flushing:
            self._start_flush(loop)
        return future

    def _take_batch(self) -> tuple[list[tuple[ColumnBatch, int, asyncio.Future[None]]], int]:
        batch: list[tuple[ColumnBatch, int, asyncio.Future[None]]] = []
        events = 0
        while self._pending and (not batch or events + self._pending[0][1] <= self.max_events):
            item = self._pending.pop(0)
            batch.append(item)
            events += item[1]
        self._pending_events -= events
        return batch, events

    def _start_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, events = self._take_batch()
        started = time.perf_counter()
        assert self._idle is not None
        self._idle.clear()
        self._flushing = True
        flushing = loop.create_task(self.store.append_columns_async([c for c, _, _ in batch]))
        flushing.add_done_callback(
            lambda done: self._finish_flush(loop, done, batch, events, started)
        )

    def _finish_flush(
        self,
        loop: asyncio.AbstractEventLoop,
        done: asyncio.Future[None],
        batch: list[tuple[ColumnBatch, int, asyncio.Future[None]]],
        events: int,
        started: float,
    ) -> None:
        self._flushing = False
        exc = done.exception() if not done.cancelled() else ShuttingDown("commit cancelled")
        if exc is not None:
            log.error("group commit failed", extra={"events": events, "error": str(exc)})
            error = StorageUnavailable(f"could not commit events: {exc}")
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)
            if self.on_flush is not None:
                self.on_flush(FlushStats(events, len(batch), time.perf_counter() - started))
        if self._pending:
            self._start_flush(loop)
        else:
            assert self._idle is not None
            self._idle.set()

    async def close(self) -> None:
        """Commit everything pending, then stop accepting rows."""
        self._closing = True
        if self._idle is not None:
            await self._idle.wait()

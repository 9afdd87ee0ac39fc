"""Group commit: many concurrent requests share one store transaction.

Requests hand validated rows to :meth:`GroupCommitter.submit` and await a future. One flush is in
flight at a time (the store has a single writer); while it runs, new rows gather for the next
one. A flush starts when ``max_events`` are pending or ``interval`` seconds after the first
pending row, whichever comes first, and every waiting future resolves only after the store's
commit (fsync) returned, so an acknowledgement means the rows are durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from avila.errors import ShuttingDown, StorageUnavailable
from avila.storage.base import Store

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
        max_events: int = 5000,
        interval: float = 0.005,
        on_flush: Callable[[FlushStats], None] | None = None,
    ) -> None:
        self.store = store
        self.max_events = max_events
        self.interval = interval
        self.on_flush = on_flush
        self._pending: list[tuple[pa.Table, asyncio.Future[None]]] = []
        self._pending_events = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avila-writer")
        self._closing = False

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    @property
    def pending_events(self) -> int:
        return self._pending_events

    def submit(self, table: pa.Table) -> asyncio.Future[None]:
        """Queue rows for the next commit; the future resolves once they are durable."""
        if self._closing or self._wakeup is None:
            raise ShuttingDown("the server is shutting down; retry against another instance")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((table, future))
        self._pending_events += table.num_rows
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if not self._pending and self._closing:
                return
            # Let concurrent requests join this commit, up to the size bound.
            deadline = loop.time() + self.interval
            while self._pending_events < self.max_events and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            self._wakeup.clear()
            batch, self._pending, self._pending_events = self._pending, [], 0
            if batch:
                await self._flush(loop, batch)
            if self._pending:
                self._wakeup.set()
            elif self._closing:
                return

    async def _flush(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[pa.Table, asyncio.Future[None]]]
    ) -> None:
        tables = [table for table, _ in batch]
        started = time.perf_counter()
        try:
            combined = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            await loop.run_in_executor(self._executor, self.store.append_events, combined)
        except Exception as exc:  # every waiter must learn the commit failed
            log.exception("group commit failed", extra={"events": sum(t.num_rows for t in tables)})
            error = StorageUnavailable(f"could not commit events: {exc}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        stats = FlushStats(combined.num_rows, len(batch), time.perf_counter() - started)
        for _, future in batch:
            if not future.done():
                future.set_result(None)
        if self.on_flush is not None:
            self.on_flush(stats)

    async def close(self) -> None:
        """Commit everything pending, then stop accepting rows."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)
